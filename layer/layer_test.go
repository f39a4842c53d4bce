package layer

import (
	"archive/tar"
	"bytes"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
)

func write(t *testing.T, opts Options, mtime time.Time, uname string) (Descriptor, []byte) {
	t.Helper()
	var out bytes.Buffer
	w := NewWriter(&out, opts)
	entries := []struct {
		hdr  tar.Header
		body string
	}{
		{tar.Header{Name: "app/", Typeflag: tar.TypeDir, Mode: 0o755}, ""},
		{tar.Header{Name: "app/app.py", Typeflag: tar.TypeReg, Mode: 0o644, Size: 6, Uid: 1000}, "print\n"},
		{tar.Header{Name: "app/l", Typeflag: tar.TypeSymlink, Linkname: "app.py", Size: 99}, ""},
	}
	for _, e := range entries {
		h := e.hdr
		h.ModTime, h.AccessTime, h.ChangeTime, h.Uname = mtime, mtime, mtime, uname
		if err := w.Add(&h, strings.NewReader(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	d, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if w.Entries() != len(entries) {
		t.Errorf("Entries() = %d", w.Entries())
	}
	return d, out.Bytes()
}

func TestLayersAreDeterministic(t *testing.T) {
	t1 := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	t2 := t1.Add(48 * time.Hour)
	epoch := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

	a, blobA := write(t, Options{}, t1, "alice")
	b, _ := write(t, Options{}, t1, "bob")
	if a != b {
		t.Errorf("user names changed the layer: %v vs %v", a, b)
	}
	c, _ := write(t, Options{}, t2, "alice")
	if a == c {
		t.Error("without an epoch, mtimes are content: different mtimes must differ")
	}
	e1, _ := write(t, Options{Epoch: &epoch}, t1, "x")
	e2, _ := write(t, Options{Epoch: &epoch}, t2, "y")
	if e1 != e2 {
		t.Errorf("mtimes after the epoch were not clamped: %v vs %v", e1, e2)
	}

	if got := digest.FromBytes(blobA); got != a.Digest || int64(len(blobA)) != a.Size {
		t.Errorf("descriptor %v does not match the blob (%s, %d bytes)", a, got, len(blobA))
	}
	zr, err := gzip.NewReader(bytes.NewReader(blobA))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	if digest.FromBytes(raw) != a.DiffID {
		t.Errorf("diffID %s is not the digest of the uncompressed tar", a.DiffID)
	}
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uname != "" || !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() || h.ModTime.Nanosecond() != 0 {
			t.Errorf("%s: header not normalized: %+v", h.Name, h)
		}
		if h.Typeflag == tar.TypeSymlink && h.Size != 0 {
			t.Errorf("%s: symlink with a size", h.Name)
		}
	}
}

func TestTeeGetsTheUncompressedStream(t *testing.T) {
	var tee bytes.Buffer
	d, _ := write(t, Options{Tee: &tee}, time.Unix(0, 0), "")
	if digest.FromBytes(tee.Bytes()) != d.DiffID {
		t.Error("the tee did not receive exactly the uncompressed tar")
	}
}

func TestShortBodyIsAnError(t *testing.T) {
	w := NewWriter(io.Discard, Options{})
	err := w.Add(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Size: 10}, strings.NewReader("short"))
	if err == nil {
		t.Error("a body shorter than its header's size was accepted")
	}
}

// A layer keeps one identity from the writer to the manifest: V1 and
// FromV1 round-trip, and a docker layer maps to its OCI twin.
func TestDescriptorV1RoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, Options{})
	if err := w.Add(&tar.Header{Typeflag: tar.TypeReg, Name: "f", Mode: 0o644, Size: 1}, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	d, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	desc, diffID, err := d.V1()
	if err != nil {
		t.Fatal(err)
	}
	if back := FromV1(desc, diffID); back != d || d.MediaType != MediaType {
		t.Errorf("round trip: %+v → %+v", d, back)
	}
	desc.MediaType = types.DockerLayer
	if got := FromV1(desc, diffID).MediaType; got != MediaType {
		t.Errorf("a docker layer maps to %q, want %q", got, MediaType)
	}
}

// memPool is an in-process Pool over the members of blobs written before.
type memPool struct {
	blobs map[digest.Digest][]byte
	locs  map[Key]Loc
	hits  atomic.Int32
}

func (p *memPool) Member(k Key) (Loc, []byte, bool) {
	l, ok := p.locs[k]
	if !ok {
		return Loc{}, nil, false
	}
	p.hits.Add(1)
	return l, p.blobs[l.Blob][l.Offset : l.Offset+l.Length], true
}

// recorder is a Sink that keeps the blob and where each member landed.
type recorder struct {
	bytes.Buffer
	keys  []Key
	locs  []Loc
	froms []*Loc
}

func (r *recorder) WriteMember(k Key, from *Loc, b []byte) error {
	r.keys = append(r.keys, k)
	r.froms = append(r.froms, from)
	r.locs = append(r.locs, Loc{Offset: int64(r.Len()), Length: int64(len(b))})
	r.Buffer.Write(b)
	return nil
}

func writeFiles(t *testing.T, files map[string]string, pool Pool) (Descriptor, *recorder, []byte) {
	t.Helper()
	r := &recorder{}
	var tee bytes.Buffer
	w := NewWriter(r, Options{Pool: pool, Tee: &tee})
	for _, name := range []string{"a", "b", "big", "c"} {
		body := files[name]
		h := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}
		if err := w.Add(h, strings.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	d, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	return d, r, tee.Bytes()
}

func TestMembersArePooledAndTheBlobStaysOneStream(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 3*ChunkSize/16+100) // four members
	files := map[string]string{"a": "alpha\n", "b": "beta\n", "big": big, "c": ""}
	d1, r1, tee1 := writeFiles(t, files, nil)
	if got := len(r1.keys); got != 2+2+5+1+1 {
		t.Fatalf("%d members, want 11 (a and b: header and data, big: header and 4, c, the trailer)", got)
	}
	zr, err := gzip.NewReader(bytes.NewReader(r1.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plain, tee1) || digest.FromBytes(plain) != d1.DiffID || digest.FromBytes(r1.Bytes()) != d1.Digest {
		t.Fatal("the blob does not read back as the tee'd stream, or the descriptor is wrong")
	}
	pool := &memPool{blobs: map[digest.Digest][]byte{d1.Digest: r1.Bytes()}, locs: map[Key]Loc{}}
	for i, k := range r1.keys {
		pool.locs[k] = Loc{Blob: d1.Digest, Offset: r1.locs[i].Offset, Length: r1.locs[i].Length}
	}
	files["b"] = "beta, edited\n"
	d2, r2, _ := writeFiles(t, files, pool)
	if int(pool.hits.Load()) != len(r2.keys)-2 || r2.froms[2] != nil || r2.froms[3] != nil || r2.froms[0] == nil {
		t.Errorf("%d of %d members from the pool; want all but the edited file's header and data", pool.hits.Load(), len(r2.keys))
	}
	d3, r3, _ := writeFiles(t, files, nil)
	if d2 != d3 || !bytes.Equal(r2.Bytes(), r3.Bytes()) {
		t.Error("a layer written with pooled members differs from one compressed from scratch")
	}
}
