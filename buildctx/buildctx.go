// Package buildctx is the build context: a walk of the context directory
// with .dockerignore applied, and per-file sha256 digests backed by a
// persistent stat cache so an unchanged file is never re-read.
//
// It knows nothing of instructions: the copier decides what a COPY means,
// this package only answers "what is in the context and what is its content".
package buildctx

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/minibuild/minibuild/internal/regular"
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
	w := walker{c: c}
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
	if c.tree, err = w.walk(ctx, root); err != nil {
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
	// A FIFO (or any non-regular file) is an error, never a wait for a writer.
	f, err := regular.Open(filepath.Join(root, ".dockerignore"), ".dockerignore")
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
