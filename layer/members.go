package layer

import (
	"bytes"
	"crypto/sha256"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
)

// ChunkSize is the most uncompressed bytes one member holds: a file's data
// larger than this is cut at fixed offsets from its start
// into several members, so that a change in one part of the file leaves
// the other members as they were, both cores compress one file, and a
// member in flight is bounded in memory. Changing it changes layers.
const ChunkSize = 1 << 20

// Key names a member by the uncompressed bytes it holds: their sha256,
// or, for a member that holds the whole data of a regular file whose
// content digest the caller vouches for (Writer.AddFile), the sha256 of
// keyTag and that content digest: the file's content is then hashed once,
// not once for its digest and again for its key. The two never meet: a
// member is whole 512-byte blocks, the second form's input is 16+32 bytes.
//
// Why sha256 and not a cheaper hash or the file digest the context already
// has: the pool's bytes go into a blob named by its digest without being
// decompressed again, so a collision would make the store lie; the key
// must be collision-resistant. It covers the exact tar bytes (a header
// is a member of its own, so a renamed, re-moded or re-timed file keeps
// its data members), whichever caller (COPY, a RUN's diff, a cache
// export) produced them. It costs no compression: the workers hash in
// parallel, and with the CPU's SHA extensions sha256 runs at over 1 GB/s,
// several times the speed of gzip -1.
type Key [sha256.Size]byte

// keyTag starts the input of a Key taken from a content digest; changing
// it changes every such key (not the layers).
const keyTag = "minibuild-mkey3\n"

// memberKey is the Key of the uncompressed member raw; sum, when not nil,
// is the sha256 of its size data bytes, which raw holds with their
// padding and nothing else.
func memberKey(raw []byte, sum *[sha256.Size]byte, size int64) Key {
	pad := (blockSize - size%blockSize) % blockSize
	if sum == nil || int64(len(raw)) != size+pad {
		return sha256.Sum256(raw)
	}
	h := sha256.New()
	h.Write([]byte(keyTag))
	h.Write(sum[:])
	var k Key
	h.Sum(k[:0])
	return k
}

const blockSize = 512

// Loc is where a member's compressed bytes are stored: a range of a blob
// file.
type Loc struct {
	Blob   digest.Digest
	Offset int64
	Length int64
}

// Pool finds members already compressed and stored. Member returns the
// stored bytes of the member with key k; false means none (or unreadable
// ones): the Writer compresses the entry then. It is called from several
// goroutines at once.
type Pool interface {
	Member(k Key) (Loc, []byte, bool)
}

// Releaser is a Pool that lends the bytes Member returns: the Writer
// gives them back with Release once it has written the member, and does
// not touch them after.
type Releaser interface {
	Release(b []byte)
}

// Sink is a destination that wants the layer member by member (the
// store keeps pooled members by reference): when the io.Writer given to
// NewWriter implements it, the Writer calls WriteMember once per member,
// in order, instead of Write; from is where a pooled member's bytes were
// found, nil for a member compressed now.
type Sink interface {
	WriteMember(k Key, from *Loc, compressed []byte) error
}

// DigestSink is a Sink that hashes the blob it is given (the store, which
// verifies what it keeps): the Writer takes the layer's digest from it at
// Close rather than hashing the same bytes a second time.
type DigestSink interface {
	Sink
	Digest() digest.Digest
}

// member is one piece of the tar stream on its way to the blob.
type member struct {
	raw  []byte
	sum  *[sha256.Size]byte // the content digest of a whole-file member
	size int64              // its data bytes
	key  Key
	from *Loc
	out  []byte
}

// group is the unit of work of the pipeline: one member, or a run of
// small ones (a file's header and data are two members, and most files
// are small), so that the channels and goroutine handoffs are paid once
// per group instead of once per member.
type group struct {
	ms   []member
	n    int // their uncompressed bytes
	done chan struct{}
}

// A group is sent on once it holds groupMembers members or groupBytes
// uncompressed bytes (a 1 MiB chunk is then a group of its own: both
// cores still share a big file).
const (
	groupMembers = 64
	groupBytes   = 128 << 10
)

// pipeline compresses members on every core and writes them in order:
// workers take groups of members from work, one goroutine writes them as
// they come in order; order's capacity bounds what is in flight. That goroutine
// also passes the members' uncompressed bytes, in order and in batches,
// to one more that writes them to raw (the diffID's hash): the two
// hashes of a layer, blob and diffID, run side by side, off the caller's
// goroutine.
type pipeline struct {
	raw     func([]byte) (int, error)
	tee     io.Writer
	teeMu   sync.Mutex
	teeErr  error
	raws    chan [][]byte
	rawDone chan struct{}
	pool    Pool
	pending *group // the group submit fills
	work    chan *group
	order   chan *group
	workers sync.WaitGroup
	drained chan struct{}
	write   func(*member) error
	mu      sync.Mutex
	err     error
}

func newPipeline(pool Pool, raw func([]byte) (int, error), tee io.Writer, write func(*member) error, bufs *bufPool) *pipeline {
	n := runtime.GOMAXPROCS(0)
	p := &pipeline{raw: raw, tee: tee, pool: pool, work: make(chan *group, 4*n), order: make(chan *group, 4*n),
		drained: make(chan struct{}), write: write, raws: make(chan [][]byte, 4), rawDone: make(chan struct{})}
	go func() {
		defer close(p.rawDone)
		for batch := range p.raws {
			for _, b := range batch {
				p.raw(b)
				if p.tee != nil && p.teeFailed() == nil {
					if _, err := p.tee.Write(b); err != nil {
						p.teeMu.Lock()
						p.teeErr = err
						p.teeMu.Unlock()
					}
				}
				bufs.put(b) // used last here, after its worker and the writer
			}
		}
	}()
	p.workers.Add(n)
	for i := 0; i < n; i++ {
		go p.worker()
	}
	go p.writer()
	return p
}

// submit queues one member; it reports the first write error so far.
func (p *pipeline) submit(raw []byte, sum *[sha256.Size]byte, size int64) error {
	if err := p.failed(); err != nil {
		return err
	}
	g := p.pending
	if g == nil {
		g = &group{ms: make([]member, 0, groupMembers), done: make(chan struct{})}
		p.pending = g
	}
	g.ms = append(g.ms, member{raw: raw, sum: sum, size: size})
	if g.n += len(raw); len(g.ms) == groupMembers || g.n >= groupBytes {
		p.flush()
	}
	return nil
}

// flush sends the pending group on.
func (p *pipeline) flush() {
	if g := p.pending; g != nil {
		p.pending = nil
		p.order <- g
		p.work <- g
	}
}

// close waits for every queued member to be written, and to the Tee.
func (p *pipeline) close() error {
	p.flush()
	close(p.work)
	close(p.order)
	<-p.drained
	p.workers.Wait()
	if err := p.failed(); err != nil {
		return err
	}
	return p.teeFailed()
}

// teeFailed is the Tee's first Write error.
func (p *pipeline) teeFailed() error {
	p.teeMu.Lock()
	defer p.teeMu.Unlock()
	return p.teeErr
}

func (p *pipeline) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *pipeline) worker() {
	defer p.workers.Done()
	var zw *gzip.Writer
	for g := range p.work {
		for i := range g.ms {
			zw = p.compress(&g.ms[i], zw)
		}
		close(g.done)
	}
}

// compress gives m its key and its compressed bytes, from the pool or
// from zw (made on first use, and returned for the next member).
func (p *pipeline) compress(m *member, zw *gzip.Writer) *gzip.Writer {
	m.key = memberKey(m.raw, m.sum, m.size)
	if p.pool != nil {
		if loc, b, ok := p.pool.Member(m.key); ok {
			m.from, m.out = &loc, b
			return zw
		}
	}
	buf := bytes.NewBuffer(make([]byte, 0, len(m.raw)/2+64))
	if zw == nil {
		zw, _ = gzip.NewWriterLevel(buf, compressionLevel) // the level is valid
	} else {
		zw.Reset(buf) // a zero header: no name, no mtime
	}
	zw.Write(m.raw) // writes to a bytes.Buffer do not fail
	zw.Close()
	m.out = buf.Bytes()
	return zw
}

// rawBatch is about how many uncompressed bytes go to raw at a time.
const rawBatch = 1 << 20

func (p *pipeline) writer() {
	defer close(p.drained)
	var batch [][]byte
	n := 0
	defer func() {
		if len(batch) > 0 {
			p.raws <- batch
		}
		close(p.raws)
		<-p.rawDone
	}()
	for g := range p.order {
		<-g.done
		for i := range g.ms {
			m := &g.ms[i]
			// raw is never written after submit, and its worker is done
			// with it: the diffID's goroutine hashes it and gives the
			// buffer back.
			if batch = append(batch, m.raw); n+len(m.raw) >= rawBatch {
				p.raws <- batch
				batch, n = nil, 0
			} else {
				n += len(m.raw)
			}
			if p.failed() == nil {
				if err := p.write(m); err != nil {
					p.mu.Lock()
					p.err = err
					p.mu.Unlock()
				}
			}
			if r, ok := p.pool.(Releaser); ok && m.from != nil {
				r.Release(m.out)
			}
			m.raw, m.out = nil, nil
		}
	}
}

// cutter collects the tar stream into members: Write appends, and cuts a
// member every ChunkSize bytes; end cuts what is left of the entry.
type cutter struct {
	buf  []byte
	next int // the expected size of the entry being written
	// sum, when not nil, is the content digest of the regular file being
	// written (size bytes): its data member's key is taken from it if
	// the data stays one member.
	sum  *[sha256.Size]byte
	size int64
	emit func(raw []byte, sum *[sha256.Size]byte, size int64) error
	bufs *bufPool
}

func (c *cutter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), ChunkSize-len(c.buf))
		if c.buf == nil {
			c.buf = c.bufs.get(min(ChunkSize, max(k, c.next)))
		}
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		if len(c.buf) == ChunkSize {
			c.sum = nil // the entry spans members: keys of their bytes
			if err := c.end(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// endHeader cuts the header blocks of a regular file with data into a
// member of their own, keeping the file's digest for its data: the same
// content is then the same members whatever its name, mode or mtime (a
// RUN run again writes the same files at other times).
func (c *cutter) endHeader() error {
	if len(c.buf) == 0 {
		return nil
	}
	b := c.buf
	c.buf = nil
	return c.emit(b, nil, 0)
}

func (c *cutter) end() error {
	if len(c.buf) == 0 {
		return nil
	}
	b, sum := c.buf, c.sum
	c.buf, c.sum = nil, nil
	return c.emit(b, sum, c.size)
}

// bufPool recycles the buffers of uncompressed members: a layer writes
// its whole uncompressed size through them, and most entries are about
// the same size. Buffers come in power-of-two capacities from 4 KiB to
// ChunkSize; at most bufPoolMax bytes wait to be reused.
type bufPool struct {
	mu    sync.Mutex
	free  [bufClasses][][]byte
	bytes int
}

const (
	bufMinShift = 12
	bufClasses  = 20 - bufMinShift + 1 // 4 KiB … 1 MiB (ChunkSize)
	bufPoolMax  = 16 << 20
)

// class is the smallest class holding n bytes.
func bufClass(n int) int {
	c := 0
	for 1<<(bufMinShift+c) < n {
		c++
	}
	return c
}

// get returns an empty buffer with room for n bytes (n <= ChunkSize).
func (p *bufPool) get(n int) []byte {
	c := bufClass(n)
	p.mu.Lock()
	if k := len(p.free[c]); k > 0 {
		b := p.free[c][k-1]
		p.free[c] = p.free[c][:k-1]
		p.bytes -= cap(b)
		p.mu.Unlock()
		return b[:0]
	}
	p.mu.Unlock()
	return make([]byte, 0, 1<<(bufMinShift+c))
}

// put gives back a buffer get returned, once nothing reads it.
func (p *bufPool) put(b []byte) {
	c := bufClass(cap(b))
	if cap(b) != 1<<(bufMinShift+c) {
		return // not one of ours
	}
	p.mu.Lock()
	if p.bytes+cap(b) <= bufPoolMax {
		p.free[c] = append(p.free[c], b)
		p.bytes += cap(b)
	}
	p.mu.Unlock()
}
