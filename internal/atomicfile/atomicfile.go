// Package atomicfile replaces files whole or not at all (DESIGN.md
// invariant 4): a reader sees the old content or the new, never a torn
// write, and a crash leaves at most a temp file behind.
//
// The lifecycle is containerd's content writer's: Create a temp file
// beside the destination, Write to it, then Commit (fsync, rename, fsync
// of the directory) or Abort (remove). WriteFile and Write do all of it
// for content at hand.
package atomicfile

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/minibuild/minibuild/internal/flock"
)

// File is a replacement for a path in the making; nothing is at the path
// until Commit.
type File struct {
	f    *os.File
	path string
	done bool
}

// Create starts replacing path. The temp file is created beside path with
// perm less the umask, as os.OpenFile creates a new file (not
// os.CreateTemp's 0600), and keeps that mode when it is renamed.
func Create(path string, perm os.FileMode) (*File, error) {
	f, err := createTemp(path, perm)
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return &File{f: f, path: path}, nil
}

// tempPrefix is the name of path's temp files less their random tail.
func tempPrefix(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
}

// createTemp opens a new, uniquely named file beside path and holds its
// flock (internal/flock) until it is closed, so that Sweep never removes
// it while this process lives.
func createTemp(path string, perm os.FileMode) (*os.File, error) {
	prefix := tempPrefix(path)
	for i := 0; ; i++ {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(prefix+hex.EncodeToString(b[:]), os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
		if errors.Is(err, fs.ErrExist) && i < 100 {
			continue
		}
		if err != nil {
			return nil, err
		}
		held, err := flock.HoldCreated(f)
		if err != nil || !held && i >= 100 {
			f.Close()
			return nil, fmt.Errorf("lock temp file: %v", err)
		}
		if !held {
			f.Close() // a sweeper took it before the lock: make another
			continue
		}
		return f, nil
	}
}

// Sweep removes the temp files a killed writer of path left beside it
// (".NAME.tmp-*"), never one a live process holds.
func Sweep(path string) error {
	prefix := filepath.Base(tempPrefix(path))
	_, err := flock.Sweep(filepath.Dir(path), func(name string) bool { return strings.HasPrefix(name, prefix) })
	return err
}

// SweepDir is Sweep for every path in dir.
func SweepDir(dir string) error {
	_, err := flock.Sweep(dir, IsTemp)
	return err
}

// IsTemp reports whether a file name is one of this package's temp names.
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-")
}

// Write writes to the temp file.
func (f *File) Write(p []byte) (int, error) { return f.f.Write(p) }

// Chmod sets the mode the file will have exactly, umask or not.
func (f *File) Chmod(perm os.FileMode) error { return f.f.Chmod(perm) }

// Commit puts the content at the path: fsync, rename over whatever was
// there, fsync of the directory. On error nothing has replaced the path
// and the temp file is gone.
func (f *File) Commit() error {
	if err := f.commit(); err != nil {
		f.Abort()
		return fmt.Errorf("write %s: %w", f.path, err)
	}
	return nil
}

func (f *File) commit() error {
	if f.done {
		return errors.New("already committed or aborted")
	}
	if err := f.f.Sync(); err != nil {
		return err
	}
	// Renamed before it is closed: the flock keeps sweepers off until then.
	if err := os.Rename(f.f.Name(), f.path); err != nil {
		return err
	}
	f.done = true
	f.f.Close() // synced: a close error loses nothing
	d, err := os.Open(filepath.Dir(f.path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Abort removes the temp file. It is safe after Commit (it does nothing
// then) and more than once, so `defer f.Abort()` is the usual pattern.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	os.Remove(f.f.Name())
	f.f.Close()
}

// WriteFile replaces path with data, giving it exactly perm.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return Write(path, bytes.NewReader(data), perm)
}

// Write is WriteFile for a stream.
func Write(path string, r io.Reader, perm os.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := io.Copy(f, r); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Commit()
}

// WriteUnsynced replaces path with data by rename, without the fsyncs of
// Commit: a reader still sees the old content or the new, and a killed
// writer leaves a sweepable temp file, but a power loss may lose the new
// content (or leave it empty). For caches and hints only, which are
// rebuilt or re-asked when lost or unparsable.
func WriteUnsynced(path string, data []byte, perm os.FileMode) error {
	f, err := createTemp(path, perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Chmod(perm)); err != nil {
		os.Remove(f.Name())
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	// Renamed before the close, so the flock is held until the name is
	// final (a sweep never takes a live writer's file).
	err = os.Rename(f.Name(), path)
	if err != nil {
		os.Remove(f.Name())
	}
	return errors.Join(err, f.Close())
}
