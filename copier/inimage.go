package copier

import (
	"archive/tar"
	"io/fs"
	"path"
	"strings"
	"syscall"
	"time"
)

// inImage re-paths entries through the symlinks of the image they land
// in, as docker does (BuildKit's copy resolves every destination inside
// the rootfs, continuity's fs.RootPath): each parent directory resolves
// inside the rootfs, so /bin/tool on a /bin → usr/bin system lands at
// usr/bin/tool, and a dangling link's target is created; a directory
// entry over a symlink to a directory follows it; anything else replaces
// a symlink at its own path.
type inImage struct {
	resolve func(string) (string, error) // Request.Resolve
	stat    *statter
	dirs    map[string]mapped // by entry path
}

// mapped is where a directory of the copy lands, and whether the image
// lacks it (then nothing under it can meet a symlink: no more lookups).
type mapped struct {
	path   string
	absent bool
}

// dir maps directory d (relative, "" = the root).
func (m *inImage) dir(d string) (mapped, error) {
	if d == "" {
		return mapped{}, nil
	}
	if md, ok := m.dirs[d]; ok {
		return md, nil
	}
	parent, base := splitLast(d)
	pm, err := m.dir(parent)
	if err != nil {
		return mapped{}, err
	}
	md := mapped{path: joinRel(pm.path, base), absent: pm.absent}
	if !md.absent {
		r, err := m.resolve("/" + md.path)
		if err != nil {
			return mapped{}, err
		}
		fi, err := m.stat.info(r)
		switch {
		case err != nil:
			return mapped{}, err
		case fi == nil: // absent, perhaps behind a dangling link: created there
			md = mapped{path: rel(r), absent: true}
		case fi.IsDir():
			md.path = rel(r)
		} // a file there: the directory replaces it at its own path
	}
	m.dirs[d] = md
	return md, nil
}

// entry re-paths e (and an archive hard link's target).
func (m *inImage) entry(e *entry) error {
	if e.typ == tar.TypeDir {
		md, err := m.dir(e.path)
		e.path = md.path
		return err
	}
	p, err := m.file(e.path)
	if err != nil {
		return err
	}
	e.path = p
	if e.typ == tar.TypeLink && e.arch != nil {
		e.link, err = m.file(e.link)
	}
	return err
}

// file maps a non-directory path: its parent resolved, its name kept.
func (m *inImage) file(p string) (string, error) {
	parent, base := splitLast(p)
	pm, err := m.dir(parent)
	if err != nil || pm.path == parent {
		return p, err // the common case allocates nothing
	}
	return joinRel(pm.path, base), nil
}

// throughImage re-paths every entry through the image's symlinks
// (inImage); entries keep their order, so a later source still wins.
func throughImage(list []*entry, resolve func(string) (string, error), stat *statter) error {
	m := &inImage{resolve: resolve, stat: stat, dirs: map[string]mapped{}}
	for _, e := range list {
		if err := m.entry(e); err != nil {
			return err
		}
	}
	return nil
}

// existingDir is the entry of a parent directory the image already has:
// a layer that writes under it carries it with the image's own metadata,
// as BuildKit's layers do. Without it, an extracted layer gets a default
// 0755 root-owned directory there, and overlay shows that one over the
// image's (a /tmp that loses its 1777, a /home/app that loses its owner).
func existingDir(dir string, fi fs.FileInfo) *entry {
	e := &entry{path: dir, typ: tar.TypeDir, mode: tarMode(fi.Mode()), mtime: fi.ModTime(), created: true}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.uid, e.gid = int(st.Uid), int(st.Gid)
	}
	if e.mtime.IsZero() {
		e.mtime = time.Unix(0, 0)
	}
	return e
}

func splitLast(p string) (dir, base string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

func joinRel(dir, base string) string {
	if dir == "" {
		return base
	}
	return path.Join(dir, base)
}
