package snapshot

import (
	"archive/tar"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"
	"time"

	"github.com/minibuild/minibuild/layer"
	"golang.org/x/sys/unix"
)

// keptXattrs are the extended attributes that reach a layer.
var keptXattrs = [...]string{"security.capability", "system.posix_acl_access", "system.posix_acl_default"}

type inodeKey struct{ dev, ino uint64 }

// differ turns a snapshot's writable dir into layer entries. One walk
// serves both kinds; what differs is how a change is told (names and
// change): overlay's upper dir holds exactly the changes, a copied rootfs
// is compared with what Prepare recorded (copy.go).
type differ struct {
	s       *Snapshot
	w       *layer.Writer
	upper   string
	links   map[inodeKey]string
	pending []*tar.Header // unchanged or stub-only dirs waiting for a child to be emitted
}

// change is what the differ learns about one entry.
type change struct {
	changed bool // the entry itself goes into the layer
	opaque  bool // a dir that hides what the chain had under it
	fresh   bool // everything under it is new (copy only)
}

// Diff writes the changes in the upper dir as OCI layer entries in lexical
// walk order: overlay whiteouts become .wh.NAME, opaque dirs get a
// .wh..wh..opq entry, second names of an inode become hard links. The
// mount points Prepare created (and dirs created only to hold them) are
// left out.
func (s *Snapshot) Diff(w *layer.Writer) error {
	d := &differ{s: s, w: w, upper: s.writable(), links: map[inodeKey]string{}}
	if err := d.walk("", false); err != nil {
		return fmt.Errorf("diff snapshot: %w", err)
	}
	return nil
}

// names lists the dir rel, sorted, with the names removed since Prepare
// (a copy's; overlay's upper dir holds its whiteouts as entries).
func (d *differ) names(rel string, fresh bool) ([]string, map[string]bool, error) {
	if d.s.copied {
		return d.copyNames(rel, fresh)
	}
	entries, err := os.ReadDir(filepath.Join(d.upper, rel)) // sorted by name
	if err != nil {
		return nil, nil, err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names, nil, nil
}

// change tells how the entry at rel changed: in overlay's upper dir,
// everything is a change.
func (d *differ) change(rel, hostPath string, fi fs.FileInfo, fresh bool) (change, error) {
	if d.s.copied {
		return d.copyChange(rel, hostPath, fi, fresh)
	}
	return change{changed: true, opaque: fi.IsDir() && isOpaque(hostPath)}, nil
}

func (d *differ) walk(rel string, fresh bool) error {
	names, gone, err := d.names(rel, fresh)
	if err != nil {
		return err
	}
	for _, name := range names {
		p := path.Join(rel, name)
		switch {
		case d.s.stubs[p]:
		case gone[name]:
			// Its time is the parent's mtime: when the removal happened,
			// or later.
			var mtime time.Time
			if fi, err := os.Lstat(filepath.Join(d.upper, rel)); err == nil {
				mtime = fi.ModTime()
			}
			err = d.whiteout(p, mtime, 0, 0)
		default:
			err = d.entry(p, fresh)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (d *differ) whiteout(rel string, mtime time.Time, uid, gid int) error {
	dir, base := path.Split(rel)
	return d.emit(&tar.Header{Typeflag: tar.TypeReg, Name: dir + whiteoutPrefix + base, ModTime: mtime, Uid: uid, Gid: gid}, nil)
}

func (d *differ) emit(hdr *tar.Header, body *os.File) error {
	for _, p := range d.pending {
		if err := d.w.Add(p, nil); err != nil {
			return err
		}
	}
	d.pending = d.pending[:0]
	if body == nil {
		return d.w.Add(hdr, nil)
	}
	return d.w.Add(hdr, body)
}

func (d *differ) entry(rel string, fresh bool) error {
	hostPath := filepath.Join(d.upper, rel)
	fi, err := os.Lstat(hostPath)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket != 0 {
		return nil // a daemon's leftover; not part of a layer (as in docker)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if isWhiteout(fi) {
		return d.whiteout(rel, fi.ModTime(), int(st.Uid), int(st.Gid))
	}
	c, err := d.change(rel, hostPath, fi, fresh)
	if err != nil || (!c.changed && !fi.IsDir()) {
		return err
	}
	hdr, err := header(rel, hostPath, fi)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		if fi.Mode().IsRegular() {
			return d.emitFile(rel, hostPath, hdr, st)
		}
		return d.emit(hdr, nil)
	}
	hdr.Name += "/"
	meta, stubParent := d.s.stubParents[rel]
	stubOnly := stubParent && !c.opaque && meta == (dirMeta{mode: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid})
	if !c.changed || stubOnly {
		// Unchanged, or there only to hold a stub: emit it once something
		// inside is.
		d.pending = append(d.pending, hdr)
		n := len(d.pending)
		if err := d.walk(rel, c.fresh); err != nil {
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
	if c.opaque {
		opq := &tar.Header{Typeflag: tar.TypeReg, Name: rel + "/" + whiteoutOpaque, ModTime: fi.ModTime()}
		if err := d.emit(opq, nil); err != nil {
			return err
		}
	}
	return d.walk(rel, c.fresh)
}

// header is the layer entry for the file at hostPath, named rel: owner,
// mode, mtime, link target and the kept xattrs; no uname/gname.
func header(rel, hostPath string, fi fs.FileInfo) (*tar.Header, error) {
	st := fi.Sys().(*syscall.Stat_t)
	var link string
	if fi.Mode()&fs.ModeSymlink != 0 {
		var err error
		if link, err = os.Readlink(hostPath); err != nil {
			return nil, err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	hdr.Name = rel
	hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
	hdr.Uname, hdr.Gname = "", ""
	hdr.Mode = int64(st.Mode & 0o7777)
	for _, x := range keptXattrs {
		if v, ok := getXattr(hostPath, x); ok {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+x] = v
		}
	}
	return hdr, nil
}

// emitFile emits a regular file, or a hard link to the first emitted name
// of its inode.
func (d *differ) emitFile(rel, hostPath string, hdr *tar.Header, st *syscall.Stat_t) error {
	if st.Nlink > 1 {
		key := inodeKey{uint64(st.Dev), st.Ino}
		if first, ok := d.links[key]; ok {
			hdr.Typeflag, hdr.Linkname, hdr.Size, hdr.PAXRecords = tar.TypeLink, first, 0, nil
			return d.emit(hdr, nil)
		}
		d.links[key] = rel
	}
	f, err := os.Open(hostPath)
	if err != nil {
		return err
	}
	defer f.Close()
	return d.emit(hdr, f)
}

func getXattr(p string, name string) (string, bool) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(p, name, buf)
		if err == unix.ERANGE {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if err != nil {
			return "", false
		}
		return string(buf[:n]), true
	}
}
