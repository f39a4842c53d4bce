package layer

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// writeWith writes the same files with Add or AddFile, through pool.
func writeWith(t *testing.T, files []string, addFile bool, pool Pool) (Descriptor, *recorder, []byte) {
	t.Helper()
	r := &recorder{}
	var tee bytes.Buffer
	w := NewWriter(r, Options{Pool: pool, Tee: &tee})
	for i, body := range files {
		h := &tar.Header{Name: string(rune('a' + i)), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}
		var err error
		if addFile {
			err = w.AddFile(h, []byte(body), sha256.Sum256([]byte(body)))
		} else {
			err = w.Add(h, strings.NewReader(body))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	d, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	return d, r, tee.Bytes()
}

func TestAddFileWritesWhatAddWrites(t *testing.T) {
	files := []string{"", "alpha\n", strings.Repeat("x", 512), strings.Repeat("y", ChunkSize-512),
		strings.Repeat("z", ChunkSize+7)} // the last two span members
	d1, r1, tee1 := writeWith(t, files, false, nil)
	d2, r2, tee2 := writeWith(t, files, true, nil)
	if d1 != d2 || !bytes.Equal(r1.Bytes(), r2.Bytes()) || !bytes.Equal(tee1, tee2) {
		t.Fatal("AddFile wrote another layer than Add")
	}
	if digest.FromBytes(r2.Bytes()) != d2.Digest || digest.FromBytes(tee2) != d2.DiffID {
		t.Fatal("descriptor does not name the streams")
	}
	// Whole-file members are keyed by header and content digest, the rest
	// (the files that span members, the trailer) by their bytes.
	if len(r1.keys) != len(r2.keys) {
		t.Fatalf("%d members vs %d", len(r1.keys), len(r2.keys))
	}
	for i := range r1.keys {
		if same := r1.keys[i] == r2.keys[i]; same != (i >= 3) {
			t.Errorf("member %d: raw key == digest key is %v", i, same)
		}
	}
}

func TestAddFileMembersArePooled(t *testing.T) {
	files := []string{"one\n", "two\n", "three\n"}
	d1, r1, _ := writeWith(t, files, true, nil)
	pool := &memPool{blobs: map[digest.Digest][]byte{d1.Digest: r1.Bytes()}, locs: map[Key]Loc{}}
	for i, k := range r1.keys {
		pool.locs[k] = Loc{Blob: d1.Digest, Offset: r1.locs[i].Offset, Length: r1.locs[i].Length}
	}
	files[1] = "two, edited\n"
	d2, r2, _ := writeWith(t, files, true, pool)
	if r2.froms[0] == nil || r2.froms[1] != nil || r2.froms[2] == nil {
		t.Errorf("pooled: %v; want all but the edited one", r2.froms)
	}
	if d3, _, _ := writeWith(t, files, false, nil); d3 != d2 {
		t.Error("a pooled layer differs from one compressed from scratch")
	}
}

func TestMemberKeyDomains(t *testing.T) {
	// A digest key's input is never whole blocks: it cannot be any
	// member's raw key.
	if n := len(keyTag) + blockSize + sha256.Size; n%blockSize == 0 {
		t.Fatalf("digest key input of %d bytes is whole blocks", n)
	}
	raw := make([]byte, 1024)
	sum := sha256.Sum256(raw[512:])
	if memberKey(raw, &sum, 512) == memberKey(raw, nil, 0) {
		t.Error("digest key equals raw key")
	}
	if memberKey(raw, &sum, 1024) != memberKey(raw, nil, 0) {
		t.Error("a member without whole header blocks must fall back to its bytes")
	}
}

// failTee fails its Write after n bytes.
type failTee struct{ n int }

func (f *failTee) Write(p []byte) (int, error) {
	if f.n -= len(p); f.n < 0 {
		return 0, errTee
	}
	return len(p), nil
}

var errTee = errors.New("tee: no space")

func TestTeeErrorFailsTheLayer(t *testing.T) {
	w := NewWriter(io.Discard, Options{Tee: &failTee{n: 4096}})
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		body := strings.Repeat("x", 3000)
		err = w.Add(&tar.Header{Name: fmt.Sprint(i), Typeflag: tar.TypeReg, Size: int64(len(body))}, strings.NewReader(body))
	}
	if _, cerr := w.Close(); err == nil {
		err = cerr
	}
	if !errors.Is(err, errTee) {
		t.Fatalf("a failing Tee: %v", err)
	}
}
