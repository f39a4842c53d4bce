package store

import (
	"encoding/json"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// step is one history entry of a test image: an instruction and the
// layer's content, "" for a metadata-only step.
type step struct{ instr, content string }

// historyImage builds an image whose history is steps: a layer per step
// with content, and an empty_layer entry per step without.
func historyImage(t *testing.T, steps ...step) v1.Image {
	t.Helper()
	img := empty.Image
	var hist []v1.History
	for _, s := range steps {
		h := v1.History{CreatedBy: s.instr, EmptyLayer: s.content == ""}
		if s.content != "" {
			var err error
			img, err = mutate.AppendLayers(img, static.NewLayer([]byte(s.content), types.OCILayer))
			if err != nil {
				t.Fatal(err)
			}
		}
		hist = append(hist, h)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.History = hist
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// pyapp is the classic project's chain: base, dependencies, then app.py.
func pyapp(app string) []step {
	return []step{
		{"COPY rootfs/ /", "busybox"},
		{`CMD ["sh"]`, ""},
		{"ENV PYTHONUNBUFFERED=1", ""},
		{"WORKDIR /app", "app dir"},
		{"RUN sh pip-install.sh", "site-packages"},
		{"COPY app.py .", app},
		{"EXPOSE 8000", ""},
		{`CMD ["python", "app.py"]`, ""},
	}
}

func TestCompareHistory(t *testing.T) {
	base := pyapp("print(1)")
	edited := pyapp("print(2)")
	appB := append(append([]step{}, base[:5]...), step{"COPY worker.py .", "worker"}, step{`CMD ["python", "worker.py"]`, ""})
	tests := []struct {
		name    string
		a, b    []step
		shared  int
		div     Relation // "" = identical
		lines   []string // each must appear in Lines, in order
		sharedB int64
	}{
		{
			name: "identical", a: base, b: base, shared: 8,
			lines:   []string{"steps 1–8 shared (same instruction, same layer)", "the images are the same step by step"},
			sharedB: int64(len("busybox") + len("app dir") + len("site-packages") + len("print(1)")),
		},
		{
			name: "edited app.py", a: base, b: edited, shared: 5, div: RelContent,
			lines: []string{
				"steps 1–5 shared (same instruction, same layer)",
				"step 6: COPY app.py . — same instruction, different content: layer sha256:",
				"steps 7–8: same instruction, no layer",
			},
			sharedB: int64(len("busybox") + len("app dir") + len("site-packages")),
		},
		{
			name: "another app on the same first steps", a: base, b: appB, shared: 5, div: RelInstruction,
			lines: []string{
				"steps 1–5 shared",
				"step 6: instruction differs: A `COPY app.py .` | B `COPY worker.py .`",
				"step 7: instruction differs",
				"A has 1 more step: `CMD [\"python\", \"app.py\"]`",
			},
		},
		{
			name: "B extends A", a: base[:5], b: base, shared: 5, div: RelOnlyB,
			lines: []string{"steps 1–5 shared", "B has 3 more steps: `COPY app.py .`, `EXPOSE 8000`, `CMD [\"python\", \"app.py\"]`"},
		},
		{
			name: "A is longer by many", a: base, b: base[:1], shared: 1, div: RelOnlyA,
			lines: []string{"step 1 shared", "A has 7 more steps: `CMD [\"sh\"]`, `ENV PYTHONUNBUFFERED=1`, `WORKDIR /app`, …"},
		},
		{
			name: "different bases", a: base, b: append([]step{{"COPY rootfs/ /", "alpine"}}, base[1:]...), shared: 0, div: RelContent,
			lines: []string{"step 1: COPY rootfs/ / — same instruction, different content", "steps 2–8: same instruction, same layer"},
		},
		{
			name: "a metadata step became a layer", a: []step{{"RUN true", ""}}, b: []step{{"RUN true", "x"}}, div: RelContent,
			lines: []string{"step 1: RUN true — same instruction, different content: layer none vs sha256:"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := CompareHistory(historyImage(t, tt.a...), historyImage(t, tt.b...))
			if err != nil {
				t.Fatal(err)
			}
			if c.Shared != tt.shared {
				t.Errorf("Shared = %d, want %d", c.Shared, tt.shared)
			}
			if tt.sharedB != 0 && c.SharedBytes != tt.sharedB {
				t.Errorf("SharedBytes = %d, want %d", c.SharedBytes, tt.sharedB)
			}
			switch {
			case tt.div == "" && c.Divergence != nil:
				t.Errorf("divergence %+v, want none", *c.Divergence)
			case tt.div != "" && (c.Divergence == nil || c.Divergence.Relation != tt.div || c.Divergence.Step != tt.shared+1):
				t.Errorf("divergence %+v, want %s at step %d", c.Divergence, tt.div, tt.shared+1)
			}
			text := strings.Join(c.Lines(), "\n")
			at := 0
			for _, want := range tt.lines {
				i := strings.Index(text[at:], want)
				if i < 0 {
					t.Fatalf("lines lack %q after offset %d:\n%s", want, at, text)
				}
				at += i + len(want)
			}
		})
	}
}

// The steps pair history with layers: a layer's digest, diff id and size
// are the manifest's and the config's, and metadata steps have none.
func TestCompareHistoryLayers(t *testing.T) {
	a := historyImage(t, pyapp("v1")...)
	b := historyImage(t, pyapp("v2")...)
	c, err := CompareHistory(a, b)
	if err != nil {
		t.Fatal(err)
	}
	m, err := a.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := a.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var got []LayerRef
	for _, s := range c.Steps {
		if s.A.Layer != nil {
			got = append(got, *s.A.Layer)
		}
	}
	if len(got) != len(m.Layers) {
		t.Fatalf("%d steps with a layer, the manifest has %d", len(got), len(m.Layers))
	}
	for i, l := range got {
		if l.Digest != m.Layers[i].Digest || l.Size != m.Layers[i].Size || l.DiffID != cf.RootFS.DiffIDs[i] {
			t.Errorf("layer %d = %+v, want %v %d %v", i, l, m.Layers[i].Digest, m.Layers[i].Size, cf.RootFS.DiffIDs[i])
		}
	}
	d := c.Divergence
	if d == nil || d.A.Layer.Digest == d.B.Layer.Digest {
		t.Fatalf("divergence %+v: want two different layers", d)
	}
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"shared":5`, `"relation":"content"`, `"digest":"sha256:`, `"diff_id":"sha256:`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("json lacks %s: %s", want, data)
		}
	}
}

// An image whose history does not account for its layers is compared as
// one unnamed step per layer, never with instructions paired to the wrong
// layers.
func TestCompareHistoryWithoutHistory(t *testing.T) {
	bare, err := mutate.AppendLayers(empty.Image, static.NewLayer([]byte("busybox"), types.OCILayer), static.NewLayer([]byte("x"), types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	withHistory := historyImage(t, step{"COPY rootfs/ /", "busybox"}, step{"COPY x /", "x"})
	c, err := CompareHistory(bare, withHistory)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Steps) != 2 || c.Steps[0].A.Instruction != "" || c.Shared != 0 || c.Divergence.Relation != RelInstruction {
		t.Fatalf("comparison %+v", c)
	}
	if got := c.Lines()[0]; got != "step 1: instruction differs: A `(no history)` | B `COPY rootfs/ /`" {
		t.Errorf("line %q", got)
	}
	c, err = CompareHistory(bare, bare)
	if err != nil || c.Shared != 2 {
		t.Fatalf("bare vs bare: %+v, %v", c, err)
	}
}
