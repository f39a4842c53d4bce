package executor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/snapshot"
	"github.com/minibuild/minibuild/store"
)

// rootfsFacts is a parent rootfs as COPY's key asks about it (DestInfo,
// Resolve: is the destination a dir, where do the image's symlinks lead,
// whose are the dirs it lands under; --chown's passwd and group files).
// When the chain's layers are all in the store it asks the snapshotter,
// and the answers are recorded as the chain's facts (store.ChainFacts),
// which a cache export carries: for the chain, and for the few chains
// below it (factLevels). When a layer is remote (a lazy cache hit), it
// answers from those facts first, so that a host whose every step hits
// keys its COPYs without fetching or extracting a layer; and where the
// top layers are this host's own (a COPY that missed, then another
// COPY), from the facts of the remote chain below them, when their
// recorded walk shows those layers leave the answer as it was
// (snapshot.Over). A question neither answers goes to the snapshotter,
// which fetches. The answers are the same either way: facts are a
// function of the chain's content.
type rootfsFacts struct {
	b      *builder
	ctx    context.Context
	layers []layer.Descriptor
	ids    []digest.Digest
	remote bool // a layer of the chain is remote: facts first
	local  int  // when remote: the layers from this index up are in the store

	mu      sync.Mutex
	known   store.ChainFacts
	below   map[int]store.ChainFacts // loaded facts of the chains ids[:j]
	learned map[int]map[string]store.Fact
}

// factLevels is how many chains below the asked one get its answers
// recorded too: a fresh host that misses a COPY keys the COPYs after it
// on the chain the miss was made on, one to factLevels levels down from
// where the exporting host asked. Each level costs one more lookup per
// question, only when the chain's facts are first learned.
const factLevels = 4

func (b *builder) rootfsFacts(ctx context.Context, layers []layer.Descriptor) *rootfsFacts {
	f := &rootfsFacts{b: b, ctx: ctx, layers: layers, below: map[int]store.ChainFacts{}, learned: map[int]map[string]store.Fact{}}
	st := b.opts.Store
	for i, l := range layers {
		f.ids = append(f.ids, l.DiffID)
		if !st.HasBlob(l.Digest) {
			if _, ok := st.RemoteBlob(l.Digest); ok {
				f.remote, f.local = true, i+1
			}
		}
	}
	if len(f.ids) > 0 {
		f.known, _ = st.ChainFacts(f.ids)
	}
	return f
}

// answer is what the rootfs says about path p to op (stat, resolve,
// read): recorded, derived or looked up. fs.ErrNotExist of a stat or a
// read is an answer (Missing).
func (f *rootfsFacts) answer(op, p string) (store.Fact, error) {
	q := op + " " + p
	if f.remote {
		if a, ok := f.known.Facts[q]; ok {
			return a, nil
		}
		if a, ok := f.derive(op, q); ok {
			return a, nil
		}
	}
	// A local chain is always asked (its facts are for other hosts);
	// what it has not recorded yet is recorded, with the chains below.
	known, ok := f.known.Facts[q]
	learn := !f.remote && len(f.ids) > 0 && (!ok || len(known.Walk) == 0)
	a, err := f.lookup(f.layers, op, p, learn)
	if err != nil || !learn {
		return a, err
	}
	f.learn(len(f.ids), q, a)
	for j := len(f.ids) - 1; j >= max(1, len(f.ids)-factLevels); j-- {
		if aj, err := f.lookup(f.layers[:j], op, p, true); err == nil {
			f.learn(j, q, aj)
		}
	}
	return a, nil
}

// lookup asks the snapshotter about p on layers, and with trace the
// walk it took.
func (f *rootfsFacts) lookup(layers []layer.Descriptor, op, p string, trace bool) (store.Fact, error) {
	sn := f.b.opts.Snapshots
	var a store.Fact
	var err error
	switch op {
	case "stat":
		var fi fs.FileInfo
		if fi, err = sn.Stat(f.ctx, layers, p); err == nil {
			a = statFact(fi)
		}
	case "resolve":
		a.Resolved, err = sn.Resolve(f.ctx, layers, p)
	case "read":
		a.Data, err = sn.ReadFile(f.ctx, layers, p)
	default:
		return a, fmt.Errorf("rootfs question %q", op)
	}
	if op != "resolve" && errors.Is(err, fs.ErrNotExist) {
		a, err = store.Fact{Missing: true}, nil
	}
	if err == nil && trace {
		if w, terr := sn.Trace(f.ctx, layers, p); terr == nil {
			a.Walk = w
		}
	}
	return a, err
}

// derive answers q from the facts of a chain ids[:j] below this one,
// when every layer above it is extracted here and leaves the recorded
// walk as it was (or decides the stat itself).
func (f *rootfsFacts) derive(op, q string) (store.Fact, bool) {
	for j := len(f.ids) - 1; j >= max(1, f.local); j-- {
		a, ok := f.belowFact(j, q)
		if !ok || len(a.Walk) == 0 {
			continue
		}
		w := snapshot.Walk(a.Walk)
		var decided fs.FileInfo
		for _, top := range f.layers[j:] {
			var fi fs.FileInfo
			if w, fi, ok = f.b.opts.Snapshots.Over(top, w); !ok {
				break
			}
			if fi != nil {
				decided = fi
			}
		}
		switch {
		case !ok || decided != nil && op == "read":
			continue
		case decided != nil && op == "stat":
			a = statFact(decided)
		}
		a.Walk = w
		return a, true
	}
	return store.Fact{}, false
}

// belowFact is the recorded answer to q about the chain ids[:j].
func (f *rootfsFacts) belowFact(j int, q string) (store.Fact, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cf, ok := f.below[j]
	if !ok {
		cf, _ = f.b.opts.Store.ChainFacts(f.ids[:j])
		f.below[j] = cf
	}
	a, ok := cf.Facts[q]
	return a, ok
}

// learn keeps the answer to q about the chain ids[:j] for save (which
// keeps what the store already has).
func (f *rootfsFacts) learn(j int, q string, a store.Fact) {
	if len(a.Data) > maxFactFile {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.learned[j] == nil {
		f.learned[j] = map[string]store.Fact{}
	}
	f.learned[j][q] = a
}

// stat is copier.Request.DestInfo.
func (f *rootfsFacts) stat(p string) (fs.FileInfo, error) {
	a, err := f.answer("stat", p)
	if err == nil && a.Missing {
		err = &fs.PathError{Op: "stat", Path: p, Err: fs.ErrNotExist}
	}
	if err != nil {
		return nil, err
	}
	return factInfo{name: path.Base(p), f: a}, nil
}

// resolve is copier.Request.Resolve.
func (f *rootfsFacts) resolve(p string) (string, error) {
	a, err := f.answer("resolve", p)
	return a.Resolved, err
}

// maxFactFile bounds the files whose content is kept as a fact.
const maxFactFile = 64 << 10

// readFile reads a file for COPY --chown's names (/etc/passwd, /etc/group).
func (f *rootfsFacts) readFile(p string) ([]byte, error) {
	a, err := f.answer("read", p)
	if err == nil && a.Missing {
		err = &fs.PathError{Op: "read", Path: p, Err: fs.ErrNotExist}
	}
	return a.Data, err
}

// save records what was learned from the snapshotter, for exports; a
// failure only costs a later host a fetch.
func (f *rootfsFacts) save() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.remote {
		return
	}
	for j, facts := range f.learned {
		if err := f.b.opts.Store.AddChainFacts(store.ChainFacts{DiffIDs: f.ids[:j], Facts: facts}); err != nil {
			f.b.warn("record rootfs facts: " + err.Error())
			break
		}
	}
	f.learned = map[int]map[string]store.Fact{}
}

func statFact(fi fs.FileInfo) store.Fact {
	a := store.Fact{Mode: uint32(fi.Mode()), Size: fi.Size(), MTime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		a.UID, a.GID = int(st.Uid), int(st.Gid)
	}
	return a
}

// factInfo is a recorded stat as an fs.FileInfo; Sys carries the owner
// as the snapshotter's does (a *syscall.Stat_t).
type factInfo struct {
	name string
	f    store.Fact
}

func (i factInfo) Name() string       { return i.name }
func (i factInfo) Size() int64        { return i.f.Size }
func (i factInfo) Mode() fs.FileMode  { return fs.FileMode(i.f.Mode) }
func (i factInfo) ModTime() time.Time { return time.Unix(0, i.f.MTime) }
func (i factInfo) IsDir() bool        { return i.Mode().IsDir() }
func (i factInfo) Sys() any           { return &syscall.Stat_t{Uid: uint32(i.f.UID), Gid: uint32(i.f.GID)} }
