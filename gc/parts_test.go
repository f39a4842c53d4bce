package gc

import (
	"archive/tar"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/layer"
)

// partsLayer writes 50 files through the store's LayerWriter (file 0
// ends in edit) and records it in the cache under name.
func (w *world) partsLayer(name, edit string) layer.Descriptor {
	w.t.Helper()
	lw, err := w.s.Store.NewLayerWriter()
	if err != nil {
		w.t.Fatal(err)
	}
	defer lw.Abort()
	lwr := layer.NewWriter(lw, layer.Options{Pool: lw.Pool()})
	for i := 0; i < 50; i++ {
		body := strings.Repeat(fmt.Sprintf("line of file %d\n", i), 300)
		if i == 0 {
			body += edit
		}
		h := &tar.Header{Name: fmt.Sprintf("f%02d", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}
		if err := lwr.Add(h, strings.NewReader(body)); err != nil {
			w.t.Fatal(err)
		}
	}
	d, err := lwr.Close()
	if err == nil {
		err = lw.Commit(d)
	}
	if err != nil {
		w.t.Fatal(err)
	}
	in := &cache.Inputs{Parent: digest.FromString("parent"), Instruction: "COPY " + name}
	if err := w.s.Cache.Put(in.Key(), name, in, &cache.Record{Layer: &d}); err != nil {
		w.t.Fatal(err)
	}
	w.done()
	return d
}

func TestPartsListHoldsItsSegments(t *testing.T) {
	w := newWorld(t)
	whole := w.partsLayer("v1", "")
	parts := w.partsLayer("v2", "edited\n")
	if _, err := os.Stat(filepath.Join(w.root, "parts", "sha256", parts.Digest.Encoded())); err != nil {
		t.Fatalf("v2 is not stored as parts: %v", err)
	}
	// Drop v1's record: its blob stays, as v2's parts list names it.
	v1 := &cache.Inputs{Parent: digest.FromString("parent"), Instruction: "COPY v1"}
	if err := w.s.Cache.Remove(v1.Key()); err != nil {
		t.Fatal(err)
	}
	w.collect(Policy{Until: time.Hour}) // keeps the recent record of v2
	if !w.s.Store.HasBlob(whole.Digest) || !w.s.Store.HasBlob(parts.Digest) {
		t.Fatal("a segment of a kept parts list was collected")
	}
	u, err := DiskUsage(w.s, false)
	if err != nil {
		t.Fatal(err)
	}
	meta := dirBytes(t, filepath.Join(w.root, "members")) + dirBytes(t, filepath.Join(w.root, "parts"))
	for _, k := range u.Kinds {
		if k.Kind == KindLayerBlobs && (k.Size < whole.Size+meta || k.Size > whole.Size+whole.Size/4+meta) {
			t.Errorf("df counts %d bytes of layer blobs for %d stored once, a small pack and %d of indexes and lists", k.Size, whole.Size, meta)
		}
	}
	// Nothing names v2 any more: the parts list, its pack and v1's blob go.
	w.collect(Policy{All: true})
	left, _ := os.ReadDir(filepath.Join(w.root, "blobs", "sha256"))
	if w.s.Store.HasBlob(parts.Digest) || w.s.Store.HasBlob(whole.Digest) || len(left) != 0 {
		t.Fatalf("collected nothing of a parts list nobody names: %d blobs left", len(left))
	}
}

func dirBytes(t *testing.T, dir string) int64 {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		} else if e.IsDir() {
			n += dirBytes(t, filepath.Join(dir, e.Name()))
		}
	}
	return n
}
