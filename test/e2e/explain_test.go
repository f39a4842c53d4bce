package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A miss is explained against the last build of the same Dockerfile, in
// words a person reads at a glance and as data in --progress=json: a
// build arg old → new, a changed ENV line, the base that moved, files
// changed, added and removed, the network mode and a bind mount's content.
func TestMissReasonsAcrossBuilds(t *testing.T) {
	e := newEnv(t)
	e.ok("tag", "busybox:latest", "base:1")
	df := `FROM base:1
ARG VERSION=1.0
ENV MODE=fast
LABEL version=$VERSION
COPY *.py /app/
RUN --mount=type=bind,source=conf,target=/conf cat /conf/c > /c
`
	ctx := project(t, df, map[string]string{"a.py": "a\n", "b.py": "b\n", "conf/c": "1\n"})
	first := e.build(ctx, nil)
	if first.res.StepsBuilt == 0 {
		t.Fatal("the first build reused everything")
	}
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(ctx, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name   string
		change func()
		args   []string
		step   string // the instruction that must miss first
		reason string
		input  string // a change the json "miss" carries
	}{
		{"build arg", func() {}, []string{"--build-arg", "VERSION=1.1"}, "LABEL", "build arg VERSION changed: 1.0 → 1.1", "build arg VERSION"},
		{"ENV", func() { write("Dockerfile", strings.Replace(df, "MODE=fast", "MODE=slow", 1)) }, nil, "ENV", "instruction changed (was: ENV MODE=fast)", ""},
		{"files", func() {
			write("Dockerfile", df)
			write("a.py", "A\n")
			write("c.py", "c\n")
			os.Remove(filepath.Join(ctx, "b.py"))
		}, nil, "COPY", "a.py changed; c.py added; b.py removed", "c.py"},
		{"many files", func() {
			for i := 0; i < 5; i++ {
				write(fmt.Sprintf("n%d.py", i), "n\n")
			}
		}, nil, "COPY", "n0.py, n1.py, n2.py and 2 more added", "n4.py"},
		{"bind mount", func() { write("conf/c", "2\n") }, nil, "RUN", "mount /conf changed", "mount /conf"},
		{"network", func() {}, []string{"--network=none"}, "RUN", "network changed: default → none", "network"},
		{"base", func() {
			write("Dockerfile", df)
			base := project(t, "FROM busybox\nLABEL moved=yes\n", nil)
			e.build(base, nil, "-t", "base:1")
		}, nil, "ARG", "base changed: base:1 (id ", "base"},
	}
	for _, st := range steps {
		st.change()
		b := e.build(ctx, nil, st.args...)
		i := b.find(t, st.step)
		got := b.reasons(i)
		t.Logf("%s: %s — %s", st.name, b.steps[i].Instruction, got)
		if b.steps[i].Status != "done" || !strings.Contains(got, st.reason) || strings.Contains(got, "\n") {
			t.Errorf("%s: step %q reason %q, want %q%s", st.name, b.steps[i].Instruction, got, st.reason, b.describe())
			continue
		}
		if st.input == "" {
			continue
		}
		found := false
		for _, ev := range b.events {
			if ev.Miss == nil {
				continue
			}
			for _, c := range ev.Miss.Changes {
				found = found || c.Input == st.input
			}
		}
		if !found {
			t.Errorf("%s: no json miss names %q", st.name, st.input)
		}
	}
}
