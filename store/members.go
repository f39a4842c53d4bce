package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/internal/atomicfile"
	"github.com/minibuild/minibuild/layer"
)

// The member pool: every committed layer gets a small index,
// members/<hex>, mapping the key of each of its members to where the
// compressed bytes sit (a blob file, an offset, a length). A layer write
// loads the indexes of the most recent layers, so the same step's earlier
// versions are found and an edited rebuild compresses only what changed.
// An index is only a cache: a member whose blob went away is compressed
// again.

// Recent indexes are loaded newest first until one of these is reached
// (members counted with repeats): the newest versions of a step come
// first, and older ones mostly repeat their keys, so a bigger budget costs
// parse time (about 1 ms per 6,000 members) and finds little more.
const (
	poolIndexes = 32
	poolMembers = 50_000
)

const indexMagic = "minibuild-members/v1\n"

// indexEntry is one member of a written layer: its key, where its bytes
// are (Blob "" = the pack being written) and where it starts in the layer.
type indexEntry struct {
	key layer.Key
	seg Segment
	at  int64
}

func (s *Store) indexPath(d digest.Digest) string {
	return filepath.Join(s.root, "members", d.Encoded())
}

// writeIndex records the members of layer d: in blob whole at their layer
// offsets, or (whole "") where their segments are. A failure loses only
// reuse, so it is not reported.
func (s *Store) writeIndex(d digest.Digest, members []indexEntry, whole digest.Digest) {
	blobs := map[digest.Digest]uint64{}
	var names []digest.Digest
	var body bytes.Buffer
	var n int
	for _, m := range members {
		if m.key == (layer.Key{}) {
			continue
		}
		loc := layer.Loc{Blob: whole, Offset: m.at, Length: m.seg.Length}
		if whole == "" {
			loc = layer.Loc{Blob: m.seg.Blob, Offset: m.seg.Offset, Length: m.seg.Length}
		}
		i, ok := blobs[loc.Blob]
		if !ok {
			i = uint64(len(names))
			blobs[loc.Blob] = i
			names = append(names, loc.Blob)
		}
		body.Write(m.key[:])
		body.Write(binary.AppendUvarint(binary.AppendUvarint(binary.AppendUvarint(nil, i), uint64(loc.Offset)), uint64(loc.Length)))
		n++
	}
	var out bytes.Buffer
	out.WriteString(indexMagic)
	out.Write(binary.AppendUvarint(nil, uint64(len(names))))
	for _, b := range names {
		out.WriteString(b.Encoded())
	}
	out.Write(binary.AppendUvarint(nil, uint64(n)))
	out.Write(body.Bytes())
	sum := sha256.Sum256(out.Bytes())
	out.Write(sum[:])
	if s.putIndex(s.indexPath(d), out.Bytes()) == nil {
		s.members.add(out.Bytes())
	}
}

// putIndex writes an index by rename, without the fsyncs of atomicfile:
// it is a cache, and a torn one fails its checksum and is ignored. The
// temp name is atomicfile's, so a killed writer's is swept.
func (s *Store) putIndex(p string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteUnsynced(p, b, 0o644)
}

// parseIndex reads an index file into locs (keys present are kept: the
// newer index wins) and reports how many members it holds.
func parseIndex(b []byte, locs map[layer.Key]layer.Loc) (int, error) {
	if len(b) < len(indexMagic)+sha256.Size || string(b[:len(indexMagic)]) != indexMagic {
		return 0, errors.New("not a member index")
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if sha256.Sum256(body) != [sha256.Size]byte(sum) {
		return 0, errors.New("member index checksum mismatch")
	}
	r := body[len(indexMagic):]
	uvarint := func() (uint64, bool) {
		v, n := binary.Uvarint(r)
		if n <= 0 {
			return 0, false
		}
		r = r[n:]
		return v, true
	}
	nb, ok := uvarint()
	if !ok || nb > 1<<20 || uint64(len(r)) < 64*nb {
		return 0, errors.New("member index: bad blob count")
	}
	names := make([]digest.Digest, nb)
	for i := range names {
		names[i] = digest.NewDigestFromEncoded(digest.SHA256, string(r[:64]))
		r = r[64:]
	}
	nm, ok := uvarint()
	if !ok {
		return 0, errors.New("member index: bad member count")
	}
	for j := uint64(0); j < nm; j++ {
		if len(r) < len(layer.Key{}) {
			return 0, fmt.Errorf("member index: member %d cut short", j)
		}
		k := layer.Key(r[:len(layer.Key{})])
		r = r[len(k):]
		i, ok1 := uvarint()
		off, ok2 := uvarint()
		n, ok3 := uvarint()
		if !ok1 || !ok2 || !ok3 || i >= nb {
			return 0, fmt.Errorf("member index: bad member %d", j)
		}
		if _, ok := locs[k]; !ok {
			locs[k] = layer.Loc{Blob: names[i], Offset: int64(off), Length: int64(n)}
		}
	}
	return int(nm), nil
}

// memberCache is the pool of one Store: the recent indexes, loaded once
// per process, plus the layers this process committed since.
type memberCache struct {
	mu     sync.Mutex
	loaded bool
	locs   map[layer.Key]layer.Loc
}

func (c *memberCache) load(s *Store) {
	if c.loaded {
		return
	}
	c.loaded = true
	c.locs = map[layer.Key]layer.Loc{}
	ents, _ := os.ReadDir(filepath.Join(s.root, "members"))
	type file struct {
		name string
		mod  int64
	}
	var files []file
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && !atomicfile.IsTemp(e.Name()) {
			files = append(files, file{e.Name(), fi.ModTime().UnixNano()})
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mod > files[j].mod })
	total := 0
	for i, f := range files {
		if i == poolIndexes || total >= poolMembers {
			break
		}
		if b, err := os.ReadFile(filepath.Join(s.root, "members", f.name)); err == nil {
			n, _ := parseIndex(b, c.locs)
			total += n
		}
	}
}

// add puts a just-written index into a loaded pool (its keys win).
func (c *memberCache) add(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.loaded {
		return // loaded from the file when first needed
	}
	fresh := map[layer.Key]layer.Loc{}
	if _, err := parseIndex(b, fresh); err == nil {
		for k, l := range fresh {
			c.locs[k] = l
		}
	}
}

func (c *memberCache) lookup(s *Store, k layer.Key) (layer.Loc, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.load(s)
	l, ok := c.locs[k]
	return l, ok
}

func (c *memberCache) reader(s *Store) *poolReader {
	return &poolReader{s: s, files: map[digest.Digest]*os.File{}}
}

// poolReader is one layer write's view of the pool (a layer.Pool): it
// keeps the blob files it reads open until the write ends, and renews
// each blob's mtime on first use so the write's lease covers it.
type poolReader struct {
	s     *Store
	mu    sync.Mutex
	files map[digest.Digest]*os.File // nil: unusable
	win   window
}

// window is the stretch of a blob read last. A rebuild asks for the
// members of an earlier layer in the order that layer holds them, most
// of them a few hundred bytes (a header) or KB, so one read of a window
// serves many: a layer of 20,000 files is 40,000 members.
type window struct {
	blob digest.Digest
	off  int64
	b    []byte
}

const windowSize = 256 << 10

// memberBufs recycle the buffers Member lends, by size class: 4 KiB
// times a power of four, up to 4 MiB (a member is at most twice
// ChunkSize). A rebuild reads most of a layer's bytes through them, a few
// hundred members in flight at a time, so reusing them spares the
// collector a layer's worth of garbage.
var memberBufs [6]sync.Pool

// bufClass is the smallest class holding n bytes, or -1.
func bufClass(n int64) int {
	for c := range memberBufs {
		if n <= 4<<10<<(2*c) {
			return c
		}
	}
	return -1
}

// buf lends a buffer of n bytes.
func (p *poolReader) buf(n int64) []byte {
	c := bufClass(n)
	if c < 0 {
		return make([]byte, n)
	}
	if b, ok := memberBufs[c].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 4<<10<<(2*c))
}

// Release implements layer.Releaser: b, returned by Member, is free again.
func (p *poolReader) Release(b []byte) {
	if c := bufClass(int64(cap(b))); c >= 0 && cap(b) == 4<<10<<(2*c) {
		memberBufs[c].Put(&b)
	}
}

// Member implements layer.Pool.
func (p *poolReader) Member(k layer.Key) (layer.Loc, []byte, bool) {
	loc, ok := p.s.members.lookup(p.s, k)
	if !ok || loc.Length < 18 || loc.Length > 2*layer.ChunkSize {
		return layer.Loc{}, nil, false
	}
	f := p.file(loc.Blob)
	if f == nil {
		return layer.Loc{}, nil, false
	}
	b := p.buf(loc.Length)
	if err := p.read(f, loc, b); err != nil || b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 {
		p.Release(b)
		return layer.Loc{}, nil, false // not a gzip member there: compress it again
	}
	return loc, b, true
}

// read reads the member at loc of f into b, through the window when it
// is small.
func (p *poolReader) read(f *os.File, loc layer.Loc, b []byte) error {
	if loc.Length > windowSize/4 {
		_, err := f.ReadAt(b, loc.Offset)
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	w := &p.win
	if w.blob != loc.Blob || loc.Offset < w.off || loc.Offset+loc.Length > w.off+int64(len(w.b)) {
		if w.b == nil {
			w.b = make([]byte, windowSize)
		}
		n, err := f.ReadAt(w.b[:windowSize], loc.Offset)
		if n < int(loc.Length) {
			w.blob, w.b = "", w.b[:0]
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		w.blob, w.off, w.b = loc.Blob, loc.Offset, w.b[:n]
	}
	copy(b, w.b[loc.Offset-w.off:])
	return nil
}

func (p *poolReader) file(d digest.Digest) *os.File {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f, ok := p.files[d]; ok {
		return f
	}
	var f *os.File
	if path, err := p.s.blobPath(d); err == nil && p.s.refreshBlob(d) {
		f, _ = os.Open(path)
	}
	p.files[d] = f
	return f
}

// section is a stored segment of a pooled blob.
func (p *poolReader) section(sg Segment) (io.Reader, error) {
	f := p.file(sg.Blob)
	if f == nil {
		return nil, fmt.Errorf("blob %s: %w", sg.Blob, ErrNotFound)
	}
	return io.NewSectionReader(f, sg.Offset, sg.Length), nil
}

// size is the size of a pooled blob.
func (p *poolReader) size(d digest.Digest) (int64, error) {
	f := p.file(d)
	if f == nil {
		return 0, fmt.Errorf("blob %s: %w", d, ErrNotFound)
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (p *poolReader) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for d, f := range p.files {
		if f != nil {
			f.Close()
		}
		delete(p.files, d)
	}
}
