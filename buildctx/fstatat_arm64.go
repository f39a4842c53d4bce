//go:build linux && arm64

package buildctx

import "golang.org/x/sys/unix"

const sysFstatat = unix.SYS_FSTATAT
