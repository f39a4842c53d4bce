package gc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/snapshot"
	"github.com/minibuild/minibuild/store"
)

// world is a root with images, cache records and fake extracted layers,
// written through a Store that is closed afterwards (its own write lease
// released), so the collector sees only what a test adds.
type world struct {
	t    *testing.T
	root string
	s    *Stores
}

func newWorld(t *testing.T) *world {
	root := t.TempDir()
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	return &world{t: t, root: root, s: s}
}

// layer is a random layer of n bytes.
func (w *world) layer(n int64) v1.Layer {
	l, err := random.Layer(n, "application/vnd.oci.image.layer.v1.tar+gzip")
	if err != nil {
		w.t.Fatal(err)
	}
	return l
}

// image stores an image of these layers, tagged if tag != "", extracts
// its layers (fake dirs), and returns its manifest digest.
func (w *world) image(tag string, layers ...v1.Layer) digest.Digest {
	w.t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		w.t.Fatal(err)
	}
	h, err := w.s.Store.WriteImage(img)
	if err != nil {
		w.t.Fatal(err)
	}
	if tag != "" {
		if err := w.s.Store.Tag(tag, h); err != nil {
			w.t.Fatal(err)
		}
	}
	for _, l := range layers {
		w.extract(l)
	}
	w.done()
	return digest.Digest(h.String())
}

// extract makes a fake extracted dir for l, of its compressed size.
func (w *world) extract(l v1.Layer) string {
	did, _ := l.DiffID()
	size, _ := l.Size()
	id := snapshot.LayerDirID(digest.Digest(did.String()))
	dir := filepath.Join(w.root, "snapshots", "layers", id)
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "data"), make([]byte, size), 0o644); err != nil {
		w.t.Fatal(err)
	}
	return id
}

// record stores a cache record for l (which must be in the store).
func (w *world) record(name string, l v1.Layer, used time.Time) digest.Digest {
	w.t.Helper()
	d, _ := l.Digest()
	did, _ := l.DiffID()
	size, _ := l.Size()
	in := &cache.Inputs{Parent: digest.FromString("parent"), Instruction: "RUN " + name}
	key := in.Key()
	r := &cache.Record{Layer: &layer.Descriptor{Digest: digest.Digest(d.String()), DiffID: digest.Digest(did.String()), Size: size}}
	if err := w.s.Cache.Put(key, name, in, r); err != nil {
		w.t.Fatal(err)
	}
	p := filepath.Join(w.root, "cache", "records", key.Encoded())
	if err := os.Chtimes(p, used, used); err != nil {
		w.t.Fatal(err)
	}
	return key
}

// blob stores a layer's blob alone (as a build does before its record).
func (w *world) blob(l v1.Layer) digest.Digest {
	rc, _ := l.Compressed()
	defer rc.Close()
	d, _ := l.Digest()
	if err := w.s.Store.PutBlob(rc, digest.Digest(d.String())); err != nil {
		w.t.Fatal(err)
	}
	w.done()
	return digest.Digest(d.String())
}

// done releases the writer's own lease, as a finished process would.
func (w *world) done() {
	if err := w.s.Store.Close(); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) has(l v1.Layer) bool {
	d, _ := l.Digest()
	return w.s.Store.HasBlob(digest.Digest(d.String()))
}

func (w *world) extracted(l v1.Layer) bool {
	did, _ := l.DiffID()
	_, err := os.Stat(filepath.Join(w.root, "snapshots", "layers", snapshot.LayerDirID(digest.Digest(did.String()))))
	return err == nil
}

func (w *world) collect(p Policy) Freed {
	w.t.Helper()
	f, err := Collect(w.s, p, false)
	if err != nil {
		w.t.Fatal(err)
	}
	return f
}

func size(l v1.Layer) int64 { n, _ := l.Size(); return n }

func TestMarkAndSweep(t *testing.T) {
	w := newWorld(t)
	base, app, old, stray := w.layer(3000), w.layer(2000), w.layer(2500), w.layer(1000)
	w.image("app:1", base, app)
	dangling := w.image("", base, old)
	w.record("app", app, time.Now())
	oldKey := w.record("old", old, time.Now())
	w.blob(stray) // an orphan: no image, no record
	w.extract(stray)

	dry, err := Collect(w.s, Policy{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if !w.has(old) || !w.has(stray) {
		t.Fatal("a dry run removed something")
	}
	f := w.collect(Policy{})
	if f.Total() != dry.Total() || f.Blobs != dry.Blobs {
		t.Errorf("dry run said %+v, the collection did %+v", dry, f)
	}
	if len(f.Images) != 1 || f.Images[0] != dangling {
		t.Errorf("removed images %v, want the dangling %s", f.Images, dangling)
	}
	if w.has(old) || w.has(stray) || w.extracted(old) || w.extracted(stray) {
		t.Error("an unreachable blob or extracted layer survived")
	}
	if !w.has(base) || !w.has(app) || !w.extracted(base) || !w.extracted(app) {
		t.Error("the tagged image lost a blob or an extracted layer")
	}
	if f.Records != 1 {
		t.Errorf("removed %d records, want the dangling one", f.Records)
	}
	if _, err := w.s.Cache.Get(oldKey); !errors.Is(err, cache.ErrMiss) {
		t.Errorf("the dangling record survived: %v", err)
	}
	if want := size(old) + size(stray); f.BlobBytes != want {
		t.Errorf("freed %d layer bytes, want %d", f.BlobBytes, want)
	}
	if _, err := w.s.Store.Image("app:1"); err != nil {
		t.Fatal(err)
	}
	// A second collection finds nothing more.
	if again := w.collect(Policy{}); again.Total() != 0 {
		t.Errorf("second collection freed %+v", again)
	}
}

func TestLeases(t *testing.T) {
	w := newWorld(t)
	held, young, free := w.layer(1000), w.layer(1000), w.layer(1000)
	w.blob(held)
	w.blob(free)
	old := time.Now().Add(-time.Hour)
	for _, l := range []v1.Layer{held, free} {
		d, _ := l.Digest()
		os.Chtimes(w.s.Store.BlobPath(digest.Digest(d.String())), old, old)
	}

	// A live lease: another process's, as far as flock is concerned.
	other, _ := store.Open(w.root)
	lease, err := other.Lease(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hd, _ := held.Digest()
	if err := lease.Add(digest.Digest(hd.String())); err != nil {
		t.Fatal(err)
	}
	w.blob(young) // younger than the lease: held too
	w.collect(Policy{})
	if !w.has(held) || !w.has(young) {
		t.Error("a live lease did not protect what it holds")
	}
	if w.has(free) {
		t.Error("an unleased orphan survived")
	}

	if err := lease.Release(); err != nil {
		t.Fatal(err)
	}
	w.collect(Policy{})
	if w.has(held) || w.has(young) {
		t.Error("a released lease still protects")
	}
}

func TestDeadLeaseIsIgnoredAndRemoved(t *testing.T) {
	w := newWorld(t)
	l := w.layer(1000)
	d := w.blob(l)
	dir := filepath.Join(w.root, "leases")
	os.MkdirAll(dir, 0o755)
	// The file a killed build leaves: nobody holds its flock.
	dead := filepath.Join(dir, "deadbeef.lease")
	content := "minibuild-lease/v1 999999 1\n" + d.String() + "\n"
	if err := os.WriteFile(dead, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	w.collect(Policy{})
	if w.has(l) {
		t.Error("a dead lease protected a blob")
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Error("the dead lease file is still there")
	}
}

// A crash after the records went and before the blobs: the store works
// and the next collection finishes.
func TestCrashBetweenRecordsAndBlobs(t *testing.T) {
	w := newWorld(t)
	base, old := w.layer(2000), w.layer(2000)
	w.image("keep:1", base)
	md := w.image("", base, old)
	key := w.record("old", old, time.Now())
	err := w.s.Store.Collect(func(c *store.Collection) error {
		if err := c.RemoveImages(md); err != nil {
			return err
		}
		return w.s.Cache.Remove(key)
		// ... and the process dies here.
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.s.Store.Image("keep:1"); err != nil {
		t.Fatalf("store unusable after the crash: %v", err)
	}
	if imgs, _ := w.s.Store.Images(); len(imgs) != 1 {
		t.Errorf("images after the crash: %v", imgs)
	}
	if !w.has(old) {
		t.Fatal("test setup: the blob should still be there")
	}
	f := w.collect(Policy{})
	if w.has(old) || w.extracted(old) || f.Blobs < 3 {
		t.Errorf("the next collection did not finish: %+v", f)
	}
	if !w.has(base) {
		t.Error("the next collection took a tagged layer")
	}
}

func TestKeepStorageRemovesLeastRecentlyUsedFirst(t *testing.T) {
	w := newWorld(t)
	base := w.layer(1000)
	w.image("app:1", base)
	var layers []v1.Layer
	for i := 0; i < 4; i++ {
		l := w.layer(10000)
		w.blob(l)
		w.extract(l)
		w.record(strings.Repeat("x", i+1), l, time.Now().Add(-time.Duration(4-i)*time.Hour))
		layers = append(layers, l)
	}
	dry, _ := Collect(w.s, Policy{KeepStorage: 1 << 40}, true)
	limit := dry.Before - 2*(size(layers[0])*2) + 100 // room for two fewer layers (blob + extracted)
	f := w.collect(Policy{KeepStorage: limit})
	if f.After > limit {
		t.Errorf("store %d after keep-storage %d", f.After, limit)
	}
	if w.has(layers[0]) || w.has(layers[1]) || !w.has(layers[2]) || !w.has(layers[3]) {
		t.Errorf("keep-storage did not remove the two least recently used: %v %v %v %v",
			w.has(layers[0]), w.has(layers[1]), w.has(layers[2]), w.has(layers[3]))
	}
	if !w.has(base) {
		t.Error("keep-storage removed a tagged layer")
	}
}

func TestUntilKeepsRecentRecords(t *testing.T) {
	w := newWorld(t)
	recent, stale := w.layer(1000), w.layer(1000)
	w.blob(recent)
	w.blob(stale)
	w.record("recent", recent, time.Now())
	w.record("stale", stale, time.Now().Add(-48*time.Hour))
	w.collect(Policy{Until: 24 * time.Hour})
	if !w.has(recent) || w.has(stale) {
		t.Errorf("until=24h: recent kept %v, stale kept %v", w.has(recent), w.has(stale))
	}
	w.collect(Policy{All: true})
	if w.has(recent) {
		t.Error("--all kept a record")
	}
}

func TestDiskUsageCountsSharedLayersOnce(t *testing.T) {
	w := newWorld(t)
	base, step1, step2 := w.layer(5000), w.layer(3000), w.layer(2000)
	a, b := w.layer(1000), w.layer(1500)
	w.image("a:1", base, step1, step2, a)
	w.image("b:1", base, step1, step2, b)
	u, err := DiskUsage(w.s, true)
	if err != nil {
		t.Fatal(err)
	}
	shared := size(base) + size(step1) + size(step2)
	for _, im := range u.Images {
		if im.Shared != shared {
			t.Errorf("image %v shares %d bytes, want %d (the three common layers)", im.Tags, im.Shared, shared)
		}
		if im.Unique+im.Shared != im.Size {
			t.Errorf("image %v: unique %d + shared %d != size %d", im.Tags, im.Unique, im.Shared, im.Size)
		}
	}
	var layerBlobs KindUsage
	for _, k := range u.Kinds {
		if k.Kind == KindLayerBlobs {
			layerBlobs = k
		}
	}
	if want := shared + size(a) + size(b); layerBlobs.Size != want || layerBlobs.Count != 5 {
		t.Errorf("layer blobs: %d bytes in %d, want %d in 5 (shared ones once)", layerBlobs.Size, layerBlobs.Count, want)
	}
	if layerBlobs.Reclaimable != 0 {
		t.Errorf("reclaimable %d with every image tagged", layerBlobs.Reclaimable)
	}
	for _, l := range u.Layers {
		bd, _ := base.Digest()
		if l.Digest.String() == bd.String() && len(l.Images) != 2 {
			t.Errorf("base layer used by %v, want both images", l.Images)
		}
	}
}

func TestRemoveImages(t *testing.T) {
	w := newWorld(t)
	base, top := w.layer(2000), w.layer(1000)
	parent := w.image("parent:1", base)
	w.image("child:1", base, top)
	id := func(md digest.Digest) string {
		img, err := w.s.Store.Image(md.String())
		if err != nil {
			t.Fatal(err)
		}
		h, _ := img.ConfigName()
		return h.Hex[:12]
	}
	pid := id(parent)

	rs, _, err := RemoveImages(w.s, []string{pid}, false)
	if err != nil || rs[0].Err == nil || !errors.Is(rs[0].Err, ErrInUse) {
		t.Fatalf("rmi of a tagged id: %+v %v, want a refusal", rs, err)
	}
	rs, _, _ = RemoveImages(w.s, []string{"parent:1"}, false)
	if rs[0].Err != nil || len(rs[0].Untagged) != 1 || len(rs[0].Deleted) != 1 {
		t.Fatalf("rmi parent:1: %+v", rs[0])
	}
	if !w.has(base) {
		t.Fatal("rmi freed a layer the child needs")
	}
	rs, f, _ := RemoveImages(w.s, []string{"child:1"}, false)
	if rs[0].Err != nil || !strings.Contains(rs[0].Untagged[0], "child:1") {
		t.Fatalf("rmi child:1: %+v", rs[0])
	}
	if w.has(base) || w.has(top) || f.Blobs < 4 {
		t.Errorf("rmi of the last image left its blobs: %+v", f)
	}
	if rs, _, _ := RemoveImages(w.s, []string{"nope:1"}, false); !errors.Is(rs[0].Err, store.ErrNotFound) {
		t.Errorf("rmi nope:1: %v", rs[0].Err)
	}
}

func TestRemoveImageWithChildNeedsForce(t *testing.T) {
	w := newWorld(t)
	base, top := w.layer(2000), w.layer(1000)
	parent := w.image("", base)
	w.image("child:1", base, top)
	prefix := func() string {
		img, _ := w.s.Store.Image(parent.String())
		h, _ := img.ConfigName()
		return h.Hex[:8]
	}()
	rs, _, _ := RemoveImages(w.s, []string{prefix}, false)
	if !errors.Is(rs[0].Err, ErrInUse) {
		t.Fatalf("rmi of a parent by id prefix: %v, want a refusal", rs[0].Err)
	}
	rs, _, _ = RemoveImages(w.s, []string{prefix}, true)
	if rs[0].Err != nil || len(rs[0].Deleted) != 1 {
		t.Fatalf("rmi -f: %+v", rs[0])
	}
	if !w.has(base) {
		t.Error("removing the parent took the child's layer")
	}
}

func TestParseSizeAndCap(t *testing.T) {
	for in, want := range map[string]int64{"5GB": 5 << 30, "500MB": 500 << 20, "1.5KiB": 1536, "100": 100, "2g": 2 << 30} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := ParseSize("lots"); err == nil {
		t.Error("ParseSize(lots) succeeded")
	}
	if c := DefaultCap(t.TempDir()); c <= 0 || c > 20<<30 {
		t.Errorf("DefaultCap = %d", c)
	}
	if c, err := Cap(t.TempDir(), "off"); err != nil || c != 0 {
		t.Errorf("Cap(off) = %d, %v", c, err)
	}
}
