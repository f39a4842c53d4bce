package store

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/layer"
)

// fakeFetcher serves blobs from memory through the same verified write
// registry.FetchLayer does (layer.NewCheck beside a BlobWriter).
type fakeFetcher struct {
	blobs map[digest.Digest][]byte
	calls int
}

func (f *fakeFetcher) FetchRemote(s *Store, rb RemoteBlob) error {
	f.calls++
	b, ok := f.blobs[rb.Digest]
	if !ok {
		return errors.New("BLOB_UNKNOWN")
	}
	bw, err := s.NewBlobWriter()
	if err != nil {
		return err
	}
	defer bw.Abort()
	chk := layer.NewCheck(layer.Descriptor{Digest: rb.Digest, DiffID: rb.DiffID, Size: rb.Size})
	if _, err := io.Copy(io.MultiWriter(bw, chk), bytes.NewReader(b)); err != nil {
		return err
	}
	if err := chk.Close(); err != nil {
		return err
	}
	return bw.Commit(rb.Digest)
}

func testLayer(t *testing.T) (layer.Descriptor, []byte) {
	var buf bytes.Buffer
	w := layer.NewWriter(&buf, layer.Options{})
	if err := w.Add(&tar.Header{Name: "f", Mode: 0o644, Size: 2, Typeflag: tar.TypeReg}, bytes.NewReader([]byte("hi"))); err != nil {
		t.Fatal(err)
	}
	d, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	return d, buf.Bytes()
}

func TestRemoteBlobFetchedOnOpen(t *testing.T) {
	s := openStore(t)
	l, data := testLayer(t)
	rb := RemoteBlob{Digest: l.Digest, Size: l.Size, MediaType: l.MediaType, DiffID: l.DiffID, Repo: "127.0.0.1:5000/team/app"}
	if err := s.AddRemoteBlob(rb); err != nil {
		t.Fatal(err)
	}
	if s.HasBlob(l.Digest) || !s.HasContent(l.Digest) {
		t.Fatalf("a remote blob: HasBlob %v (want false), HasContent %v (want true)", s.HasBlob(l.Digest), s.HasContent(l.Digest))
	}
	if got := s.BlobSources(l.Digest); len(got) != 1 || got[0] != rb.Repo {
		t.Errorf("blob sources %v, want the record's repository (for mounts)", got)
	}
	if _, err := s.OpenBlob(l.Digest); !errors.Is(err, ErrRemote) {
		t.Errorf("OpenBlob without a fetcher: %v, want ErrRemote", err)
	}
	f := &fakeFetcher{blobs: map[digest.Digest][]byte{l.Digest: data}}
	s.SetFetcher(f)
	rc, err := s.OpenBlob(l.Digest)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data) || !s.HasBlob(l.Digest) {
		t.Fatalf("OpenBlob fetched %d bytes (want %d), HasBlob %v", len(got), len(data), s.HasBlob(l.Digest))
	}
	if _, ok := s.RemoteBlob(l.Digest); ok {
		t.Errorf("the fetched blob is still remote")
	}
	if rc, err := s.OpenBlob(l.Digest); err != nil || f.calls != 1 {
		t.Errorf("second open: %v, %d fetches (want 1)", err, f.calls)
	} else {
		rc.Close()
	}
}

func TestRemoteBlobWrongBytesRefused(t *testing.T) {
	s := openStore(t)
	l, data := testLayer(t)
	other, _ := testLayer(t)
	other.DiffID = digest.FromString("another tar")
	s.AddRemoteBlob(RemoteBlob{Digest: l.Digest, Size: l.Size, DiffID: other.DiffID, Repo: "r.example/x"})
	s.SetFetcher(&fakeFetcher{blobs: map[digest.Digest][]byte{l.Digest: data}})
	if _, err := s.OpenBlob(l.Digest); err == nil || !errors.Is(err, ErrRemote) {
		t.Fatalf("a remote blob whose content is not the recorded diffID opened: %v", err)
	}
	if s.HasBlob(l.Digest) {
		t.Errorf("an unverified blob was stored")
	}
}

func TestRemoteRecordCollectedLikeABlob(t *testing.T) {
	s := openStore(t)
	l, _ := testLayer(t)
	s.AddRemoteBlob(RemoteBlob{Digest: l.Digest, Size: l.Size, DiffID: l.DiffID, Repo: "r.example/x"})
	s.Close()
	err := s.Collect(func(c *Collection) error {
		bs, err := c.Blobs()
		if err != nil {
			return err
		}
		if len(bs) != 1 || bs[0].Digest != l.Digest || !bs[0].Remote || bs[0].Size != 0 {
			t.Errorf("Blobs() = %+v, want the remote record, size 0", bs)
		}
		if ok, err := c.RemoveBlob(l.Digest, time.Now().Add(time.Hour)); !ok || err != nil {
			t.Errorf("RemoveBlob of the remote record: %v, %v", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.HasContent(l.Digest) {
		t.Errorf("the collected remote record is still there")
	}
}

func TestChainFactsMerge(t *testing.T) {
	s := openStore(t)
	ids := []digest.Digest{digest.FromString("a"), digest.FromString("b")}
	s.AddChainFacts(ChainFacts{DiffIDs: ids, Facts: map[string]Fact{"stat /app": {Mode: 0o755}}})
	s.AddChainFacts(ChainFacts{DiffIDs: ids, Facts: map[string]Fact{"resolve /app": {Resolved: "/app"}, "stat /app": {Missing: true}}})
	cf, ok := s.ChainFacts(ids)
	if !ok || len(cf.Facts) != 2 || cf.Facts["stat /app"].Missing {
		t.Errorf("facts %+v: want both questions, the first answer kept", cf)
	}
	if on := s.FactsOnTop(ids[1]); len(on) != 1 {
		t.Errorf("FactsOnTop = %d chains, want 1", len(on))
	}
	if _, ok := s.ChainFacts(ids[:1]); ok {
		t.Errorf("another chain has facts")
	}
	s.Collect(func(c *Collection) error {
		if n, err := c.RemoveFactsExcept(func(d digest.Digest) bool { return d == ids[1] }, time.Time{}); n != 0 || err != nil {
			t.Errorf("facts of a kept layer removed: %d, %v", n, err)
		}
		if n, err := c.RemoveFactsExcept(func(digest.Digest) bool { return false }, time.Time{}); n != 1 || err != nil {
			t.Errorf("RemoveFactsExcept removed %d chains (%v), want 1", n, err)
		}
		return nil
	})
	if _, ok := s.ChainFacts(ids); ok {
		t.Errorf("the removed chain's facts are still there")
	}
}
