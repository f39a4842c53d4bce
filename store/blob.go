package store

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/internal/flock"
)

// BlobWriter writes one blob to a temp file under root/tmp, hashing as it
// goes. It ends in exactly one Commit or Abort; Abort after Commit is a
// no-op, so `defer bw.Abort()` is always safe.
type BlobWriter struct {
	s    *Store
	f    *os.File
	h    hash.Hash
	size int64
	done bool
}

// NewBlobWriter starts a blob write. Its temp file under root/tmp is
// flock-held until Commit or Abort: a killed writer's is swept by the
// next Open (or prune), a live one's never.
func (s *Store) NewBlobWriter() (*BlobWriter, error) {
	if err := s.writeLease(); err != nil {
		return nil, err
	}
	f, err := flock.CreateTemp(filepath.Join(s.root, "tmp"), "blob-")
	if err != nil {
		return nil, fmt.Errorf("create blob temp file: %w", err)
	}
	return &BlobWriter{s: s, f: f, h: sha256.New()}, nil
}

// Write implements io.Writer.
func (bw *BlobWriter) Write(p []byte) (int, error) {
	if bw.done {
		return 0, errors.New("write to a finished blob writer")
	}
	n, err := bw.f.Write(p)
	bw.h.Write(p[:n])
	bw.size += int64(n)
	return n, err
}

// Digest is the sha256 of what has been written so far.
func (bw *BlobWriter) Digest() digest.Digest {
	return digest.NewDigest(digest.SHA256, bw.h)
}

// Size is the number of bytes written so far.
func (bw *BlobWriter) Size() int64 { return bw.size }

// Commit verifies the content against expected, fsyncs it and renames it
// to blobs/sha256/<hex>. An empty expected digest stores the blob under the
// digest of what was written (see Digest). A blob that is already present
// is success; a mismatch is an error and stores nothing.
func (bw *BlobWriter) Commit(expected digest.Digest) error {
	if bw.done {
		return errors.New("commit of a finished blob writer")
	}
	defer bw.Abort()
	got := bw.Digest()
	if expected != "" && expected != got {
		return fmt.Errorf("commit blob: digest mismatch: expected %s, got %s (%d bytes)", expected, got, bw.size)
	}
	dst, err := bw.s.blobPath(got)
	if err != nil {
		return err
	}
	now := time.Now()
	// Refresh the mtime of a present blob so that this process's lease
	// covers the image it is about to be part of. A blob collected
	// meanwhile (Chtimes fails) is written again below.
	if os.Chtimes(dst, now, now) == nil {
		return nil
	}
	if err := bw.f.Sync(); err != nil {
		return fmt.Errorf("commit blob %s: sync: %w", got, err)
	}
	// Blobs are immutable: make that visible in the permissions too.
	// The file stays open (its flock held, see NewBlobWriter) until it
	// is renamed, so that no sweep can take it.
	if err := bw.f.Chmod(0o444); err != nil {
		return fmt.Errorf("commit blob %s: %w", got, err)
	}
	// rename(2) atomically replaces an identical blob another writer
	// committed meanwhile, so a race between writers is harmless.
	if err := os.Chtimes(bw.f.Name(), now, now); err != nil {
		return fmt.Errorf("commit blob %s: %w", got, err)
	}
	if err := os.Rename(bw.f.Name(), dst); err != nil {
		return fmt.Errorf("commit blob %s: %w", got, err)
	}
	bw.done = true
	bw.f.Close() // synced: a close error loses nothing
	return syncDir(filepath.Dir(dst))
}

// Abort discards the temp file. It is safe after Commit.
func (bw *BlobWriter) Abort() {
	if bw.done {
		return
	}
	bw.done = true
	os.Remove(bw.f.Name())
	bw.f.Close()
}

// PutBlob stores the content of r under expected (see BlobWriter.Commit).
func (s *Store) PutBlob(r io.Reader, expected digest.Digest) error {
	if expected != "" && s.refreshBlob(expected) {
		return nil
	}
	bw, err := s.NewBlobWriter()
	if err != nil {
		return err
	}
	defer bw.Abort()
	if _, err := io.Copy(bw, r); err != nil {
		return fmt.Errorf("write blob %s: %w", expected, err)
	}
	return bw.Commit(expected)
}

// HasBlob reports whether the blob d is present (and therefore whole and
// verified).
func (s *Store) HasBlob(d digest.Digest) bool {
	p, err := s.blobPath(d)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil || s.hasParts(d)
}

// refreshBlob reports whether blob d is present and, if so, renews its
// mtime, as Commit does for a blob written again: this process's lease
// (and a concurrent GC's grace period) then covers the image the caller
// is about to record with it.
func (s *Store) refreshBlob(d digest.Digest) bool {
	p, err := s.blobPath(d)
	if err != nil {
		return false
	}
	if s.writeLease() != nil {
		return false // unprotected: the caller writes the blob, which fails clearly
	}
	now := time.Now()
	if os.Chtimes(p, now, now) == nil || s.refreshParts(d) {
		return true
	}
	_, err = os.Stat(p)
	return err == nil
}

// OpenBlob opens the blob d; a missing blob is ErrNotFound. A remote
// blob (remote.go) is fetched first, through the store's Fetcher.
func (s *Store) OpenBlob(d digest.Digest) (io.ReadCloser, error) {
	p, err := s.blobPath(d)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		rc, err := s.openParts(d) // parts.go
		if !errors.Is(err, ErrNotFound) {
			return rc, err
		}
		if rc, ok, err := s.openRemote(d); ok {
			return rc, err // a remote blob, fetched now (remote.go)
		}
		return nil, fmt.Errorf("blob %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	return f, nil
}

// BlobPath is the file that holds blob d (it may not exist). Readers that
// want random access or the size use it; nobody may write to it.
func (s *Store) BlobPath(d digest.Digest) string {
	p, err := s.blobPath(d)
	if err != nil {
		return ""
	}
	return p
}

// blobPath validates d so that a hostile digest cannot name a path
// outside blobs/sha256.
func (s *Store) blobPath(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("blob digest %q: %w", d, err)
	}
	if d.Algorithm() != digest.SHA256 {
		return "", fmt.Errorf("blob digest %s: only sha256 is supported", d)
	}
	return filepath.Join(s.root, "blobs", "sha256", d.Encoded()), nil
}

// readBlob reads a whole (small) blob: a manifest or a config.
func (s *Store) readBlob(d digest.Digest) ([]byte, error) {
	rc, err := s.OpenBlob(d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", d, err)
	}
	return b, nil
}

// removeBlob deletes a blob; a missing blob is not an error.
func (s *Store) removeBlob(d digest.Digest) error {
	p, err := s.blobPath(d)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove blob %s: %w", d, err)
	}
	return s.removeParts(d)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
