package snapshot

import (
	"archive/tar"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"

	"github.com/minibuild/minibuild/layer"
	"golang.org/x/sys/unix"
)

// keptXattrs are the extended attributes that reach a layer.
var keptXattrs = [...]string{"security.capability", "system.posix_acl_access", "system.posix_acl_default"}

type inodeKey struct{ dev, ino uint64 }

type differ struct {
	s       *Snapshot
	w       *layer.Writer
	upper   string
	links   map[inodeKey]string
	pending []*tar.Header // stub parents waiting for a child to be emitted
}

// Diff writes the changes in the upper dir as OCI layer entries in lexical
// walk order: overlay whiteouts become .wh.NAME, opaque dirs get a
// .wh..wh..opq entry, second names of an inode become hard links. The
// sandbox's mount stubs (and dirs created only to hold them) are left out.
func (s *Snapshot) Diff(w *layer.Writer) error {
	d := &differ{s: s, w: w, upper: s.writable(), links: map[inodeKey]string{}}
	walk := d.walkDir
	if s.copied {
		walk = func(rel string) error { return d.walkCopy(rel, false) }
	}
	if err := walk(""); err != nil {
		return fmt.Errorf("diff snapshot: %w", err)
	}
	return nil
}

func (d *differ) walkDir(rel string) error {
	entries, err := os.ReadDir(filepath.Join(d.upper, rel)) // sorted by name
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := d.entry(path.Join(rel, e.Name())); err != nil {
			return err
		}
	}
	return nil
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

func (d *differ) entry(rel string) error {
	if d.s.stubs[rel] {
		return nil
	}
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
		dir, base := path.Split(rel)
		return d.emit(&tar.Header{
			Typeflag: tar.TypeReg, Name: dir + whiteoutPrefix + base,
			ModTime: fi.ModTime(), Uid: int(st.Uid), Gid: int(st.Gid),
		}, nil)
	}
	hdr, err := header(rel, hostPath, fi)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		hdr.Name += "/"
		if meta, ok := d.s.stubParents[rel]; ok && meta == (dirMeta{mode: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid}) && !isOpaque(hostPath) {
			// Only there for a stub: emit it once something inside is.
			d.pending = append(d.pending, hdr)
			n := len(d.pending)
			if err := d.walkDir(rel); err != nil {
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
		if isOpaque(hostPath) {
			opq := &tar.Header{Typeflag: tar.TypeReg, Name: rel + "/" + whiteoutOpaque, ModTime: fi.ModTime()}
			if err := d.emit(opq, nil); err != nil {
				return err
			}
		}
		return d.walkDir(rel)
	}
	if fi.Mode().IsRegular() {
		return d.emitFile(rel, hostPath, hdr, st)
	}
	return d.emit(hdr, nil)
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

func getXattr(p, name string) (string, bool) {
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
