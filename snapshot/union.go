package snapshot

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// Overlay's union rules live here, once: lookups (Stat, mount points),
// views (COPY --from) and the copying snapshotter all see a chain through
// child and children, so they agree with what overlayfs shows a RUN.

// chain is a stack of dirs merged into one, top first: the extracted
// layer dirs of a snapshot, or the same-named dirs of its layers that make
// up one merged dir.
type chain []string

func (sn *Snapshotter) chainOf(ids []string) chain {
	c := make(chain, 0, len(ids))
	for i := len(ids) - 1; i >= 0; i-- {
		c = append(c, filepath.Join(sn.layersDir, ids[i]))
	}
	return c
}

// entry is one name of a merged dir.
type entry struct {
	name string
	path string // host path of the winning (topmost) entry
	fi   fs.FileInfo
	// dirs, for a dir, are the dirs merged into it, top first (the
	// winner's own included).
	dirs chain
}

// pick applies overlayfs's rules to one name of the merged dir c, given
// its entry in each dir of c (nil where absent): the topmost entry wins
// unless it is a whiteout; a winning dir merges the same-named dirs
// below it down to the first non-dir (a whiteout included) or opaque dir;
// a non-dir hides everything below it.
func (c chain) pick(name string, stat func(i int) (fs.FileInfo, error)) (entry, bool, error) {
	var e entry
	for i := range c {
		fi, err := stat(i)
		if err != nil {
			return entry{}, false, err
		}
		if fi == nil {
			continue // this layer did not touch it
		}
		p := filepath.Join(c[i], name)
		if e.fi == nil {
			if isWhiteout(fi) {
				return entry{}, false, nil
			}
			e = entry{name: name, path: p, fi: fi}
			if !fi.IsDir() {
				return e, true, nil
			}
		} else if !fi.IsDir() {
			break
		}
		e.dirs = append(e.dirs, p)
		if isOpaque(p) {
			break
		}
	}
	return e, e.fi != nil, nil
}

// child looks name up in the merged dir c.
func (c chain) child(name string) (entry, bool, error) {
	return c.pick(name, func(i int) (fs.FileInfo, error) {
		return touched(filepath.Join(c[i], name))
	})
}

// touched is the entry a layer dir holds at host path p: nil when the
// layer did not touch that name (absent, or under a non-dir).
func touched(p string) (fs.FileInfo, error) {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) || isNotDir(err) {
		return nil, nil
	}
	return fi, err
}

// children lists the merged dir c, sorted by name.
func (c chain) children() ([]entry, error) {
	listed := make([]map[string]fs.DirEntry, len(c))
	var names []string
	seen := map[string]bool{}
	for i, dir := range c {
		des, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		listed[i] = make(map[string]fs.DirEntry, len(des))
		for _, de := range des {
			listed[i][de.Name()] = de
			if !seen[de.Name()] {
				seen[de.Name()] = true
				names = append(names, de.Name())
			}
		}
	}
	slices.Sort(names)
	out := make([]entry, 0, len(names))
	for _, name := range names {
		e, ok, err := c.pick(name, func(i int) (fs.FileInfo, error) {
			if de, ok := listed[i][name]; ok {
				return de.Info()
			}
			return nil, nil
		})
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// walk visits the merged tree under the dir rel of c, depth first and by
// name: pre for every entry, then a dir's content, then post for the dir.
func (c chain) walk(ctx context.Context, rel string, pre, post func(rel string, e entry) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	entries, err := c.children()
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := path.Join(rel, e.name)
		if err := pre(p, e); err != nil {
			return err
		}
		if !e.fi.IsDir() {
			continue
		}
		if err := e.dirs.walk(ctx, p, pre, post); err != nil {
			return err
		}
		if err := post(p, e); err != nil {
			return err
		}
	}
	return nil
}

// lookup finds the entry for the clean relative path rel (no symlinks in
// its parents) as overlayfs would.
func (c chain) lookup(rel string) (string, fs.FileInfo, error) {
	if len(c) == 0 {
		return "", nil, fs.ErrNotExist
	}
	if rel == "" {
		fi, err := os.Lstat(c[0])
		return c[0], fi, err
	}
	dirs := c
	parts := splitPath(rel)
	for i, name := range parts {
		e, ok, err := dirs.child(name)
		if err != nil {
			return "", nil, err
		}
		if !ok {
			return "", nil, fs.ErrNotExist
		}
		if i == len(parts)-1 {
			return e.path, e.fi, nil
		}
		if !e.fi.IsDir() {
			return "", nil, syscall.ENOTDIR
		}
		dirs = e.dirs
	}
	panic("unreachable")
}

func isWhiteout(fi fs.FileInfo) bool {
	if fi.Mode()&fs.ModeCharDevice == 0 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Rdev == 0
}

func isOpaque(p string) bool {
	buf := make([]byte, 4)
	n, err := unix.Lgetxattr(p, opaqueXattr, buf)
	return err == nil && n == 1 && buf[0] == 'y'
}

func isNotDir(err error) bool {
	pe, ok := err.(*fs.PathError)
	return ok && pe.Err == syscall.ENOTDIR
}
