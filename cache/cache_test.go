package cache

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestKeyIsContentOnly(t *testing.T) {
	parent := BaseKey("sha256:aaaa")
	a := digest.FromString("app.py v1")
	b := digest.FromString("app.py v2")
	base := Key(parent, "COPY app.py .", a)

	cases := []struct {
		name string
		key  digest.Digest
		same bool
	}{
		{"same inputs give the same key", Key(parent, "COPY app.py .", a), true},
		{"changed content", Key(parent, "COPY app.py .", b), false},
		{"changed instruction", Key(parent, "COPY app.py ./", a), false},
		{"changed parent", Key(BaseKey("scratch"), "COPY app.py .", a), false},
		{"extra input", Key(parent, "COPY app.py .", a, a), false},
		{"fields do not run together", Key(parent, "COPY app.py", digest.Digest(" ."+string(a))), false},
	}
	for _, c := range cases {
		if got := c.key == base; got != c.same {
			t.Errorf("%s: equal=%v, want %v", c.name, got, c.same)
		}
	}
	if base.Algorithm() != digest.SHA256 || base.Validate() != nil {
		t.Fatalf("key %q is not a sha256 digest", base)
	}
}

func TestStringsDigestUnambiguous(t *testing.T) {
	if StringsDigest([]string{"a", "bc"}) == StringsDigest([]string{"ab", "c"}) {
		t.Fatal("different lists gave the same digest")
	}
	if StringsDigest(nil) != StringsDigest([]string{}) {
		t.Fatal("empty lists differ")
	}
}

func TestIndexRoundTripAndExplain(t *testing.T) {
	x, err := OpenIndex(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	parent := BaseKey("scratch")
	k1 := Key(parent, "COPY . /", digest.FromString("1"))
	if _, err := x.Get(k1); !errors.Is(err, ErrMiss) {
		t.Fatalf("empty index: got %v, want ErrMiss", err)
	}
	if got := x.Explain(parent, "here", "COPY . /", nil); got != "not built before" {
		t.Fatalf("explain on empty index: %q", got)
	}
	rec := &Record{Layer: &Layer{Digest: digest.FromString("layer"), Size: 3}}
	inputs := map[string]string{"app.py": "sha256:1", "util.py": "sha256:2"}
	if err := x.Put(k1, parent, "here", "COPY . /", inputs, rec); err != nil {
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
	if got := x.Explain(parent, "another project", "COPY . /srv", nil); got != "not built before" {
		t.Errorf("a step elsewhere is explained by this project's history: %q", got)
	}
	for _, c := range cases {
		if got := x.Explain(parent, "here", c.instruction, c.inputs); !strings.Contains(got, c.want) {
			t.Errorf("Explain(%q) = %q, want %q", c.instruction, got, c.want)
		}
	}
}
