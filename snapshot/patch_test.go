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
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/snapshot/snapshottest"
)

// tEntry is a tar entry and its body, for writing layers in tests.
type tEntry struct {
	hdr  tar.Header
	body string
}

func reg(name, body string, mtime int64) tEntry {
	return tEntry{tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(mtime, 0)}, body}
}

func dir(name string, mtime int64) tEntry {
	return tEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(mtime, 0)}}
}

// ingestLayer writes entries as a layer through in and commits it.
func ingestLayer(t *testing.T, in *Ingest, entries []tEntry) (layer.Descriptor, []byte) {
	t.Helper()
	var blob bytes.Buffer
	w := layer.NewWriter(&blob, layer.Options{Tee: in})
	for i, e := range entries {
		h := e.hdr
		var err error
		if h.Typeflag == tar.TypeReg && i%2 == 0 {
			// With its digest, as the copier adds files: the patch takes
			// it as a hint (Ingest.HintSum) instead of hashing.
			err = w.AddFile(&h, []byte(e.body), sha256.Sum256([]byte(e.body)))
		} else {
			err = w.Add(&h, strings.NewReader(e.body))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	desc, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Commit(context.Background(), desc.DiffID); err != nil {
		t.Fatal(err)
	}
	return desc, blob.Bytes()
}

// timedSignature is signature plus every entry's mtime.
func timedSignature(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if fi, err := os.Lstat(p); err == nil && p != root {
			rel, _ := filepath.Rel(root, p)
			lines = append(lines, fmt.Sprintf("%s %d", rel, fi.ModTime().UnixNano()))
		}
		return nil
	})
	sort.Strings(lines)
	return signature(t, root) + "\n" + strings.Join(lines, "\n")
}

// The tests' layers are small: patch them all, but TestPatchIngestSkipsSmallBases.
func init() { patchMinEntries = 0 }

func refuseAll(digest.Digest, func() error) (bool, error) { return false, nil }

func TestPatchIngestEqualsExtraction(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	sn, err := New(t.TempDir(), &snapshottest.Blobs{})
	if err != nil {
		t.Fatal(err)
	}
	a := []tEntry{
		dir("src/", 100), dir("src/a/", 100), reg("src/a/one.txt", "one", 100), reg("src/a/two.txt", "two", 100),
		dir("src/b/", 100), reg("src/b/gone.txt", "gone", 100), reg("src/b/same.txt", "same", 100),
		{tar.Header{Name: "src/ln", Typeflag: tar.TypeSymlink, Linkname: "a/one.txt", ModTime: time.Unix(100, 0)}, ""},
	}
	b := []tEntry{
		dir("src/", 100), dir("src/a/", 200), reg("src/a/one.txt", "one, edited", 300), reg("src/a/two.txt", "two", 100),
		reg("src/a/new.txt", "new", 300), dir("src/b/", 100), reg("src/b/same.txt", "same", 100),
		{tar.Header{Name: "src/ln", Typeflag: tar.TypeSymlink, Linkname: "a/one.txt", ModTime: time.Unix(100, 0)}, ""},
		dir("src/c/", 400), reg("src/c/three.txt", "three", 400),
	}
	in, err := sn.NewIngest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	descA, _ := ingestLayer(t, in, a)
	dirA := filepath.Join(sn.layersDir, mustID(t, descA))
	if _, err := readManifest(dirA); err != nil {
		t.Fatalf("no manifest beside the ingested layer: %v", err)
	}

	var claimed []digest.Digest
	claim := func(d digest.Digest, take func() error) (bool, error) {
		claimed = append(claimed, d)
		return true, take()
	}
	in, err = sn.NewPatchIngest(ctx, descA.DiffID, claim)
	if err != nil {
		t.Fatal(err)
	}
	descB, blobB := ingestLayer(t, in, b)
	if len(claimed) != 1 || claimed[0] != descA.DiffID {
		t.Fatalf("claimed %v, want the base %s once", claimed, descA.DiffID)
	}
	if _, err := os.Lstat(dirA); !os.IsNotExist(err) {
		t.Errorf("the base's dir is still there: %v", err)
	}
	want := t.TempDir()
	if _, err := Extract(ctx, bytes.NewReader(blobB), want); err != nil {
		t.Fatal(err)
	}
	dirB := filepath.Join(sn.layersDir, mustID(t, descB))
	if got, exp := timedSignature(t, dirB), timedSignature(t, want); got != exp {
		t.Errorf("patched layer differs from the extracted blob:\n--- patched\n%s\n--- extracted\n%s", got, exp)
	}
	if n := len(poolNames(t, sn)); n != 5 {
		t.Errorf("the pool holds %d files, want B's 5: the replaced ones go at once", n)
	}
	// The patched dir's manifest serves the next patch: a file edited
	// again, one removed.
	var c []tEntry
	for _, e := range b {
		switch e.hdr.Name {
		case "src/a/new.txt":
			continue
		case "src/a/one.txt":
			e = reg(e.hdr.Name, "edited twice", 500)
		}
		c = append(c, e)
	}
	in, err = sn.NewPatchIngest(ctx, descB.DiffID, claim)
	if err != nil {
		t.Fatal(err)
	}
	descA2, blobA := ingestLayer(t, in, c)
	if len(claimed) != 2 || claimed[1] != descB.DiffID {
		t.Fatalf("claimed %v, want the base %s second", claimed, descB.DiffID)
	}
	want = t.TempDir()
	if _, err := Extract(ctx, bytes.NewReader(blobA), want); err != nil {
		t.Fatal(err)
	}
	if got, exp := timedSignature(t, filepath.Join(sn.layersDir, mustID(t, descA2))), timedSignature(t, want); got != exp {
		t.Errorf("patched again, the layer differs from the extracted blob:\n--- patched\n%s\n--- extracted\n%s", got, exp)
	}
}

// A base someone holds is not taken: the new layer is extracted whole.
func TestPatchIngestLeavesHeldBase(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	sn, err := New(t.TempDir(), &snapshottest.Blobs{})
	if err != nil {
		t.Fatal(err)
	}
	in, _ := sn.NewIngest(ctx)
	descA, _ := ingestLayer(t, in, []tEntry{reg("f", "a", 1)})
	in, err = sn.NewPatchIngest(ctx, descA.DiffID, refuseAll)
	if err != nil {
		t.Fatal(err)
	}
	descB, _ := ingestLayer(t, in, []tEntry{reg("f", "b", 1)})
	for _, d := range []layer.Descriptor{descA, descB} {
		if _, err := os.Lstat(filepath.Join(sn.layersDir, mustID(t, d))); err != nil {
			t.Errorf("layer %s not extracted: %v", d.DiffID, err)
		}
	}
}

// Shapes a patch would get wrong are refused quietly: no dir for the new
// layer (it is extracted from its blob when needed) and no error. The
// others patch to what extraction makes.
func TestPatchIngestShapes(t *testing.T) {
	patches := map[string]bool{"file to dir": true, "dir removed": true, "dir emptied": true}
	requireRoot(t)
	ctx := context.Background()
	base := []tEntry{dir("./", 1), dir("d/", 1), reg("d/f", "x", 1), reg("g", "y", 1)}
	for name, next := range map[string][]tEntry{
		"dir removed":  {reg("g", "y", 1)},
		"dir to file":  {reg("d", "now a file", 1), reg("g", "y", 1)},
		"file to dir":  {dir("d/", 1), reg("d/f", "x", 1), dir("g/", 2), reg("g/h", "in g", 2)},
		"root removed": {dir("d/", 1), reg("d/f", "x", 1)},
		"dir emptied":  {dir("d/", 3), reg("g", "y", 1)},
		"hard link":    {dir("d/", 1), reg("d/f", "x", 1), reg("g", "z", 1), {tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "g"}, ""}},
		"whiteout":     {dir("d/", 1), reg("d/.wh.f", "", 1), reg("g", "y", 1)},
		"name twice":   {dir("d/", 1), reg("d/f", "x", 1), reg("g", "y", 1), reg("g", "z", 1)},
		"file to link": {dir("d/", 1), reg("d/f", "x", 1), {tar.Header{Name: "g", Typeflag: tar.TypeSymlink, Linkname: "d"}, ""}, reg("g/x", "escape?", 1)},
	} {
		if name != "root removed" {
			next = append([]tEntry{dir("./", 1)}, next...)
		}
		t.Run(name, func(t *testing.T) {
			sn, err := New(t.TempDir(), &snapshottest.Blobs{})
			if err != nil {
				t.Fatal(err)
			}
			in, _ := sn.NewIngest(ctx)
			descA, _ := ingestLayer(t, in, base)
			in, err = sn.NewPatchIngest(ctx, descA.DiffID, func(_ digest.Digest, take func() error) (bool, error) {
				return true, take()
			})
			if err != nil {
				t.Fatal(err)
			}
			descB, blobB := ingestLayer(t, in, next)
			dirB := filepath.Join(sn.layersDir, mustID(t, descB))
			_, err = os.Lstat(dirB)
			if patched := err == nil; patched != patches[name] {
				t.Errorf("patched: %v, want %v", patched, patches[name])
			}
			if err == nil {
				// Patched after all: then it must be right.
				want := t.TempDir()
				if _, err := Extract(ctx, bytes.NewReader(blobB), want); err != nil {
					t.Fatal(err)
				}
				if got, exp := timedSignature(t, dirB), timedSignature(t, want); got != exp {
					t.Errorf("patched layer differs from the extracted blob:\n--- patched\n%s\n--- extracted\n%s", got, exp)
				}
			}
		})
	}
}

// A base of a few entries is not worth claiming: it stays, and the new
// layer is extracted whole.
func TestPatchIngestSkipsSmallBases(t *testing.T) {
	requireRoot(t)
	defer func(n int) { patchMinEntries = n }(patchMinEntries)
	patchMinEntries = 3
	ctx := context.Background()
	sn, err := New(t.TempDir(), &snapshottest.Blobs{})
	if err != nil {
		t.Fatal(err)
	}
	in, _ := sn.NewIngest(ctx)
	descA, _ := ingestLayer(t, in, []tEntry{reg("f", "a", 1), reg("g", "a", 1)})
	in, err = sn.NewPatchIngest(ctx, descA.DiffID, func(_ digest.Digest, take func() error) (bool, error) {
		t.Error("a 2-entry base was claimed")
		return true, take()
	})
	if err != nil {
		t.Fatal(err)
	}
	descB, _ := ingestLayer(t, in, []tEntry{reg("f", "b", 1), reg("g", "a", 1)})
	for _, d := range []layer.Descriptor{descA, descB} {
		if _, err := os.Lstat(filepath.Join(sn.layersDir, mustID(t, d))); err != nil {
			t.Errorf("layer %s not extracted: %v", d.DiffID, err)
		}
	}
}
