package store

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/layer"
)

// writeLayer writes n files through a LayerWriter; edit changes file 0.
func writeLayer(t *testing.T, s *Store, n int, edit string) layer.Descriptor {
	t.Helper()
	lw, err := s.NewLayerWriter()
	if err != nil {
		t.Fatal(err)
	}
	defer lw.Abort()
	w := layer.NewWriter(lw, layer.Options{Pool: lw.Pool()})
	defer w.Abort()
	for i := 0; i < n; i++ {
		body := strings.Repeat(fmt.Sprintf("file %d line\n", i), 200)
		if i == 0 {
			body += edit
		}
		h := &tar.Header{Name: fmt.Sprintf("f%03d", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}
		if err := w.Add(h, strings.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	d, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := lw.Commit(d); err != nil {
		t.Fatal(err)
	}
	return d
}

func blobBytes(t *testing.T, s *Store, d digest.Digest) []byte {
	t.Helper()
	rc, err := s.OpenBlob(d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", d, err)
	}
	return b
}

func TestLayerStoredAsItsParts(t *testing.T) {
	s := openStore(t)
	d1 := writeLayer(t, s, 100, "")
	if s.hasParts(d1.Digest) {
		t.Fatal("a layer with nothing pooled must be stored whole")
	}
	d2 := writeLayer(t, s, 100, "edited\n")
	if !s.hasParts(d2.Digest) || !s.HasBlob(d2.Digest) {
		t.Fatal("a layer made mostly of pooled members must be stored as parts")
	}
	if _, err := os.Stat(s.BlobPath(d2.Digest)); err == nil {
		t.Fatal("a parts-backed layer must not be stored whole too")
	}
	if b := blobBytes(t, s, d2.Digest); digest.FromBytes(b) != d2.Digest || int64(len(b)) != d2.Size {
		t.Fatal("the assembled blob is not the layer")
	}
	// A layer of a few members of a big blob is stored whole: a parts
	// list would keep the whole big blob alive for them.
	if small := writeLayer(t, s, 5, ""); s.hasParts(small.Digest) || !s.HasBlob(small.Digest) {
		t.Fatal("a layer using 5% of the blob it reuses was stored as its parts")
	}
	// Same content in a fresh store compresses to the same bytes.
	if fresh := writeLayer(t, openStore(t), 100, "edited\n"); fresh != d2 {
		t.Fatalf("pooled %v, from scratch %v", d2, fresh)
	}

	pl, err := s.readParts(d2.Digest)
	if err != nil {
		t.Fatal(err)
	}
	var pack digest.Digest
	for _, sg := range pl.Segments {
		if sg.Blob != d1.Digest {
			pack = sg.Blob
		}
	}
	fi, err := os.Stat(s.BlobPath(pack))
	if err != nil || fi.Size() >= d1.Size/10 {
		t.Fatalf("the pack should hold only the edited member: %v, %v", fi, err)
	}

	// A parts list that lies is caught at EOF, naming the blob.
	pl.Segments[0], pl.Segments[len(pl.Segments)-1] = pl.Segments[len(pl.Segments)-1], pl.Segments[0]
	b, _ := json.Marshal(pl)
	os.Chmod(s.partsPath(d2.Digest), 0o644)
	if err := os.WriteFile(s.partsPath(d2.Digest), b, 0o644); err != nil {
		t.Fatal(err)
	}
	rc, err := s.OpenBlob(d2.Digest)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, rc)
	rc.Close()
	if err == nil || !strings.Contains(err.Error(), "parts list is corrupt") || !strings.Contains(err.Error(), d2.Digest.String()) {
		t.Fatalf("a corrupt parts list read as %v", err)
	}
}

func TestCollectionKeepsSegmentsOfAPartsList(t *testing.T) {
	s := openStore(t)
	d1 := writeLayer(t, s, 100, "")
	d2 := writeLayer(t, s, 100, "edited\n")
	var infos []BlobInfo
	err := s.Collect(func(c *Collection) (err error) {
		infos, err = c.Blobs()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, b := range infos {
		if b.Digest == d2.Digest {
			found = len(b.Parts) == 2 && (b.Parts[0] == d1.Digest || b.Parts[1] == d1.Digest)
		}
	}
	if !found {
		t.Fatalf("the listing does not show %s as parts of %s and a pack: %+v", d2.Digest, d1.Digest, infos)
	}
	err = s.Collect(func(c *Collection) error {
		_, err := c.RemoveBlob(d2.Digest, time.Time{})
		return err
	})
	if err != nil || s.HasBlob(d2.Digest) {
		t.Fatalf("remove a parts-backed blob: %v", err)
	}
	if _, err := s.OpenBlob(d2.Digest); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a removed parts-backed blob opens with %v", err)
	}
	if !bytes.Equal(blobBytes(t, s, d1.Digest)[:2], []byte{0x1f, 0x8b}) {
		t.Fatal("the segment blob went with the parts list")
	}
}

// A member whose blob was removed since its index was written is
// compressed again: the index is a cache, never a source of truth.
func TestPoolMemberOfARemovedBlobIsCompressedAgain(t *testing.T) {
	s := openStore(t)
	d1 := writeLayer(t, s, 20, "")
	if _, err := os.Stat(s.indexPath(d1.Digest)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(s.BlobPath(d1.Digest)); err != nil { // the index stays
		t.Fatal(err)
	}
	s2, err := Open(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	d2 := writeLayer(t, s2, 20, "")
	if d2 != d1 || s2.hasParts(d2.Digest) {
		t.Fatalf("rewritten %v (parts: %v), first %v", d2, s2.hasParts(d2.Digest), d1)
	}
	if b := blobBytes(t, s2, d2.Digest); digest.FromBytes(b) != d2.Digest {
		t.Fatal("the rewritten blob is not its digest")
	}
}

func TestMemberIndexRoundTrip(t *testing.T) {
	s := openStore(t)
	blob := digest.FromString("blob")
	var members []indexEntry
	for i := 1; i <= 300; i++ { // key 0 is no member
		var k layer.Key
		k[0], k[1] = byte(i), byte(i>>8)
		members = append(members, indexEntry{key: k, seg: Segment{Blob: blob, Offset: int64(i) << 20, Length: int64(i + 18)}})
	}
	d := digest.FromString("layer")
	s.writeIndex(d, members, "")
	b, err := os.ReadFile(s.indexPath(d))
	if err != nil {
		t.Fatal(err)
	}
	locs := map[layer.Key]layer.Loc{}
	if n, err := parseIndex(b, locs); err != nil || n != len(members) {
		t.Fatalf("parsed %d members: %v", n, err)
	}
	for _, m := range members {
		if got := locs[m.key]; got != (layer.Loc{Blob: blob, Offset: m.seg.Offset, Length: m.seg.Length}) {
			t.Fatalf("member %x at %+v", m.key[:2], got)
		}
	}
	for _, cut := range []int{0, 10, len(indexMagic) + 5, len(b) / 2, len(b) - 1} {
		if _, err := parseIndex(b[:cut], map[layer.Key]layer.Loc{}); err == nil {
			t.Errorf("an index cut at %d parsed", cut)
		}
	}
}
