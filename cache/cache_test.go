package cache

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/layer"
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
		{"explanations never enter the key", (&Inputs{Parent: parent, Instruction: "COPY app.py .", Files: a,
			Why: Why{FileNames: func() map[string]string { return map[string]string{"x": "y"} }, Vars: map[string]string{"ENV A": "1"}, Base: "b", Display: "d"}}).Key(), base, true},
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

func TestNames(t *testing.T) {
	in := &Inputs{BuildArgs: []string{"V=1.1", "EMPTY=", "UNSET"}, Network: "none", Mounts: []MountInput{{"/src", digest.FromString("t")}}}
	want := map[string]string{"build arg V": "1.1", "build arg EMPTY": "", "build arg UNSET": "(unset)", "network": "none",
		"mount /src": digest.FromString("t").String()}
	if got := in.Names(); !reflect.DeepEqual(got, want) {
		t.Errorf("Names = %v, want %v", got, want)
	}
}

// TestExplainAcrossBuilds checks the words of a miss against the last
// build at the same place: old → new values, the variable behind a
// changed text, a changed base, and one line for a heredoc.
func TestExplainAcrossBuilds(t *testing.T) {
	x, err := OpenIndex(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	base1, base2 := FromKey("sha256:1"), FromKey("sha256:2")
	put := func(where string, in *Inputs) {
		t.Helper()
		if err := x.Put(in.Key(), where, in, &Record{}); err != nil {
			t.Fatal(err)
		}
	}
	put("label", &Inputs{Parent: base1, Instruction: "LABEL v=1.0", Why: Why{Display: "LABEL v=$VERSION", Vars: map[string]string{"build arg VERSION": "1.0"}, Base: "app@sha256:1"}})
	put("run", &Inputs{Parent: base1, Instruction: "RUN make", BuildArgs: []string{"V=1"}, Network: "host", Why: Why{Display: "RUN make"}})
	put("heredoc", &Inputs{Parent: base1, Instruction: "RUN x", Why: Why{Display: "RUN <<EOF\nx\nEOF"}})
	cases := []struct {
		where string
		in    *Inputs
		want  string
	}{
		{"label", &Inputs{Parent: base1, Instruction: "LABEL v=1.1", Why: Why{Display: "LABEL v=$VERSION", Vars: map[string]string{"build arg VERSION": "1.1"}}},
			"build arg VERSION changed: 1.0 → 1.1"},
		{"run", &Inputs{Parent: base1, Instruction: "RUN make", BuildArgs: []string{"V=2"}, Network: "none"},
			"build arg V changed: 1 → 2, network changed: host → none"},
		{"run", &Inputs{Parent: base1, Instruction: "LABEL w=1", Why: Why{Display: "LABEL w=1"}}, "instruction changed (was: RUN make)"},
		{"label", &Inputs{Parent: base2, Instruction: "LABEL v=1.0", Why: Why{Base: "app@sha256:2"}}, "base changed: app@sha256:1 → app@sha256:2"},
		{"heredoc", &Inputs{Parent: base1, Instruction: "RUN y"}, `instruction changed (was: RUN <<EOF\nx\nEOF)`},
		{"elsewhere", &Inputs{Parent: base1, Instruction: "RUN make"}, "not built before"},
	}
	for _, c := range cases {
		if got := x.Explain(c.where, c.in).String(); got != c.want {
			t.Errorf("Explain(%s) = %q, want %q", c.in.Instruction, got, c.want)
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
		Why: Why{FileNames: files(map[string]string{"app.py": "sha256:1", "util.py": "sha256:2"}), Display: "COPY . /"}}
	k1 := in1.Key()
	if _, err := x.Get(k1); !errors.Is(err, ErrMiss) {
		t.Fatalf("empty index: got %v, want ErrMiss", err)
	}
	if got := x.Explain("here", in1).String(); got != "not built before" {
		t.Fatalf("explain on empty index: %q", got)
	}
	rec := &Record{Layer: &layer.Descriptor{Digest: digest.FromString("layer"), Size: 3}}
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
	if got := x.Explain("another project", &Inputs{Parent: parent, Instruction: "COPY . /srv"}).String(); got != "not built before" {
		t.Errorf("a step elsewhere is explained by this project's history: %q", got)
	}
	for _, c := range cases {
		in := &Inputs{Parent: parent, Instruction: c.instruction, Why: Why{FileNames: files(c.inputs)}}
		if got := x.Explain("here", in).String(); !strings.Contains(got, c.want) {
			t.Errorf("Explain(%q) = %q, want %q", c.instruction, got, c.want)
		}
	}
}

// PreviousLayer is the layer last made at a place: on the same parent
// with the same instruction first, else on any parent.
func TestPreviousLayer(t *testing.T) {
	x, err := OpenIndex(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := FromKey("sha256:1"), FromKey("sha256:2")
	in := func(parent digest.Digest, instr string) *Inputs {
		return &Inputs{Parent: parent, Instruction: instr, Files: digest.FromString(instr)}
	}
	if got := x.PreviousLayer("here", in(p1, "COPY . /")); got != "" {
		t.Fatalf("empty index: %s", got)
	}
	put := func(i *Inputs, diffID digest.Digest) {
		t.Helper()
		if err := x.Put(i.Key(), "here", i, &Record{Layer: &layer.Descriptor{Digest: diffID, DiffID: diffID}}); err != nil {
			t.Fatal(err)
		}
	}
	a, b := digest.FromString("a"), digest.FromString("b")
	put(in(p1, "COPY . /"), a)
	put(in(p2, "RUN make"), b)
	if got := x.PreviousLayer("here", in(p1, "COPY . /")); got != a {
		t.Errorf("same parent and instruction: %s, want %s", got, a)
	}
	if got := x.PreviousLayer("here", in(FromKey("sha256:3"), "COPY . /")); got != b {
		t.Errorf("another parent: %s, want the last made there, %s", got, b)
	}
	if got := x.PreviousLayer("elsewhere", in(p1, "COPY . /")); got != "" {
		t.Errorf("another place: %s", got)
	}
}
