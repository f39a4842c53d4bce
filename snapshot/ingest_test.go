package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/snapshot/snapshottest"
)

// signature describes a tree as extraction leaves it: types, modes,
// owners, contents, link targets, whiteout devices and opaque markers, and
// for a file the names it has in the tree (a pooled file's st_nlink also
// counts the pool's name and other layers', pool.go).
func signature(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	names := map[uint64]int{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
			names[fi.Sys().(*syscall.Stat_t).Ino]++
		}
		return nil
	})
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		rel, _ := filepath.Rel(root, p)
		line := fmt.Sprintf("%s %v %d:%d", rel, fi.Mode(), st.Uid, st.Gid)
		switch {
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			line += fmt.Sprintf(" %x names=%d", sha256.Sum256(b), names[st.Ino])
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			line += " -> " + l
		case fi.Mode()&fs.ModeCharDevice != 0:
			line += fmt.Sprintf(" rdev=%d", st.Rdev)
		case fi.IsDir() && isOpaque(p):
			line += " opaque"
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// A layer extracted while it is written equals the same layer extracted
// from its blob, and becomes the chain's lower dir without a blob read.
func TestIngestMatchesExtract(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	blobs := &snapshottest.Blobs{}
	sn, err := New(t.TempDir(), blobs)
	if err != nil {
		t.Fatal(err)
	}
	entries := []*tar.Header{
		{Name: "app/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "app/.wh..wh..opq", Typeflag: tar.TypeReg},
		{Name: "app/main.py", Typeflag: tar.TypeReg, Mode: 0o644, Uid: 1000, Gid: 1000, Size: 5},
		{Name: "app/link", Typeflag: tar.TypeLink, Linkname: "app/main.py"},
		{Name: "app/sym", Typeflag: tar.TypeSymlink, Linkname: "../etc/passwd"},
		{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "etc/.wh.shadow", Typeflag: tar.TypeReg},
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "bin/tool", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 3},
	}
	bodies := map[string]string{"app/main.py": "print", "bin/tool": "elf"}

	in, err := sn.NewIngest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var blob bytes.Buffer
	w := layer.NewWriter(&blob, layer.Options{Tee: in})
	for _, h := range entries {
		if err := w.Add(h, strings.NewReader(bodies[h.Name])); err != nil {
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
	in.Abort() // after Commit: a no-op

	ingested := filepath.Join(sn.layersDir, string(desc.DiffID.Encoded()[:16]))
	want := t.TempDir()
	if _, err := Extract(ctx, bytes.NewReader(blob.Bytes()), want); err != nil {
		t.Fatal(err)
	}
	if got, exp := signature(t, ingested), signature(t, want); got != exp {
		t.Errorf("ingested layer differs from the extracted blob:\n--- ingested\n%s\n--- extracted\n%s", got, exp)
	}
	// The blob was never added to the store: Prepare must use the ingested dir.
	if _, err := sn.Prepare(ctx, []Layer{{Digest: desc.Digest, DiffID: desc.DiffID}}); err != nil {
		t.Errorf("prepare over the ingested layer: %v", err)
	}
}

// An aborted ingest leaves nothing behind.
func TestIngestAbort(t *testing.T) {
	sn, err := New(t.TempDir(), &snapshottest.Blobs{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := sn.NewIngest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	in.Write([]byte("not a tar"))
	in.Abort()
	left, _ := os.ReadDir(sn.tmpDir)
	if len(left) != 0 {
		t.Errorf("temp entries left: %v", left)
	}
}
