package executor

import (
	"context"
	"errors"
	"io/fs"
	"path"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/store"
)

// rootfsFacts is a parent rootfs as COPY's key asks about it (DestInfo,
// Resolve: is the destination a dir, where do the image's symlinks lead,
// whose are the dirs it lands under; --chown's passwd and group files). When the chain's layers are all in
// the store it asks the snapshotter, and the answers are recorded as the
// chain's facts (store.ChainFacts), which a cache export carries. When a
// layer is remote (a lazy cache hit), it answers from those facts first,
// so that a host whose every step hits keys its COPYs without fetching or
// extracting a layer; a question they do not answer goes to the
// snapshotter, which fetches. The answers are the same either way: facts
// are a function of the chain's content.
type rootfsFacts struct {
	b      *builder
	ctx    context.Context
	layers []layer.Descriptor
	ids    []digest.Digest
	remote bool // a layer of the chain is remote: facts first

	mu      sync.Mutex
	known   store.ChainFacts
	learned map[string]store.Fact
}

func (b *builder) rootfsFacts(ctx context.Context, layers []layer.Descriptor) *rootfsFacts {
	f := &rootfsFacts{b: b, ctx: ctx, layers: layers, learned: map[string]store.Fact{}}
	st := b.opts.Store
	for _, l := range layers {
		f.ids = append(f.ids, l.DiffID)
		if !f.remote && !st.HasBlob(l.Digest) {
			_, f.remote = st.RemoteBlob(l.Digest)
		}
	}
	if len(f.ids) > 0 {
		f.known, _ = st.ChainFacts(f.ids)
	}
	return f
}

// fact is the recorded answer to q, when the chain is remote.
func (f *rootfsFacts) fact(q string) (store.Fact, bool) {
	if !f.remote {
		return store.Fact{}, false
	}
	a, ok := f.known.Facts[q]
	return a, ok
}

func (f *rootfsFacts) learn(q string, a store.Fact) {
	if len(f.ids) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.known.Facts[q]; !ok {
		f.learned[q] = a
	}
}

// stat is copier.Request.DestInfo.
func (f *rootfsFacts) stat(p string) (fs.FileInfo, error) {
	q := "stat " + p
	if a, ok := f.fact(q); ok {
		if a.Missing {
			return nil, &fs.PathError{Op: "stat", Path: p, Err: fs.ErrNotExist}
		}
		return factInfo{name: path.Base(p), f: a}, nil
	}
	fi, err := f.b.opts.Snapshots.Stat(f.ctx, f.layers, p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f.learn(q, store.Fact{Missing: true})
	case err == nil:
		a := store.Fact{Mode: uint32(fi.Mode()), Size: fi.Size(), MTime: fi.ModTime().UnixNano()}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			a.UID, a.GID = int(st.Uid), int(st.Gid)
		}
		f.learn(q, a)
	}
	return fi, err
}

// resolve is copier.Request.Resolve.
func (f *rootfsFacts) resolve(p string) (string, error) {
	q := "resolve " + p
	if a, ok := f.fact(q); ok {
		return a.Resolved, nil
	}
	r, err := f.b.opts.Snapshots.Resolve(f.ctx, f.layers, p)
	if err == nil {
		f.learn(q, store.Fact{Resolved: r})
	}
	return r, err
}

// maxFactFile bounds the files whose content is kept as a fact.
const maxFactFile = 64 << 10

// readFile reads a file for COPY --chown's names (/etc/passwd, /etc/group).
func (f *rootfsFacts) readFile(p string) ([]byte, error) {
	q := "read " + p
	if a, ok := f.fact(q); ok {
		if a.Missing {
			return nil, &fs.PathError{Op: "read", Path: p, Err: fs.ErrNotExist}
		}
		return a.Data, nil
	}
	b, err := f.b.opts.Snapshots.ReadFile(f.ctx, f.layers, p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f.learn(q, store.Fact{Missing: true})
	case err == nil && len(b) <= maxFactFile:
		f.learn(q, store.Fact{Data: b})
	}
	return b, err
}

// save records what was learned from the snapshotter, for exports; a
// failure only costs a later host a fetch.
func (f *rootfsFacts) save() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.learned) == 0 || f.remote {
		return
	}
	if err := f.b.opts.Store.AddChainFacts(store.ChainFacts{DiffIDs: f.ids, Facts: f.learned}); err != nil {
		f.b.warn("record rootfs facts: " + err.Error())
	}
	f.learned = map[string]store.Fact{}
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
