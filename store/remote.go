package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/internal/atomicfile"
)

// Remote blobs are layers the store knows but does not hold: a cache hit
// imported from a registry (--cache-from) names its layer without
// downloading it, as BuildKit's lazy refs do. The record says what the
// blob is (digest, size, media type, diffID: the cache record's claim,
// verified when the bytes come) and where it lives (a registry
// repository, "host/path"). The bytes are fetched on the first OpenBlob,
// through the Fetcher the command gave the store (SetFetcher: the store
// does not speak the registry protocol), verified by it, and committed as
// an ordinary blob; the record then has done its job. A push to the
// registry that holds it mounts or skips it (its repository is a blob
// source), so an image whose every step hit can be built and pushed back
// without one layer crossing the wire.
//
// Records live in root/remote/sha256/<hex> (JSON, written whole but not
// synced: writeUnsynced; their mtime is refreshed like a blob's). The collector
// lists them among the blobs (BlobInfo.Remote) and removes them like
// blobs: an image or a cache record may name a remote blob as it names a
// stored one.

// RemoteBlob is a layer blob that lives in a registry repository.
type RemoteBlob struct {
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	MediaType string        `json:"mediaType,omitempty"`
	DiffID    digest.Digest `json:"diffID"`
	Repo      string        `json:"repo"` // "host/path", never credentials
}

// Fetcher brings a remote blob's bytes into a store: from rb.Repo, checked
// against rb (digest, size and diffID: layer.NewCheck) before it commits
// them as the blob rb.Digest. registry.NewFetcher is the one there is.
type Fetcher interface {
	FetchRemote(s *Store, rb RemoteBlob) error
}

// remoteState is the store's fetcher and the fetches in flight (one per
// digest in this process: concurrent readers of a remote blob wait for
// the same download).
type remoteState struct {
	mu       sync.Mutex
	fetcher  Fetcher
	inflight map[digest.Digest]*fetchCall
}

type fetchCall struct {
	done chan struct{}
	err  error
}

// ErrRemote marks the error of a remote blob that could not be read: it
// is not stored here and could not be fetched.
var ErrRemote = errors.New("remote layer")

// SetFetcher lets OpenBlob fetch remote blobs through f (nil: never).
func (s *Store) SetFetcher(f Fetcher) {
	s.remote.mu.Lock()
	defer s.remote.mu.Unlock()
	s.remote.fetcher = f
}

func (s *Store) remotePath(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("blob digest %q: %w", d, err)
	}
	return filepath.Join(s.root, "remote", d.Algorithm().String(), d.Encoded()), nil
}

// AddRemoteBlob records that rb lives in rb.Repo, and that repository as
// one of its sources (for mounts). A blob the store holds needs no
// record: it is only refreshed. A record already there is refreshed (its
// mtime, for a concurrent collection's grace) and kept.
func (s *Store) AddRemoteBlob(rb RemoteBlob) error {
	if rb.DiffID.Validate() != nil || rb.Size <= 0 {
		return fmt.Errorf("remote layer %s: a record needs a diffID and a size", rb.Digest)
	}
	if err := s.AddBlobSource(rb.Digest, rb.Repo); err != nil {
		return err
	}
	if s.refreshBlob(rb.Digest) {
		return nil
	}
	p, err := s.remotePath(rb.Digest)
	if err != nil {
		return err
	}
	if err := s.writeLease(); err != nil {
		return err
	}
	now := time.Now()
	if old, ok := s.readRemote(p); ok && old == rb && os.Chtimes(p, now, now) == nil {
		return nil
	}
	b, err := json.Marshal(rb)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("record remote layer %s: %w", rb.Digest, err)
	}
	if err := writeUnsynced(p, append(b, '\n')); err != nil {
		return fmt.Errorf("record remote layer %s: %w", rb.Digest, err)
	}
	return nil
}

// writeUnsynced replaces p whole (temp file and rename) without syncing:
// for remote records and chain facts, which a crash may lose but never
// make lie. A lost remote record leaves the cache record that names it
// without content (HasContent false): a miss, as a collected blob's; a
// lost fact is a question asked of the snapshotter again. A file a crash
// left empty does not parse, which is the same as lost. A fresh host
// writes one per hit, so the syncs would cost more than the build.
func writeUnsynced(p string, b []byte) error {
	return atomicfile.WriteUnsynced(p, b, 0o644)
}

func (s *Store) readRemote(p string) (RemoteBlob, bool) {
	b, err := os.ReadFile(p)
	if err != nil {
		return RemoteBlob{}, false
	}
	var rb RemoteBlob
	if json.Unmarshal(b, &rb) != nil || rb.Digest.Validate() != nil || filepath.Base(p) != rb.Digest.Encoded() {
		return RemoteBlob{}, false
	}
	return rb, true
}

// RemoteBlob returns the record of d when d is remote: recorded, and its
// bytes not in the store.
func (s *Store) RemoteBlob(d digest.Digest) (RemoteBlob, bool) {
	if s.HasBlob(d) {
		return RemoteBlob{}, false
	}
	p, err := s.remotePath(d)
	if err != nil {
		return RemoteBlob{}, false
	}
	return s.readRemote(p)
}

// HasContent reports whether the store can provide blob d: it holds the
// bytes (HasBlob) or knows where to fetch them (RemoteBlob).
func (s *Store) HasContent(d digest.Digest) bool {
	if s.HasBlob(d) {
		return true
	}
	_, ok := s.RemoteBlob(d)
	return ok
}

// refreshRemote renews a remote record's mtime, as refreshBlob does a
// blob's; false when there is none.
func (s *Store) refreshRemote(d digest.Digest) bool {
	p, err := s.remotePath(d)
	if err != nil {
		return false
	}
	now := time.Now()
	return os.Chtimes(p, now, now) == nil
}

// openRemote is OpenBlob's fallback for a blob that is not stored: a
// remote one is fetched (once per process at a time), and then opened as
// any blob. ok is false when d is not remote either.
func (s *Store) openRemote(d digest.Digest) (rc io.ReadCloser, ok bool, err error) {
	rb, ok := s.RemoteBlob(d)
	if !ok {
		return nil, false, nil
	}
	if err := s.fetchRemote(rb); err != nil {
		return nil, true, err
	}
	p, err := s.blobPath(d)
	if err != nil {
		return nil, true, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, true, fmt.Errorf("open blob %s: %w", d, err)
	}
	return f, true, nil
}

func (s *Store) fetchRemote(rb RemoteBlob) error {
	s.remote.mu.Lock()
	f := s.remote.fetcher
	if f == nil {
		s.remote.mu.Unlock()
		return fmt.Errorf("%w %s is in %s, not stored here, and this command does not fetch layers", ErrRemote, rb.Digest, rb.Repo)
	}
	if c, ok := s.remote.inflight[rb.Digest]; ok {
		s.remote.mu.Unlock()
		<-c.done
		return c.err
	}
	c := &fetchCall{done: make(chan struct{})}
	if s.remote.inflight == nil {
		s.remote.inflight = map[digest.Digest]*fetchCall{}
	}
	s.remote.inflight[rb.Digest] = c
	s.remote.mu.Unlock()

	c.err = f.FetchRemote(s, rb)
	if c.err != nil {
		c.err = fmt.Errorf("%w %s (%d bytes), not stored here, could not be fetched from %s: %w", ErrRemote, rb.Digest, rb.Size, rb.Repo, c.err)
	} else if !s.HasBlob(rb.Digest) {
		c.err = fmt.Errorf("%w %s from %s: the fetcher stored nothing", ErrRemote, rb.Digest, rb.Repo)
	} else {
		s.removeRemote(rb.Digest) // the bytes are here: an ordinary blob now
	}
	s.remote.mu.Lock()
	delete(s.remote.inflight, rb.Digest)
	s.remote.mu.Unlock()
	close(c.done)
	return c.err
}

// removeRemote deletes d's remote record; a missing one is not an error.
func (s *Store) removeRemote(d digest.Digest) error {
	p, err := s.remotePath(d)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove remote layer %s: %w", d, err)
	}
	return nil
}

// remoteBlobs lists the remote records whose bytes are not stored, for
// the collector: Size is 0 (nothing here), Remote is set.
func (s *Store) remoteBlobs() []BlobInfo {
	dir := filepath.Join(s.root, "remote", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []BlobInfo
	for _, e := range ents {
		if atomicfile.IsTemp(e.Name()) {
			continue // a write in flight, or a killed one's (swept by Open)
		}
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if d.Validate() != nil || s.HasBlob(d) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, BlobInfo{Digest: d, ModTime: fi.ModTime(), Remote: true})
	}
	return out
}

// withRemote merges the remote records into a blob listing, sorted by
// digest.
func (s *Store) withRemote(blobs []BlobInfo) []BlobInfo {
	rs := s.remoteBlobs()
	if len(rs) == 0 {
		return blobs
	}
	out := append(blobs, rs...)
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out
}

// removeRemoteIfOld deletes d's remote record unless its mtime is at or
// after keepAfter (zero: no check), as RemoveBlob does a blob.
func (s *Store) removeRemoteIfOld(d digest.Digest, keepAfter time.Time) (bool, error) {
	p, err := s.remotePath(d)
	if err != nil {
		return false, err
	}
	fi, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("remove remote layer %s: %w", d, err)
	}
	if !keepAfter.IsZero() && !fi.ModTime().Before(keepAfter) {
		return false, nil
	}
	if err := s.removeRemote(d); err != nil {
		return false, err
	}
	return true, nil
}

// RemoteLayers lists the layers of img that are remote (not stored here,
// fetched when read), in layer order; for images and inspect.
func (s *Store) RemoteLayers(img v1.Image) ([]RemoteBlob, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	var out []RemoteBlob
	for _, l := range m.Layers {
		if rb, ok := s.RemoteBlob(toDigest(l.Digest)); ok {
			out = append(out, rb)
		}
	}
	return out, nil
}
