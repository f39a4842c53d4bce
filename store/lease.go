package store

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Leases let a running process hold what it uses against a concurrent
// garbage collector, as containerd's leases do. A lease is a file
// root/leases/<id>.lease that its process keeps flock(2)ed for as long as
// the lease lives; the kernel drops the flock when the process dies, so a
// dead process's lease is recognizably stale and is removed by the next
// collection. The collector treats as roots every digest a live lease
// names and everything younger than the lease (blobs committed or
// refreshed, layers extracted since it was taken). Leases are created and
// extended under the store lock, which a collection holds while it
// decides and removes: once Add returns, a collection either finished
// before it (and HasBlob tells what survived) or sees the lease.
//
// Every Store also takes a lease of its own before its first blob write
// (see writeLease), so that a pull, load or build is protected without
// asking; Close releases it.

// leaseGrace widens "younger than the lease" by the coarsest file
// timestamp granularity a filesystem may have.
const leaseGrace = 2 * time.Second

// Lease is a live lease of this process. Its methods are safe for
// concurrent use.
type Lease struct {
	s       *Store
	id      string
	created time.Time

	mu sync.Mutex
	f  *os.File // holds the flock; nil once released
}

// LeaseInfo is a live lease as a collection sees it.
type LeaseInfo struct {
	ID      string
	PID     int
	Created time.Time
	Digests []digest.Digest
}

// Holds reports whether the lease protects something with this digest,
// or something made at t (t zero: no time given).
func (li LeaseInfo) Holds(t time.Time) bool {
	return !t.IsZero() && !t.Before(li.Created.Add(-leaseGrace))
}

func (s *Store) leaseDir() string { return filepath.Join(s.root, "leases") }

// Lease takes a new lease. Release it when done (a crash releases it too).
func (s *Store) Lease(ctx context.Context) (*Lease, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.newLease()
}

// newLease creates the lease file; the caller holds the store lock. The
// file is born under a temporary name and renamed once locked, so a
// collection never mistakes a lease being made for a dead one.
func (s *Store) newLease() (*Lease, error) {
	if err := os.MkdirAll(s.leaseDir(), 0o755); err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	id := hex.EncodeToString(b[:])
	tmp := filepath.Join(s.leaseDir(), id+".new")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	fail := func(err error) (*Lease, error) {
		f.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("lease: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return fail(err)
	}
	now := time.Now()
	if _, err := fmt.Fprintf(f, "minibuild-lease/v1 %d %d\n", os.Getpid(), now.UnixNano()); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.leaseDir(), id+".lease")); err != nil {
		return fail(err)
	}
	return &Lease{s: s, id: id, created: now, f: f}, nil
}

// ID names the lease (its file is root/leases/ID.lease).
func (l *Lease) ID() string { return l.id }

// Add makes the lease hold the given digests: blobs (layers, configs,
// manifests) and layer diffIDs (their extracted dirs). After Add returns,
// a digest that HasBlob reports present stays present until Release; one
// that is absent was collected before and must be written again.
func (l *Lease) Add(ds ...digest.Digest) error {
	if len(ds) == 0 {
		return nil
	}
	var sb strings.Builder
	for _, d := range ds {
		if err := d.Validate(); err != nil {
			return fmt.Errorf("lease %s: %w", l.id, err)
		}
		sb.WriteString(d.String() + "\n")
	}
	unlock, err := l.s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return fmt.Errorf("lease %s: released", l.id)
	}
	if _, err := l.f.WriteString(sb.String()); err != nil {
		return fmt.Errorf("lease %s: %w", l.id, err)
	}
	return nil
}

// Release ends the lease; what it held is collectable again. Releasing
// twice is a no-op.
func (l *Lease) Release() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := os.Remove(filepath.Join(l.s.leaseDir(), l.id+".lease"))
	cerr := l.f.Close()
	l.f = nil
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return errors.Join(err, cerr)
}

// writeLease takes the store's own lease before its first write, so that
// whatever this process commits or refreshes is younger than a live lease.
// A failure is returned; the write then goes ahead unprotected only if the
// caller chooses to.
func (s *Store) writeLease() error {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if s.ownLease != nil {
		return nil
	}
	l, err := s.Lease(context.Background())
	if err != nil {
		return err
	}
	s.ownLease = l
	return nil
}

// Close releases the lease the store took for its own writes. A process
// that simply exits needs no Close: its lease dies with it.
func (s *Store) Close() error {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if s.ownLease == nil {
		return nil
	}
	err := s.ownLease.Release()
	s.ownLease = nil
	return err
}

// liveLeases lists the live leases and removes dead ones; the caller
// holds the store lock.
func (s *Store) liveLeases() ([]LeaseInfo, error) {
	ents, err := os.ReadDir(s.leaseDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("leases: %w", err)
	}
	var out []LeaseInfo
	for _, e := range ents {
		p := filepath.Join(s.leaseDir(), e.Name())
		id, ok := strings.CutSuffix(e.Name(), ".lease")
		if !ok {
			// A .new file is a lease being made, which cannot be under
			// the store lock we hold: its maker died.
			os.Remove(p)
			continue
		}
		li, live, err := readLease(p, id)
		if err != nil {
			return nil, err
		}
		if live {
			out = append(out, li)
		}
	}
	return out, nil
}

// readLease reports whether the lease file p is held by a live process
// and, if so, what it holds; a dead lease is removed.
func readLease(p, id string) (LeaseInfo, bool, error) {
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return LeaseInfo{}, false, nil
	}
	if err != nil {
		return LeaseInfo{}, false, fmt.Errorf("lease %s: %w", id, err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
		os.Remove(p) // nobody holds it: its process is gone
		return LeaseInfo{}, false, nil
	}
	li := LeaseInfo{ID: id}
	sc := bufio.NewScanner(f)
	if sc.Scan() {
		var magic string
		var nanos int64
		if _, err := fmt.Sscanf(sc.Text(), "%s %d %d", &magic, &li.PID, &nanos); err == nil {
			li.Created = time.Unix(0, nanos)
		}
	}
	if li.Created.IsZero() {
		// Unreadable header: hold everything a live holder might use.
		li.Created = time.Unix(0, 0)
	}
	for sc.Scan() {
		if d, err := digest.Parse(strings.TrimSpace(sc.Text())); err == nil {
			li.Digests = append(li.Digests, d)
		}
	}
	return li, true, nil
}

// Unheld runs take under the store lock if no live lease holds the layer
// diffID: what take moves out of use then is in use by no process (every
// build leases the layers it uses or makes before it reads their dirs),
// and a lease taken afterwards finds it gone. It reports whether take ran.
func (s *Store) Unheld(diffID digest.Digest, take func() error) (bool, error) {
	unlock, err := s.lock()
	if err != nil {
		return false, err
	}
	defer unlock()
	leases, err := s.liveLeases()
	if err != nil {
		return false, err
	}
	for _, li := range leases {
		if slices.Contains(li.Digests, diffID) {
			return false, nil
		}
	}
	return true, take()
}
