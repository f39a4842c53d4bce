//go:build linux && !amd64 && !arm64

package buildctx

import "golang.org/x/sys/unix"

// fstatat lstats name relative to the directory fd.
func fstatat(fd int, name string, st *unix.Stat_t) error {
	return unix.Fstatat(fd, name, st, unix.AT_SYMLINK_NOFOLLOW)
}
