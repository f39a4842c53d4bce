// Package copier implements COPY/ADD semantics from the build context into
// a layer. Sources resolve strictly inside the context (symlinks included);
// a Plan lists every entry exactly as it will land, so its Key is a digest
// of content and metadata only, and Write emits those same entries.
package copier

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/minibuild/minibuild/buildctx"
	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/layer"
	"github.com/opencontainers/go-digest"
)

// ErrNotFound is wrapped by the error for a source that matches nothing.
var ErrNotFound = errors.New("not found")

// Owner is a resolved --chown.
type Owner struct{ UID, GID int }

// Heredoc is an inline source (COPY <<EOF /f).
type Heredoc struct {
	Name, Data string
	Chmod      *fs.FileMode
}

// Request is one COPY or ADD, variables already expanded.
type Request struct {
	Sources  []string
	Dest     string
	Workdir  string // "" = "/"
	Chown    *Owner
	Chmod    *fs.FileMode
	Add      bool
	Checksum digest.Digest // ADD --checksum, for http(s) sources
	Heredocs []Heredoc
	// DestInfo stats a path in the image (symlinks resolved in the
	// rootfs); it returns an error wrapping os.ErrNotExist when absent.
	// nil means an empty image.
	DestInfo   func(path string) (fs.FileInfo, error)
	HTTPClient *http.Client
	// KeepOwner keeps the sources' uid/gid when Chown is nil: COPY --from
	// a stage or image keeps ownership, a context COPY does not.
	KeepOwner bool
}

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

// Planned is a resolved COPY/ADD. (The contract's "*copier.Plan": a Go
// type cannot share the name of the function Plan.)
type Planned struct {
	c       *buildctx.Context
	entries []*entry
	temps   []*os.File
	key     digest.Digest
}

// Key digests every entry as it will land (path, type, mode, owner, content
// sha256, link target) in order; never mtimes or host paths.
func (p *Planned) Key() digest.Digest { return p.key }

// Files is the number of entries Write emits.
func (p *Planned) Files() int { return len(p.entries) }

// Close releases downloaded files. A Plan whose Write was not called (a
// cache hit) should still be closed.
func (p *Planned) Close() error {
	var first error
	for _, f := range p.temps {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	p.temps = nil
	return first
}

// item is one resolved source before it is expanded into entries.
type item struct {
	name string // base name used inside a directory destination
	file *buildctx.File
	dir  string // context path whose contents are copied (file is a dir)
	url  string
	doc  *Heredoc
	arch bool // ADD: a local archive to extract
}

// Plan resolves req against the context c. The caller should Close the
// result (it may hold downloaded files).
func Plan(ctx context.Context, c *buildctx.Context, req Request) (*Planned, error) {
	p := &Planned{c: c}
	if err := p.plan(ctx, req); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func (p *Planned) plan(ctx context.Context, req Request) error {
	if len(req.Sources)+len(req.Heredocs) == 0 {
		return errors.New("copy: no source")
	}
	workdir := req.Workdir
	if workdir == "" {
		workdir = "/"
	}
	dest := req.Dest
	if !path.IsAbs(dest) {
		dest = path.Join("/", workdir, dest)
	}
	dest = path.Clean(dest)
	destIsDir := strings.HasSuffix(req.Dest, "/") || req.Dest == "." || strings.HasSuffix(req.Dest, "/.") ||
		len(req.Sources)+len(req.Heredocs) > 1 || dest == "/"

	var items []item
	hasHTTP := false
	for _, src := range req.Sources {
		if isURL(src) {
			if !req.Add {
				return fmt.Errorf("source can't be a URL for COPY: %s", src)
			}
			hasHTTP = true
			items = append(items, item{url: src})
			continue
		}
		got, glob, err := p.resolve(src)
		if err != nil {
			return err
		}
		if glob {
			destIsDir = true
		}
		for _, it := range got {
			if it.dir != "" || it.file.Mode.IsDir() {
				destIsDir = true
			} else if req.Add && it.file.Mode.IsRegular() {
				isArch, err := p.isArchive(ctx, it.file)
				if err != nil {
					return err
				}
				if isArch {
					it.arch = true
					destIsDir = true
				}
			}
			items = append(items, it)
		}
	}
	if req.Checksum != "" && (!hasHTTP || len(req.Sources) != 1) {
		return errors.New("checksum can't be specified for non-HTTP(S) sources")
	}
	for i := range req.Heredocs {
		items = append(items, item{name: req.Heredocs[i].Name, doc: &req.Heredocs[i]})
	}
	stat := newStatter(req.DestInfo)
	if !destIsDir {
		fi, err := stat.info(dest)
		if err != nil {
			return err
		}
		destIsDir = fi != nil && fi.IsDir()
	}

	// entries in the order the sources give them; a later one with the
	// same path replaces an earlier one
	var list []*entry
	put := func(e *entry) {
		if e.path != "" { // never the image root itself
			list = append(list, e)
		}
	}
	target := func(name string) string {
		if destIsDir {
			return rel(path.Join(dest, name))
		}
		return rel(dest)
	}
	for _, it := range items {
		switch {
		case it.url != "":
			e, err := p.download(ctx, req, it.url, dest, destIsDir)
			if err != nil {
				return err
			}
			put(e)
		case it.doc != nil:
			mode := int64(0o644)
			if it.doc.Chmod != nil {
				mode = tarMode(*it.doc.Chmod)
			} else if req.Chmod != nil {
				mode = tarMode(*req.Chmod)
			}
			put(&entry{path: target(it.doc.Name), typ: tar.TypeReg, mode: mode, size: int64(len(it.doc.Data)),
				sum: digest.FromString(it.doc.Data), kind: srcData, data: []byte(it.doc.Data), mtime: time.Unix(0, 0)})
		case it.arch:
			es, err := p.planArchive(ctx, it.file, dest, req.Chown)
			if err != nil {
				return err
			}
			for _, e := range es {
				put(e)
			}
		case it.dir != "" || it.file.Mode.IsDir():
			// a directory's tree lands under dest in the same order: the
			// paths only gain a common prefix
			files := p.c.Under(it.dir)
			slab := make([]entry, len(files))
			skip := len(prefixOf(it.dir))
			dsts := destPaths(files, skip, strings.TrimPrefix(dest, "/"))
			for i, f := range files {
				if e := &slab[i]; contextEntry(e, f, dsts[i], req) {
					put(e)
				}
			}
		default:
			var e entry
			if contextEntry(&e, it.file, target(it.name), req) {
				put(&e)
			}
		}
	}
	entries := sortEntries(list)
	if err := linkHardLinks(entries); err != nil {
		return err
	}

	// parents (and a directory destination) that the image lacks
	owner := Owner{}
	if req.Chown != nil {
		owner = *req.Chown
	}
	var created []*entry
	isCreated := map[string]bool{}
	need := func(dir string) error {
		if dir == "" || isCreated[dir] {
			return nil
		}
		if _, ok := slices.BinarySearchFunc(entries, dir, func(e *entry, t string) int { return comparePaths(e.path, t) }); ok {
			return nil
		}
		fi, err := stat.info("/" + dir)
		if err != nil {
			return err
		}
		if fi != nil {
			if !fi.IsDir() {
				return fmt.Errorf("cannot copy to %s: /%s is not a directory", dest, dir)
			}
			return nil
		}
		created = append(created, &entry{path: dir, typ: tar.TypeDir, mode: 0o755, uid: owner.UID, gid: owner.GID, mtime: time.Unix(0, 0), created: true})
		isCreated[dir] = true
		return nil
	}
	needAncestors := func(p string) error {
		for i := 0; i < len(p); i++ {
			if p[i] == '/' {
				if err := need(p[:i]); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if destIsDir {
		if d := rel(dest); d != "" {
			if err := needAncestors(d); err != nil {
				return err
			}
			if err := need(d); err != nil {
				return err
			}
		}
	}
	lastParent := "\x00" // no path has it: the first entry is always checked
	for _, e := range entries {
		// entries sharing a parent share every ancestor: check them once
		parent := e.path[:max(strings.LastIndexByte(e.path, '/'), 0)]
		if parent == lastParent {
			continue
		}
		lastParent = parent
		if err := needAncestors(e.path); err != nil {
			return err
		}
	}
	if len(created) > 0 {
		entries = mergeEntries(entries, sortEntries(created))
	}
	p.entries = entries

	var files []*buildctx.File
	for _, e := range entries {
		if e.kind == srcContext {
			files = append(files, e.file)
		}
	}
	if err := p.c.DigestAll(ctx, files); err != nil {
		return fmt.Errorf("failed to compute cache key: %w", err)
	}
	for _, e := range entries {
		if e.kind == srcContext {
			sum, err := p.c.Sum(e.file)
			if err != nil {
				return fmt.Errorf("failed to compute cache key: %w", err)
			}
			e.raw = sum
		}
	}
	p.key = computeKey(entries)
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
// root (context ownership is not kept, as docker). It reports false for
// what is not copied: sockets, fifos, devices. (Fields are set one by one:
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

func rel(abs string) string { return strings.TrimPrefix(path.Clean("/"+abs), "/") }

func prefixOf(dir string) string {
	if dir == "" {
		return ""
	}
	return dir + "/"
}

// statter memoizes DestInfo; nil info means absent.
type statter struct {
	fn   func(string) (fs.FileInfo, error)
	seen map[string]fs.FileInfo
}

func newStatter(fn func(string) (fs.FileInfo, error)) *statter {
	return &statter{fn: fn, seen: map[string]fs.FileInfo{}}
}

func (s *statter) info(p string) (fs.FileInfo, error) {
	if s.fn == nil {
		return nil, nil
	}
	if fi, ok := s.seen[p]; ok {
		return fi, nil
	}
	fi, err := s.fn(p)
	if errors.Is(err, fs.ErrNotExist) {
		fi, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stat %s in the image: %w", p, err)
	}
	s.seen[p] = fi
	return fi, nil
}

// Write emits the planned entries, parents before children.
func (p *Planned) Write(w *layer.Writer) error {
	sp, err := p.spool()
	if err != nil {
		return err
	}
	defer sp.close()
	for _, e := range p.entries {
		name := e.path
		if e.typ == tar.TypeDir {
			name += "/"
		}
		hdr := &tar.Header{Name: name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: e.mtime}
		var body io.Reader
		switch e.typ {
		case tar.TypeSymlink:
			hdr.Linkname = e.link
		case tar.TypeLink:
			hdr.Linkname = e.link
		case tar.TypeReg:
			hdr.Size = e.size
		}
		var closer io.Closer
		switch e.kind {
		case srcContext:
			f, err := p.c.Open(e.file)
			if err != nil {
				return err
			}
			body, closer = f, f
		case srcData:
			body = strings.NewReader(string(e.data))
		case srcTemp:
			body = io.NewSectionReader(e.temp, 0, e.size)
		case srcArchive:
			r, err := sp.open(e)
			if err != nil {
				return err
			}
			body = r
		}
		err := w.Add(hdr, body)
		if closer != nil {
			closer.Close()
		}
		if err != nil {
			return fmt.Errorf("copy %s: %w", e.path, err)
		}
	}
	return nil
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// Inputs names what the plan reads — context paths, or the destination of
// heredocs, downloads and archive members — each with a digest of how it
// lands, so that a cache miss can say which file changed.
func (p *Planned) Inputs() map[string]string {
	m := make(map[string]string, len(p.entries))
	for _, e := range p.entries {
		if e.created {
			continue
		}
		name := "/" + e.path
		if e.kind == srcContext && e.file != nil {
			name = e.file.Path
		}
		m[name] = fmt.Sprintf("%c %o %d:%d %s %s", e.typ, e.mode, e.uid, e.gid, e.digest(), e.link)
	}
	return m
}
