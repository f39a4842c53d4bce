package snapshot

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/snapshot/snapshottest"
)

// benchChain is four layers of 30 dirs × 20 files each, the upper ones
// rewriting, removing and hiding some of the lower ones.
func benchChain(b *testing.B) (*Snapshotter, []Layer) {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	blobs := &snapshottest.Blobs{}
	var chain []Layer
	for l := range 4 {
		var es []E
		for d := range 30 {
			dir := fmt.Sprintf("d%02d/", d)
			es = append(es, E{Name: dir, Mode: 0o755})
			if l > 0 && d%7 == l {
				es = append(es, E{Name: dir + ".wh..wh..opq"})
			}
			for f := range 20 {
				name := fmt.Sprintf("%sf%02d", dir, f)
				switch {
				case l > 0 && f%5 == l:
					es = append(es, E{Name: fmt.Sprintf("%s.wh.f%02d", dir, f)})
				case l == 0 || f%3 == l:
					es = append(es, E{Name: name, Mode: 0o644, Body: name})
				}
			}
		}
		d, diffID, err := blobs.Add(snapshottest.Layer(b, es...))
		if err != nil {
			b.Fatal(err)
		}
		chain = append(chain, Layer{Digest: d, DiffID: diffID})
	}
	sn, err := New(b.TempDir(), blobs)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := sn.ensure(context.Background(), chain); err != nil { // extract outside the timing
		b.Fatal(err)
	}
	return sn, chain
}

func BenchmarkStat(b *testing.B) {
	sn, chain := benchChain(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := sn.Stat(ctx, chain, "/d13/f10"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkView(b *testing.B) {
	sn, chain := benchChain(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := sn.View(ctx, chain); err != nil {
			b.Fatal(err)
		}
		if _, err := sn.PruneViews(0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPrepareCopyAndDiff(b *testing.B) {
	sn, chain := benchChain(b)
	sn.SetKind(KindCopy)
	ctx := context.Background()
	for b.Loop() {
		s, err := sn.Prepare(ctx, chain)
		if err != nil {
			b.Fatal(err)
		}
		os.WriteFile(s.writable()+"/d03/new", []byte("x"), 0o644)
		os.Remove(s.writable() + "/d04/f00")
		if err := s.Diff(layer.NewWriter(discard{}, layer.Options{})); err != nil {
			b.Fatal(err)
		}
		s.Release()
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
