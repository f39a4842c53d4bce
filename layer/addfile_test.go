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
	"time"

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
	// Members: "" (a header), then a header and a data member for each
	// file under ChunkSize, a header and two for the last, the trailer.
	// The data of a file in one member is keyed by its content digest,
	// the rest (headers, the data that spans members, the trailer) by
	// their bytes.
	if len(r1.keys) != 11 || len(r2.keys) != 11 {
		t.Fatalf("%d and %d members, want 11", len(r1.keys), len(r2.keys))
	}
	for i := range r1.keys {
		digestKeyed := i == 2 || i == 4 || i == 6
		if same := r1.keys[i] == r2.keys[i]; same == digestKeyed {
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
	for i, from := range r2.froms[:6] { // a header and a data member per file
		if edited := i/2 == 1; (from == nil) != edited {
			t.Errorf("member %d pooled is %v; want all but the edited file's", i, from != nil)
		}
	}
	if d3, _, _ := writeWith(t, files, false, nil); d3 != d2 {
		t.Error("a pooled layer differs from one compressed from scratch")
	}
}

func TestMemberKeyDomains(t *testing.T) {
	// A digest key's input is never whole blocks: it cannot be any
	// member's raw key.
	if n := len(keyTag) + sha256.Size; n%blockSize == 0 {
		t.Fatalf("digest key input of %d bytes is whole blocks", n)
	}
	raw := make([]byte, 1024)
	sum := sha256.Sum256(raw[:1000])
	if memberKey(raw, &sum, 1000) == memberKey(raw, nil, 0) {
		t.Error("digest key equals raw key")
	}
	if memberKey(raw, &sum, 512) != memberKey(raw, nil, 0) {
		t.Error("a member holding more than the data must fall back to its bytes")
	}
}

func TestSameContentAtAnotherTimeKeepsItsDataMembers(t *testing.T) {
	// A RUN run again writes the same files with new mtimes: only the
	// headers are compressed again.
	write := func(mtime int64, pool Pool) (Descriptor, *recorder) {
		r := &recorder{}
		w := NewWriter(r, Options{Pool: pool})
		for _, name := range []string{"a", "b"} {
			body := strings.Repeat(name, 5000)
			h := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(mtime, 0)}
			if err := w.Add(h, strings.NewReader(body)); err != nil {
				t.Fatal(err)
			}
		}
		d, err := w.Close()
		if err != nil {
			t.Fatal(err)
		}
		return d, r
	}
	d1, r1 := write(1, nil)
	pool := &memPool{blobs: map[digest.Digest][]byte{d1.Digest: r1.Bytes()}, locs: map[Key]Loc{}}
	for i, k := range r1.keys {
		pool.locs[k] = Loc{Blob: d1.Digest, Offset: r1.locs[i].Offset, Length: r1.locs[i].Length}
	}
	d2, r2 := write(2, pool)
	for i, from := range r2.froms[:4] {
		if header := i%2 == 0; (from == nil) != header {
			t.Errorf("member %d pooled is %v; want the data members only", i, from != nil)
		}
	}
	if d3, _ := write(2, nil); d3 != d2 {
		t.Error("a pooled layer differs from one compressed from scratch")
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
