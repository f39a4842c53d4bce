package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"testing"

	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/mount"
	"github.com/minibuild/minibuild/snapshot/snapshottest"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

type E = snapshottest.Entry

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (device nodes, trusted xattrs, chown)")
	}
}

func addLayer(t *testing.T, b *snapshottest.Blobs, entries ...E) Layer {
	t.Helper()
	d, diffID, err := b.Add(snapshottest.Layer(t, entries...))
	if err != nil {
		t.Fatal(err)
	}
	return Layer{Digest: d, DiffID: diffID}
}

// sandboxPoints are the sandbox's own mount points (as
// sandbox.MountPoints declares them) plus extra, as the executor passes them.
func sandboxPoints(extra ...mount.Point) []mount.Point {
	points := []mount.Point{{Path: "/dev", Dir: true}, {Path: "/proc", Dir: true}, {Path: "/sys", Dir: true},
		{Path: "/etc/hosts"}, {Path: "/etc/resolv.conf"}}
	for i := range points {
		points[i].Optional = true
	}
	return append(points, extra...)
}

// tree lists every path under root (slash, relative) with a type letter.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, rel)
		return nil
	})
	sort.Strings(out)
	return out
}

func TestExtractHostile(t *testing.T) {
	requireRoot(t)
	var hostBefore unix.Stat_t
	if err := unix.Stat("/etc/passwd", &hostBefore); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		entries []E
		wantErr bool
		inside  []string // must exist inside root (Lstat)
	}{
		{"dotdot name", []E{{Name: "../escape", Mode: 0o644, Body: "x"}}, false, []string{"escape"}},
		{"deep dotdot", []E{{Name: "a/../../../etc/evil", Mode: 0o644, Body: "x"}}, false, []string{"etc/evil"}},
		{"absolute name", []E{{Name: "/abs/file", Mode: 0o644, Body: "x"}}, false, []string{"abs/file"}},
		{"absolute symlink then file through it", []E{
			{Name: "lnk", Symlink: true, Link: "/"},
			{Name: "lnk/escape", Mode: 0o644, Body: "x"},
		}, false, []string{"lnk", "escape"}},
		{"relative symlink out then file through it", []E{
			{Name: "up", Symlink: true, Link: "../../.."},
			{Name: "up/tmp/escape", Mode: 0o644, Body: "x"},
		}, false, []string{"up", "tmp/escape"}},
		{"symlink to host etc then overwrite", []E{
			{Name: "etc", Symlink: true, Link: "/etc"},
			{Name: "etc/passwd", Mode: 0o644, Body: "evil"},
		}, true, []string{"etc"}}, // a self-loop once inside: refused
		{"hard link to host passwd", []E{{Name: "pw", Link: "/etc/passwd"}}, true, nil},
		{"hard link to passwd resolves inside", []E{
			{Name: "etc/", Mode: 0o755},
			{Name: "etc/passwd", Mode: 0o644, Body: "root"},
			{Name: "pw", Link: "../../../etc/passwd"},
		}, false, []string{"pw", "etc/passwd"}},
		{"hard link via symlink links the symlink", []E{
			{Name: "s", Symlink: true, Link: "/etc/passwd"},
			{Name: "pw", Link: "s"},
		}, false, []string{"pw"}},
		{"hard link through symlinked dir", []E{
			{Name: "d", Symlink: true, Link: "/etc"},
			{Name: "pw", Link: "d/passwd"},
		}, true, nil},
		{"bad whiteout", []E{{Name: ".wh..", Mode: 0o644}}, true, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			outer := t.TempDir()
			root := filepath.Join(outer, "root")
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
			blob := snapshottest.Layer(t, tc.entries...)
			_, err := Extract(context.Background(), bytes.NewReader(blob), root)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Extract error = %v, want error %v", err, tc.wantErr)
			}
			if got := tree(t, outer); len(got) == 0 || got[0] != "root" {
				t.Fatalf("outside root: %v", got)
			}
			for _, p := range tree(t, outer) {
				if p != "root" && filepath.Dir(p) == "." {
					t.Errorf("entry outside root: %s", p)
				}
			}
			for _, p := range tc.inside {
				if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
					t.Errorf("want %s inside: %v", p, err)
				}
			}
			if fi, err := os.Lstat(filepath.Join(root, "pw")); err == nil && fi.Mode().IsRegular() {
				if st := fi.Sys().(*syscall.Stat_t); st.Ino == hostBefore.Ino && uint64(st.Dev) == hostBefore.Dev {
					t.Error("pw is the host's /etc/passwd")
				}
			}
		})
	}
	var hostAfter unix.Stat_t
	if err := unix.Stat("/etc/passwd", &hostAfter); err != nil {
		t.Fatal(err)
	}
	if hostAfter.Nlink != hostBefore.Nlink || hostAfter.Size != hostBefore.Size || hostAfter.Mtim != hostBefore.Mtim {
		t.Fatal("host /etc/passwd changed")
	}
}

func TestExtractOverlayForm(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	blob := snapshottest.Layer(t,
		E{Name: "dir/", Mode: 0o750, UID: 12, GID: 34},
		E{Name: "dir/.wh..wh..opq"},
		E{Name: "dir/f", Mode: 0o4755, UID: 5, GID: 6, Body: "hello"},
		E{Name: "dir/h", Link: "dir/f"},
		E{Name: ".wh.gone"},
		E{Name: "null", Typeflag: tar.TypeChar, Mode: 0o666},
	)
	if _, err := Extract(context.Background(), bytes.NewReader(blob), root); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(filepath.Join(root, "gone"))
	if err != nil || !isWhiteout(fi) {
		t.Fatalf("gone is not a whiteout: %v %v", fi, err)
	}
	if !isOpaque(filepath.Join(root, "dir")) {
		t.Error("dir is not opaque")
	}
	st := statT(t, filepath.Join(root, "dir"))
	if st.Mode&0o7777 != 0o750 || st.Uid != 12 || st.Gid != 34 || st.Mtim.Sec != snapshottest.Epoch.Unix() {
		t.Errorf("dir metadata: mode %o uid %d gid %d mtime %d", st.Mode&0o7777, st.Uid, st.Gid, st.Mtim.Sec)
	}
	st = statT(t, filepath.Join(root, "dir/f"))
	if st.Mode&0o7777 != 0o4755 || st.Uid != 5 || st.Gid != 6 || st.Nlink != 2 {
		t.Errorf("file metadata: mode %o uid %d gid %d nlink %d", st.Mode&0o7777, st.Uid, st.Gid, st.Nlink)
	}
}

func statT(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

func TestDecompressFormats(t *testing.T) {
	requireRoot(t)
	gz := snapshottest.Layer(t, E{Name: "f", Mode: 0o644, Body: "x"})
	plain, err := Decompress(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(plain)
	for name, blob := range map[string][]byte{"gzip": gz, "tar": raw} {
		root := t.TempDir()
		diffID, err := Extract(context.Background(), bytes.NewReader(blob), root)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if want := digestOf(raw); diffID != want {
			t.Errorf("%s: diffID %s, want %s", name, diffID, want)
		}
		if b, err := os.ReadFile(filepath.Join(root, "f")); err != nil || string(b) != "x" {
			t.Errorf("%s: f = %q, %v", name, b, err)
		}
	}
}

func TestStatThroughChain(t *testing.T) {
	requireRoot(t)
	var blobs snapshottest.Blobs
	l1 := addLayer(t, &blobs,
		E{Name: "etc/", Mode: 0o755},
		E{Name: "etc/passwd", Mode: 0o644, Body: "root:x:0:0::/root:/bin/sh\n"},
		E{Name: "etc/group", Mode: 0o644, Body: "root:x:0:\n"},
		E{Name: "a/", Mode: 0o755},
		E{Name: "a/b/", Mode: 0o755},
		E{Name: "a/b/c", Mode: 0o644, Body: "c1"},
		E{Name: "d/", Mode: 0o755},
		E{Name: "d/x", Mode: 0o644, Body: "x"},
		E{Name: "abs", Symlink: true, Link: "/a/b"},
		E{Name: "rel", Symlink: true, Link: "a/../a/b/c"},
		E{Name: "esc", Symlink: true, Link: "../../../../a"},
	)
	l2 := addLayer(t, &blobs,
		E{Name: "etc/", Mode: 0o755},
		E{Name: "etc/.wh.passwd"},
		E{Name: "d/", Mode: 0o755},
		E{Name: "d/.wh..wh..opq"},
		E{Name: "d/y", Mode: 0o644, Body: "y"},
		E{Name: "a/b/c", Mode: 0o644, Body: "c2"},
	)
	sn, err := New(t.TempDir(), &blobs)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	chain := []Layer{l1, l2}
	for _, tc := range []struct {
		path    string
		content string // "" = must not exist
	}{
		{"/etc/passwd", ""},
		{"/etc/group", "root:x:0:\n"},
		{"/d/x", ""},
		{"/d/y", "y"},
		{"/a/b/c", "c2"},
		{"/abs/c", "c2"},
		{"rel", "c2"},
		{"/esc/b/c", "c2"},
		{"/a/b/../b/./c", "c2"},
		{"/a/b/c/d", ""},
	} {
		b, err := sn.ReadFile(ctx, chain, tc.path)
		if tc.content == "" {
			if err == nil {
				t.Errorf("%s: want error, read %q", tc.path, b)
			}
			continue
		}
		if err != nil || string(b) != tc.content {
			t.Errorf("%s = %q, %v; want %q", tc.path, b, err, tc.content)
		}
	}
	if _, err := sn.Stat(ctx, chain, "/etc/passwd"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat whited-out file: %v, want ErrNotExist", err)
	}
	if b, err := sn.ReadFile(ctx, chain[:1], "/etc/passwd"); err != nil || len(b) == 0 {
		t.Errorf("lower chain alone still has /etc/passwd: %v", err)
	}
	fi, err := sn.Stat(ctx, chain, "/abs")
	if err != nil || !fi.IsDir() || fi.Name() != "abs" {
		t.Errorf("Stat /abs = %v, %v; want dir", fi, err)
	}
	fi, err = sn.Lstat(ctx, chain, "/abs")
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("Lstat /abs = %v, %v; want symlink", fi, err)
	}
	if fi, err := sn.Stat(ctx, nil, "/"); err != nil || !fi.IsDir() {
		t.Errorf("Stat / of scratch = %v, %v", fi, err)
	}
}

func TestPrepareConcurrentAndCleanup(t *testing.T) {
	requireRoot(t)
	var blobs snapshottest.Blobs
	l := addLayer(t, &blobs, E{Name: "f", Mode: 0o644, Body: "x"})
	root := t.TempDir()
	sn, err := New(root, &blobs)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	snaps := make([]*Snapshot, 4)
	errs := make([]error, 4)
	for i := range snaps {
		wg.Go(func() { snaps[i], errs[i] = sn.Prepare(context.Background(), []Layer{l}) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	layers, _ := os.ReadDir(filepath.Join(root, "snapshots", "layers"))
	dirs := 0
	for _, e := range layers {
		if e.IsDir() && e.Name() != emptyDir {
			dirs++
		}
	}
	if dirs != 1 {
		t.Errorf("%d extracted dirs for one layer", dirs)
	}
	// A killed run: a tmp dir whose lock nobody holds, and one with no lock.
	tmp := filepath.Join(root, "snapshots", "tmp")
	os.MkdirAll(filepath.Join(tmp, "sdead", "upper"), 0o755)
	os.WriteFile(filepath.Join(tmp, "sdead.lock"), nil, 0o600)
	os.MkdirAll(filepath.Join(tmp, "xorphan"), 0o755)
	if err := sn.Cleanup(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"sdead", "sdead.lock", "xorphan"} {
		if _, err := os.Lstat(filepath.Join(tmp, p)); err == nil {
			t.Errorf("%s survived Cleanup", p)
		}
	}
	for _, s := range snaps {
		if _, err := os.Stat(s.upper()); err != nil {
			t.Errorf("live snapshot removed by Cleanup: %v", err)
		}
		if err := s.Release(); err != nil {
			t.Fatal(err)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("tmp not empty after Release: %v", left)
	}
}

func TestManyLayersFitOnePage(t *testing.T) {
	requireRoot(t)
	var blobs snapshottest.Blobs
	var chain []Layer
	for i := range 150 {
		chain = append(chain, addLayer(t, &blobs, E{Name: "f" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Mode: 0o644, Body: "x"}))
	}
	sn, err := New(filepath.Join(t.TempDir(), "a-rather-long-root-directory-name-to-prove-the-point"), &blobs)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sn.Prepare(context.Background(), chain)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	m := s.Mounts()[0]
	if m.Type != "overlay" || m.Dir == "" {
		t.Fatalf("mount %+v", m)
	}
	if first := m.Options[0]; first[:len("lowerdir=")+16] != "lowerdir="+mustID(t, chain[149]) {
		t.Errorf("top layer is not first in lowerdir: %s", first[:40])
	}
}

func mustID(t *testing.T, l Layer) string {
	id, err := layerID(l)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestDiffUpper drives Diff over an upper dir shaped by hand like overlayfs
// leaves it, then checks the entries and that extracting them round-trips.
func TestDiffUpper(t *testing.T) {
	requireRoot(t)
	var blobs snapshottest.Blobs
	base := addLayer(t, &blobs,
		E{Name: "etc/", Mode: 0o755},
		E{Name: "etc/passwd", Mode: 0o644, Body: "root"},
		E{Name: "old/", Mode: 0o755},
		E{Name: "old/a", Mode: 0o644, Body: "a"},
	)
	sn, err := New(t.TempDir(), &blobs)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sn.Prepare(context.Background(), []Layer{base}, sandboxPoints()...)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	up := s.upper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(up, "app"), 0o755))
	must(os.WriteFile(filepath.Join(up, "app/x"), []byte("hi"), 0o640))
	must(os.Link(filepath.Join(up, "app/x"), filepath.Join(up, "app/y")))
	must(os.Symlink("/app/x", filepath.Join(up, "app/z")))
	must(unix.Mknod(filepath.Join(up, "etc/passwd"), unix.S_IFCHR, 0))
	must(os.Mkdir(filepath.Join(up, "old"), 0o700))
	must(unix.Setxattr(filepath.Join(up, "old"), opaqueXattr, []byte("y"), 0))
	must(os.WriteFile(filepath.Join(up, "old/b"), []byte("b"), 0o644))
	must(unix.Setxattr(filepath.Join(up, "app/x"), "security.capability", []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0))

	var buf bytes.Buffer
	w := layer.NewWriter(&buf, layer.Options{})
	must(s.Diff(w))
	desc, err := w.Close()
	must(err)
	var names []string
	zr, err := Decompress(bytes.NewReader(buf.Bytes()))
	must(err)
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(err)
		n := hdr.Name
		switch {
		case hdr.Typeflag == tar.TypeLink:
			n += " link " + hdr.Linkname
		case hdr.Typeflag == tar.TypeSymlink:
			n += " -> " + hdr.Linkname
		}
		if _, ok := hdr.PAXRecords["SCHILY.xattr.security.capability"]; ok {
			n += " +cap"
		}
		names = append(names, n)
	}
	want := []string{
		"app/", "app/x +cap", "app/y link app/x", "app/z -> /app/x",
		"etc/", "etc/.wh.passwd",
		"old/", "old/.wh..wh..opq", "old/b",
	}
	if !equal(names, want) {
		t.Fatalf("diff entries:\n got %q\nwant %q", names, want)
	}
	// The stubs (dev, proc, sys, etc/hosts, etc/resolv.conf) stayed out.
	d, diffID, err := blobs.Add(buf.Bytes())
	must(err)
	if diffID != desc.DiffID {
		t.Errorf("diffID %s, writer said %s", diffID, desc.DiffID)
	}
	chain := []Layer{base, {Digest: d, DiffID: diffID}}
	for p, want := range map[string]string{"/app/y": "hi", "/old/b": "b", "/old/a": "", "/etc/passwd": "", "/app/z": "hi"} {
		b, err := sn.ReadFile(context.Background(), chain, p)
		if (want == "") != (err != nil) || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", p, b, err, want)
		}
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func digestOf(b []byte) digest.Digest { return digest.FromBytes(b) }
