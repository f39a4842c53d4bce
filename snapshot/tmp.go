package snapshot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Temporary dirs (snapshots, bind views, extractions) live under
// root/snapshots/tmp/, each guarded by a flock its live process holds, so
// Cleanup can remove what killed runs left while other minibuild
// processes keep working.

// Cleanup removes temporary dirs whose owning process is gone.
func (sn *Snapshotter) Cleanup() error {
	entries, err := os.ReadDir(sn.tmpDir)
	if err != nil {
		return fmt.Errorf("cleanup snapshots: %w", err)
	}
	var errs []error
	locks := map[string]bool{}
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".lock"); ok {
			locks[name] = true
		}
	}
	for _, e := range entries {
		name := e.Name()
		p := filepath.Join(sn.tmpDir, name)
		switch {
		case strings.HasSuffix(name, ".lock"):
			errs = append(errs, removeIfUnlocked(p, strings.TrimSuffix(p, ".lock")))
		case strings.HasSuffix(name, ".locking"):
			// A lock file being born; stale only if old.
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Minute {
				errs = append(errs, os.Remove(p))
			}
		case !locks[name]:
			// The lock is created before and removed after its dir, so a
			// dir without one belongs to nobody.
			errs = append(errs, os.RemoveAll(p))
		}
	}
	errs = append(errs, sn.cleanupCacheMounts())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleanup snapshots: %w", err)
	}
	return nil
}

func removeIfUnlocked(lockPath, dir string) error {
	f, err := os.Open(lockPath)
	if err != nil {
		return ignoreNotExist(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return nil // held by a live process
	}
	if err := removeAllForce(dir); err != nil {
		return err
	}
	return ignoreNotExist(os.Remove(lockPath))
}

func ignoreNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// tempDir creates tmp/<prefix>NNN guarded by tmp/<prefix>NNN.lock, locked
// for as long as the returned release function has not run.
func (sn *Snapshotter) tempDir(prefix string) (string, func() error, error) {
	f, err := os.CreateTemp(sn.tmpDir, prefix+"*.locking")
	if err != nil {
		return "", nil, fmt.Errorf("create temp dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", nil, fmt.Errorf("lock temp dir: %w", err)
	}
	dir := strings.TrimSuffix(f.Name(), ".locking")
	lock := dir + ".lock"
	if err := os.Rename(f.Name(), lock); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", nil, fmt.Errorf("lock temp dir: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		f.Close()
		os.Remove(lock)
		return "", nil, fmt.Errorf("create temp dir: %w", err)
	}
	release := func() error {
		defer f.Close()
		if err := removeAllForce(dir); err != nil {
			return fmt.Errorf("remove %s: %w", dir, err)
		}
		return ignoreNotExist(os.Remove(lock))
	}
	return dir, release, nil
}

// removeAllForce is os.RemoveAll that also copes with overlay work dirs,
// whose "work" subdir is left with mode 0 by the kernel.
func removeAllForce(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil {
		return nil
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// TempDir creates a private temporary dir (for a step's scratch data, e.g.
// the upper dir of a writable bind) that Cleanup removes if the process
// dies before calling release.
func (sn *Snapshotter) TempDir(prefix string) (dir string, release func() error, err error) {
	return sn.tempDir("t" + prefix)
}
