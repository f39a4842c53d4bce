package snapshot

import (
	"archive/tar"
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
	"time"

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

// materialize copies the merged view of c into the empty dir dst: the
// topmost entry of each path wins, whiteouts hide, opaque dirs stop the
// layers below. Hard links of the chain are copied as separate files, as
// overlay presents them once written.
func materialize(ctx context.Context, c chain, dst string) error {
	m := &materializer{ctx: ctx}
	var layers []string
	for _, l := range c {
		layers = append(layers, l)
		if isOpaque(l) {
			break
		}
	}
	if len(layers) == 0 {
		return nil
	}
	if err := m.dir("", layers, dst); err != nil {
		return fmt.Errorf("copy rootfs: %w", err)
	}
	fi, err := os.Lstat(layers[0])
	if err != nil {
		return err
	}
	return copyMeta(layers[0], dst, fi)
}

type materializer struct {
	ctx context.Context
	n   int
}

// dir fills dst (an existing dir) with the merged children of rel, whose
// host dirs in the visible layers are srcs, top first.
func (m *materializer) dir(rel string, srcs []string, dst string) error {
	type winner struct {
		src    string
		fi     fs.FileInfo
		lowers []string // the same path in lower layers, while they are dirs
	}
	seen := map[string]bool{}
	wins := map[string]*winner{}
	for i, src := range srcs {
		entries, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, e := range entries {
			name := e.Name()
			if seen[name] {
				continue
			}
			seen[name] = true
			fi, err := e.Info()
			if err != nil {
				return err
			}
			if isWhiteout(fi) {
				continue
			}
			w := &winner{src: filepath.Join(src, name), fi: fi}
			if fi.IsDir() && !isOpaque(w.src) {
				for _, lower := range srcs[i+1:] {
					lp := filepath.Join(lower, name)
					lfi, err := os.Lstat(lp)
					if errors.Is(err, fs.ErrNotExist) {
						continue // this layer did not touch it
					}
					if err != nil || !lfi.IsDir() {
						break // a whiteout or a non-dir hides what is below
					}
					w.lowers = append(w.lowers, lp)
					if isOpaque(lp) {
						break
					}
				}
			}
			wins[name] = w
		}
	}
	names := make([]string, 0, len(wins))
	for n := range wins {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		if m.n++; m.n%256 == 0 && m.ctx.Err() != nil {
			return m.ctx.Err()
		}
		w := wins[name]
		target := filepath.Join(dst, name)
		if err := m.entry(path.Join(rel, name), w.src, w.fi, append([]string{w.src}, w.lowers...), target); err != nil {
			return fmt.Errorf("%s: %w", path.Join(rel, name), err)
		}
	}
	return nil
}

func (m *materializer) entry(rel, src string, fi fs.FileInfo, dirSrcs []string, dst string) error {
	st := fi.Sys().(*syscall.Stat_t)
	switch fi.Mode().Type() {
	case fs.ModeDir:
		if err := os.Mkdir(dst, 0o700); err != nil {
			return err
		}
		if err := m.dir(rel, dirSrcs, dst); err != nil {
			return err
		}
	case 0: // regular
		// Every name gets its own copy: overlay (index=off) breaks a lower
		// file's hard links on copy-up too, so writing one name must not
		// change the others, or the layers would differ.
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
		return nil // sockets are not part of a layer
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

// walkCopy emits the changes under the dir rel of a copied rootfs, in the
// order overlay's Diff would: by name, a whiteout where the name was.
// fresh tells that rel itself is new (or opaque): everything in it is
// emitted and nothing recorded under it applies.
func (d *differ) walkCopy(rel string, fresh bool) error {
	entries, err := os.ReadDir(filepath.Join(d.upper, rel))
	if err != nil {
		return err
	}
	present := map[string]bool{}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		present[e.Name()] = true
		names = append(names, e.Name())
	}
	if !fresh {
		for _, n := range d.s.base[rel].children {
			if !present[n] {
				names = append(names, n)
			}
		}
		slices.Sort(names)
	}
	for _, name := range names {
		p := path.Join(rel, name)
		if !present[name] {
			if d.s.stubs[p] {
				continue
			}
			if err := d.whiteout(rel, name); err != nil {
				return err
			}
			continue
		}
		if err := d.copyEntry(p, fresh); err != nil {
			return err
		}
	}
	return nil
}

// whiteout emits .wh.NAME for a recorded entry the command removed; its
// time is the parent's mtime (when the removal happened, or later).
func (d *differ) whiteout(dir, name string) error {
	var mtime time.Time
	if fi, err := os.Lstat(filepath.Join(d.upper, dir)); err == nil {
		mtime = fi.ModTime()
	}
	prefix := dir
	if prefix != "" {
		prefix += "/"
	}
	return d.emit(&tar.Header{Typeflag: tar.TypeReg, Name: prefix + whiteoutPrefix + name, ModTime: mtime}, nil)
}

func (d *differ) copyEntry(rel string, fresh bool) error {
	if d.s.stubs[rel] {
		return nil
	}
	hostPath := filepath.Join(d.upper, rel)
	fi, err := os.Lstat(hostPath)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket != 0 {
		return nil // as in overlay's Diff: sockets are not part of a layer
	}
	cur, err := statx(hostPath)
	if err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	was, recorded := d.s.base[rel]
	recorded = recorded && !fresh
	same := recorded && was.ino == cur.ino && was.btime == cur.btime
	changed := !same || was.ctime != cur.ctime
	hdr, err := header(rel, hostPath, fi)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		if !changed {
			return nil
		}
		if fi.Mode().IsRegular() {
			return d.emitFile(rel, hostPath, hdr, st)
		}
		return d.emit(hdr, nil)
	}
	hdr.Name += "/"
	// A new dir where the chain had something is opaque, as overlay makes
	// a dir created over a whiteout.
	opaque := recorded && !same
	meta, stubParent := d.s.stubParents[rel]
	stubOnly := stubParent && meta == (dirMeta{mode: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid})
	if !changed || stubOnly {
		// Unchanged (or there only for a stub): emit it once something
		// inside is.
		d.pending = append(d.pending, hdr)
		n := len(d.pending)
		if err := d.walkCopy(rel, !same); err != nil {
			return err
		}
		if len(d.pending) >= n {
			d.pending = d.pending[:n-1]
		}
		return nil
	}
	if err := d.emit(hdr, nil); err != nil {
		return err
	}
	if opaque {
		opq := &tar.Header{Typeflag: tar.TypeReg, Name: rel + "/" + whiteoutOpaque, ModTime: fi.ModTime()}
		if err := d.emit(opq, nil); err != nil {
			return err
		}
	}
	return d.walkCopy(rel, !same)
}
