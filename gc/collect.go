package gc

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/snapshot"
	"github.com/minibuild/minibuild/store"
)

// Stores are the three places a collection looks at under one --root.
type Stores struct {
	Store     *store.Store
	Snapshots *snapshot.Snapshotter
	Cache     *cache.Index
}

// Open opens the stores under root as a build does.
func Open(root string) (*Stores, error) {
	st, err := store.Open(root)
	if err != nil {
		return nil, err
	}
	sn, err := snapshot.New(root, st)
	if err != nil {
		return nil, err
	}
	idx, err := cache.OpenIndex(filepath.Join(root, "cache"))
	if err != nil {
		return nil, err
	}
	return &Stores{Store: st, Snapshots: sn, Cache: idx}, nil
}

// Freed is what a collection removed (or, dry, would remove).
type Freed struct {
	Images  []digest.Digest // manifest digests of the image records removed
	Records int             // cache records
	Hints   int
	Blobs   int
	Layers  int // extracted layer dirs
	// Bytes by kind; Total is their sum. Blob bytes count each blob once,
	// however many images shared it.
	ImageBytes, BlobBytes, LayerBytes, CacheBytes int64
	// Before and After are the store's size (blobs, extracted layers,
	// cache index) around the collection.
	Before, After int64
}

// Total is every byte freed.
func (f Freed) Total() int64 { return f.ImageBytes + f.BlobBytes + f.LayerBytes + f.CacheBytes }

// Collect marks and sweeps per the policy. With dry set it only reports.
func Collect(s *Stores, p Policy, dry bool) (Freed, error) {
	var f Freed
	var purge func() error
	err := s.Store.Collect(func(c *store.Collection) error {
		pl, err := s.plan(c, p)
		if err != nil {
			return err
		}
		f = pl.freed()
		s.poolFreed(pl, &f)
		if dry {
			return nil
		}
		purge, err = s.carryOut(c, pl, &f)
		return err
	})
	if purge != nil {
		err = errors.Join(err, purge(), s.sweepPool())
	}
	return f, err
}

// plan reads everything (records before blobs: a record is written after
// its blob, so a record whose blob is absent from a later listing really
// lost it) and decides.
func (s *Stores) plan(c *store.Collection, p Policy) (*plan, error) {
	records, err := s.Cache.Records()
	if err != nil {
		return nil, err
	}
	hints, err := s.Cache.Hints()
	if err != nil {
		return nil, err
	}
	images := c.Images()
	blobs, err := c.Blobs()
	if err != nil {
		return nil, err
	}
	dirs, err := s.Snapshots.LayerDirs()
	if err != nil {
		return nil, err
	}
	for i, r := range records {
		if r.Layer != nil && !r.Broken && !hasBlob(blobs, r.Layer.Digest) {
			records[i].Broken = true // names a blob that is gone: a miss anyway
		}
	}
	g := newGraph(images, records, hints, blobs, dirs, c.Leases())
	g.pooled = s.sharedPool(g)
	return newPlan(g, p), nil
}

func hasBlob(blobs []store.BlobInfo, d digest.Digest) bool {
	i := sort.Search(len(blobs), func(i int) bool { return blobs[i].Digest >= d })
	return i < len(blobs) && blobs[i].Digest == d
}

// freed totals a plan.
func (pl *plan) freed() Freed {
	g := pl.g
	f := Freed{Before: g.storeSize(), After: pl.size, Records: len(pl.records), Hints: len(pl.hints),
		Blobs: len(pl.blobs), Layers: len(pl.dirs)}
	meta := metaBlobs(g.images)
	for d := range pl.blobs {
		if meta[d] {
			f.ImageBytes += g.blobs[d].Size
		} else {
			f.BlobBytes += g.blobs[d].Size
		}
	}
	for id := range pl.dirs {
		f.LayerBytes += g.dirs[id].Size
	}
	for _, r := range g.records {
		if pl.records[r.Key] {
			f.CacheBytes += r.Size
		}
	}
	for _, h := range g.hints {
		if pl.hints[h.Name] {
			f.CacheBytes += h.Size
		}
	}
	for md := range pl.images {
		f.Images = append(f.Images, md)
	}
	sort.Slice(f.Images, func(i, j int) bool { return f.Images[i] < f.Images[j] })
	return f
}

// carryOut removes what the plan says, referrers first. Extracted dirs
// are only renamed away here; purge deletes them after the lock is gone.
func (s *Stores) carryOut(c *store.Collection, pl *plan, f *Freed) (purge func() error, err error) {
	if err := c.RemoveImages(f.Images...); err != nil {
		return nil, err
	}
	var keys []digest.Digest
	for k := range pl.records {
		keys = append(keys, k)
	}
	if err := s.Cache.Remove(keys...); err != nil {
		return nil, fmt.Errorf("remove cache records: %w", err)
	}
	var hints []string
	for h := range pl.hints {
		hints = append(hints, h)
	}
	if err := s.Cache.RemoveHints(hints...); err != nil {
		return nil, fmt.Errorf("remove cache hints: %w", err)
	}
	kept := map[digest.Digest]bool{} // segments of a parts list that stays
	for _, d := range pl.blobOrder() {
		if kept[d] {
			f.Blobs--
			continue
		}
		removed, err := c.RemoveBlob(d, pl.g.leaseFloor)
		if err != nil {
			return nil, err
		}
		if !removed {
			for _, p := range pl.g.blobs[d].Parts {
				kept[p] = true
			}
			// Refreshed by a leased writer since we looked: it stays, and
			// so may its extracted dir.
			f.Blobs--
			delete(pl.dirs, pl.g.dirOf[d])
		}
	}
	if err := pl.sweepFacts(c); err != nil {
		return nil, err
	}
	var ids []string
	for id := range pl.dirs {
		ids = append(ids, id)
	}
	_, purge, err = s.Snapshots.RemoveLayers(ids)
	return purge, err
}

// metaBlobs are the manifests and configs of the images.
func metaBlobs(images []store.ImageRecord) map[digest.Digest]bool {
	m := map[digest.Digest]bool{}
	for _, im := range images {
		n := len(im.Blobs) - len(im.Layers)
		for _, b := range im.Blobs[:n] {
			m[b.Digest] = true
		}
	}
	return m
}

// blobOrder lists the blobs to remove, those stored as parts first: one
// that a writer refreshed meanwhile stays, and so must its segments.
func (pl *plan) blobOrder() []digest.Digest {
	var out []digest.Digest
	for d := range pl.blobs {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool {
		pi, pj := len(pl.g.blobs[out[i]].Parts) > 0, len(pl.g.blobs[out[j]].Parts) > 0
		if pi != pj {
			return pi
		}
		return out[i] < out[j]
	})
	return out
}
