package flock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Temp files and dirs that a killed process leaves must be removable
// without ever touching one a live process is writing: the writer holds
// an exclusive flock on its temp file (or dir) for as long as it has it
// open, and a sweeper removes only what it can lock itself. A killed
// process's locks die with it.

// CreateTemp creates a new file in dir (os.CreateTemp's pattern) and
// holds an exclusive flock on it until the file is closed. If a sweeper
// removed the file between its creation and the lock, a new one is made.
func CreateTemp(dir, pattern string) (*os.File, error) {
	for i := 0; ; i++ {
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			return nil, err
		}
		if ok, err := lockOwn(f); ok || err != nil || i == 10 {
			if err == nil && !ok {
				err = errors.New("temp file removed as it was made")
			}
			if err != nil {
				f.Close()
				return nil, err
			}
			return f, nil
		}
		f.Close()
	}
}

// HoldCreated takes the flock on a file or dir the caller just created at
// f.Name() (atomicfile's temp files, a temp dir opened read-only); false
// when a sweeper removed it first (then the caller makes another).
func HoldCreated(f *os.File) (bool, error) { return lockOwn(f) }

// lockOwn locks f and checks that its path still names it.
func lockOwn(f *os.File) (bool, error) {
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return false, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	var a, b unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &a); err != nil {
		return false, err
	}
	if err := unix.Lstat(f.Name(), &b); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	return a.Dev == b.Dev && a.Ino == b.Ino, nil
}

// RemoveUnheld removes the file or dir at p unless a live process holds
// its flock; removed reports whether it did.
func RemoveUnheld(p string) (removed bool, err error) {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return false, nil
		}
		return false, err
	}
	if err := os.RemoveAll(p); err != nil {
		return false, err
	}
	return true, nil
}

// Sweep removes every entry of dir whose name match accepts and that no
// live process holds (RemoveUnheld); it returns how many it removed. A
// missing dir holds nothing.
func Sweep(dir string, match func(name string) bool) (int, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, e := range ents {
		if match != nil && !match(e.Name()) {
			continue
		}
		ok, err := RemoveUnheld(filepath.Join(dir, e.Name()))
		if ok {
			n++
		}
		errs = append(errs, err)
	}
	return n, errors.Join(errs...)
}
