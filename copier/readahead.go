package copier

import (
	"archive/tar"
	"crypto/sha256"
	"fmt"

	"github.com/minibuild/minibuild/buildctx"
)

// Small context files are read ahead of the layer writer, in entry order,
// on one goroutine: the open/read/close calls of the next files overlap
// the tar and compression work of the current one.
const (
	aheadMax   = 256 << 10 // the largest file read ahead
	aheadFiles = 32        // files read ahead at most
)

// aheadable: a small regular context file, which Write reads whole (so
// it takes every read in the order they were made).
func aheadable(e *entry) bool {
	return e.kind == srcContext && e.typ == tar.TypeReg && e.size <= aheadMax && e.file != nil
}

// read is one file read ahead.
type read struct {
	e    *entry
	data []byte
	sum  [sha256.Size]byte
	err  error
}

// readAhead reads the aheadable entries of a plan; next takes them in
// order, stop ends it (safe to call more than once).
type readAhead struct {
	c     *buildctx.Context
	out   chan read
	free  chan []byte
	quit  chan struct{}
	done  chan struct{}
	ended bool
}

func (p *Planned) readAhead() *readAhead {
	ra := &readAhead{c: p.c, out: make(chan read, aheadFiles), free: make(chan []byte, aheadFiles+2),
		quit: make(chan struct{}), done: make(chan struct{})}
	var todo []*entry
	for _, e := range p.entries {
		if aheadable(e) {
			todo = append(todo, e)
		}
	}
	go ra.run(todo)
	return ra
}

func (ra *readAhead) run(todo []*entry) {
	defer close(ra.done)
	for _, e := range todo {
		var buf []byte
		select {
		case buf = <-ra.free:
		default:
		}
		if int64(cap(buf)) < e.size {
			buf = make([]byte, 0, max(e.size, 32<<10))
		}
		r := read{e: e}
		r.data, r.sum, r.err = ra.c.ReadFile(e.file, buf)
		select {
		case ra.out <- r:
		case <-ra.quit:
			return
		}
		if r.err != nil {
			return // the writer stops at this one
		}
	}
}

// next is the read of e, the next aheadable entry.
func (ra *readAhead) next(e *entry) read {
	r, ok := <-ra.out
	if !ok || r.e != e {
		return read{err: fmt.Errorf("read ahead of %s: out of order", e.path)}
	}
	return r
}

// recycle gives a buffer next returned back.
func (ra *readAhead) recycle(b []byte) {
	if b == nil {
		return
	}
	select {
	case ra.free <- b[:0]:
	default:
	}
}

func (ra *readAhead) stop() {
	if !ra.ended {
		ra.ended = true
		close(ra.quit)
		<-ra.done
	}
}
