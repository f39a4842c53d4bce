package cache

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestKeyIsContentOnly(t *testing.T) {
	parent := FromKey("sha256:aaaa")
	a := digest.FromString("app.py v1")
	b := digest.FromString("app.py v2")
	copyOf := func(p digest.Digest, instr string, files digest.Digest) digest.Digest {
		return (&Inputs{Parent: p, Instruction: instr, Files: files}).Key()
	}
	run := func(args []string, network string, mounts ...MountInput) digest.Digest {
		return (&Inputs{Parent: parent, Instruction: "RUN make", BuildArgs: args, Network: network, Mounts: mounts}).Key()
	}
	base := copyOf(parent, "COPY app.py .", a)
	runBase := run([]string{"V=1"}, "host")

	cases := []struct {
		name string
		key  digest.Digest
		want digest.Digest
		same bool
	}{
		{"same inputs give the same key", copyOf(parent, "COPY app.py .", a), base, true},
		{"changed content", copyOf(parent, "COPY app.py .", b), base, false},
		{"changed instruction", copyOf(parent, "COPY app.py ./", a), base, false},
		{"changed parent", copyOf(FromKey("scratch"), "COPY app.py .", a), base, false},
		{"fields do not run together", copyOf(parent, "COPY app.py", digest.Digest(" ."+string(a))), base, false},
		{"file names never enter the key", (&Inputs{Parent: parent, Instruction: "COPY app.py .", Files: a,
			FileNames: func() map[string]string { return map[string]string{"x": "y"} }}).Key(), base, true},
		{"same RUN", run([]string{"V=1"}, "host"), runBase, true},
		{"build arg value", run([]string{"V=2"}, "host"), runBase, false},
		{"unset arg differs from empty", run([]string{"V"}, "host"), run([]string{"V="}, "host"), false},
		{"args do not run together", run([]string{"V=1", "W"}, "host"), run([]string{"V=1W"}, "host"), false},
		{"network", run([]string{"V=1"}, "none"), runBase, false},
		{"bind mount content", run([]string{"V=1"}, "host", MountInput{"/src", a}), run([]string{"V=1"}, "host", MountInput{"/src", b}), false},
		{"bind mount target", run([]string{"V=1"}, "host", MountInput{"/src", a}), run([]string{"V=1"}, "host", MountInput{"/s", a}), false},
		{"a mount is not a file input", (&Inputs{Parent: parent, Instruction: "X", Files: a}).Key(),
			(&Inputs{Parent: parent, Instruction: "X", Mounts: []MountInput{{"", a}}}).Key(), false},
	}
	for _, c := range cases {
		if got := c.key == c.want; got != c.same {
			t.Errorf("%s: equal=%v, want %v", c.name, got, c.same)
		}
	}
	if base.Algorithm() != digest.SHA256 || base.Validate() != nil {
		t.Fatalf("key %q is not a sha256 digest", base)
	}
}

func TestNamesHideBuildArgValues(t *testing.T) {
	in := &Inputs{BuildArgs: []string{"TOKEN=s3cret", "EMPTY"}, Network: "none", Mounts: []MountInput{{"/src", digest.FromString("t")}}}
	names := in.Names()
	for k, v := range names {
		if strings.Contains(v, "s3cret") {
			t.Errorf("%s reveals a build arg value: %q", k, v)
		}
	}
	for _, k := range []string{"build arg TOKEN", "build arg EMPTY", "network", "mount /src"} {
		if _, ok := names[k]; !ok {
			t.Errorf("Names lacks %q: %v", k, names)
		}
	}
}

func TestIndexRoundTripAndExplain(t *testing.T) {
	x, err := OpenIndex(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	parent := FromKey("scratch")
	files := func(m map[string]string) func() map[string]string { return func() map[string]string { return m } }
	in1 := &Inputs{Parent: parent, Instruction: "COPY . /", Files: digest.FromString("1"),
		FileNames: files(map[string]string{"app.py": "sha256:1", "util.py": "sha256:2"})}
	k1 := in1.Key()
	if _, err := x.Get(k1); !errors.Is(err, ErrMiss) {
		t.Fatalf("empty index: got %v, want ErrMiss", err)
	}
	if got := x.Explain("here", in1); got != "not built before" {
		t.Fatalf("explain on empty index: %q", got)
	}
	rec := &Record{Layer: &Layer{Digest: digest.FromString("layer"), Size: 3}}
	if err := x.Put(k1, "here", in1, rec); err != nil {
		t.Fatal(err)
	}
	got, err := x.Get(k1)
	if err != nil || got.Layer == nil || got.Layer.Digest != rec.Layer.Digest {
		t.Fatalf("Get after Put: %+v, %v", got, err)
	}
	cases := []struct {
		instruction string
		inputs      map[string]string
		want        string
	}{
		{"COPY . /", map[string]string{"app.py": "sha256:9", "util.py": "sha256:2"}, "app.py changed"},
		{"COPY . /", map[string]string{"app.py": "sha256:1", "util.py": "sha256:2", "new.py": "x"}, "new.py added"},
		{"COPY . /", map[string]string{"app.py": "sha256:1"}, "util.py removed"},
		{"COPY . /srv", nil, "instruction changed (was: COPY . /)"},
	}
	if got := x.Explain("another project", &Inputs{Parent: parent, Instruction: "COPY . /srv"}); got != "not built before" {
		t.Errorf("a step elsewhere is explained by this project's history: %q", got)
	}
	for _, c := range cases {
		in := &Inputs{Parent: parent, Instruction: c.instruction, FileNames: files(c.inputs)}
		if got := x.Explain("here", in); !strings.Contains(got, c.want) {
			t.Errorf("Explain(%q) = %q, want %q", c.instruction, got, c.want)
		}
	}
}
