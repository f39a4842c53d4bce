package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

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

// The queue hands on every byte in order, holds the writer back when
// full, and lets an abort through at once.
func TestChunkQueue(t *testing.T) {
	want := make([]byte, 3*ingestQueueMax+12345)
	for i := range want {
		want[i] = byte(i * 7)
	}
	q := newChunkQueue()
	go func() {
		rnd := rand.New(rand.NewPCG(3, 4))
		for p := want; len(p) > 0; {
			n := min(len(p), 1+rnd.IntN(3*ingestChunk))
			if err := q.write(p[:n]); err != nil {
				panic(err)
			}
			p = p[n:]
		}
		q.closeWrite(nil)
	}()
	got, err := io.ReadAll(q)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes (want %d), equal %v, err %v", len(got), len(want), bytes.Equal(got, want), err)
	}

	// Back-pressure: a writer ahead by the limit waits for the reader.
	q = newChunkQueue()
	wrote := make(chan int64)
	go func() {
		var n int64
		for range 2 * ingestQueueMax / ingestChunk {
			q.write(make([]byte, ingestChunk))
			n += ingestChunk
			select {
			case wrote <- n:
			default:
			}
		}
		close(wrote)
	}()
	time.Sleep(100 * time.Millisecond)
	q.mu.Lock()
	queued := q.queued
	q.mu.Unlock()
	if queued > ingestQueueMax {
		t.Errorf("%d bytes queued, limit %d", queued, ingestQueueMax)
	}
	io.CopyN(io.Discard, q, ingestQueueMax)
	q.closeRead(errors.New("reader gone"))
	for range wrote {
	}
	if err := q.write([]byte("x")); err == nil || err.Error() != "reader gone" {
		t.Errorf("write after the reader ended: %v", err)
	}

	// An abort is seen before the queued bytes.
	q = newChunkQueue()
	q.write(make([]byte, 2*ingestChunk))
	abort := errors.New("aborted")
	q.closeWrite(abort)
	if _, err := q.Read(make([]byte, 10)); err != abort {
		t.Errorf("read after an abort: %v", err)
	}
}

// benchWorkers extracts poolTar into a fresh dir per iteration with an
// empty pool (every file new), written by n workers (0: inline).
func benchWorkers(b *testing.B, n int) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	data := poolTar(b)
	// A fresh store per iteration, nothing deleted before the end: ext4
	// without a journal scans past recently deleted inodes on every
	// allocation (find_inode_bit, recently_deleted), which would swamp
	// what is measured.
	base := b.TempDir()
	i := 0
	for b.Loop() {
		b.StopTimer()
		sn, err := New(filepath.Join(base, fmt.Sprint(i)), nil)
		if err != nil {
			b.Fatal(err)
		}
		root := filepath.Join(sn.tmpDir, "x", "l")
		os.MkdirAll(root, 0o755)
		i++
		b.StartTimer()
		x := &extractor{pool: sn.newFilePool(root)}
		x.pool.nworkers = n
		if err := x.run(context.Background(), tar.NewReader(bytes.NewReader(data)), root); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/file")
}

func BenchmarkExtractWorkers0(b *testing.B) { benchWorkers(b, 0) }
func BenchmarkExtractWorkers1(b *testing.B) { benchWorkers(b, 1) }
func BenchmarkExtractWorkers2(b *testing.B) { benchWorkers(b, 2) }
func BenchmarkExtractWorkers3(b *testing.B) { benchWorkers(b, 3) }
