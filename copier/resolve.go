package copier

import (
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"strings"

	"github.com/minibuild/minibuild/buildctx"
)

// maxLinks bounds symlink resolution (as the kernel's ELOOP does).
const maxLinks = 40

// resolve turns one source into items. A leading "/" is the context root;
// ".." that would leave the context is refused. A symlink named directly
// (or matched by a glob) is followed, as BuildKit's COPY does, but only
// inside the context: an absolute or escaping target is re-rooted at the
// context root, never at the host's. Ignored files are absent.
func (p *Planned) resolve(src string) ([]item, bool, error) {
	abs := strings.HasPrefix(src, "/")
	clean := path.Clean(src)
	if !abs && (clean == ".." || strings.HasPrefix(clean, "../")) {
		return nil, false, fmt.Errorf("forbidden path outside the build context: %s", src)
	}
	clean = rel(clean)
	notFound := fmt.Errorf("failed to compute cache key: %q: %w", "/"+clean, ErrNotFound)
	if !strings.ContainsAny(clean, `*?[\`) {
		f, at, err := p.follow(clean)
		if err != nil {
			return nil, false, notFound
		}
		it := item{name: path.Base("/" + clean), file: f}
		if f.Mode.IsDir() {
			it.dir = at
		}
		return []item{it}, false, nil
	}
	if _, err := path.Match(clean, ""); err != nil {
		return nil, true, fmt.Errorf("source %s: %w", src, err)
	}
	segs := strings.Split(clean, "/")
	var items []item
	for _, f := range p.c.Files() {
		if !matchSegs(segs, f.Path) {
			continue
		}
		t, at, err := p.follow(f.Path)
		if err != nil {
			continue // a dangling or escaping link matches nothing
		}
		it := item{name: path.Base(f.Path), file: t}
		if t.Mode.IsDir() {
			it.dir = at
		}
		items = append(items, it)
	}
	if len(items) == 0 {
		return nil, true, notFound
	}
	return items, true, nil
}

// matchSegs applies filepath.Match per path segment.
func matchSegs(segs []string, p string) bool {
	parts := strings.Split(p, "/")
	if len(parts) != len(segs) {
		return false
	}
	for i, s := range segs {
		if ok, _ := filepath.Match(s, parts[i]); !ok {
			return false
		}
	}
	return true
}

// follow resolves p in the context index, following every symlink
// (the last component included) and clamping ".." at the root. It
// returns the entry and its resolved path ("" for the root).
func (p *Planned) follow(name string) (*buildctx.File, string, error) {
	parts := splitPath(name)
	cur := ""
	links := 0
	for len(parts) > 0 {
		part := parts[0]
		parts = parts[1:]
		switch part {
		case "", ".":
			continue
		case "..":
			if i := strings.LastIndexByte(cur, '/'); i >= 0 {
				cur = cur[:i]
			} else {
				cur = ""
			}
			continue
		}
		next := part
		if cur != "" {
			next = cur + "/" + part
		}
		f, ok := p.c.Lookup(next)
		if !ok {
			return nil, "", fs.ErrNotExist
		}
		if f.Mode&fs.ModeSymlink != 0 {
			if links++; links > maxLinks {
				return nil, "", fmt.Errorf("%s: too many levels of symbolic links", name)
			}
			if strings.HasPrefix(f.Link, "/") {
				cur = ""
			}
			parts = append(splitPath(f.Link), parts...)
			continue
		}
		if len(parts) > 0 && !f.Mode.IsDir() {
			return nil, "", fs.ErrNotExist
		}
		cur = next
	}
	f, ok := p.c.Lookup(cur)
	if !ok {
		return nil, "", fs.ErrNotExist
	}
	return f, cur, nil
}

func splitPath(p string) []string {
	return strings.FieldsFunc(p, func(r rune) bool { return r == '/' })
}
