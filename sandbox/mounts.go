package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// mountExtra mounts a RUN's --mount filesystems under root (the mounted
// rootfs, before pivot_root), parents before children.
func mountExtra(root string, mounts []Mount) error {
	sorted := slices.Clone(mounts)
	slices.SortStableFunc(sorted, func(a, b Mount) int {
		return strings.Compare(filepath.Clean(a.Target), filepath.Clean(b.Target))
	})
	for i, m := range sorted {
		if err := mountOne(root, m, i); err != nil {
			return fmt.Errorf("mount %s at %s: %w", m.Type, m.Target, err)
		}
	}
	return nil
}

func mountOne(root string, m Mount, n int) error {
	if !filepath.IsAbs(m.Target) {
		return errors.New("target must be an absolute path")
	}
	// SecureJoin resolves symlinks as if root were "/": a target cannot
	// lead a mount out of the rootfs.
	dst, err := securejoin.SecureJoin(root, m.Target)
	if err != nil {
		return err
	}
	if dst == root {
		return errors.New("cannot mount over the root")
	}
	wantDir := true
	switch m.Type {
	case "file":
		wantDir = false
	case "bind":
		fi, err := os.Stat(m.Source)
		if err != nil {
			return err
		}
		wantDir = fi.IsDir()
	}
	if err := ensureTarget(dst, wantDir); err != nil {
		return err
	}
	ro := uintptr(0)
	if m.ReadOnly {
		ro = unix.MS_RDONLY
	}
	switch m.Type {
	case "bind":
		if err := unix.Mount(m.Source, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return err
		}
		if m.ReadOnly {
			return unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, "")
		}
		return nil
	case "file":
		return mountFile(root, dst, m, n)
	}
	return unix.Mount(m.Source, dst, m.Type, unix.MS_NOSUID|unix.MS_NODEV|ro, strings.Join(m.Options, ","))
}

// ensureTarget creates a missing mount point: a dir, or an empty file.
// Nothing but the init runs in the rootfs yet, so the path SecureJoin
// resolved cannot change under us.
func ensureTarget(dst string, dir bool) error {
	fi, err := os.Lstat(dst)
	if err == nil {
		if fi.IsDir() != dir {
			if dir {
				return errors.New("target exists and is not a directory")
			}
			return errors.New("target exists and is a directory")
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if dir {
		return os.Mkdir(dst, 0o755)
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// mountFile puts m.Data in a file on the sandbox's own /dev tmpfs (never
// on a disk), binds it read-only at dst and unlinks the staging name: the
// command sees the file only at its target, and it vanishes with the
// mount namespace.
func mountFile(root, dst string, m Mount, n int) error {
	stage := filepath.Join(root, "dev", fmt.Sprintf(".minibuild-file-%d", n))
	f, err := os.OpenFile(stage, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(stage)
	_, err = f.Write(m.Data)
	if err == nil {
		err = f.Chown(int(m.UID), int(m.GID))
	}
	if err == nil {
		err = unix.Fchmod(int(f.Fd()), m.Mode&0o7777)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := unix.Mount(stage, dst, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	return unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
}

// loopbackUp sets IFF_UP on lo in the (new) network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}
