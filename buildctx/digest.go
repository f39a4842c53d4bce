package buildctx

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// racyMargin is how much older than the moment it was recorded a file's
// mtime must be before its cache entry is trusted (git's "racy" rule):
// a write landing in the same timestamp tick as the hash would otherwise
// leave size, mtime and ctime unchanged and the stale digest in use
// (moby/buildkit#4817). Two seconds covers coarse filesystem clocks.
const racyMargin = 2 * time.Second

// settled tells that a file with this mtime (ns) was past any write
// still landing at the moment at (ns): the racy rule, in one place.
func settled(mtime, at int64) bool { return mtime < at-int64(racyMargin) }

// cacheMagic versions the stat cache file; a different format is ignored.
// v2 keeps entries in tree order (ComparePaths), so that Open matches them
// to the walk in one merge instead of through a map.
const cacheMagic = "minibuild-statcache-v2\n"

// cacheEntry is what the stat cache remembers about one regular file.
type cacheEntry struct {
	path               string
	size, mtime, ctime int64
	ino, dev           uint64
	mode               uint32
	recorded           int64 // unix ns when the content was read
	sum                [sha256.Size]byte
}

func (e *cacheEntry) matches(f *File) bool {
	return e.size == f.Size && e.mtime == f.mtimeNs && e.ctime == f.ctimeNs &&
		e.ino == f.Ino && e.dev == f.Dev && e.mode == f.rawMode
}

// trusted applies the racy rule on top of matches.
func (e *cacheEntry) trusted(f *File) bool {
	return e.matches(f) && settled(e.mtime, e.recorded)
}

// attachCache pairs each regular file with the stat cache's entry of the
// same path (both lists are in tree order) and takes the digests of those
// the entry vouches for. It runs before the Context is shared.
func (c *Context) attachCache() {
	old := c.old
	i := 0
	for _, f := range c.tree {
		if f.state == nil {
			continue
		}
		for i < len(old) && ComparePaths(old[i].path, f.Path) < 0 {
			i++
		}
		if i == len(old) {
			return
		}
		if e := &old[i]; e.path == f.Path {
			f.state.old = e
			if e.trusted(f) {
				f.state.cached, f.state.sum = true, e.sum
			}
			i++
		}
	}
}

// Digest returns the sha256 of a regular file's content. It is computed at
// most once per Context, and not at all when the stat cache holds a trusted
// entry for the file.
func (c *Context) Digest(f *File) (digest.Digest, error) {
	sum, err := c.Sum(f)
	if err != nil {
		return "", err
	}
	var b [7 + 2*sha256.Size]byte
	copy(b[:], "sha256:")
	hex.Encode(b[7:], sum[:])
	return digest.Digest(b[:]), nil
}

// Sum is Digest as the raw sha256, for callers that hash many digests and
// need no string per file.
func (c *Context) Sum(f *File) ([sha256.Size]byte, error) {
	st := f.state
	if st == nil {
		return [sha256.Size]byte{}, fmt.Errorf("digest %s: not a regular file", f.Path)
	}
	if st.cached {
		return st.sum, nil
	}
	return c.compute(f, nil)
}

// compute hashes f once for the life of the Context.
func (c *Context) compute(f *File, buf []byte) ([sha256.Size]byte, error) {
	st := f.state
	st.once.Do(func() {
		if st.computed, st.err = c.hash(f, buf); st.err == nil {
			st.sum = st.computed.sum
		}
	})
	return st.sum, st.err
}

// hash reads the file, checking that it is still the file the walk saw.
// buf (nil: one is made) is scratch space for reading.
func (c *Context) hash(f *File, buf []byte) (*cacheEntry, error) {
	recorded := c.now().UnixNano() // before reading: conservative for the racy rule
	fh, err := c.Open(f)
	if err != nil {
		return nil, fmt.Errorf("digest %s: %w", f.Path, err)
	}
	defer fh.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(fh.Fd()), &st); err != nil {
		return nil, fmt.Errorf("digest %s: %w", f.Path, err)
	}
	if st.Size != f.Size || st.Mtim.Nano() != f.mtimeNs || st.Ctim.Nano() != f.ctimeNs || st.Ino != f.Ino || st.Dev != f.Dev {
		return nil, fmt.Errorf("digest %s: file changed during the build", f.Path)
	}
	if buf == nil {
		buf = make([]byte, min(max(f.Size+1, 512), 64<<10))
	}
	h := sha256.New()
	var n int64
	for {
		k, err := fh.Read(buf)
		h.Write(buf[:k])
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("digest %s: %w", f.Path, err)
		}
	}
	if n != f.Size {
		return nil, fmt.Errorf("digest %s: file changed during the build", f.Path)
	}
	e := &cacheEntry{size: f.Size, mtime: f.mtimeNs, ctime: f.ctimeNs, ino: f.Ino, dev: f.Dev, mode: f.rawMode, recorded: recorded}
	h.Sum(e.sum[:0])
	return e, nil
}

// DigestAll digests files (regular ones; others are skipped), reading the
// ones the stat cache cannot vouch for on a bounded pool of workers.
func (c *Context) DigestAll(ctx context.Context, files []*File) error {
	var misses []*File
	for _, f := range files {
		if f.state == nil || f.state.cached {
			continue
		}
		misses = append(misses, f)
	}
	if len(misses) == 0 {
		return nil
	}
	workers := min(max(2*runtime.GOMAXPROCS(0), 2), 16, len(misses))
	g, gctx := errgroup.WithContext(ctx)
	work := make(chan *File)
	for range workers {
		g.Go(func() error {
			buf := make([]byte, 64<<10)
			for f := range work {
				if _, err := c.compute(f, buf); err != nil {
					return err
				}
			}
			return nil
		})
	}
feed:
	for _, f := range misses {
		select {
		case work <- f:
		case <-gctx.Done():
			break feed
		}
	}
	close(work)
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// Close persists the stat cache (atomically: temp file + rename) when it
// changed. Entries of files that are gone or changed are dropped.
func (c *Context) Close() error {
	if c.statePath == "" {
		return nil
	}
	kept, dirty := 0, false
	for _, f := range c.tree {
		st := f.state
		if st == nil {
			continue
		}
		if st.computed != nil {
			dirty = true
			break
		}
		if st.old != nil && st.old.matches(f) {
			kept++
		}
	}
	if !dirty && kept == len(c.old) {
		return nil // nothing learned, nothing dropped
	}
	next := make([]cacheEntry, 0, len(c.tree))
	for _, f := range c.tree {
		st := f.state
		if st == nil {
			continue
		}
		if e := st.computed; e != nil {
			next = append(next, *e)
			next[len(next)-1].path = f.Path
			continue
		}
		if e := st.old; e != nil && e.matches(f) {
			next = append(next, *e)
		}
	}
	if err := saveCache(c.statePath, next); err != nil {
		return fmt.Errorf("save stat cache: %w", err)
	}
	return nil
}

// cacheFileName keys the cache by the context's absolute path.
func cacheFileName(root string) string {
	sum := sha256.Sum256([]byte(root))
	return "statcache-" + hex.EncodeToString(sum[:16])
}

// The file: magic, uvarint count, entries in tree order (uvarint path
// length, path, 7×8 bytes of stat and time, 32 bytes of sha256), then a
// sha256 of all that precedes it, so a torn or corrupt file is recognized
// and ignored.
func saveCache(file string, entries []cacheEntry) error {
	size := len(cacheMagic) + binary.MaxVarintLen64 + sha256.Size
	for i := range entries {
		size += binary.MaxVarintLen64 + len(entries[i].path) + cacheFixed
	}
	b := make([]byte, 0, size)
	b = append(b, cacheMagic...)
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for i := range entries {
		e := &entries[i]
		b = binary.AppendUvarint(b, uint64(len(e.path)))
		b = append(b, e.path...)
		b = binary.LittleEndian.AppendUint64(b, uint64(e.size))
		b = binary.LittleEndian.AppendUint64(b, uint64(e.mtime))
		b = binary.LittleEndian.AppendUint64(b, uint64(e.ctime))
		b = binary.LittleEndian.AppendUint64(b, e.ino)
		b = binary.LittleEndian.AppendUint64(b, e.dev)
		b = binary.LittleEndian.AppendUint64(b, uint64(e.mode))
		b = binary.LittleEndian.AppendUint64(b, uint64(e.recorded))
		b = append(b, e.sum[:]...)
	}
	sum := sha256.Sum256(b)
	b = append(b, sum[:]...)

	dir := filepath.Dir(file)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".statcache-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// cacheFixed is the size of an entry after its path.
const cacheFixed = 7*8 + sha256.Size

var errCorrupt = errors.New("corrupt stat cache")

// loadCache returns the cached entries; a missing or corrupt file gives an
// empty cache (the cost is re-reading files, never a wrong digest).
func loadCache(file string) []cacheEntry {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	m, err := decodeCache(data)
	if err != nil {
		return nil
	}
	return m
}

// decodeCache parses a cache file; the paths share one string, and must be
// strictly increasing in tree order.
func decodeCache(data []byte) ([]cacheEntry, error) {
	if len(data) < len(cacheMagic)+sha256.Size || string(data[:len(cacheMagic)]) != cacheMagic {
		return nil, errCorrupt
	}
	body, trailer := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], trailer) {
		return nil, errCorrupt
	}
	all := string(body)
	off := len(cacheMagic)
	count, n := binary.Uvarint(data[off:len(body)])
	if n <= 0 || count > uint64(len(body)-off)/cacheFixed {
		return nil, errCorrupt
	}
	off += n
	es := make([]cacheEntry, count)
	for i := range es {
		l, n := binary.Uvarint(data[off:len(body)])
		if n <= 0 || l > uint64(len(body)-off-n) || uint64(len(body)-off-n)-l < cacheFixed {
			return nil, errCorrupt
		}
		off += n
		e := &es[i]
		e.path = all[off : off+int(l)]
		if i > 0 && ComparePaths(es[i-1].path, e.path) >= 0 {
			return nil, errCorrupt
		}
		r := data[off+int(l) : off+int(l)+cacheFixed]
		off += int(l) + cacheFixed
		e.size = int64(binary.LittleEndian.Uint64(r[0:]))
		e.mtime = int64(binary.LittleEndian.Uint64(r[8:]))
		e.ctime = int64(binary.LittleEndian.Uint64(r[16:]))
		e.ino = binary.LittleEndian.Uint64(r[24:])
		e.dev = binary.LittleEndian.Uint64(r[32:])
		e.mode = uint32(binary.LittleEndian.Uint64(r[40:]))
		e.recorded = int64(binary.LittleEndian.Uint64(r[48:]))
		copy(e.sum[:], r[56:cacheFixed])
	}
	if off != len(body) {
		return nil, errCorrupt
	}
	return es, nil
}
