package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minibuild/minibuild/snapshot/snapshottest"
)

type tarEntry struct {
	hdr  tar.Header
	body string
}

func makeTar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.ModTime.IsZero() {
			h.ModTime = snapshottest.Epoch
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, e.body)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// extractWith extracts data into a fresh store's temp tree, its small
// files written by n workers (0: by the extractor itself).
func extractWith(t *testing.T, data []byte, n int) (string, error) {
	t.Helper()
	sn, err := New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(sn.tmpDir, "x", "l")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	x := &extractor{pool: sn.newFilePool(root)}
	x.pool.nworkers = n
	return root, x.run(context.Background(), tar.NewReader(bytes.NewReader(data)), root)
}

// mtimes lists every entry's mtime under root, "new" for those set by
// the extraction's own clock (after since: dirs made for a parent, the
// root, whiteout devices).
func mtimes(t *testing.T, root string, since time.Time) string {
	t.Helper()
	var lines []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if fi.ModTime().After(since) {
			lines = append(lines, rel+" new")
		} else {
			lines = append(lines, fmt.Sprintf("%s %d", rel, fi.ModTime().UnixNano()))
		}
		return nil
	})
	return strings.Join(lines, "\n")
}

// Extraction with workers gives the tree a sequential one gives, however
// later entries replace, remove or link what is still queued, and a
// symlink put in place of a dir never lets a queued file out of the root.
func TestParallelMatchesSequential(t *testing.T) {
	requireRoot(t)
	outside := t.TempDir()
	mt := time.Unix(1_700_000_000, 123)
	reg := func(name, body string) tarEntry {
		return tarEntry{tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644}, body}
	}
	dir := func(name string) tarEntry {
		return tarEntry{tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt}, ""}
	}
	entries := []tarEntry{
		reg("a", "one"), reg("a", "two"), // the later wins
		dir("b/"), reg("b/x", "x"), reg("b", "file in place of a dir"),
		reg("c", "file"), dir("c/"), reg("c/in", "in"),
		dir("w/"), reg("w/k", "whited out"), reg("w/.wh.k", ""),
		reg("h", "linked"), {tar.Header{Name: "h2", Typeflag: tar.TypeLink, Linkname: "h"}, ""},
		dir("s/"), reg("s/f", "f"), {tar.Header{Name: "s", Typeflag: tar.TypeSymlink, Linkname: outside}, ""}, reg("s/g", "must stay inside"),
		{tar.Header{Name: "m", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 1000, Gid: 1000, ModTime: mt,
			PAXRecords: map[string]string{"SCHILY.xattr.user.test": "v"}}, "setuid"},
		reg("big", strings.Repeat("B", poolBufMax+1)),
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range 400 {
		if i%50 == 0 {
			entries = append(entries, dir(fmt.Sprintf("many/d%d/", i/50)))
		}
		entries = append(entries, reg(fmt.Sprintf("many/d%d/f%d", i/50, i), strings.Repeat("z", rnd.IntN(64<<10))))
	}
	entries = append(entries, reg("a", "three"), dir("many/")) // again, after the queue filled
	data := makeTar(t, entries)

	start := time.Now()
	seq, err := extractWith(t, data, 0)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		par, err := extractWith(t, data, 3)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := signature(t, par), signature(t, seq); got != want {
			t.Fatalf("parallel extraction differs:\n--- parallel\n%s\n--- sequential\n%s", got, want)
		}
		if got, want := mtimes(t, par, start), mtimes(t, seq, start); got != want {
			t.Fatalf("parallel extraction's times differ:\n--- parallel\n%s\n--- sequential\n%s", got, want)
		}
		if b, _ := os.ReadFile(filepath.Join(par, "a")); string(b) != "three" {
			t.Errorf("a holds %q", b)
		}
		if fi, err := os.Lstat(filepath.Join(par, "h")); err != nil || fi.Sys().(*syscall.Stat_t).Nlink != 2 {
			t.Errorf("h is not a private pair with h2: %v", err)
		}
	}
	if left, _ := os.ReadDir(outside); len(left) != 0 {
		t.Errorf("written outside the root: %v", left)
	}
}

// A worker's failure fails the extraction, naming its entry.
func TestParallelWorkerError(t *testing.T) {
	requireRoot(t)
	var entries []tarEntry
	for i := range 100 {
		entries = append(entries, tarEntry{tar.Header{Name: fmt.Sprintf("f%d", i), Typeflag: tar.TypeReg, Mode: 0o644}, "x"})
	}
	entries[40].hdr.PAXRecords = map[string]string{"SCHILY.xattr.user.big": strings.Repeat("v", 1<<17)} // E2BIG
	_, err := extractWith(t, makeTar(t, entries), 3)
	if !errors.Is(err, syscall.E2BIG) || !strings.HasPrefix(err.Error(), "extract f40: ") {
		t.Fatalf("err = %v", err)
	}
}
