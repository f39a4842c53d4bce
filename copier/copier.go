// Package copier implements COPY/ADD semantics from the build context into
// a layer. Sources resolve strictly inside the context (symlinks included);
// a Plan lists every entry exactly as it will land, so its Key is a digest
// of content and metadata only, and Write emits those same entries.
package copier

import (
	"archive/tar"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/minibuild/minibuild/buildctx"
	"github.com/minibuild/minibuild/internal/diskspace"
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
	DestInfo func(path string) (fs.FileInfo, error)
	// Resolve returns the absolute path a path names inside the image's
	// rootfs, every symlink followed there (never out of it), missing
	// components kept: entries land where it says. nil: paths as written.
	Resolve    func(path string) (string, error)
	HTTPClient *http.Client
	// KeepOwner keeps the sources' uid/gid when Chown is nil: COPY --from
	// a stage or image keeps ownership, a context COPY does not.
	KeepOwner bool
	// Space is where Write spools the members of local archives ADD
	// expands ("" = os.TempDir()) and the free space to keep there: an
	// expansion that would leave less fails, wrapping diskspace.ErrLow,
	// before it writes. Bytes 0: no guard.
	Space diskspace.Reserve
}

// Planned is a resolved COPY/ADD. (The contract's "*copier.Plan": a Go
// type cannot share the name of the function Plan.)
type Planned struct {
	c       *buildctx.Context
	entries []*entry
	temps   []*os.File
	key     digest.Digest
	space   diskspace.Reserve
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
	p := &Planned{c: c, space: req.Space}
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
	dest, destIsDir := destination(req)
	items, anyDir, err := p.items(ctx, req)
	if err != nil {
		return err
	}
	stat := newStatter(req.DestInfo)
	if destIsDir = destIsDir || anyDir; !destIsDir {
		fi, err := stat.info(dest)
		if err != nil {
			return err
		}
		destIsDir = fi != nil && fi.IsDir()
	}
	list, err := p.expand(ctx, req, items, dest, destIsDir)
	if err != nil {
		return err
	}
	if req.Resolve != nil {
		if err := throughImage(list, req.Resolve, stat); err != nil {
			return err
		}
		if dest, err = req.Resolve(dest); err != nil {
			return err
		}
	}
	entries := sortEntries(list)
	if err := linkHardLinks(entries); err != nil {
		return err
	}
	owner := Owner{}
	if req.Chown != nil {
		owner = *req.Chown
	}
	pm := &parentMaker{entries: entries, stat: stat, dest: dest, owner: owner, isCreated: map[string]bool{}}
	if err := pm.run(destIsDir); err != nil {
		return err
	}
	if len(pm.created) > 0 {
		entries = mergeEntries(entries, sortEntries(pm.created))
	}
	p.entries = entries
	if err := p.digestContext(ctx); err != nil {
		return fmt.Errorf("failed to compute cache key: %w", err)
	}
	p.key = computeKey(entries)
	return nil
}

// destination is the absolute, cleaned destination and whether the
// request alone makes it a directory (a trailing slash, several sources,
// the root).
func destination(req Request) (dest string, isDir bool) {
	workdir := req.Workdir
	if workdir == "" {
		workdir = "/"
	}
	dest = req.Dest
	if !path.IsAbs(dest) {
		dest = path.Join("/", workdir, dest)
	}
	dest = path.Clean(dest)
	isDir = strings.HasSuffix(req.Dest, "/") || req.Dest == "." || strings.HasSuffix(req.Dest, "/.") ||
		len(req.Sources)+len(req.Heredocs) > 1 || dest == "/"
	return dest, isDir
}

// items resolves the sources (URLs, context paths and globs, heredocs) in
// order. dirDest reports a source that makes the destination a
// directory: a glob, a directory, or an archive ADD extracts.
func (p *Planned) items(ctx context.Context, req Request) (items []item, dirDest bool, err error) {
	hasHTTP := false
	for _, src := range req.Sources {
		if isURL(src) {
			if !req.Add {
				return nil, false, fmt.Errorf("source can't be a URL for COPY: %s", src)
			}
			hasHTTP = true
			items = append(items, item{url: src})
			continue
		}
		got, glob, err := p.resolve(src)
		if err != nil {
			return nil, false, err
		}
		dirDest = dirDest || glob
		for _, it := range got {
			if it.dir != "" || it.file.Mode.IsDir() {
				dirDest = true
			} else if req.Add && it.file.Mode.IsRegular() {
				isArch, err := p.isArchive(ctx, it.file)
				if err != nil {
					return nil, false, err
				}
				if isArch {
					it.arch, dirDest = true, true
				}
			}
			items = append(items, it)
		}
	}
	if req.Checksum != "" && (!hasHTTP || len(req.Sources) != 1) {
		return nil, false, errors.New("checksum can't be specified for non-HTTP(S) sources")
	}
	for i := range req.Heredocs {
		items = append(items, item{name: req.Heredocs[i].Name, doc: &req.Heredocs[i]})
	}
	return items, dirDest, nil
}

// expand lists the entries of every item in the order the sources give
// them; a later one with the same path replaces an earlier one when they
// are sorted.
func (p *Planned) expand(ctx context.Context, req Request, items []item, dest string, destIsDir bool) ([]*entry, error) {
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
				return nil, err
			}
			put(e)
		case it.doc != nil:
			put(heredocEntry(it.doc, target(it.doc.Name), req.Chmod))
		case it.arch:
			es, err := p.planArchive(ctx, it.file, dest, req.Chown)
			if err != nil {
				return nil, err
			}
			for _, e := range es {
				put(e)
			}
		case it.dir != "" || it.file.Mode.IsDir():
			// a directory's tree lands under dest in the same order: the
			// paths only gain a common prefix
			files := p.c.Under(it.dir)
			slab := make([]entry, len(files))
			dsts := destPaths(files, len(prefixOf(it.dir)), strings.TrimPrefix(dest, "/"))
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
	return list, nil
}

// digestContext takes the content sha256 of every context file the plan
// copies (the stat cache answers for unchanged ones).
func (p *Planned) digestContext(ctx context.Context) error {
	var files []*buildctx.File
	for _, e := range p.entries {
		if e.kind == srcContext {
			files = append(files, e.file)
		}
	}
	if err := p.c.DigestAll(ctx, files); err != nil {
		return err
	}
	for _, e := range p.entries {
		if e.kind == srcContext {
			sum, err := p.c.Sum(e.file)
			if err != nil {
				return err
			}
			e.raw = sum
		}
	}
	return nil
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
	ra := p.readAhead()
	defer ra.stop()
	var buf []byte // the read buffer of the files ra does not read
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
			if e.typ == tar.TypeReg && e.size <= layer.ChunkSize {
				// Read whole with bare fd calls (ahead, on another
				// goroutine, for small files); its digest, proven or
				// hashed from these bytes, keys its member.
				var r read
				if aheadable(e) {
					r = ra.next(e)
				} else {
					r.data, r.sum, r.err = p.c.ReadFile(e.file, buf)
					if cap(r.data) > cap(buf) {
						buf = r.data[:0]
					}
				}
				err := r.err
				if err == nil && r.sum != e.raw {
					err = fmt.Errorf("%s changed since the cache key was computed", e.file.Path)
				}
				if err == nil {
					err = w.AddFile(hdr, r.data, r.sum)
				}
				if aheadable(e) {
					ra.recycle(r.data)
				}
				if err != nil {
					return fmt.Errorf("copy %s: %w", e.path, err)
				}
				continue
			}
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
	buf := make([]byte, 0, 128)
	for _, e := range p.entries {
		if e.created {
			continue
		}
		name := "/" + e.path
		if e.kind == srcContext && e.file != nil {
			name = e.file.Path
		}
		m[name] = inputLine(buf[:0], e)
	}
	return m
}

// inputLine is fmt's "%c %o %d:%d %s %s" of typ, mode, uid, gid, digest
// and link, built without fmt (Inputs makes one per file).
func inputLine(b []byte, e *entry) string {
	b = utf8.AppendRune(b, rune(e.typ))
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.mode, 8)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(e.uid), 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(e.gid), 10)
	b = append(b, ' ')
	if e.kind == srcContext {
		b = append(b, digestPrefix...)
		b = hex.AppendEncode(b, e.raw[:])
	} else {
		b = append(b, e.sum...)
	}
	b = append(b, ' ')
	b = append(b, e.link...)
	return string(b)
}
