// Package store is minibuild's local content store under --root (DESIGN.md
// invariant 4: the store never lies).
//
// Layout:
//
//	root/blobs/sha256/<hex>  layers, configs and manifests, each whole and verified
//	root/tmp/                in-flight blob writes (temp file → sha256 → fsync → rename)
//	root/images.json         tags (normalized ref → manifest digest) and image records
//	root/lock                flock(2) serializing read-modify-write of images.json
//
// A blob appears under its name only after it was verified and synced, and
// images.json is replaced by write-temp+fsync+rename under the lock, after
// the blobs it names. So concurrent processes on one store are safe and a
// crash at any point leaves a usable store (at worst an unreferenced blob or
// a stale temp file, both harmless).
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/minibuild/minibuild/internal/atomicfile"
	"github.com/minibuild/minibuild/internal/flock"
)

// ErrNotFound is returned (wrapped) for a missing blob, image or tag.
var ErrNotFound = errors.New("not found")

// Store is a content store rooted at a directory. It is safe for concurrent
// use by goroutines and by processes.
type Store struct {
	root string

	leaseMu  sync.Mutex
	ownLease *Lease // taken before the first write (writeLease)

	remote  remoteState // remote blobs' fetcher (remote.go)
	members memberCache // the member pool (members.go)
}

// Open opens (creating if needed) the store at root.
func Open(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", root, err)
	}
	for _, d := range []string{filepath.Join(abs, "blobs", "sha256"), filepath.Join(abs, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	s := &Store{root: abs}
	s.removeStaleTemps()
	return s, nil
}

// Root is the store's directory.
func (s *Store) Root() string { return s.root }

// removeStaleTemps deletes what killed writers left: temp blobs and
// spools in root/tmp, and the state's own temp files beside it. Every
// writer holds a flock on its temp file while it lives (internal/flock),
// so a live process's file is never touched, however old.
func (s *Store) removeStaleTemps() {
	flock.Sweep(filepath.Join(s.root, "tmp"), nil)
	atomicfile.SweepDir(s.root)
	s.sweepPartsTemps() // parts.go
}

// SweepTemps is what Open does first, for prune: it removes the temp
// files and dirs under root/tmp (and beside the store's state) that no
// live process holds.
func (s *Store) SweepTemps() { s.removeStaleTemps() }

// state is the content of images.json.
type state struct {
	Version int                      `json:"version"`
	Tags    map[string]digest.Digest `json:"tags"`   // normalized ref → manifest digest
	Images  map[digest.Digest]record `json:"images"` // manifest digest → record
}

// record caches what Images and Image need without reading blobs.
type record struct {
	Config  digest.Digest `json:"config"`
	Created time.Time     `json:"created"`
	Size    int64         `json:"size"` // sum of compressed layer sizes
}

const stateVersion = 1

func (s *Store) statePath() string { return filepath.Join(s.root, "images.json") }

// load reads images.json; readers need no lock since it is replaced by
// rename and therefore always whole.
func (s *Store) load() (*state, error) {
	st := &state{Version: stateVersion, Tags: map[string]digest.Digest{}, Images: map[digest.Digest]record{}}
	b, err := os.ReadFile(s.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read image index: %w", err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("read image index %s: %w", s.statePath(), err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("image index %s: unsupported version %d", s.statePath(), st.Version)
	}
	if st.Tags == nil {
		st.Tags = map[string]digest.Digest{}
	}
	if st.Images == nil {
		st.Images = map[digest.Digest]record{}
	}
	return st, nil
}

// update runs fn on the current state under the store lock and saves the
// result atomically when fn succeeds.
func (s *Store) update(fn func(*state) error) error {
	return s.locked(func(st *state) error {
		if err := fn(st); err != nil {
			return err
		}
		return s.save(st)
	})
}

// locked runs fn on the current state under the store lock.
func (s *Store) locked(fn func(*state) error) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	st, err := s.load()
	if err != nil {
		return err
	}
	return fn(st)
}

// lock takes the store lock: flock(2) on root/lock, which serializes
// images.json updates, lease changes and the collector's decisions. A
// process must not take it twice (a second flock on a new file blocks).
func (s *Store) lock() (unlock func(), err error) {
	lf, err := os.OpenFile(filepath.Join(s.root, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock store: %w", err)
	}
	for {
		err = unix.Flock(int(lf.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		lf.Close()
		return nil, fmt.Errorf("lock store: %w", err)
	}
	return func() { lf.Close() }, nil // closing the file drops the flock
}

// save replaces images.json with st; the caller holds the lock.
func (s *Store) save(st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode image index: %w", err)
	}
	return atomicfile.WriteFile(s.statePath(), append(b, '\n'), 0o644)
}

// isHex reports whether s is non-empty lowercase hex.
func isHex(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
