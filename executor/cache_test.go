package executor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/snapshot"
	"github.com/minibuild/minibuild/store"
)

// These tests run the real executor over a real store, snapshotter and
// cache index, FROM scratch with metadata instructions, WORKDIR and COPY:
// no RUN, so they need no root. Files are owned by the caller (USER and
// --chown UID:GID), so extracting a layer needs no chown privilege.

// harness is one store and one build context, built again and again.
type harness struct {
	t        *testing.T
	root     string
	ctxDir   string
	contexts map[string]string // named build contexts
	services Services
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, root: t.TempDir(), ctxDir: t.TempDir()}
	st, err := store.Open(h.root)
	if err != nil {
		t.Fatal(err)
	}
	sn, err := snapshot.New(h.root, st)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := cache.OpenIndex(filepath.Join(h.root, "cache"))
	if err != nil {
		t.Fatal(err)
	}
	h.services = Services{Store: st, Snapshots: sn, Cache: idx, StateDir: filepath.Join(h.root, "buildctx")}
	return h
}

// owner is "UID:GID" of the test process, for USER and --chown.
func owner() string { return fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid()) }

// write puts files (name → content) into the context.
func (h *harness) write(files map[string]string) {
	h.t.Helper()
	for name, data := range files {
		p := filepath.Join(h.ctxDir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			h.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			h.t.Fatal(err)
		}
	}
}

// build builds dockerfile ({{owner}} replaced) and returns the result and
// the final status of each step, FROM first: "cached" or "done".
func (h *harness) build(dockerfile string, args map[string]string, policy Policy) (*Result, []string, []Event, error) {
	h.t.Helper()
	var events []Event
	svc := h.services
	svc.Progress = func(e Event) { events = append(events, e) }
	res, err := Build(context.Background(), Options{
		Services: svc,
		Input: Input{
			ContextDir: h.ctxDir,
			Dockerfile: []byte(strings.ReplaceAll(dockerfile, "{{owner}}", owner())),
			BuildArgs:  args,
			Contexts:   h.contexts,
		},
		Policy: policy,
	})
	return res, statuses(events, false), events, err
}

// statuses lists the final status of each step event, optionally with
// its stage ("stage-1:cached").
func statuses(events []Event, withStage bool) []string {
	var out []string
	for _, e := range events {
		if e.Kind != KindStep || e.Status == StatusRunning {
			continue
		}
		if withStage {
			out = append(out, e.Stage+":"+string(e.Status))
		} else {
			out = append(out, string(e.Status))
		}
	}
	return out
}

const appDockerfile = `FROM scratch
ARG VERSION=1.0
USER {{owner}}
ENV APP=demo
WORKDIR /app
COPY --chown={{owner}} requirements.txt ./
LABEL version=$VERSION
COPY --chown={{owner}} app.py ./
CMD ["app.py"]
`

var appFiles = map[string]string{"requirements.txt": "flask\n", "app.py": "print('hi')\n", "README": "not copied\n"}

// TestRebuildFromFirstMiss checks DESIGN.md invariant 2 on the executor
// alone: a rebuild reuses every step up to the first whose key changed,
// executes that one and everything after it, and says why it missed.
func TestRebuildFromFirstMiss(t *testing.T) {
	cases := []struct {
		name       string
		dockerfile string            // "" = appDockerfile
		files      map[string]string // written before the rebuild
		args       map[string]string
		policy     Policy
		// want lists each step's status after the change: c = cached, d = done (executed).
		want   string
		reason string // the first miss, as the summary says it
	}{
		{name: "nothing changed", want: "ccccccccc"},
		{name: "a file no step copies", files: map[string]string{"README": "edited\n"}, want: "ccccccccc"},
		{name: "the last COPY's file", files: map[string]string{"app.py": "print('bye')\n"}, want: "cccccccdd",
			reason: "step 8/9 COPY --chown=" + owner() + " app.py ./ — app.py changed"},
		{name: "an early COPY's file", files: map[string]string{"requirements.txt": "flask\nrequests\n"}, want: "cccccdddd",
			reason: "requirements.txt changed"},
		{name: "a build arg in a LABEL", args: map[string]string{"VERSION": "1.1"}, want: "ccccccddd",
			reason: "step 7/9 LABEL version=$VERSION — build arg VERSION changed: 1.0 → 1.1"},
		{name: "an ENV value", dockerfile: strings.Replace(appDockerfile, "APP=demo", "APP=prod", 1), want: "cccdddddd",
			reason: "step 4/9 ENV APP=prod — instruction changed (was: ENV APP=demo)"},
		{name: "quoting and spacing do not matter", dockerfile: strings.Replace(appDockerfile, "ENV APP=demo", `ENV   APP="demo"`, 1),
			want: "ccccccccc"},
		{name: "a relative WORKDIR keys as its absolute path", dockerfile: strings.Replace(appDockerfile, "WORKDIR /app", "WORKDIR app", 1),
			want: "ccccccccc"},
		{name: "--no-cache", policy: Policy{NoCache: true}, want: "cdddddddd", reason: "step 2/9 ARG VERSION=1.0 — --no-cache"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.write(appFiles)
			first, statuses, _, err := h.build(appDockerfile, nil, Policy{})
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(statuses, " "); strings.Contains(got, "cached cached") || first.StepsBuilt != 8 {
				t.Fatalf("first build: %s (built %d), want every step but FROM executed", got, first.StepsBuilt)
			}
			h.write(c.files)
			df := c.dockerfile
			if df == "" {
				df = appDockerfile
			}
			res, statuses, _, err := h.build(df, c.args, c.policy)
			if err != nil {
				t.Fatal(err)
			}
			if got := short(statuses); got != c.want {
				t.Errorf("steps: %s, want %s", got, c.want)
			}
			if !strings.Contains(res.FirstMiss, c.reason) || (c.reason == "") != (res.FirstMiss == "") {
				t.Errorf("first miss: %q, want %q", res.FirstMiss, c.reason)
			}
			if c.want == "ccccccccc" && res.ID != first.ID {
				t.Errorf("a fully cached rebuild gave image %s, first build %s", res.ID, first.ID)
			}
		})
	}
}

// short turns statuses into one letter each: c(ached), d(one).
func short(statuses []string) string {
	var b strings.Builder
	for _, s := range statuses {
		b.WriteByte(s[0])
	}
	return b.String()
}

// TestFirstMissReportsReason checks the progress events of a miss: the
// first executed step carries the reason in its running event; later
// ones carry none.
func TestFirstMissReportsReason(t *testing.T) {
	h := newHarness(t)
	h.write(appFiles)
	if _, _, _, err := h.build(appDockerfile, nil, Policy{}); err != nil {
		t.Fatal(err)
	}
	h.write(map[string]string{"app.py": "print(2)\n"})
	_, _, events, err := h.build(appDockerfile, nil, Policy{})
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range events {
		if e.Kind == KindStep && e.Status == StatusRunning {
			reasons = append(reasons, fmt.Sprintf("%d:%s", e.Step, e.Reason))
		}
	}
	if got := strings.Join(reasons, ","); got != "8:app.py changed,9:" {
		t.Errorf("running events: %s", got)
	}
}

// TestSameStepsShareKeys checks that two Dockerfiles sharing their first
// steps share those steps' records (reuse across images), and diverge at
// the first different instruction.
func TestSameStepsShareKeys(t *testing.T) {
	h := newHarness(t)
	h.write(appFiles)
	a, _, _, err := h.build(appDockerfile, nil, Policy{})
	if err != nil {
		t.Fatal(err)
	}
	other := strings.Replace(appDockerfile, `CMD ["app.py"]`, `CMD ["other.py"]`, 1)
	b, statuses, _, err := h.build(other, nil, Policy{})
	if err != nil {
		t.Fatal(err)
	}
	if got := short(statuses); got != "ccccccccd" {
		t.Errorf("second image: %s, want all but CMD cached", got)
	}
	if a.StepKeys[len(a.StepKeys)-2] != b.StepKeys[len(b.StepKeys)-2] || a.StepKeys[len(a.StepKeys)-1] == b.StepKeys[len(b.StepKeys)-1] {
		t.Errorf("keys: want shared up to CMD, different at CMD")
	}
}

// TestErrorNamesLineAndKeepsCache checks that a failing step names the
// Dockerfile line and step, and that the steps before it stay cached.
func TestErrorNamesLineAndKeepsCache(t *testing.T) {
	h := newHarness(t)
	h.write(appFiles)
	broken := strings.Replace(appDockerfile, "COPY --chown={{owner}} app.py ./", "COPY --chown={{owner}} missing.py ./", 1)
	_, _, _, err := h.build(broken, nil, Policy{})
	if err == nil || !strings.Contains(err.Error(), "Dockerfile:8: step 8/9 COPY") || !strings.Contains(err.Error(), "missing.py") {
		t.Fatalf("error: %v", err)
	}
	_, statuses, _, err := h.build(appDockerfile, nil, Policy{})
	if err != nil {
		t.Fatal(err)
	}
	if got := short(statuses); got != "cccccccdd" {
		t.Errorf("after a failed build: %s, want the steps before the failure cached", got)
	}
}

// TestOnbuildFromStage checks that a stage built FROM another stage runs
// that stage's ONBUILD instructions first and starts without them in its
// config, as BuildKit does.
func TestOnbuildFromStage(t *testing.T) {
	h := newHarness(t)
	res, statuses, _, err := h.build("FROM scratch AS base\nONBUILD LABEL from=base\nFROM base\nLABEL own=yes\n", nil, Policy{})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := res.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.Labels["from"] != "base" || cf.Config.Labels["own"] != "yes" || len(cf.Config.OnBuild) != 0 {
		t.Errorf("labels %v, OnBuild %q: want the trigger run and no OnBuild left", cf.Config.Labels, cf.Config.OnBuild)
	}
	if got := short(statuses); got != "cdcdd" {
		t.Errorf("steps: %s, want the trigger as the child's first step", got)
	}
}

// TestNamedContexts checks --build-context: a directory is read by COPY
// --from=NAME (overriding a stage of that name) and keys the step on its
// content; FROM a directory is refused with a clear error.
func TestNamedContexts(t *testing.T) {
	h := newHarness(t)
	docs := t.TempDir()
	if err := os.WriteFile(filepath.Join(docs, "guide.md"), []byte("v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	df := "FROM scratch AS docs\nLABEL stage=docs\nFROM scratch\nUSER {{owner}}\nCOPY --from=docs --chown={{owner}} guide.md /guide.md\n"
	h.contexts = map[string]string{"docs": docs}
	build := func() (*Result, []string, error) {
		res, _, events, err := h.build(df, nil, Policy{})
		return res, statuses(events, true), err
	}
	_, steps, err := build()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(steps, " "); got != "stage-1:cached stage-1:done stage-1:done" {
		t.Errorf("first build: %s (the docs stage must not run: the context overrides it)", got)
	}
	if _, steps, _ = build(); strings.Join(steps, " ") != "stage-1:cached stage-1:cached stage-1:cached" {
		t.Errorf("rebuild: %v", steps)
	}
	if err := os.WriteFile(filepath.Join(docs, "guide.md"), []byte("v2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, steps, err := build()
	if err != nil || strings.Join(steps, " ") != "stage-1:cached stage-1:cached stage-1:done" || !strings.Contains(res.FirstMiss, "guide.md changed") {
		t.Errorf("after editing the context: %v, %v, %v", steps, res, err)
	}
	df = "FROM docs\n"
	if _, _, err := build(); err == nil || !strings.Contains(err.Error(), "Dockerfile:1: FROM docs: the build context") {
		t.Errorf("FROM a directory context: %v", err)
	}
}

// TestMissNamesFiles checks the words of a COPY's miss: the files added,
// removed or changed since the last build of the same Dockerfile.
func TestMissNamesFiles(t *testing.T) {
	h := newHarness(t)
	df := "FROM scratch\nUSER {{owner}}\nCOPY --chown={{owner}} *.py /src/\n"
	h.write(map[string]string{"a.py": "a\n", "b.py": "b\n"})
	steps := []struct {
		change func()
		want   string
	}{
		{func() {}, ""},
		{func() { h.write(map[string]string{"c.py": "c\n"}) }, "c.py added"},
		{func() { os.Remove(filepath.Join(h.ctxDir, "a.py")) }, "a.py removed"},
		{func() { h.write(map[string]string{"b.py": "B\n", "c.py": "C\n"}) }, "b.py, c.py changed"},
	}
	for i, st := range steps {
		st.change()
		res, _, _, err := h.build(df, nil, Policy{})
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && !strings.HasSuffix(res.FirstMiss, st.want) {
			t.Errorf("build %d: first miss %q, want … %q", i+1, res.FirstMiss, st.want)
		}
	}
}
