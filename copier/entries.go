package copier

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/minibuild/minibuild/buildctx"
	"github.com/minibuild/minibuild/cache"
	"github.com/opencontainers/go-digest"
)

// srcKind is where an entry's body comes from.
type srcKind int

const (
	srcNone    srcKind = iota // directories, symlinks, links: no body
	srcContext                // a context file
	srcData                   // heredoc bytes
	srcTemp                   // a downloaded file
	srcArchive                // a member of a local tar archive (ADD)
)

// entry is one tar entry as it will land.
type entry struct {
	path     string // relative to /, no leading slash
	typ      byte
	mode     int64
	uid, gid int
	size     int64
	sum      digest.Digest     // content digest, but for context files
	raw      [sha256.Size]byte // a context file's sha256
	link     string
	mtime    time.Time

	kind    srcKind
	file    *buildctx.File
	data    []byte
	temp    *os.File
	arch    *archiveSrc
	member  string // path inside the archive, as planned
	created bool   // a parent directory COPY creates
}

// heredocEntry is how an inline source lands at dst: mode 0644 unless its
// own --chmod or the instruction's says otherwise.
func heredocEntry(doc *Heredoc, dst string, chmod *fs.FileMode) *entry {
	mode := int64(0o644)
	if doc.Chmod != nil {
		mode = tarMode(*doc.Chmod)
	} else if chmod != nil {
		mode = tarMode(*chmod)
	}
	return &entry{path: dst, typ: tar.TypeReg, mode: mode, size: int64(len(doc.Data)),
		sum: digest.FromString(doc.Data), kind: srcData, data: []byte(doc.Data), mtime: time.Unix(0, 0)}
}

// parentMaker finds the parent directories (and a directory destination)
// that neither the image nor the sorted entries have: COPY creates them,
// owned by --chown's owner.
type parentMaker struct {
	entries   []*entry // sorted
	stat      *statter
	dest      string
	owner     Owner
	created   []*entry
	isCreated map[string]bool
}

func (pm *parentMaker) run(destIsDir bool) error {
	if destIsDir {
		if d := rel(pm.dest); d != "" {
			if err := pm.needAncestors(d); err != nil {
				return err
			}
			if err := pm.need(d); err != nil {
				return err
			}
		}
	}
	lastParent := "\x00" // no path has it: the first entry is always checked
	for _, e := range pm.entries {
		// entries sharing a parent share every ancestor: check them once
		parent := e.path[:max(strings.LastIndexByte(e.path, '/'), 0)]
		if parent == lastParent {
			continue
		}
		lastParent = parent
		if err := pm.needAncestors(e.path); err != nil {
			return err
		}
	}
	return nil
}

// need makes sure dir exists: among the entries, in the image, or created.
func (pm *parentMaker) need(dir string) error {
	if dir == "" || pm.isCreated[dir] {
		return nil
	}
	if _, ok := slices.BinarySearchFunc(pm.entries, dir, func(e *entry, t string) int { return comparePaths(e.path, t) }); ok {
		return nil
	}
	fi, err := pm.stat.info("/" + dir)
	if err != nil {
		return err
	}
	if fi != nil {
		if !fi.IsDir() {
			return fmt.Errorf("cannot copy to %s: /%s is not a directory", pm.dest, dir)
		}
		pm.created = append(pm.created, existingDir(dir, fi))
		pm.isCreated[dir] = true
		return nil
	}
	pm.created = append(pm.created, &entry{path: dir, typ: tar.TypeDir, mode: 0o755, uid: pm.owner.UID, gid: pm.owner.GID, mtime: time.Unix(0, 0), created: true})
	pm.isCreated[dir] = true
	return nil
}

// needAncestors needs every proper ancestor of p, outermost first.
func (pm *parentMaker) needAncestors(p string) error {
	for i := 0; i < len(p); i++ {
		if p[i] == '/' {
			if err := pm.need(p[:i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// sortEntries orders entries by path component by component, so a
// directory always precedes its children ("a/b" before "a-c" is not
// required, but "a" before "a/b" is), and drops all but the last of
// entries with the same path. Entries from one directory source come in
// that order already, so the common case is one pass that checks it.
func sortEntries(es []*entry) []*entry {
	cmp := func(a, b *entry) int { return comparePaths(a.path, b.path) }
	if !slices.IsSortedFunc(es, cmp) {
		slices.SortStableFunc(es, cmp)
	}
	out := es[:0]
	for i, e := range es {
		if i+1 < len(es) && es[i+1].path == e.path {
			continue // replaced by a later source
		}
		out = append(out, e)
	}
	return out
}

// mergeEntries merges two sorted lists with no path in common.
func mergeEntries(a, b []*entry) []*entry {
	out := make([]*entry, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if comparePaths(a[0].path, b[0].path) < 0 {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	out = append(out, a...)
	return append(out, b...)
}

// comparePaths compares slash paths with "/" sorting before every other
// byte, which keeps each directory's subtree contiguous after it.
func comparePaths(a, b string) int { return buildctx.ComparePaths(a, b) }

// linkHardLinks turns every group of entries sharing one content identity
// (a context inode, or an archive's hard-link target) into one regular file
// — the first in order — and hard links to it.
func linkHardLinks(es []*entry) error {
	var byPath map[string]*entry // for archive hard links only
	type ident struct {
		dev, ino uint64
		arch     *archiveSrc
		member   string
	}
	first := map[ident]*entry{}
	for _, e := range es {
		var id ident
		switch {
		case e.kind == srcContext && e.typ == tar.TypeReg && e.file.Nlink > 1:
			id = ident{dev: e.file.Dev, ino: e.file.Ino}
		case e.kind == srcArchive && e.typ == tar.TypeReg:
			id = ident{arch: e.arch, member: e.member}
		case e.typ == tar.TypeLink && e.arch != nil:
			if byPath == nil {
				byPath = make(map[string]*entry, len(es))
				for _, e := range es {
					byPath[e.path] = e
				}
			}
			t := byPath[e.link]
			for n := 0; t != nil && t.typ == tar.TypeLink && n < 64; n++ {
				t = byPath[t.link]
			}
			if t == nil || t.kind != srcArchive || t.typ != tar.TypeReg {
				return fmt.Errorf("archive hard link /%s: target /%s is not a file extracted with it", e.path, e.link)
			}
			id = ident{arch: t.arch, member: t.member}
			if first[id] == nil {
				// the link sorts before its target: it carries the content
				e.typ, e.kind, e.member, e.size, e.sum, e.link = tar.TypeReg, srcArchive, t.member, t.size, t.sum, ""
				e.mode, e.uid, e.gid, e.mtime = t.mode, t.uid, t.gid, t.mtime // the inode's metadata
			}
		default:
			continue
		}
		if f := first[id]; f != nil {
			e.typ, e.link, e.kind, e.size, e.sum = tar.TypeLink, f.path, srcNone, 0, ""
			continue
		}
		first[id] = e
	}
	return nil
}

// destPaths maps each file's path, less its first skip bytes, under base
// ("" = the root), building every result in one string.
func destPaths(files []*buildctx.File, skip int, base string) []string {
	out := make([]string, len(files))
	if base == "" {
		for i, f := range files {
			out[i] = f.Path[skip:]
		}
		return out
	}
	size := 0
	for _, f := range files {
		size += len(base) + 1 + len(f.Path) - skip
	}
	buf := make([]byte, 0, size)
	ends := make([]int, len(files))
	for i, f := range files {
		buf = append(buf, base...)
		buf = append(buf, '/')
		buf = append(buf, f.Path[skip:]...)
		ends[i] = len(buf)
	}
	all := string(buf)
	start := 0
	for i, end := range ends {
		out[i], start = all[start:end], end
	}
	return out
}

// contextEntry fills e, which must be zero, with how a context file lands
// at dst: owner is the --chown owner, the file's own with KeepOwner, else
// root (context ownership is not kept, as docker). A FIFO lands as a FIFO,
// as BuildKit's copy makes one (fsutil copyDevice). It reports false for
// what is not copied: sockets (a tar cannot hold one) and devices. (Fields are set one by one:
// a whole-struct store costs write barriers while the GC runs.)
func contextEntry(e *entry, f *buildctx.File, dst string, req Request) bool {
	e.path, e.mode, e.mtime, e.file = dst, tarMode(f.Mode), f.ModTime, f
	switch {
	case req.Chown != nil:
		e.uid, e.gid = req.Chown.UID, req.Chown.GID
	case req.KeepOwner:
		e.uid, e.gid = f.UID, f.GID
	}
	switch {
	case f.Mode.IsRegular():
		e.typ, e.size, e.kind = tar.TypeReg, f.Size, srcContext
	case f.Mode.IsDir():
		e.typ = tar.TypeDir
	case f.Mode&fs.ModeNamedPipe != 0:
		e.typ = tar.TypeFifo
	case f.Mode&fs.ModeSymlink != 0:
		e.typ, e.link, e.mode = tar.TypeSymlink, f.Link, 0o777
		return true
	default:
		return false
	}
	if req.Chmod != nil {
		e.mode = tarMode(*req.Chmod)
	}
	return true
}

// tarMode converts permission and special bits; a raw octal (0o4755 given
// as a plain number) is honoured too.
func tarMode(m fs.FileMode) int64 {
	v := int64(m & 0o7777)
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	return v
}

// computeKey digests the entries in order with the one tree encoding
// (cache.TreeHasher); a context file's raw sha256 goes in without a string.
func computeKey(es []*entry) digest.Digest {
	t := cache.NewTreeHasher()
	var te cache.TreeEntry
	for _, e := range es {
		te.Path, te.Type, te.Mode, te.UID, te.GID, te.Link = e.path, e.typ, e.mode, e.uid, e.gid, e.link
		if e.kind == srcContext {
			t.AddSHA256(&te, &e.raw)
		} else {
			te.Sum = e.sum
			t.Add(&te)
			te.Sum = ""
		}
	}
	return t.Digest()
}

// digestPrefix starts a sha256 digest's string form.
const digestPrefix = "sha256:"

// digest is the entry's content digest ("" for what has no content).
func (e *entry) digest() digest.Digest {
	if e.kind == srcContext {
		return digest.Digest(digestPrefix + hex.EncodeToString(e.raw[:]))
	}
	return e.sum
}
