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
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// racyMargin is how much older than the moment it was recorded a file's
// mtime must be before its cache entry is trusted (git's "racy" rule):
// a write landing in the same timestamp tick as the hash would otherwise
// leave size, mtime and ctime unchanged and the stale digest in use
// (moby/buildkit#4817). Two seconds covers coarse filesystem clocks.
const racyMargin = 2 * time.Second

// cacheMagic versions the stat cache file; a different format is ignored.
const cacheMagic = "minibuild-statcache-v1\n"

// cacheEntry is what the stat cache remembers about one regular file.
type cacheEntry struct {
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
	return e.matches(f) && e.mtime < e.recorded-int64(racyMargin)
}

// Digest returns the sha256 of a regular file's content. It is computed at
// most once per Context, and not at all when the stat cache holds a trusted
// entry for the file.
func (c *Context) Digest(f *File) (digest.Digest, error) {
	if f.state == nil {
		return "", fmt.Errorf("digest %s: not a regular file", f.Path)
	}
	f.state.once.Do(func() {
		if e, ok := c.old[f.Path]; ok && e.trusted(f) {
			f.state.dg = digest.NewDigestFromBytes(digest.SHA256, e.sum[:])
			return
		}
		f.state.dg, f.state.computed, f.state.err = c.hash(f)
	})
	return f.state.dg, f.state.err
}

// hash reads the file, checking that it is still the file the walk saw.
func (c *Context) hash(f *File) (digest.Digest, *cacheEntry, error) {
	recorded := c.now().UnixNano() // before reading: conservative for the racy rule
	fh, err := c.Open(f)
	if err != nil {
		return "", nil, fmt.Errorf("digest %s: %w", f.Path, err)
	}
	defer fh.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(fh.Fd()), &st); err != nil {
		return "", nil, fmt.Errorf("digest %s: %w", f.Path, err)
	}
	if st.Size != f.Size || st.Mtim.Nano() != f.mtimeNs || st.Ctim.Nano() != f.ctimeNs || st.Ino != f.Ino || st.Dev != f.Dev {
		return "", nil, fmt.Errorf("digest %s: file changed during the build", f.Path)
	}
	h := sha256.New()
	n, err := io.Copy(h, fh)
	if err != nil {
		return "", nil, fmt.Errorf("digest %s: %w", f.Path, err)
	}
	if n != f.Size {
		return "", nil, fmt.Errorf("digest %s: file changed during the build", f.Path)
	}
	e := &cacheEntry{size: f.Size, mtime: f.mtimeNs, ctime: f.ctimeNs, ino: f.Ino, dev: f.Dev, mode: f.rawMode, recorded: recorded}
	h.Sum(e.sum[:0])
	return digest.NewDigestFromBytes(digest.SHA256, e.sum[:]), e, nil
}

// DigestAll digests files (regular ones; others are skipped), reading the
// ones the stat cache cannot vouch for on a bounded pool of workers.
func (c *Context) DigestAll(ctx context.Context, files []*File) error {
	var misses []*File
	for _, f := range files {
		if f.state == nil {
			continue
		}
		if e, ok := c.old[f.Path]; ok && e.trusted(f) {
			f.state.once.Do(func() { f.state.dg = digest.NewDigestFromBytes(digest.SHA256, e.sum[:]) })
			continue
		}
		misses = append(misses, f)
	}
	if len(misses) == 0 {
		return nil
	}
	workers := min(max(2*runtime.GOMAXPROCS(0), 2), 16, len(misses))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan *File)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work {
				if _, err := c.Digest(f); err != nil {
					errs <- err
					cancel()
					return
				}
			}
		}()
	}
feed:
	for _, f := range misses {
		select {
		case work <- f:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
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
	for _, f := range c.files {
		if f.state == nil {
			continue
		}
		if f.state.computed != nil {
			dirty = true
			break
		}
		if e, ok := c.old[f.Path]; ok && e.matches(f) {
			kept++
		}
	}
	if !dirty && kept == len(c.old) {
		return nil // nothing learned, nothing dropped
	}
	next := make(map[string]cacheEntry, len(c.old))
	for _, f := range c.files {
		if f.state == nil {
			continue
		}
		if e := f.state.computed; e != nil {
			next[f.Path] = *e
			continue
		}
		if e, ok := c.old[f.Path]; ok && e.matches(f) {
			next[f.Path] = e
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

// The file: magic, uvarint count, entries (uvarint path length, path,
// 7×8 bytes of stat and time, 32 bytes of sha256), then a sha256 of all
// that precedes it, so a torn or corrupt file is recognized and ignored.
func saveCache(file string, entries map[string]cacheEntry) error {
	var b bytes.Buffer
	b.Grow(len(cacheMagic) + len(entries)*120 + 64)
	b.WriteString(cacheMagic)
	b.Write(binary.AppendUvarint(nil, uint64(len(entries))))
	var fixed [7*8 + sha256.Size]byte
	for p, e := range entries {
		b.Write(binary.AppendUvarint(nil, uint64(len(p))))
		b.WriteString(p)
		binary.LittleEndian.PutUint64(fixed[0:], uint64(e.size))
		binary.LittleEndian.PutUint64(fixed[8:], uint64(e.mtime))
		binary.LittleEndian.PutUint64(fixed[16:], uint64(e.ctime))
		binary.LittleEndian.PutUint64(fixed[24:], e.ino)
		binary.LittleEndian.PutUint64(fixed[32:], e.dev)
		binary.LittleEndian.PutUint64(fixed[40:], uint64(e.mode))
		binary.LittleEndian.PutUint64(fixed[48:], uint64(e.recorded))
		copy(fixed[56:], e.sum[:])
		b.Write(fixed[:])
	}
	sum := sha256.Sum256(b.Bytes())
	b.Write(sum[:])

	dir := filepath.Dir(file)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".statcache-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b.Bytes()); err != nil {
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

var errCorrupt = errors.New("corrupt stat cache")

// loadCache returns the cached entries; a missing or corrupt file gives an
// empty cache (the cost is re-reading files, never a wrong digest).
func loadCache(file string) map[string]cacheEntry {
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

func decodeCache(data []byte) (map[string]cacheEntry, error) {
	if len(data) < len(cacheMagic)+sha256.Size || string(data[:len(cacheMagic)]) != cacheMagic {
		return nil, errCorrupt
	}
	body, trailer := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], trailer) {
		return nil, errCorrupt
	}
	r := body[len(cacheMagic):]
	count, n := binary.Uvarint(r)
	if n <= 0 || count > uint64(len(r)) {
		return nil, errCorrupt
	}
	r = r[n:]
	m := make(map[string]cacheEntry, count)
	const fixed = 7*8 + sha256.Size
	for range count {
		l, n := binary.Uvarint(r)
		if n <= 0 || l > uint64(len(r)-n) || uint64(len(r)-n)-l < fixed {
			return nil, errCorrupt
		}
		p := string(r[n : n+int(l)])
		r = r[n+int(l):]
		e := cacheEntry{
			size:     int64(binary.LittleEndian.Uint64(r[0:])),
			mtime:    int64(binary.LittleEndian.Uint64(r[8:])),
			ctime:    int64(binary.LittleEndian.Uint64(r[16:])),
			ino:      binary.LittleEndian.Uint64(r[24:]),
			dev:      binary.LittleEndian.Uint64(r[32:]),
			mode:     uint32(binary.LittleEndian.Uint64(r[40:])),
			recorded: int64(binary.LittleEndian.Uint64(r[48:])),
		}
		copy(e.sum[:], r[56:fixed])
		r = r[fixed:]
		m[p] = e
	}
	if len(r) != 0 {
		return nil, errCorrupt
	}
	return m, nil
}
