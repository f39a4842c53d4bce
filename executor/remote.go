package executor

import (
	"context"
	"io"
	"maps"
	"slices"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/snapshot"
)

// CacheSource is a cache imported with --cache-from (a registry artifact,
// an OCI layout dir, or an image's inline records): more records, whose
// layer blobs it can bring into the store on demand.
type CacheSource interface {
	// Record returns the record of key, if the source has one.
	Record(key digest.Digest) (*cache.Record, bool)
	// FetchLayer makes l's blob present (and verified) in the store.
	FetchLayer(ctx context.Context, l layer.Descriptor) error
}

// LazySource is a CacheSource whose layers can stay in their registry: a
// hit records its layer as a remote blob of the store (store.RemoteBlob)
// instead of downloading it, and the store fetches it when something
// reads it (a later RUN's rootfs, an output, a push elsewhere). The
// executor discovers it by type assertion.
type LazySource interface {
	// LazyLayer makes l usable from the store: present, or remote.
	LazyLayer(ctx context.Context, l layer.Descriptor) error
}

// lookup finds a usable record for key: in the local index with its layer
// in the store (or remote, store.RemoteBlob), else in an imported source
// whose layer can be fetched or recorded as remote. A remote hit is
// written to the local index (after its blob or remote record), so the
// next build hits locally and --cache-to can export it. A source that
// fails to deliver is a miss with a warning, never a failed build.
func (s *step) lookup(ctx context.Context, key digest.Digest, in *cache.Inputs) (*cache.Record, bool) {
	b := s.run.b
	rec, err := b.opts.Cache.Get(key)
	if err == nil && (rec.Layer == nil || s.holdLayer(rec.Layer)) {
		return rec, true // the index never outranks the blobs
	}
	for _, src := range b.opts.CacheFrom {
		rec, ok := src.Record(key)
		if !ok {
			continue
		}
		if rec.Layer != nil {
			if err := useLayer(ctx, src, *rec.Layer); err != nil {
				b.warn("cache import: " + err.Error())
				continue
			}
			if !s.holdLayer(rec.Layer) {
				continue
			}
		}
		imported := &cache.Inputs{Parent: in.Parent, Instruction: in.Instruction}
		where := s.where()
		b.imports.do(func() {
			if err := b.opts.Cache.Put(key, where, imported, rec); err != nil {
				b.warn("cache import: " + err.Error())
			}
		})
		return rec, true
	}
	return nil, false
}

// importWrites are the local index writes of imported hits. Each is a
// few synced files, and a fresh host hits every step: they run beside
// the build (the disk batches concurrent syncs) and the build waits for
// them before it returns, so an export or the next build sees them. The
// record still follows its blob or remote record, written before.
type importWrites struct{ wg sync.WaitGroup }

func (w *importWrites) do(fn func()) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		fn()
	}()
}

func (w *importWrites) wait() { w.wg.Wait() }

// useLayer makes an imported record's layer usable: lazily when the
// source can, else fetched.
func useLayer(ctx context.Context, src CacheSource, l layer.Descriptor) error {
	if ls, ok := src.(LazySource); ok {
		return ls.LazyLayer(ctx, l)
	}
	return src.FetchLayer(ctx, l)
}

// holdLayer adds a reused record's layer (blob and extracted dir) to the
// build's lease and tells whether its blob is there or remote: one a
// collection removed before the lease held it is a miss.
func (s *step) holdLayer(l *layer.Descriptor) bool {
	b := s.run.b
	if err := b.lease.Add(l.Digest, l.DiffID); err != nil {
		b.warn("lease: " + err.Error())
		return false
	}
	return b.opts.Store.HasContent(l.Digest)
}

// CacheMountSource is a CacheSource that also carries RUN cache mounts'
// content (--cache-to …,cache-mounts=true); the executor discovers it by
// type assertion.
type CacheMountSource interface {
	// CacheMount opens the content of the cache mount id, a layer tarball
	// (snapshot.RestoreCacheMount), if the source carries it.
	CacheMount(ctx context.Context, id string) (io.ReadCloser, bool, error)
}

// restoreCacheMount makes the cache mount id from the first imported
// source that carries it, when this root has no copy, before the step
// that uses it runs. The content only seeds the mount: it enters no key
// and no layer. A source that fails to deliver is a warning, and the
// mount starts empty.
func (s *step) restoreCacheMount(ctx context.Context, id string, opts snapshot.CacheMountOptions) {
	b := s.run.b
	sn := b.opts.Snapshots
	for _, src := range b.opts.CacheFrom {
		cs, ok := src.(CacheMountSource)
		if !ok || sn.HasCacheMount(id) {
			continue
		}
		rc, ok, err := cs.CacheMount(ctx, id)
		if err == nil && ok {
			_, err = sn.RestoreCacheMount(ctx, id, opts, rc)
			rc.Close()
		}
		if err != nil {
			b.warn("cache import: " + err.Error())
			continue
		}
		if ok {
			return
		}
	}
}

// usedCacheMount notes that a step names the cache mount id.
func (b *builder) usedCacheMount(id, sharing string) {
	if sharing == "" {
		sharing = string(snapshot.SharingShared)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mounts == nil {
		b.mounts = map[string]string{}
	}
	if _, ok := b.mounts[id]; !ok {
		b.mounts[id] = sharing
	}
}

// cacheMounts are the cache mounts the build's steps name, sorted by id.
func (b *builder) cacheMounts() []CacheMountUse {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []CacheMountUse
	for _, id := range slices.Sorted(maps.Keys(b.mounts)) {
		out = append(out, CacheMountUse{ID: id, Sharing: b.mounts[id]})
	}
	return out
}
