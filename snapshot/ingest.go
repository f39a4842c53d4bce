package snapshot

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/internal/diskspace"
	"github.com/minibuild/minibuild/internal/flock"
)

// Ingest extracts a layer while it is being written: the layer writer
// tees its uncompressed tar stream here, so the layer a step just made is
// ready as a lower dir for the next step without reading its blob back
// and decompressing it. Extraction goes through the same safe path as
// Extract, so the result is the same as extracting the blob later.
//
// Extraction is an optimization: when it fails, Write keeps accepting
// (and dropping) bytes so the layer itself still gets written, and Commit
// reports the failure; the layer is then extracted from its blob when
// first needed.
//
// Write only copies into a bounded queue (ingestQueueMax), so the layer
// writer compresses on while the extraction catches up; it waits only
// when the queue is full.
type Ingest struct {
	sn   *Snapshotter
	q    *chunkQueue
	root string
	done chan error
	man  *manifest // what root holds, once done; nil if it cannot be patched

	sumsMu sync.Mutex
	sums   map[string][sha256.Size]byte // HintSum's digests, by entry name, until used; nil unless patching

	mu       sync.Mutex
	writeErr error // the first failed write: extraction stopped early

	waitOnce    sync.Once
	waitErr     error
	releaseOnce sync.Once
	release     func() error
}

// NewIngest starts extracting a tar stream into a temp dir.
func (sn *Snapshotter) NewIngest(ctx context.Context) (*Ingest, error) {
	tmp, release, err := sn.tempDir("i")
	if err != nil {
		return nil, err
	}
	if err := os.Mkdir(filepath.Join(tmp, "l"), 0o755); err != nil {
		release()
		return nil, fmt.Errorf("ingest layer: %w", err)
	}
	return sn.startIngest(ctx, tmp, release, nil), nil
}

// startIngest extracts into tmp/l, which exists: empty, or the dir the
// patch state describes (patch.go).
func (sn *Snapshotter) startIngest(ctx context.Context, tmp string, release func() error, patch *patchState) *Ingest {
	root := filepath.Join(tmp, "l")
	q := newChunkQueue()
	in := &Ingest{sn: sn, q: q, root: root, release: release, done: make(chan error, 1)}
	if patch != nil {
		// Only a patch uses the writer's digests: a full extraction
		// hashes each file for its pool key anyway.
		in.sums = map[string][sha256.Size]byte{}
		patch.hint = in.takeSum
	}
	go func() {
		x := &extractor{meter: sn.reserve.NewMeter("extract the new layer"), pool: sn.newFilePool(root), man: newManifest(), patch: patch}

		err := x.run(ctx, tar.NewReader(q), root)
		if err == nil {
			_, err = io.Copy(io.Discard, q) // the tar's trailing padding
		}
		q.closeRead(err) // unblock the writer if extraction stopped early
		in.man = x.finalManifest(root)
		in.done <- err
	}()
	return in
}

// HintSum records the content digest of the regular file name, which
// the stream carries next (layer.SumHinter): a patch compares it with the
// base's instead of hashing the file.
func (in *Ingest) HintSum(name string, sum [sha256.Size]byte) {
	in.sumsMu.Lock()
	defer in.sumsMu.Unlock()
	if in.sums != nil {
		in.sums[name] = sum
	}
}

// takeSum is and forgets the digest hinted for name.
func (in *Ingest) takeSum(name string) ([sha256.Size]byte, bool) {
	in.sumsMu.Lock()
	defer in.sumsMu.Unlock()
	sum, ok := in.sums[name]
	delete(in.sums, name)
	return sum, ok
}

// Write feeds the uncompressed tar stream. It fails only when the disk is
// too full for the extraction (diskspace.ErrLow: the layer would not fit
// extracted either, so writing it on is pointless); any other broken
// extraction only costs the optimization.
func (in *Ingest) Write(p []byte) (int, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.writeErr == nil {
		if err := in.q.write(p); err != nil {
			in.writeErr = err
		}
	}
	if errors.Is(in.writeErr, diskspace.ErrLow) {
		return 0, in.writeErr
	}
	return len(p), nil
}

// wait ends the stream (with cause, nil for a normal end) and waits for
// the extractor, once.
func (in *Ingest) wait(cause error) error {
	in.waitOnce.Do(func() {
		in.q.closeWrite(cause)
		in.waitErr = <-in.done
		if in.waitErr == nil && in.writeErr != nil {
			in.waitErr = in.writeErr
		}
	})
	return in.waitErr
}

// Err ends the stream and waits for the extraction: its error, nil when
// it succeeded. A caller that must not record a layer the disk cannot
// hold checks errors.Is(err, diskspace.ErrLow) before committing the blob.
func (in *Ingest) Err() error { return in.wait(nil) }

func (in *Ingest) cleanup() { in.releaseOnce.Do(func() { in.release() }) }

// Commit finishes the extraction and makes it the extracted dir of the
// layer with this diffID, unless that dir exists already.
func (in *Ingest) Commit(ctx context.Context, diffID digest.Digest) error {
	defer in.cleanup()
	if err := in.wait(nil); errors.Is(err, errNoPatch) {
		return nil // the layer is extracted from its blob when first needed
	} else if err != nil {
		return fmt.Errorf("ingest layer %s: %w", diffID, err)
	}
	id, err := layerID(Layer{DiffID: diffID})
	if err != nil {
		return err
	}
	dst := filepath.Join(in.sn.layersDir, id)
	unlock, err := flock.Path(ctx, dst+".lock")
	if err != nil {
		return fmt.Errorf("ingest layer %s: lock: %w", diffID, err)
	}
	defer unlock()
	if _, err := os.Lstat(dst); err == nil {
		return nil
	}
	if err := os.Rename(in.root, dst); err != nil {
		if _, statErr := os.Lstat(dst); statErr == nil {
			return nil
		}
		return fmt.Errorf("ingest layer %s: %w", diffID, err)
	}
	if in.man != nil {
		in.man.write(dst) // a cache: without it the dir is only never patched
	}
	return nil
}

// Abort stops the extraction and removes what it wrote; after Commit it
// does nothing.
func (in *Ingest) Abort() {
	in.wait(errors.New("ingest aborted"))
	in.cleanup()
}

const (
	ingestChunk    = 256 << 10 // the queue's unit
	ingestQueueMax = 16 << 20  // bytes the writer may be ahead of the extraction
)

// chunkQueue is a pipe with a bounded buffer: write copies into chunks and
// waits only while ingestQueueMax bytes are queued; Read returns them in
// order. Unlike io.Pipe a writer closing with a cause (an abort) is seen
// by the reader at once, queued bytes dropped; a nil cause ends the stream
// after them.
type chunkQueue struct {
	mu     sync.Mutex
	cond   sync.Cond // L is &mu: a chunk was queued or taken, or a side closed
	full   [][]byte  // queued chunks, oldest first
	cur    []byte    // the chunk being filled, not yet queued
	queued int       // bytes in full
	free   [][]byte  // chunks to reuse
	wdone  bool      // the writer closed
	cause  error     // its cause, nil for a normal end
	rerr   error     // the reader's end: write fails with it

	head []byte // the reader's chunk (reader only)
	off  int
}

func newChunkQueue() *chunkQueue {
	q := &chunkQueue{}
	q.cond.L = &q.mu
	return q
}

// write copies p into the queue; it fails once the reader has ended.
func (q *chunkQueue) write(p []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(p) > 0 {
		if q.rerr != nil {
			return q.rerr
		}
		if q.wdone {
			return io.ErrClosedPipe
		}
		if q.cur == nil {
			if n := len(q.free); n > 0 {
				q.cur, q.free = q.free[n-1][:0], q.free[:n-1]
			} else {
				q.cur = make([]byte, 0, ingestChunk)
			}
		}
		n := copy(q.cur[len(q.cur):cap(q.cur)], p)
		q.cur, p = q.cur[:len(q.cur)+n], p[n:]
		if len(q.cur) == cap(q.cur) {
			q.push()
			for q.queued >= ingestQueueMax && q.rerr == nil {
				q.cond.Wait()
			}
		}
	}
	return nil
}

// push queues the current chunk; q.mu is held.
func (q *chunkQueue) push() {
	if len(q.cur) > 0 {
		q.full = append(q.full, q.cur)
		q.queued += len(q.cur)
		q.cond.Broadcast()
	}
	q.cur = nil
}

// closeWrite ends the stream: after the queued bytes for a nil cause, at
// once for another.
func (q *chunkQueue) closeWrite(cause error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.wdone {
		return
	}
	q.push()
	q.wdone, q.cause = true, cause
	q.cond.Broadcast()
}

// closeRead ends the reader's side: write fails with err from now on
// (io.ErrClosedPipe for nil).
func (q *chunkQueue) closeRead(err error) {
	if err == nil {
		err = io.ErrClosedPipe
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.rerr == nil {
		q.rerr = err
	}
	q.full, q.queued, q.free = nil, 0, nil
	q.cond.Broadcast()
}

// Read reads the queued stream.
func (q *chunkQueue) Read(b []byte) (int, error) {
	if q.off == len(q.head) {
		if err := q.next(); err != nil {
			return 0, err
		}
	}
	n := copy(b, q.head[q.off:])
	q.off += n
	return n, nil
}

// next takes the oldest queued chunk as the reader's, giving the last one
// back for reuse, and waits for one if none is queued.
func (q *chunkQueue) next() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head != nil {
		q.free = append(q.free, q.head)
		q.head, q.off = nil, 0
	}
	for {
		switch {
		case q.rerr != nil:
			return q.rerr
		case q.wdone && q.cause != nil:
			return q.cause
		case len(q.full) > 0:
			q.head = q.full[0]
			q.full[0] = nil
			q.full = q.full[1:]
			q.queued -= len(q.head)
			q.cond.Broadcast()
			return nil
		case q.wdone:
			return io.EOF
		}
		q.cond.Wait()
	}
}
