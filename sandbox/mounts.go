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

	"github.com/minibuild/minibuild/mount"
)

// MountPoints are where the sandbox mounts its own filesystems in every
// rootfs: /dev, /proc and /sys, and the host's /etc/hosts and
// /etc/resolv.conf. Pass them to snapshot.Prepare, which makes them where
// the image lacks them and keeps them out of the layer. They are optional:
// a rootfs whose /etc is a file simply gets no /etc/hosts.
func MountPoints() []mount.Point {
	points := []mount.Point{{Path: "/dev", Dir: true}, {Path: "/proc", Dir: true}, {Path: "/sys", Dir: true}}
	for _, f := range hostFiles {
		points = append(points, mount.Point{Path: "/" + f})
	}
	for i := range points {
		points[i].Optional = true
	}
	return points
}

// hostFiles are the host's files every sandbox sees, read-only.
var hostFiles = [...]string{"etc/hosts", "etc/resolv.conf"}

// extra is one of a RUN's mounts: a filesystem or a file.
type extra struct {
	target string
	m      *mount.Mount
	f      *File
}

// mountExtra mounts a RUN's --mount filesystems and files under root (the
// mounted rootfs, before pivot_root), parents before children.
func mountExtra(root string, mounts []mount.Mount, files []File) error {
	var all []extra
	for i := range mounts {
		all = append(all, extra{target: mounts[i].Target, m: &mounts[i]})
	}
	for i := range files {
		all = append(all, extra{target: files[i].Target, f: &files[i]})
	}
	slices.SortStableFunc(all, func(a, b extra) int {
		return strings.Compare(filepath.Clean(a.target), filepath.Clean(b.target))
	})
	for i, e := range all {
		if err := mountOne(root, e, i); err != nil {
			typ := "file"
			if e.m != nil {
				typ = e.m.Type
			}
			return fmt.Errorf("mount %s at %s: %w", typ, e.target, err)
		}
	}
	return nil
}

func mountOne(root string, e extra, n int) error {
	if !filepath.IsAbs(e.target) {
		return errors.New("target must be an absolute path")
	}
	// SecureJoin resolves symlinks as if root were "/": a target cannot
	// lead a mount out of the rootfs.
	dst, err := securejoin.SecureJoin(root, e.target)
	if err != nil {
		return err
	}
	if dst == root {
		return errors.New("cannot mount over the root")
	}
	if e.f != nil {
		if err := ensureTarget(dst, false); err != nil {
			return err
		}
		return mountFile(root, dst, *e.f, n)
	}
	m := e.m
	wantDir := true
	if m.Type == "bind" {
		fi, err := os.Stat(m.Source)
		if err != nil {
			return err
		}
		wantDir = fi.IsDir()
	}
	if err := ensureTarget(dst, wantDir); err != nil {
		return err
	}
	if m.Type == "bind" {
		if err := unix.Mount(m.Source, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return err
		}
		// nodev like the rootfs: a view of a stage or the context holds
		// whatever nodes its layers carried.
		return restrictBind(dst, m.ReadOnly)
	}
	if m.Dir != "" {
		// Relative paths in the options: mount from Dir, then come back.
		if err := os.Chdir(m.Dir); err != nil {
			return err
		}
		defer os.Chdir(root)
	}
	ro := uintptr(0)
	if m.ReadOnly {
		ro = unix.MS_RDONLY
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
func mountFile(root, dst string, m File, n int) error {
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
