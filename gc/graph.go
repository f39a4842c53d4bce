// Package gc is minibuild's garbage collector (DESIGN.md invariants 4 and
// 7): it marks from the roots — tags, the cache records a prune policy
// keeps, and whatever a live lease holds — across the content store, the
// cache index and the extracted layers, and sweeps blobs, extracted layer
// dirs, cache records and hints nobody reaches.
//
// The whole decision and every removal but the slow deletion of
// extracted dirs happen under the store lock (store.Collect), so a build
// can take or extend a lease only before or after a collection, never in
// the middle. Removal goes referrers first: image records, then cache
// records and hints, then blobs, then extracted dirs (renamed out of the
// way first). Marking is recomputed from the roots every time, so a crash
// between any two steps leaves only unreferenced things, which the next
// collection finds and finishes; no journal is needed.
package gc

import (
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/snapshot"
	"github.com/minibuild/minibuild/store"
)

// graph is everything one collection knows, with reference counts: how
// many images and records name each blob, how many present blobs each
// extracted dir stands for. Removing a holder (plan.drop*) decrements
// them; what reaches zero and no lease pins is garbage.
type graph struct {
	images  []store.ImageRecord
	records []cache.RecordInfo
	hints   []cache.HintInfo
	blobs   map[digest.Digest]store.BlobInfo
	dirs    map[string]snapshot.LayerDir
	// pooled is the file pool's bytes no dir's Size holds (gc/pool.go).
	pooled int64

	tagged     map[digest.Digest]bool // blobs a tagged image names
	holders    map[digest.Digest]int  // blob → images and records naming it
	dirOf      map[digest.Digest]string
	dirHolders map[string]int // dir → present blobs it is the extraction of
	pinned     map[digest.Digest]bool
	pinnedDir  map[string]bool
	// leaseFloor is the creation of the oldest live lease (less the
	// timestamp grace): anything changed at or after it is held. Zero
	// when no lease lives.
	leaseFloor time.Time
}

// Files of the cache index and blobs smaller than this do not count as
// freeing space when --keep-storage looks for what to remove.
const negligible = 4096

func newGraph(images []store.ImageRecord, records []cache.RecordInfo, hints []cache.HintInfo,
	blobs []store.BlobInfo, dirs []snapshot.LayerDir, leases []store.LeaseInfo) *graph {
	g := &graph{
		images: images, records: records, hints: hints,
		blobs: map[digest.Digest]store.BlobInfo{}, dirs: map[string]snapshot.LayerDir{},
		tagged: map[digest.Digest]bool{}, holders: map[digest.Digest]int{},
		dirOf: map[digest.Digest]string{}, dirHolders: map[string]int{},
		pinned: map[digest.Digest]bool{}, pinnedDir: map[string]bool{},
	}
	for _, b := range blobs {
		g.blobs[b.Digest] = b
		for _, d := range b.Parts {
			g.holders[d]++ // a blob stored as parts holds its segments' blobs
		}
	}
	for _, d := range dirs {
		g.dirs[d.ID] = d
	}
	for i := range images {
		im := &images[i]
		for _, d := range uniqueBlobs(im) {
			g.holders[d]++
			if len(im.Tags) > 0 {
				g.tagged[d] = true
			}
		}
		for i, l := range im.Layers {
			if i < len(im.DiffIDs) {
				g.dirOf[l.Digest] = snapshot.LayerDirID(im.DiffIDs[i])
			}
		}
	}
	for _, r := range records {
		if r.Layer == nil || r.Broken {
			continue
		}
		g.holders[r.Layer.Digest]++
		if r.Layer.DiffID != "" {
			g.dirOf[r.Layer.Digest] = snapshot.LayerDirID(r.Layer.DiffID)
		}
	}
	for d := range g.blobs {
		if id, ok := g.dirOf[d]; ok {
			g.dirHolders[id]++
		}
	}
	g.pinLeases(leases)
	return g
}

// pinLeases makes roots of what live leases hold: named digests (blobs,
// and the dirs of blobs or diffIDs) and everything younger than a lease.
func (g *graph) pinLeases(leases []store.LeaseInfo) {
	for _, l := range leases {
		floor := l.Created.Add(-2 * time.Second)
		if g.leaseFloor.IsZero() || floor.Before(g.leaseFloor) {
			g.leaseFloor = floor
		}
		for _, d := range l.Digests {
			g.pinned[d] = true
			g.pinnedDir[snapshot.LayerDirID(d)] = true
			if id, ok := g.dirOf[d]; ok {
				g.pinnedDir[id] = true
			}
		}
	}
	if g.leaseFloor.IsZero() {
		return
	}
	for d, b := range g.blobs {
		if !b.ModTime.Before(g.leaseFloor) {
			g.pinned[d] = true
			if id, ok := g.dirOf[d]; ok {
				g.pinnedDir[id] = true
			}
		}
	}
	for id, d := range g.dirs {
		if !d.Changed.Before(g.leaseFloor) {
			g.pinnedDir[id] = true
		}
	}
}

// blobGarbage reports whether blob d is present, named by nobody and
// pinned by no lease.
func (g *graph) blobGarbage(d digest.Digest) bool {
	_, present := g.blobs[d]
	return present && g.holders[d] <= 0 && !g.pinned[d]
}

// dirGarbage reports whether an extracted dir stands for no present,
// needed blob and no lease holds it.
func (g *graph) dirGarbage(id string) bool {
	return g.dirHolders[id] <= 0 && !g.pinnedDir[id]
}

// storeSize is what the cap of --keep-storage measures: blobs, extracted
// layers (their pooled files once) and the cache index.
func (g *graph) storeSize() int64 {
	n := g.pooled
	for _, b := range g.blobs {
		n += b.Size
	}
	for _, d := range g.dirs {
		n += d.Size
	}
	for _, r := range g.records {
		n += r.Size
	}
	for _, h := range g.hints {
		n += h.Size
	}
	return n
}
