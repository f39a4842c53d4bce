// Package regular opens files that must be regular files (a Dockerfile,
// a .dockerignore) without ever blocking: opening a FIFO for reading waits
// for a writer, forever when there is none, so a FIFO, socket or device
// given where a file belongs is an error that says what it is instead.
package regular

import (
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Open opens path (symlinks followed) for reading if it is a regular
// file; what names it in the error ("Dockerfile", ".dockerignore"):
// "Dockerfile ctx/x is a FIFO, not a regular file". O_NONBLOCK keeps the
// open of a FIFO from waiting; it means nothing for a regular file.
func Open(path, what string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s %s is %s, not a regular file", what, path, Kind(fi.Mode()))
	}
	return f, nil
}

// ReadFile reads the regular file path (see Open).
func ReadFile(path, what string) ([]byte, error) {
	f, err := Open(path, what)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// Kind names a file type with its article: "a FIFO", "a directory".
func Kind(m fs.FileMode) string {
	switch m.Type() {
	case 0:
		return "a regular file"
	case fs.ModeDir:
		return "a directory"
	case fs.ModeNamedPipe:
		return "a FIFO"
	case fs.ModeSocket:
		return "a socket"
	case fs.ModeDevice:
		return "a block device"
	case fs.ModeDevice | fs.ModeCharDevice:
		return "a character device"
	case fs.ModeSymlink:
		return "a symlink"
	}
	return "not a regular file (" + m.Type().String() + ")"
}
