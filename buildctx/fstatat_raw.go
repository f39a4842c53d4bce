//go:build linux && (amd64 || arm64)

package buildctx

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// fstatat lstats name relative to the directory fd. name must be followed
// in memory by a NUL byte, as every name from readNames is: the kernel
// reads it in place, sparing unix.Fstatat's copy per file.
func fstatat(fd int, name string, st *unix.Stat_t) error {
	_, _, errno := unix.Syscall6(sysFstatat, uintptr(fd), uintptr(unsafe.Pointer(unsafe.StringData(name))),
		uintptr(unsafe.Pointer(st)), unix.AT_SYMLINK_NOFOLLOW, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
