package snapshot

import (
	"archive/tar"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Parallel file creation: creating a file is a handful of syscalls (open,
// write, chown, chmod, utimes, two links) and an extraction of a source
// tree is mostly that, so a pool writes the bodies of small regular files
// (read whole from the tar, at most poolBufMax) on a few goroutines while
// the extractor reads on. The extractor itself stays sequential and does
// everything else: it creates every directory (a file's parent exists when
// the file is queued), symlinks, hard links, devices and whiteouts, and
// sets directory times. What keeps the result the one a sequential
// extraction gives:
//   - an entry at a path a queued file will take waits for it (settle), so
//     of two entries for one path the later still wins;
//   - every removal (an entry replacing a directory, a whiteout) and every
//     hard link waits for all queued files (wait): nothing can remove a
//     directory a worker is about to write into, or turn it into a
//     symlink (a queued file's parent was resolved inside the root when it
//     was queued and stays a directory until it is written), and a link's
//     source is complete, with its pool state known (unshare);
//   - the extractor waits for all before it sets directory times, and
//     stops the workers (close) however it ends, so no goroutine outlives
//     it; the first error of a worker fails the extraction.
//
// Memory: the bodies queued at once are bounded by poolQueueMax.

const (
	poolWorkers  = 3       // goroutines writing small files for one extraction
	poolQueueMax = 4 << 20 // bytes of bodies read but not yet written
	poolJobCost  = 1 << 10 // what an empty file counts against poolQueueMax
)

// poolJob is a small regular file to write: its body read whole.
type poolJob struct {
	target, rel string
	hdr         *tar.Header
	body        []byte
}

// poolJobError is a worker's failure: it names its own entry, not the one
// the extractor was at when it learned of it.
type poolJobError struct {
	name string
	err  error
}

func (e *poolJobError) Error() string { return fmt.Sprintf("extract %s: %v", e.name, e.err) }
func (e *poolJobError) Unwrap() error { return e.err }

// entryError wraps an entry's error with the entry's name, unless it is a
// worker's error that names its own.
func entryError(hdr *tar.Header, err error) error {
	if _, ok := errors.AsType[*poolJobError](err); ok {
		return err
	}
	return fmt.Errorf("extract %s: %w", hdr.Name, err)
}

// submit queues a small file for the workers (started on the first),
// waiting while the queue is full; it returns a worker's error instead
// once one failed. Without workers (nworkers 0) it writes the file itself.
func (p *filePool) submit(j poolJob) error {
	if p.nworkers == 0 {
		err := p.writeSmall(j, p.scratch)
		p.mu.Lock()
		p.putBuf(j.body)
		p.mu.Unlock()
		return err
	}
	cost := len(j.body) + poolJobCost
	p.mu.Lock()
	if p.jobs == nil {
		p.start()
	}
	for p.err == nil && p.queued > 0 && p.queued+cost > poolQueueMax {
		p.cond.Wait()
	}
	if err := p.err; err != nil {
		p.putBuf(j.body)
		p.mu.Unlock()
		return err
	}
	p.queued += cost
	p.inflight++
	p.pending[j.target] = true
	p.mu.Unlock()
	p.jobs <- j // never blocks: its capacity exceeds what poolQueueMax admits
	return nil
}

// start starts the workers; p.mu is held.
func (p *filePool) start() {
	jobs := make(chan poolJob, poolQueueMax/poolJobCost+1)
	p.jobs = jobs
	for i := range p.nworkers {
		scratch := fmt.Sprintf("%s-%d", p.scratch, i)
		p.workers.Add(1)
		go func() {
			defer p.workers.Done()
			for j := range jobs {
				p.mu.Lock()
				failed := p.err != nil
				p.mu.Unlock()
				var err error
				if !failed {
					err = p.writeSmall(j, scratch)
				}
				p.mu.Lock()
				p.putBuf(j.body)
				p.queued -= len(j.body) + poolJobCost
				p.inflight--
				delete(p.pending, j.target)
				if err != nil && p.err == nil {
					p.err = &poolJobError{name: j.hdr.Name, err: err}
				}
				p.cond.Broadcast()
				p.mu.Unlock()
			}
		}()
	}
}

// wait waits until every queued file is written and returns the first
// worker's error. A nil pool has nothing to wait for.
func (p *filePool) wait() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.inflight > 0 {
		p.cond.Wait()
	}
	return p.err
}

// settle is called before an entry at target is made: it waits for the
// queued files when one of them is target.
func (p *filePool) settle(target string) error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	queued, err := p.pending[target], p.err
	p.mu.Unlock()
	if queued {
		return p.wait()
	}
	return err
}

// close lets the workers write what is queued and ends them. It is safe
// to call on a nil pool, twice, or with no workers ever started.
func (p *filePool) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	jobs := p.jobs
	p.jobs = nil
	p.mu.Unlock()
	if jobs != nil {
		close(jobs)
		p.workers.Wait()
	}
}

// writeSmall writes a small file and pools it: a link to its pooled inode
// when there is one, else a new file, metadata set, that joins the pool
// (through scratch, the worker's own free name, if it must be swapped).
func (p *filePool) writeSmall(j poolJob, scratch string) error {
	sum := sha256.Sum256(j.body)
	key := poolKey(j.rel, sum[:], j.hdr)
	if os.Link(p.path(key), j.target) == nil {
		p.setPooled(j.target, key)
		return nil // the inode's metadata came with it
	}
	if err := createFile(j.target, j.hdr, j.body); err != nil {
		return err
	}
	p.publish(j.target, key, scratch)
	return nil
}

// createFile creates target (which must not exist) with body and hdr's
// owner, xattrs, mode and times, as applyMeta and setTimes would, but
// through the open file instead of looking target up again for each.
func createFile(target string, hdr *tar.Header, body []byte) error {
	f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	err = writeMeta(f, hdr, body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func writeMeta(f *os.File, hdr *tar.Header, body []byte) error {
	if _, err := f.Write(body); err != nil {
		return err
	}
	fd := int(f.Fd())
	// Owner, xattrs, then mode: chown clears the setuid bits.
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return &os.PathError{Op: "chown", Path: f.Name(), Err: err}
	}
	for k, v := range hdr.PAXRecords {
		name, ok := cutXattr(k)
		if !ok {
			continue
		}
		if err := unix.Fsetxattr(fd, name, []byte(v), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("xattr %s: %w", name, err)
		}
	}
	if err := unix.Fchmod(fd, uint32(hdr.Mode&0o7777)); err != nil {
		return &os.PathError{Op: "chmod", Path: f.Name(), Err: err}
	}
	// utimensat(fd, NULL, times, 0) sets the open file's times; x/sys has
	// no wrapper that takes a NULL path.
	ts := unix.NsecToTimespec(hdr.ModTime.UnixNano())
	times := [2]unix.Timespec{ts, ts}
	if _, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&times[0])), 0, 0, 0); errno != 0 {
		return &os.PathError{Op: "utimes", Path: f.Name(), Err: errno}
	}
	return nil
}

// cutXattr is the xattr name of a PAX record applyMeta sets, if it is one.
func cutXattr(k string) (string, bool) {
	name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
	if !ok || strings.HasPrefix(name, "trusted.overlay.") {
		return "", false // overlay's own attributes would change what lower dirs mean
	}
	return name, true
}

// Body buffers come in powers of two from bufMin to poolBufMax and are
// reused through the pool's free lists (p.mu held), which hold no more
// than the queue admits.
const (
	bufMin     = 4 << 10
	bufClasses = 9 // bufMin << 8 == poolBufMax
)

func bufClass(n int) (class, size int) {
	for size = bufMin; size < n; size <<= 1 {
		class++
	}
	return class, size
}

// getBuf returns a buffer of length n (at most poolBufMax) for a body.
func (p *filePool) getBuf(n int) []byte {
	c, size := bufClass(n)
	p.mu.Lock()
	defer p.mu.Unlock()
	if free := p.free[c]; len(free) > 0 {
		b := free[len(free)-1]
		p.free[c] = free[:len(free)-1]
		p.freeBytes -= cap(b)
		return b[:n]
	}
	return make([]byte, n, size)
}

// putBuf gives back a buffer getBuf returned; p.mu is held.
func (p *filePool) putBuf(b []byte) {
	if c, size := bufClass(cap(b)); size == cap(b) && c < bufClasses && p.freeBytes+size <= poolQueueMax {
		p.free[c] = append(p.free[c], b[:0])
		p.freeBytes += size
	}
}
