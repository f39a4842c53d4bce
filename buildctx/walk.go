package buildctx

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/moby/patternmatcher"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// walker lists a context directory: one goroutine per directory while the
// bound allows (a stat is a syscall each; spreading them over the cores is
// most of a warm build's context cost), inline past it.
type walker struct {
	c                    *Context
	ctx                  context.Context // the group's: ends at the first error
	group                *errgroup.Group
	pm                   *patternmatcher.PatternMatcher
	pmMu                 sync.Mutex // patternmatcher compiles lazily: not safe concurrently
	onlyPrefixExceptions bool

	bufs  sync.Pool    // getdents buffers
	count atomic.Int64 // entries listed, to size the result once
}

// node is one listed directory: its entries sorted by name, each with the
// node of its own listing when it is a directory that was descended into.
// Nodes are filled concurrently and joined in order once the walk is done,
// so the result comes out in tree order without a sort of the whole.
type node struct {
	ents []nodeEnt
}

type nodeEnt struct {
	f        *File
	excluded bool  // an excluded directory, kept only if something below is
	sub      *node // its listing; nil for a directory not descended into
}

// subdir is a directory listed by walkDir, to descend into.
type subdir struct {
	abs, rel string
	info     patternmatcher.MatchInfo
	n        *node
}

// walk lists the tree under root and returns the entries in tree order.
func (w *walker) walk(ctx context.Context, root string) ([]*File, error) {
	w.group, w.ctx = errgroup.WithContext(ctx)
	w.group.SetLimit(max(2*runtime.GOMAXPROCS(0), 2))
	top := &node{}
	err := w.walkDir(root, "", patternmatcher.MatchInfo{}, top)
	if gerr := w.group.Wait(); err == nil {
		err = gerr
	}
	if err != nil {
		return nil, err
	}
	return top.appendTo(make([]*File, 0, w.count.Load())), nil
}

// appendTo appends n's entries and their subtrees depth first. An excluded
// directory is emitted only when something beneath it is (as BuildKit's
// fsutil does), so an exception never produces an orphan.
func (n *node) appendTo(out []*File) []*File {
	for _, e := range n.ents {
		mark := len(out)
		out = append(out, e.f)
		if e.sub != nil {
			out = e.sub.appendTo(out)
		}
		if e.excluded && len(out) == mark+1 {
			out = out[:mark]
		}
	}
	return out
}

// walkDir lists one directory into n and descends into its subdirectories,
// each on another goroutine while the bound allows.
func (w *walker) walkDir(abs, rel string, info patternmatcher.MatchInfo, n *node) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	subs, err := w.listDir(abs, rel, info, n)
	if err != nil {
		return err
	}
	for _, s := range subs {
		if w.group.TryGo(func() error { return w.walkDir(s.abs, s.rel, s.info, s.n) }) {
			continue
		}
		if err := w.walkDir(s.abs, s.rel, s.info, s.n); err != nil {
			return err
		}
	}
	return nil
}

// listDir fills n with the entries of one directory, sorted by name, and
// returns the subdirectories to descend into.
func (w *walker) listDir(abs, rel string, info patternmatcher.MatchInfo, n *node) ([]subdir, error) {
	// O_NOFOLLOW: a directory swapped for a symlink since its stat is an
	// error, never a walk outside the context.
	fd, err := unix.Open(abs, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: abs, Err: err}
	}
	defer unix.Close(fd)
	dbuf, _ := w.bufs.Get().(*[]byte)
	if dbuf == nil {
		b := make([]byte, 32<<10)
		dbuf = &b
	}
	names, err := readNames(fd, *dbuf)
	w.bufs.Put(dbuf)
	if err != nil {
		return nil, &fs.PathError{Op: "readdirent", Path: abs, Err: err}
	}
	slices.Sort(names)
	all, ends := childPaths(rel, names)
	// one allocation for the directory's files and one for their digest
	// states
	files := make([]File, len(names))
	states := make([]digestState, len(names))
	n.ents = make([]nodeEnt, 0, len(names))
	var subs []subdir
	start := 0
	for i, name := range names {
		p := all[start:ends[i]]
		start = ends[i]
		ent, keep, err := w.entry(fd, name, p, info, &files[i], &states[i])
		if err != nil {
			return nil, err
		}
		if !keep {
			continue
		}
		if ent.sub != nil {
			subs = append(subs, subdir{abs: abs + "/" + name, rel: p, info: ent.minfo, n: ent.sub})
		}
		n.ents = append(n.ents, ent.nodeEnt)
	}
	w.count.Add(int64(len(n.ents)))
	return subs, nil
}

// childPaths is rel/name for each name, all in one string: the i-th path
// ends at ends[i] and starts where the one before it ends.
func childPaths(rel string, names []string) (all string, ends []int) {
	size := 0
	for _, name := range names {
		size += len(rel) + 1 + len(name)
	}
	buf := make([]byte, 0, size)
	ends = make([]int, len(names))
	for i, name := range names {
		if rel != "" {
			buf = append(buf, rel...)
			buf = append(buf, '/')
		}
		buf = append(buf, name...)
		ends[i] = len(buf)
	}
	return string(buf), ends
}

// listedEnt is a node entry with the ignore-match state its subtree
// inherits.
type listedEnt struct {
	nodeEnt
	minfo patternmatcher.MatchInfo
}

// entry stats name (at path p) in the directory fd into f (which must be
// zero) and applies .dockerignore. keep is false for what the walk leaves
// out: an entry gone since the listing, an ignored file, an ignored
// directory no exception can reach into.
func (w *walker) entry(fd int, name, p string, info patternmatcher.MatchInfo, f *File, st0 *digestState) (ent listedEnt, keep bool, err error) {
	var st unix.Stat_t
	if err := fstatat(fd, name, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return ent, false, nil // vanished during the walk
		}
		return ent, false, fmt.Errorf("lstat %s: %w", p, err)
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	excluded := false
	if w.pm != nil {
		w.pmMu.Lock()
		m, mi, err := w.pm.MatchesUsingParentResults(p, info)
		w.pmMu.Unlock()
		if err != nil {
			return ent, false, fmt.Errorf("match .dockerignore for %s: %w", p, err)
		}
		ent.minfo, excluded = mi, m
	}
	if excluded {
		if !isDir {
			return ent, false, nil
		}
		if w.onlyPrefixExceptions {
			if !w.exceptionUnder(p) {
				return ent, false, nil // nothing inside can be re-included
			}
			// an exception names a path inside: keep the dir itself
			excluded = false
		}
	}
	var link string
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		if link, err = readlinkat(fd, name); err != nil {
			return ent, false, fmt.Errorf("readlink %s: %w", p, err)
		}
	}
	fillFromStat(f, p, &st, link)
	if f.Mode.IsRegular() {
		f.state = st0
	}
	ent.f, ent.excluded = f, excluded
	if isDir {
		ent.sub = &node{}
	}
	return ent, true, nil
}

// readNames lists a directory with getdents64, skipping "." and "..".
// The names share one string in which each is followed by a NUL, so
// fstatat can pass them to the kernel without a copy.
func readNames(fd int, buf []byte) ([]string, error) {
	if buf == nil {
		buf = make([]byte, 32<<10)
	}
	var arena []byte
	var ends []int
	for {
		n, err := unix.Getdents(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			break
		}
		for off := 0; off < n; {
			// struct linux_dirent64: ino u64, off i64, reclen u16, type u8, name
			if off+19 > n {
				return nil, errors.New("malformed directory entry")
			}
			reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
			if reclen < 19 || off+reclen > n {
				return nil, errors.New("malformed directory entry")
			}
			name := buf[off+19 : off+reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			off += reclen
			if len(name) == 0 || (name[0] == '.' && (len(name) == 1 || (len(name) == 2 && name[1] == '.'))) {
				continue
			}
			arena = append(arena, name...)
			ends = append(ends, len(arena))
			arena = append(arena, 0)
		}
	}
	all := string(arena)
	names := make([]string, len(ends))
	start := 0
	for i, end := range ends {
		names[i] = all[start:end]
		start = end + 1
	}
	return names, nil
}

// exceptionUnder reports whether some "!" pattern names a path inside dir.
func (w *walker) exceptionUnder(dir string) bool {
	if !w.pm.Exclusions() {
		return false
	}
	prefix := dir + "/"
	for _, p := range w.pm.Patterns() {
		if p.Exclusion() && strings.HasPrefix(filepath.ToSlash(p.String())+"/", prefix) {
			return true
		}
	}
	return false
}

func readlinkat(fd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(fd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}
