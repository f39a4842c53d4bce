// Package buildctx is the build context: a walk of the context directory
// with .dockerignore applied, and per-file sha256 digests backed by a
// persistent stat cache so an unchanged file is never re-read.
//
// It knows nothing of instructions: the copier decides what a COPY means,
// this package only answers "what is in the context and what is its content".
package buildctx

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"github.com/opencontainers/go-digest"
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
	once     sync.Once
	dg       digest.Digest
	err      error
	computed *cacheEntry // non-nil when the content was read in this session
}

// Context is an opened build context. Files, Lookup and Open are safe for
// concurrent use; so is Digest. Close must come after every Digest call.
type Context struct {
	dir   string
	files []*File
	index map[string]*File
	root  *File

	statePath string                // "" when there is no StateDir
	old       map[string]cacheEntry // the stat cache as loaded
	now       func() time.Time
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
		dir:   root,
		index: map[string]*File{},
		now:   time.Now,
	}
	c.root = fileFromStat(".", &rst, "")
	var loaded chan map[string]cacheEntry
	if opts.StateDir != "" {
		// load the cache while the walk runs
		c.statePath = filepath.Join(opts.StateDir, cacheFileName(root))
		loaded = make(chan map[string]cacheEntry, 1)
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
	if c.files, err = w.walk(root); err != nil {
		if loaded != nil {
			<-loaded
		}
		return nil, fmt.Errorf("build context %s: %w", dir, err)
	}
	slices.SortFunc(c.files, func(a, b *File) int { return strings.Compare(a.Path, b.Path) })
	for _, f := range c.files {
		c.index[f.Path] = f
	}
	if loaded != nil {
		c.old = <-loaded
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

	sem     chan struct{} // bounds the extra goroutines listing directories
	wg      sync.WaitGroup
	mu      sync.Mutex // guards files, emitted and err
	files   []*File
	emitted map[string]bool
	err     error
}

// walk lists the tree under root in parallel (a stat is a syscall each;
// spreading them over the cores is most of a warm build's context cost).
func (w *walker) walk(root string) ([]*File, error) {
	w.sem = make(chan struct{}, max(2*runtime.GOMAXPROCS(0), 2))
	w.emitted = map[string]bool{}
	w.walkDir(root, "", patternmatcher.MatchInfo{}, nil)
	w.wg.Wait()
	return w.files, w.err
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

// walkDir lists one directory. pending holds excluded ancestor directories
// that are emitted only once something beneath them is included (as
// BuildKit's fsutil does), so an exception never produces an orphan.
func (w *walker) walkDir(abs, rel string, info patternmatcher.MatchInfo, pending []*File) {
	if err := w.ctx.Err(); err != nil {
		w.fail(err)
		return
	}
	if w.failed() {
		return
	}
	type sub struct {
		name string
		f    *File
		info patternmatcher.MatchInfo
		pend []*File
	}
	var subs []sub
	var local []*File
	err := func() error {
		d, err := os.Open(abs)
		if err != nil {
			return err
		}
		defer d.Close()
		names, err := d.Readdirnames(-1)
		if err != nil {
			return err
		}
		fd := int(d.Fd())
		for _, name := range names {
			p := name
			if rel != "" {
				p = rel + "/" + name
			}
			var st unix.Stat_t
			if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
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
			var link string
			if st.Mode&unix.S_IFMT == unix.S_IFLNK {
				if link, err = readlinkat(fd, name); err != nil {
					return fmt.Errorf("readlink %s: %w", p, err)
				}
			}
			f := fileFromStat(p, &st, link)
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
			if !excluded {
				if len(pending) > 0 {
					w.emit(pending)
					pending = nil
				}
				local = append(local, f)
			}
			if isDir {
				var pend []*File
				if excluded {
					pend = append(slices.Clip(pending), f)
				}
				subs = append(subs, sub{name: name, f: f, info: minfo, pend: pend})
			}
		}
		return nil
	}()
	if err != nil {
		w.fail(err)
		return
	}
	w.mu.Lock()
	w.files = append(w.files, local...)
	w.mu.Unlock()
	for _, s := range subs {
		subAbs := filepath.Join(abs, s.name)
		select {
		case w.sem <- struct{}{}:
			w.wg.Add(1)
			go func() {
				defer w.wg.Done()
				defer func() { <-w.sem }()
				w.walkDir(subAbs, s.f.Path, s.info, s.pend)
			}()
		default:
			w.walkDir(subAbs, s.f.Path, s.info, s.pend)
		}
	}
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

// emit adds excluded ancestors that turn out to contain included entries.
func (w *walker) emit(pending []*File) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, f := range pending {
		if w.emitted[f.Path] {
			continue
		}
		w.emitted[f.Path] = true
		w.files = append(w.files, f)
	}
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
	f := &File{
		Path:    p,
		Mode:    modeFromStat(st.Mode),
		UID:     int(st.Uid),
		GID:     int(st.Gid),
		Size:    st.Size,
		Link:    link,
		Ino:     st.Ino,
		Dev:     st.Dev,
		Nlink:   uint64(st.Nlink),
		ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		mtimeNs: st.Mtim.Nano(),
		ctimeNs: st.Ctim.Nano(),
		rawMode: st.Mode,
	}
	if f.Mode.IsRegular() {
		f.state = &digestState{}
	}
	return f
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
func (c *Context) Files() []*File { return c.files }

// Lookup finds an entry by its slash-separated relative path; "." (or "")
// is the context root.
func (c *Context) Lookup(p string) (*File, bool) {
	p = path.Clean("/" + p)[1:]
	if p == "" {
		return c.root, true
	}
	f, ok := c.index[p]
	return f, ok
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
