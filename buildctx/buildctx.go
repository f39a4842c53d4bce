// Package buildctx is the build context: a walk of the context directory
// with .dockerignore applied, and per-file sha256 digests backed by a
// persistent stat cache so an unchanged file is never re-read.
//
// It knows nothing of instructions: the copier decides what a COPY means,
// this package only answers "what is in the context and what is its content".
package buildctx

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"golang.org/x/sys/unix"
)

// Options configures Open.
type Options struct {
	// StateDir holds the persistent stat cache; "" disables persistence.
	StateDir string
	// NoIgnore skips .dockerignore: a stage's rootfs used by COPY --from
	// is not a build context, and its /.dockerignore means nothing.
	NoIgnore bool
}

// File is one entry of the context, as found by Lstat (links are not
// followed). Path is slash-separated and relative to the context root.
type File struct {
	Path    string
	Mode    fs.FileMode
	UID     int
	GID     int
	Size    int64
	Link    string // symlink target, verbatim
	Ino     uint64
	Dev     uint64
	Nlink   uint64
	ModTime time.Time // for layer headers only; never part of a key

	// raw stat fields compared by the stat cache
	mtimeNs, ctimeNs int64
	rawMode          uint32
	state            *digestState
}

// digestState memoizes one file's digest for the life of a Context.
type digestState struct {
	// cached is set while the Context is opened (before any concurrent
	// use) when the stat cache vouches for the file: sum is then final.
	cached   bool
	once     sync.Once
	sum      [sha256.Size]byte
	err      error
	computed *cacheEntry // non-nil when the content was read in this session
	old      *cacheEntry // the stat cache's entry for the same path, if any
}

// Context is an opened build context. Files, Lookup and Open are safe for
// concurrent use; so is Digest. Close must come after every Digest call.
type Context struct {
	dir  string
	tree []*File // tree order: see ComparePaths
	root *File

	sortOnce sync.Once
	files    []*File // by strings.Compare of Path, made on first use

	statePath string       // "" when there is no StateDir
	old       []cacheEntry // the stat cache as loaded, in tree order
	now       func() time.Time
}

// ComparePaths orders slash paths with "/" before every other byte: the
// order of a depth-first walk with each directory's names sorted, in which
// a directory's subtree directly follows it ("a", "a/b", "a-c").
func ComparePaths(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		ca, cb := a[i], b[i]
		if ca == cb {
			continue
		}
		if ca == '/' {
			return -1
		}
		if cb == '/' {
			return 1
		}
		return int(ca) - int(cb)
	}
	return len(a) - len(b)
}

// Open walks dir (with Lstat only, reading no file content) and applies
// dir/.dockerignore the way docker and BuildKit do.
func Open(ctx context.Context, dir string, opts Options) (*Context, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("build context %s: %w", dir, err)
	}
	root, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("build context %s: %w", dir, err)
	}
	var rst unix.Stat_t
	if err := unix.Stat(root, &rst); err != nil {
		return nil, fmt.Errorf("build context %s: %w", dir, err)
	}
	if rst.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("build context %s: not a directory", dir)
	}
	var patterns []string
	if !opts.NoIgnore {
		if patterns, err = readIgnore(root); err != nil {
			return nil, err
		}
	}
	c := &Context{
		dir: root,
		now: time.Now,
	}
	c.root = fileFromStat(".", &rst, "")
	var loaded chan []cacheEntry
	if opts.StateDir != "" {
		// load the cache while the walk runs
		c.statePath = filepath.Join(opts.StateDir, cacheFileName(root))
		loaded = make(chan []cacheEntry, 1)
		go func() { loaded <- loadCache(c.statePath) }()
	}
	w := walker{c: c, ctx: ctx}
	if len(patterns) > 0 {
		pm, err := patternmatcher.New(patterns)
		if err != nil {
			return nil, fmt.Errorf("build context %s: .dockerignore: %w", dir, err)
		}
		w.pm = pm
		w.onlyPrefixExceptions = true
		for _, p := range pm.Patterns() {
			if p.Exclusion() && strings.ContainsAny(trimTrailingGlob(p.String()), `*?[\`) {
				w.onlyPrefixExceptions = false
				break
			}
		}
	}
	if c.tree, err = w.walk(root); err != nil {
		if loaded != nil {
			<-loaded
		}
		return nil, fmt.Errorf("build context %s: %w", dir, err)
	}
	if loaded != nil {
		c.old = <-loaded
		c.attachCache()
	}
	return c, nil
}

// readIgnore reads .dockerignore; ignorefile cleans the patterns and drops a
// leading "/" exactly as docker does.
func readIgnore(root string) ([]string, error) {
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read .dockerignore: %w", err)
	}
	defer f.Close()
	p, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read .dockerignore: %w", err)
	}
	return p, nil
}

func trimTrailingGlob(p string) string {
	p = strings.TrimSuffix(p, string(filepath.Separator)+"**")
	return strings.TrimSuffix(p, string(filepath.Separator)+"*")
}

type walker struct {
	c                    *Context
	ctx                  context.Context
	pm                   *patternmatcher.PatternMatcher
	pmMu                 sync.Mutex // patternmatcher compiles lazily: not safe concurrently
	onlyPrefixExceptions bool

	bufs  sync.Pool     // getdents buffers
	sem   chan struct{} // bounds the extra goroutines listing directories
	wg    sync.WaitGroup
	count atomic.Int64 // entries listed, to size the result once
	mu    sync.Mutex   // guards err
	err   error
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

// walk lists the tree under root in parallel (a stat is a syscall each;
// spreading them over the cores is most of a warm build's context cost)
// and returns the entries in tree order.
func (w *walker) walk(root string) ([]*File, error) {
	w.sem = make(chan struct{}, max(2*runtime.GOMAXPROCS(0), 2))
	top := &node{}
	w.walkDir(root, "", patternmatcher.MatchInfo{}, top)
	w.wg.Wait()
	if w.err != nil {
		return nil, w.err
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

func (w *walker) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
}

func (w *walker) failed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err != nil
}

// walkDir lists one directory into n and descends into its subdirectories,
// on another goroutine while the bound allows.
func (w *walker) walkDir(abs, rel string, info patternmatcher.MatchInfo, n *node) {
	if err := w.ctx.Err(); err != nil {
		w.fail(err)
		return
	}
	if w.failed() {
		return
	}
	type sub struct {
		abs, rel string
		info     patternmatcher.MatchInfo
		n        *node
	}
	var subs []sub
	err := func() error {
		// O_NOFOLLOW: a directory swapped for a symlink since its stat is
		// an error, never a walk outside the context.
		fd, err := unix.Open(abs, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != nil {
			return &fs.PathError{Op: "open", Path: abs, Err: err}
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
			return &fs.PathError{Op: "readdirent", Path: abs, Err: err}
		}
		slices.Sort(names)
		// one allocation for every path of the directory, one for its files
		// and one for their digest states
		size := 0
		for _, name := range names {
			size += len(rel) + 1 + len(name)
		}
		buf := make([]byte, 0, size)
		ends := make([]int, len(names))
		for i, name := range names {
			if rel != "" {
				buf = append(buf, rel...)
				buf = append(buf, '/')
			}
			buf = append(buf, name...)
			ends[i] = len(buf)
		}
		all := string(buf)
		files := make([]File, len(names))
		states := make([]digestState, len(names))
		n.ents = make([]nodeEnt, 0, len(names))
		start := 0
		for i, name := range names {
			p := all[start:ends[i]]
			start = ends[i]
			f := &files[i]
			var st unix.Stat_t
			if err := fstatat(fd, name, &st); err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue // vanished during the walk
				}
				return fmt.Errorf("lstat %s: %w", p, err)
			}
			isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
			var minfo patternmatcher.MatchInfo
			excluded := false
			if w.pm != nil {
				w.pmMu.Lock()
				m, mi, err := w.pm.MatchesUsingParentResults(p, info)
				w.pmMu.Unlock()
				if err != nil {
					return fmt.Errorf("match .dockerignore for %s: %w", p, err)
				}
				minfo, excluded = mi, m
			}
			if excluded {
				if !isDir {
					continue
				}
				if w.onlyPrefixExceptions {
					if !w.exceptionUnder(p) {
						continue // nothing inside can be re-included
					}
					// an exception names a path inside: keep the dir itself
					excluded = false
				}
			}
			var link string
			if st.Mode&unix.S_IFMT == unix.S_IFLNK {
				if link, err = readlinkat(fd, name); err != nil {
					return fmt.Errorf("readlink %s: %w", p, err)
				}
			}
			fillFromStat(f, p, &st, link)
			if f.Mode.IsRegular() {
				f.state = &states[i]
			}
			ent := nodeEnt{f: f, excluded: excluded}
			if isDir {
				ent.sub = &node{}
				subs = append(subs, sub{abs: abs + "/" + name, rel: p, info: minfo, n: ent.sub})
			}
			n.ents = append(n.ents, ent)
		}
		w.count.Add(int64(len(n.ents)))
		return nil
	}()
	if err != nil {
		w.fail(err)
		return
	}
	for _, s := range subs {
		select {
		case w.sem <- struct{}{}:
			w.wg.Add(1)
			go func() {
				defer w.wg.Done()
				defer func() { <-w.sem }()
				w.walkDir(s.abs, s.rel, s.info, s.n)
			}()
		default:
			w.walkDir(s.abs, s.rel, s.info, s.n)
		}
	}
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

func fileFromStat(p string, st *unix.Stat_t, link string) *File {
	f := &File{}
	fillFromStat(f, p, st, link)
	if f.Mode.IsRegular() {
		f.state = &digestState{}
	}
	return f
}

// fillFromStat sets f's fields (all but state) from st. f must be zero:
// fields are set one by one, as a whole-struct store costs write barriers
// while the GC runs.
func fillFromStat(f *File, p string, st *unix.Stat_t, link string) {
	f.Path = p
	f.Mode = modeFromStat(st.Mode)
	f.UID, f.GID = int(st.Uid), int(st.Gid)
	f.Size = st.Size
	if link != "" {
		f.Link = link
	}
	f.Ino, f.Dev, f.Nlink = st.Ino, st.Dev, uint64(st.Nlink)
	f.ModTime = time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
	f.mtimeNs, f.ctimeNs, f.rawMode = st.Mtim.Nano(), st.Ctim.Nano(), st.Mode
}

func modeFromStat(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	}
	if m&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// Dir is the absolute, symlink-resolved context directory.
func (c *Context) Dir() string { return c.dir }

// Files lists every non-ignored entry (not the root itself), sorted by Path.
func (c *Context) Files() []*File {
	c.sortOnce.Do(func() {
		c.files = slices.Clone(c.tree)
		slices.SortFunc(c.files, func(a, b *File) int { return strings.Compare(a.Path, b.Path) })
	})
	return c.files
}

// Tree lists the same entries as Files in tree order (see ComparePaths).
func (c *Context) Tree() []*File { return c.tree }

// Under lists the entries strictly inside dir ("" or "." = the root) in
// tree order, without copying.
func (c *Context) Under(dir string) []*File {
	dir = path.Clean("/" + dir)[1:]
	if dir == "" {
		return c.tree
	}
	i, ok := slices.BinarySearchFunc(c.tree, dir, func(f *File, t string) int { return ComparePaths(f.Path, t) })
	if !ok {
		return nil
	}
	// the subtree is contiguous after dir itself
	pre := dir + "/"
	rest := c.tree[i+1:]
	j := sort.Search(len(rest), func(k int) bool { return !strings.HasPrefix(rest[k].Path, pre) })
	return rest[:j]
}

// Lookup finds an entry by its slash-separated relative path; "." (or "")
// is the context root.
func (c *Context) Lookup(p string) (*File, bool) {
	p = path.Clean("/" + p)[1:]
	if p == "" {
		return c.root, true
	}
	i, ok := slices.BinarySearchFunc(c.tree, p, func(f *File, t string) int { return ComparePaths(f.Path, t) })
	if !ok {
		return nil, false
	}
	return c.tree[i], true
}

// Open opens a regular file of the context for reading, refusing to
// follow a symlink swapped in since the walk.
func (c *Context) Open(f *File) (*os.File, error) {
	if !f.Mode.IsRegular() {
		return nil, fmt.Errorf("open %s: not a regular file", f.Path)
	}
	fh, err := os.OpenFile(filepath.Join(c.dir, filepath.FromSlash(f.Path)), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open context file %s: %w", f.Path, err)
	}
	return fh, nil
}
