package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/snapshot/snapshottest"
)

func ino(t *testing.T, p string) uint64 {
	t.Helper()
	return statT(t, p).Ino
}

// poolNames lists the pool's files: path → nlink.
func poolNames(t *testing.T, sn *Snapshotter) map[string]uint64 {
	t.Helper()
	files, err := sn.poolFiles()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]uint64{}
	for _, f := range files {
		m[f.path] = f.nlink
	}
	return m
}

// The same file at the same path of two layers is one inode; two equal
// files at two paths of one layer (or of two layers) are two: a tree
// never shows one pooled inode twice. A tar hard link group keeps its own
// inode, linked only to itself.
func TestPoolSharesOnlyOnePath(t *testing.T) {
	requireRoot(t)
	var blobs snapshottest.Blobs
	a := addLayer(t, &blobs,
		E{Name: "src/", Mode: 0o755},
		E{Name: "src/a", Mode: 0o644, Body: "same"},
		E{Name: "src/b", Mode: 0o644, Body: "same"},
		E{Name: "src/h1", Mode: 0o644, Body: "linked"},
		E{Name: "src/h2", Link: "src/h1"},
	)
	b := addLayer(t, &blobs,
		E{Name: "src/", Mode: 0o755},
		E{Name: "src/a", Mode: 0o644, Body: "same"},
		E{Name: "src/c", Mode: 0o644, Body: "same"},
		E{Name: "src/d", Mode: 0o600, Body: "same"},
		E{Name: "src/h1", Mode: 0o644, Body: "linked"},
	)
	sn, err := New(t.TempDir(), &blobs)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := sn.ensure(context.Background(), []Layer{a, b})
	if err != nil {
		t.Fatal(err)
	}
	la, lb := filepath.Join(sn.layersDir, ids[0]), filepath.Join(sn.layersDir, ids[1])
	if ino(t, la+"/src/a") != ino(t, lb+"/src/a") {
		t.Error("src/a of two layers is not one pooled inode")
	}
	distinct := []string{la + "/src/a", la + "/src/b", lb + "/src/c", lb + "/src/d", la + "/src/h1"}
	seen := map[uint64]string{}
	for _, p := range distinct {
		if q, ok := seen[ino(t, p)]; ok {
			t.Errorf("%s and %s share an inode", p, q)
		}
		seen[ino(t, p)] = p
	}
	if ino(t, la+"/src/h1") != ino(t, la+"/src/h2") || statT(t, la+"/src/h1").Nlink != 2 {
		t.Errorf("the tar's hard links h1, h2 are not one inode of two names (nlink %d)", statT(t, la+"/src/h1").Nlink)
	}
	if st := statT(t, lb+"/src/h1"); st.Nlink != 2 || st.Ino == ino(t, la+"/src/h1") {
		t.Errorf("h1 of layer b: nlink %d, shared with a's hard-link group: %v", st.Nlink, st.Ino == ino(t, la+"/src/h1"))
	}
	// Pool: a (2 layers), b, c, d, and b's h1: 5 files.
	if names := poolNames(t, sn); len(names) != 5 {
		t.Errorf("pool holds %d files, want 5: %v", len(names), names)
	}
	if st := statT(t, la+"/src/a"); st.Mode&0o7777 != 0o644 || st.Mtim.Sec != snapshottest.Epoch.Unix() {
		t.Errorf("pooled src/a: mode %o mtime %d", st.Mode&0o7777, st.Mtim.Sec)
	}
}

// A layer written through Ingest links the files an extracted layer
// pooled: a one-file change writes one file.
func TestPoolIngestLinks(t *testing.T) {
	requireRoot(t)
	var blobs snapshottest.Blobs
	var entries []E
	for i := range 50 {
		entries = append(entries, E{Name: fmt.Sprintf("f%02d", i), Mode: 0o644, Body: strings.Repeat("x", i)})
	}
	base := addLayer(t, &blobs, entries...)
	sn, err := New(t.TempDir(), &blobs)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ids, err := sn.ensure(ctx, []Layer{base})
	if err != nil {
		t.Fatal(err)
	}
	in, err := sn.NewIngest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var blob bytes.Buffer
	w := layer.NewWriter(&blob, layer.Options{Tee: in})
	for _, e := range entries {
		if e.Name == "f07" {
			e.Body = "changed"
		}
		hdr := &tar.Header{Name: e.Name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(e.Body)), ModTime: snapshottest.Epoch}
		if err := w.Add(hdr, strings.NewReader(e.Body)); err != nil {
			t.Fatal(err)
		}
	}
	desc, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Commit(ctx, desc.DiffID); err != nil {
		t.Fatal(err)
	}
	l2 := filepath.Join(sn.layersDir, LayerDirID(desc.DiffID))
	l1 := filepath.Join(sn.layersDir, ids[0])
	same := 0
	for _, e := range entries {
		if ino(t, filepath.Join(l1, e.Name)) == ino(t, filepath.Join(l2, e.Name)) {
			same++
		}
	}
	if same != 49 {
		t.Errorf("%d of 50 files shared with the extracted layer, want 49", same)
	}
	if b, _ := os.ReadFile(filepath.Join(l2, "f07")); string(b) != "changed" {
		t.Errorf("f07 = %q", b)
	}
	if u, err := sn.PoolUsage(); err != nil || u.Files != 51 {
		t.Errorf("pool: %+v %v, want 51 files", u, err)
	}
}

// A failed extraction never pools a half-written file.
func TestPoolNeverHalfWritten(t *testing.T) {
	requireRoot(t)
	sn, err := New(t.TempDir(), &snapshottest.Blobs{})
	if err != nil {
		t.Fatal(err)
	}
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Name: "whole", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5})
	tw.Write([]byte("whole"))
	tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3 << 20})
	tw.Write(bytes.Repeat([]byte("b"), 1<<20))
	tw.Flush()
	data := tb.Bytes() // cut in the middle of big
	root := filepath.Join(t.TempDir(), "l")
	os.Mkdir(root, 0o755)
	x := &extractor{pool: sn.newFilePool(root)}
	if err := x.run(context.Background(), tar.NewReader(bytes.NewReader(data)), root); err == nil {
		t.Fatal("a truncated tar extracted without an error")
	}
	names := poolNames(t, sn)
	if len(names) != 1 {
		t.Fatalf("pool holds %v, want only the whole file", names)
	}
	for p := range names {
		if b, _ := os.ReadFile(p); string(b) != "whole" {
			t.Errorf("pooled file holds %q", b)
		}
	}
}

// inThread runs fn on an OS thread with its own mount namespace and cwd,
// which dies with it.
func inThread(t *testing.T, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with its namespace
		if err := unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_FS); err != nil {
			errc <- err
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// poolState is what must never change of a pooled inode.
func poolState(t *testing.T, p string) string {
	t.Helper()
	st := statT(t, p)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	cap, _ := getXattr(p, "user.x")
	return fmt.Sprintf("%q mode %o %d:%d mtime %d ctime %d.%d xattr %q", b, st.Mode, st.Uid, st.Gid, st.Mtim.Sec, st.Ctim.Sec, st.Ctim.Nsec, cap)
}

// writes are every way a RUN writes to an existing file.
func writes(root string) error {
	f := filepath.Join(root, "src/a")
	fh, err := os.OpenFile(f, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = fh.WriteString("more")
	fh.Close()
	for _, e := range []error{err, os.Chmod(filepath.Join(root, "src/b"), 0o600),
		os.Lchown(filepath.Join(root, "src/c"), 5, 5),
		os.Chtimes(filepath.Join(root, "src/d"), snapshottest.Epoch, snapshottest.Epoch),
		unix.Lsetxattr(filepath.Join(root, "src/e"), "user.x", []byte("1"), 0),
		os.Link(filepath.Join(root, "src/f"), filepath.Join(root, "src/f2")),
		os.Truncate(filepath.Join(root, "src/g"), 0)} {
		if e != nil {
			return e
		}
	}
	return nil
}

var poolEntries = []E{{Name: "src/", Mode: 0o755}, {Name: "src/a", Mode: 0o644, Body: "a"}, {Name: "src/b", Mode: 0o644, Body: "b"},
	{Name: "src/c", Mode: 0o644, Body: "c"}, {Name: "src/d", Mode: 0o644, Body: "d"}, {Name: "src/e", Mode: 0o644, Body: "e"},
	{Name: "src/f", Mode: 0o644, Body: "f"}, {Name: "src/g", Mode: 0o644, Body: "g"}}

func poolStates(t *testing.T, sn *Snapshotter) map[string]string {
	m := map[string]string{}
	for p := range poolNames(t, sn) {
		m[p] = poolState(t, p)
	}
	return m
}

func samePool(t *testing.T, sn *Snapshotter, before map[string]string) {
	t.Helper()
	after := poolStates(t, sn)
	for p, s := range before {
		if after[p] != s {
			t.Errorf("pooled %s changed:\n  before %s\n  after  %s", filepath.Base(p), s, after[p])
		}
	}
}

// Overlay copies a lower file up before any write: content, chmod, chown,
// utimes, setxattr, link and truncate through the rootfs leave the pooled
// inode as it was.
func TestPoolOverlayCopiesUp(t *testing.T) {
	requireRoot(t)
	var blobs snapshottest.Blobs
	l := addLayer(t, &blobs, poolEntries...)
	sn, err := New(t.TempDir(), &blobs)
	if err != nil {
		t.Fatal(err)
	}
	if err := sn.mountTestOverlay(); err != nil {
		t.Skipf("no overlay here: %v", err)
	}
	sn.SetKind(KindOverlay)
	s, err := sn.Prepare(context.Background(), []Layer{l})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	before := poolStates(t, sn)
	if len(before) != 7 {
		t.Fatalf("pool: %v", before)
	}
	m := s.Mounts()[0]
	merged := filepath.Join(s.dir, "merged")
	os.Mkdir(merged, 0o755)
	inThread(t, func() error {
		if err := unix.Chdir(m.Dir); err != nil {
			return err
		}
		if err := unix.Mount("overlay", merged, "overlay", 0, strings.Join(m.Options, ",")); err != nil {
			return err
		}
		defer unix.Unmount(merged, 0)
		return writes(merged)
	})
	samePool(t, sn, before)
}

// The copying snapshotter's rootfs holds copies: no name shares a pooled
// inode, and the same writes leave the pool as it was.
func TestPoolCopySnapshotterCopies(t *testing.T) {
	requireRoot(t)
	var blobs snapshottest.Blobs
	l := addLayer(t, &blobs, poolEntries...)
	sn, err := New(t.TempDir(), &blobs)
	if err != nil {
		t.Fatal(err)
	}
	sn.SetKind(KindCopy)
	s, err := sn.Prepare(context.Background(), []Layer{l})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	before := poolStates(t, sn)
	pooled := sn.pooledInodes()
	filepath.WalkDir(s.rootfs(), func(p string, d fs.DirEntry, err error) error {
		if fi, err := os.Lstat(p); err == nil {
			if _, ok := pooled[fi.Sys().(*syscall.Stat_t).Ino]; ok {
				t.Errorf("%s of the copied rootfs is a pooled inode", p)
			}
		}
		return nil
	})
	if err := writes(s.rootfs()); err != nil {
		t.Fatal(err)
	}
	samePool(t, sn, before)
}

// A view (COPY --from, RUN --mount=type=bind,from=) is made of pooled
// inodes; BindView mounts it read-only, or with rw over an overlay or a
// copy: never a writable name of a pooled inode.
func TestPoolBindViewsNeverWrite(t *testing.T) {
	requireRoot(t)
	var blobs snapshottest.Blobs
	l := addLayer(t, &blobs, poolEntries...)
	for _, kind := range []Kind{KindOverlay, KindCopy} {
		sn, err := New(t.TempDir(), &blobs)
		if err != nil {
			t.Fatal(err)
		}
		if kind == KindOverlay && sn.mountTestOverlay() != nil {
			continue
		}
		sn.SetKind(kind)
		ctx := context.Background()
		view, err := sn.View(ctx, []Layer{l})
		if err != nil {
			t.Fatal(err)
		}
		pooled := sn.pooledInodes()
		if _, ok := pooled[ino(t, view+"/src/a")]; !ok {
			t.Fatalf("view file is not the pooled inode")
		}
		ro, release, err := sn.BindView(ctx, view+"/src", "/mnt", false)
		if err != nil || !ro.ReadOnly {
			t.Errorf("%s: read-only bind view: %+v %v", kind, ro, err)
		}
		release()
		before := poolStates(t, sn)
		for _, src := range []string{view + "/src", view + "/src/a"} {
			rw, release, err := sn.BindView(ctx, src, "/mnt", true)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case rw.Type == "overlay":
				if !strings.Contains(strings.Join(rw.Options, ","), "lowerdir="+src+",") {
					t.Errorf("%s: rw view of %s: overlay without it as lower dir: %v", kind, src, rw.Options)
				}
			case rw.Type == "bind" && !rw.ReadOnly:
				filepath.WalkDir(rw.Source, func(p string, d fs.DirEntry, err error) error {
					if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
						if _, ok := pooled[fi.Sys().(*syscall.Stat_t).Ino]; ok {
							t.Errorf("%s: rw view %s is a pooled inode", kind, p)
						}
					}
					return nil
				})
				if src == view+"/src" {
					if err := writes(filepath.Dir(rw.Source)); err != nil {
						t.Errorf("%s: writes to the rw copy: %v", kind, err)
					}
				}
			default:
				t.Errorf("%s: rw view of %s: %+v", kind, src, rw)
			}
			release()
		}
		samePool(t, sn, before)
	}
}

// Removing a layer dir leaves its pooled files with only the pool's name:
// SweepPool removes those and keeps what another layer still links;
// sizes count each pooled byte once.
func TestSweepPool(t *testing.T) {
	requireRoot(t)
	var blobs snapshottest.Blobs
	a := addLayer(t, &blobs, E{Name: "x", Mode: 0o644, Body: "shared"}, E{Name: "y", Mode: 0o644, Body: "only-a"})
	b := addLayer(t, &blobs, E{Name: "x", Mode: 0o644, Body: "shared"}, E{Name: "z", Mode: 0o644, Body: "b"})
	sn, err := New(t.TempDir(), &blobs)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := sn.ensure(context.Background(), []Layer{a, b})
	if err != nil {
		t.Fatal(err)
	}
	u, err := sn.PoolUsage()
	if err != nil || u.Files != 3 || u.Size != int64(len("shared")+len("only-a")+len("b")) || u.Garbage != 0 {
		t.Errorf("pool usage %+v %v", u, err)
	}
	// Each layer's Size is what only it links (and its manifest): the
	// shared file is in neither, so sizes plus the shared rest count each
	// byte once.
	dirs, _ := sn.LayerDirs()
	want := map[string]int64{ids[0]: int64(len("only-a")), ids[1]: int64(len("b"))}
	for _, d := range dirs {
		fi, err := os.Stat(manifestPath(filepath.Join(sn.layersDir, d.ID)))
		if err != nil {
			t.Fatal(err)
		}
		if d.Size != want[d.ID]+fi.Size() || d.Pooled != want[d.ID] {
			t.Errorf("layer %s: Size %d Pooled %d, want %d and %d", d.ID, d.Size, d.Pooled, want[d.ID]+fi.Size(), want[d.ID])
		}
	}
	if n := sn.PoolFreed(ids[:1]); n != int64(len("only-a")) {
		t.Errorf("PoolFreed(a) = %d, want %d", n, len("only-a"))
	}
	_, purge, err := sn.RemoveLayers(ids[:1])
	if err != nil {
		t.Fatal(err)
	}
	if err := purge(); err != nil {
		t.Fatal(err)
	}
	swept, err := sn.SweepPool()
	if err != nil || swept.Files != 1 || swept.Size != int64(len("only-a")) {
		t.Errorf("swept %+v %v, want only y", swept, err)
	}
	if u, _ := sn.PoolUsage(); u.Files != 2 {
		t.Errorf("after the sweep: %+v", u)
	}
	if b, err := os.ReadFile(filepath.Join(sn.layersDir, ids[1], "x")); err != nil || string(b) != "shared" {
		t.Errorf("b's x: %q %v", b, err)
	}
}
