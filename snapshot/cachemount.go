package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/minibuild/minibuild/internal/flock"
)

// Cache mounts (RUN --mount=type=cache) are persistent dirs under
// root/snapshots/cachemounts/, one per id, shared by every build and
// project on this root. Each instance is a dir <h>[-N] (h = first 16 hex
// of sha256(id)) holding "id" (the id, for listings), "lock" (flock: shared
// by sharing=shared users, exclusive for locked and private users and for
// prune) and "data/" (what the RUN sees). They are never part of a layer
// or a key.

// Sharing is how concurrent builds use one cache mount id.
type Sharing string

// The sharing modes of BuildKit.
const (
	// SharingShared lets every user write the same dir at once.
	SharingShared Sharing = "shared"
	// SharingPrivate gives a user a dir no other user holds, making
	// another instance of the id when all are busy.
	SharingPrivate Sharing = "private"
	// SharingLocked makes users of the id wait for each other.
	SharingLocked Sharing = "locked"
)

// CacheMountOptions are the creation and sharing options of a cache mount.
type CacheMountOptions struct {
	Sharing Sharing // default shared
	// Mode (permission bits), UID and GID apply to the data dir when it
	// is created (default 0755, 0, 0).
	Mode     *uint32
	UID, GID int
}

// CacheMount is an acquired cache mount; Dir is the dir to bind.
type CacheMount struct {
	Dir  string
	lock *os.File
}

// Release lets other users (locked, private, prune) have the dir.
func (c *CacheMount) Release() {
	if c.lock != nil {
		c.lock.Close()
		c.lock = nil
	}
}

// CacheMountInfo describes one cache mount instance.
type CacheMountInfo struct {
	ID   string
	Dir  string
	Size int64
	// InUse tells that a build holds it (it could not be locked).
	InUse bool
}

func cacheHash(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:8])
}

// CacheMount acquires the cache mount id, creating it on first use; it
// waits (until ctx ends) while sharing requires.
func (sn *Snapshotter) CacheMount(ctx context.Context, id string, opts CacheMountOptions) (*CacheMount, error) {
	if id == "" {
		return nil, errors.New("cache mount: empty id")
	}
	h := cacheHash(id)
	switch opts.Sharing {
	case "", SharingShared, SharingLocked:
		how := unix.LOCK_SH
		if opts.Sharing == SharingLocked {
			how = unix.LOCK_EX
		}
		for {
			dir, err := sn.cacheInstance(h, id, opts)
			if err != nil {
				return nil, err
			}
			f, err := os.Open(filepath.Join(dir, "lock"))
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					continue // pruned under us
				}
				return nil, fmt.Errorf("cache mount %s: %w", id, err)
			}
			if err := flock.Wait(ctx, f, how); err != nil {
				f.Close()
				return nil, fmt.Errorf("cache mount %s: %w", id, err)
			}
			if !stillAt(f, filepath.Join(dir, "lock")) {
				f.Close()
				continue // pruned while we waited
			}
			return &CacheMount{Dir: filepath.Join(dir, "data"), lock: f}, nil
		}
	case SharingPrivate:
		for n := 0; ; n++ {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			name := h
			if n > 0 {
				name += "-" + strconv.Itoa(n)
			}
			dir, err := sn.cacheInstance(name, id, opts)
			if err != nil {
				return nil, err
			}
			f, err := os.Open(filepath.Join(dir, "lock"))
			if err != nil {
				return nil, fmt.Errorf("cache mount %s: %w", id, err)
			}
			if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil && stillAt(f, filepath.Join(dir, "lock")) {
				return &CacheMount{Dir: filepath.Join(dir, "data"), lock: f}, nil
			}
			f.Close()
		}
	}
	return nil, fmt.Errorf("cache mount %s: unknown sharing %q", id, opts.Sharing)
}

// cacheInstance returns the instance dir name, creating it empty when
// missing.
func (sn *Snapshotter) cacheInstance(name, id string, opts CacheMountOptions) (string, error) {
	dir, _, err := sn.makeCacheInstance(name, id, opts, nil)
	return dir, err
}

// makeCacheInstance returns the instance dir name and whether this call
// made it: when missing, it is built aside (fill, when non-nil, fills its
// data dir first) and renamed into place, so no user sees it half made.
func (sn *Snapshotter) makeCacheInstance(name, id string, opts CacheMountOptions, fill func(data string) error) (string, bool, error) {
	dir := filepath.Join(sn.cacheDir, name)
	if _, err := os.Lstat(filepath.Join(dir, "lock")); err == nil {
		return dir, false, nil
	}
	tmp, err := os.MkdirTemp(sn.cacheDir, ".new-")
	if err != nil {
		return "", false, fmt.Errorf("create cache mount %s: %w", id, err)
	}
	defer removeAllForce(tmp)
	mode := uint32(0o755)
	if opts.Mode != nil {
		mode = *opts.Mode
	}
	data := filepath.Join(tmp, "data")
	err = os.WriteFile(filepath.Join(tmp, "id"), []byte(id), 0o600)
	if err == nil {
		err = os.Mkdir(data, 0o700)
	}
	if err == nil && fill != nil {
		err = fill(data)
	}
	if err == nil {
		err = os.Lchown(data, opts.UID, opts.GID)
	}
	if err == nil {
		err = unix.Chmod(data, mode&0o7777)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(tmp, "lock"), nil, 0o600)
	}
	if err != nil {
		return "", false, fmt.Errorf("create cache mount %s: %w", id, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, statErr := os.Lstat(filepath.Join(dir, "lock")); statErr == nil {
			return dir, false, nil // another build made it first
		}
		return "", false, fmt.Errorf("create cache mount %s: %w", id, err)
	}
	return dir, true, nil
}

// CacheMounts lists the cache mount instances, sorted by id.
func (sn *Snapshotter) CacheMounts() ([]CacheMountInfo, error) {
	entries, err := os.ReadDir(sn.cacheDir)
	if err != nil {
		return nil, fmt.Errorf("list cache mounts: %w", err)
	}
	var out []CacheMountInfo
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || !e.IsDir() {
			continue
		}
		dir := filepath.Join(sn.cacheDir, e.Name())
		id, err := os.ReadFile(filepath.Join(dir, "id"))
		if err != nil {
			continue
		}
		info := CacheMountInfo{ID: string(id), Dir: dir, Size: diskUsage(filepath.Join(dir, "data"))}
		if f, err := os.Open(filepath.Join(dir, "lock")); err == nil {
			info.InUse = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil
			f.Close()
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b CacheMountInfo) int { return strings.Compare(a.ID+"\x00"+a.Dir, b.ID+"\x00"+b.Dir) })
	return out, nil
}

// PruneCacheMounts removes the cache mounts with the given ids (every one
// when ids is empty) that no build holds, and returns what they used.
func (sn *Snapshotter) PruneCacheMounts(ids []string) (removed []CacheMountInfo, err error) {
	all, err := sn.CacheMounts()
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, m := range all {
		if len(ids) > 0 && !slices.Contains(ids, m.ID) {
			continue
		}
		f, err := os.Open(filepath.Join(m.Dir, "lock"))
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			f.Close()
			continue // in use: keep it
		}
		// Out of the way first, so no new user finds it half removed.
		gone, err := os.MkdirTemp(sn.cacheDir, ".del-")
		if err == nil {
			err = os.Rename(m.Dir, filepath.Join(gone, "d"))
		}
		f.Close()
		if err == nil {
			err = removeAllForce(gone)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cache mount %s: %w", m.ID, err))
			continue
		}
		removed = append(removed, m)
	}
	return removed, errors.Join(errs...)
}

// cleanupCacheMounts removes half-made and half-removed instances.
func (sn *Snapshotter) cleanupCacheMounts() error {
	entries, err := os.ReadDir(sn.cacheDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		info, err := e.Info()
		if err != nil {
			continue
		}
		stale := strings.HasPrefix(name, ".del-") || (strings.HasPrefix(name, ".new-") && time.Since(info.ModTime()) > time.Minute)
		if stale {
			errs = append(errs, removeAllForce(filepath.Join(sn.cacheDir, name)))
		}
	}
	return errors.Join(errs...)
}

// diskUsage sums the sizes of the regular files under dir.
func diskUsage(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// stillAt tells whether the open file f is still the file at p (prune
// moves an instance away while holding its lock).
func stillAt(f *os.File, p string) bool {
	a, err1 := f.Stat()
	b, err2 := os.Lstat(p)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}
