package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
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

// poolTar is an uncompressed layer of 1,000 files of 10 KB in 10 dirs.
func poolTar(b *testing.B) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := bytes.Repeat([]byte("0123456789"), 1024)
	for i := range 1000 {
		if i%100 == 0 {
			tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%d/", i/100), Typeflag: tar.TypeDir, Mode: 0o755, ModTime: snapshottest.Epoch})
		}
		body[0] = byte(i)
		body[1] = byte(i >> 8)
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%d/f%03d", i/100, i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: snapshottest.Epoch})
		tw.Write(body)
	}
	tw.Close()
	return buf.Bytes()
}

// benchExtract extracts poolTar into a fresh dir per iteration: pooled
// or not, with the pool emptied first (every file new) or kept (every
// file a link). ns/file is the per-file cost.
func benchExtract(b *testing.B, pooled, warm bool) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	data := poolTar(b)
	sn, err := New(b.TempDir(), &snapshottest.Blobs{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	run := func(i int) {
		root := filepath.Join(sn.tmpDir, fmt.Sprint(i), "l")
		os.MkdirAll(root, 0o755)
		x := &extractor{}
		if pooled {
			x.pool = sn.newFilePool(root)
		}
		if err := x.run(ctx, tar.NewReader(bytes.NewReader(data)), root); err != nil {
			b.Fatal(err)
		}
	}
	if warm {
		run(-1)
	}
	i := 0
	for b.Loop() {
		if pooled && !warm {
			b.StopTimer()
			os.RemoveAll(sn.poolDir())
			os.Mkdir(sn.poolDir(), 0o700)
			b.StartTimer()
		}
		run(i)
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/file")
}

func BenchmarkExtractUnpooled(b *testing.B)   { benchExtract(b, false, false) }
func BenchmarkExtractPoolNew(b *testing.B)    { benchExtract(b, true, false) }
func BenchmarkExtractPoolLinked(b *testing.B) { benchExtract(b, true, true) }
