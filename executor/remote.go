package executor

import (
	"context"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/cache"
)

// CacheSource is a cache imported with --cache-from (a registry artifact,
// an OCI layout dir, or an image's inline records): more records, whose
// layer blobs it can bring into the store on demand.
type CacheSource interface {
	// Record returns the record of key, if the source has one.
	Record(key digest.Digest) (*cache.Record, bool)
	// FetchLayer makes l's blob present (and verified) in the store.
	FetchLayer(ctx context.Context, l cache.Layer) error
}

// lookup finds a usable record for key: in the local index with its layer
// in the store, else in an imported source whose layer can be fetched. A
// remote hit is written to the local index (after its blob), so the next
// build hits locally and --cache-to can export it. A source that fails to
// deliver is a miss with a warning, never a failed build.
func (s *stepExec) lookup(ctx context.Context, key, parent digest.Digest) (*cache.Record, bool) {
	opts := s.b.opts
	rec, err := opts.Cache.Get(key)
	if err == nil && s.usable(rec) {
		return rec, true
	}
	for _, src := range opts.CacheFrom {
		rec, ok := src.Record(key)
		if !ok {
			continue
		}
		if rec.Layer != nil {
			if err := src.FetchLayer(ctx, *rec.Layer); err != nil {
				opts.Progress(Event{Kind: KindWarning, Line: "cache import: " + err.Error()})
				continue
			}
		}
		if err := opts.Cache.Put(key, parent, s.where(), s.canon, nil, rec); err != nil {
			opts.Progress(Event{Kind: KindWarning, Line: "cache import: " + err.Error()})
		}
		return rec, true
	}
	return nil, false
}

// noteKey remembers that stage used key, for --cache-to.
func (b *builder) noteKey(stage int, key digest.Digest) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.keys == nil {
		b.keys = map[int][]digest.Digest{}
	}
	b.keys[stage] = append(b.keys[stage], key)
}

// cacheKeys returns the keys of every step of every stage that ran (for
// mode=max) and of the steps that make up the target image: the target
// stage and the stages it is built FROM (mode=min).
func (b *builder) cacheKeys(target int) (all, image []digest.Digest) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.df.Stages {
		all = append(all, b.keys[i]...)
	}
	var chain []int
	for i, ok := target, true; ok; i, ok = b.fromStage(i) {
		chain = append([]int{i}, chain...)
	}
	for _, i := range chain {
		image = append(image, b.keys[i]...)
	}
	return all, image
}

// fromStage is the earlier stage stage i is built FROM, if any.
func (b *builder) fromStage(i int) (int, bool) {
	base := strings.ToLower(b.graph.bases[i])
	if j := slices.Index(b.graph.names[:i], base); j >= 0 && b.df.Stages[j].Name != "" {
		return j, true
	}
	if n, err := strconv.Atoi(base); err == nil && n >= 0 && n < i {
		return n, true
	}
	return 0, false
}
