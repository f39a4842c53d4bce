package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The copying snapshotter (KindCopy) makes the same layers as overlay
// without mounting one: Prepare copies the merged chain into a plain dir,
// recording each entry's identity (inode, birth time) and ctime; Diff then
// emits what overlay's upper dir would hold after the same command:
//
//   - an entry whose ctime moved or that is a new inode: overlay would
//     have copied it up (any write, chmod, chown, touch or link moves
//     ctime), so it is emitted, with its parent dirs;
//   - a recorded entry that is gone: a whiteout, unless its parent is new;
//   - a new dir where the chain had an entry: an opaque dir, as overlay
//     makes a dir created over a whiteout opaque; everything in it is new.
//
// Hard links within the chain are copied as separate files, since overlay
// breaks them on copy-up (a RUN sees st_nlink 1 here, the lower count
// there). What cannot be told apart: a lower file opened for writing but
// never written (overlay copies it up; its ctime does not move).

// baseEntry is what Prepare copied to one path.
type baseEntry struct {
	ino   uint64
	btime unix.StatxTimestamp // zero where the filesystem keeps none
	ctime unix.StatxTimestamp
	// children are a dir's entry names, sorted.
	children []string
}

// materialize copies the merged view of c into the empty dir dst (see
// union.go). Hard links of the chain are copied as separate files, as
// overlay presents them once written.
func materialize(ctx context.Context, c chain, dst string) error {
	if len(c) == 0 {
		return nil
	}
	err := c.walk(ctx, "", func(rel string, e entry) error {
		if e.fi.IsDir() {
			return wrapPath(rel, os.Mkdir(filepath.Join(dst, rel), 0o700))
		}
		return wrapPath(rel, copyNode(e.path, filepath.Join(dst, rel), e.fi))
	}, func(rel string, e entry) error {
		// Last: filling the dir moved its mtime.
		return wrapPath(rel, copyMeta(e.path, filepath.Join(dst, rel), e.fi))
	})
	if err != nil {
		return fmt.Errorf("copy rootfs: %w", err)
	}
	fi, err := os.Lstat(c[0])
	if err != nil {
		return err
	}
	return copyMeta(c[0], dst, fi)
}

func wrapPath(rel string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	return nil
}

// copyNode copies a non-dir with its metadata; sockets are skipped, as
// they are not part of a layer.
func copyNode(src, dst string, fi fs.FileInfo) error {
	st := fi.Sys().(*syscall.Stat_t)
	switch fi.Mode().Type() {
	case 0: // regular
		// Every name gets its own copy: overlay (index=off) breaks a lower
		// file's hard links on copy-up too, so writing one name must not
		// change the others, or the layers would differ. Never a link:
		// the layers' files are pooled inodes (pool.go) other layers share.
		if err := copyFile(src, dst); err != nil {
			return err
		}
	case fs.ModeSymlink:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, dst); err != nil {
			return err
		}
	case fs.ModeNamedPipe:
		if err := unix.Mknod(dst, unix.S_IFIFO|0o600, 0); err != nil {
			return err
		}
	case fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice:
		typ := uint32(unix.S_IFBLK)
		if fi.Mode()&fs.ModeCharDevice != 0 {
			typ = unix.S_IFCHR
		}
		if err := unix.Mknod(dst, typ|0o600, int(st.Rdev)); err != nil {
			return err
		}
	default:
		return nil
	}
	return copyMeta(src, dst, fi)
}

// copyFile copies content, by reflink where the filesystem can.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) != nil {
		_, err = io.Copy(out, in) // copy_file_range underneath
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// copyMeta gives dst src's owner, xattrs (not overlay's own), mode and
// times, in that order: chown clears setuid bits.
func copyMeta(src, dst string, fi fs.FileInfo) error {
	st := fi.Sys().(*syscall.Stat_t)
	if err := os.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := copyXattrs(src, dst); err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		if err := unix.Fchmodat(unix.AT_FDCWD, dst, st.Mode&0o7777, 0); err != nil {
			return err
		}
	}
	return setTimes(dst, fi.ModTime())
}

func copyXattrs(src, dst string) error {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(src, buf)
	if errors.Is(err, unix.ERANGE) {
		if n, err = unix.Llistxattr(src, nil); err == nil {
			buf = make([]byte, n)
			n, err = unix.Llistxattr(src, buf)
		}
	}
	if errors.Is(err, unix.ENOTSUP) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list xattrs: %w", err)
	}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" || strings.HasPrefix(name, "trusted.overlay.") {
			continue
		}
		v, ok := getXattr(src, name)
		if !ok {
			continue
		}
		if err := unix.Lsetxattr(dst, name, []byte(v), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("xattr %s: %w", name, err)
		}
	}
	return nil
}

// statx returns what identifies the entry at p and its ctime.
func statx(p string) (baseEntry, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_INO|unix.STATX_CTIME|unix.STATX_BTIME, &stx); err != nil {
		return baseEntry{}, err
	}
	e := baseEntry{ino: stx.Ino, ctime: stx.Ctime}
	if stx.Mask&unix.STATX_BTIME != 0 {
		e.btime = stx.Btime
	}
	return e, nil
}

// recordBase records every entry under root, for Diff.
func recordBase(root string) (map[string]baseEntry, error) {
	base := map[string]baseEntry{}
	var walk func(rel string) error
	walk = func(rel string) error {
		p := filepath.Join(root, rel)
		e, err := statx(p)
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if fi.IsDir() {
			entries, err := os.ReadDir(p)
			if err != nil {
				return err
			}
			for _, c := range entries {
				e.children = append(e.children, c.Name())
				if err := walk(path.Join(rel, c.Name())); err != nil {
					return err
				}
			}
		}
		base[rel] = e
		return nil
	}
	if err := walk(""); err != nil {
		return nil, fmt.Errorf("record copied rootfs: %w", err)
	}
	return base, nil
}

// copyNames lists the dir rel of a copied rootfs for Diff: what is there
// now and, unless rel is fresh (new, so nothing recorded under it
// applies), the recorded names that are gone, sorted as overlay's upper
// dir would list them with a whiteout where the name was.
func (d *differ) copyNames(rel string, fresh bool) ([]string, map[string]bool, error) {
	entries, err := os.ReadDir(filepath.Join(d.upper, rel))
	if err != nil {
		return nil, nil, err
	}
	present := map[string]bool{}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		present[e.Name()] = true
		names = append(names, e.Name())
	}
	if fresh {
		return names, nil, nil
	}
	gone := map[string]bool{}
	for _, n := range d.s.base[rel].children {
		if !present[n] {
			gone[n] = true
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names, gone, nil
}

// copyChange compares the entry at rel of a copied rootfs with what
// Prepare recorded there (see the top of this file).
func (d *differ) copyChange(rel, hostPath string, fi fs.FileInfo, fresh bool) (change, error) {
	cur, err := statx(hostPath)
	if err != nil {
		return change{}, err
	}
	was, recorded := d.s.base[rel]
	recorded = recorded && !fresh
	same := recorded && was.ino == cur.ino && was.btime == cur.btime
	// A new dir where the chain had something is opaque, as overlay makes
	// a dir created over a whiteout; a stub parent the chain lacked never
	// is (stubParents of a copy are only those).
	_, stubParent := d.s.stubParents[rel]
	return change{
		changed: !same || was.ctime != cur.ctime,
		opaque:  fi.IsDir() && recorded && !same && !stubParent,
		fresh:   !same,
	}, nil
}
