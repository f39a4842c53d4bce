package gc

import (
	"sort"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/store"
)

// Policy says which cache records and untagged images may go. Blobs and
// extracted layers nothing names are always collected; a tagged image
// and what it names never are (only rmi removes a tag).
type Policy struct {
	// All makes every cache record, every untagged image and every hint a
	// candidate. Without it, the candidates are the untagged images and
	// the "dangling" records, whose layer no tagged image uses.
	All bool
	// Until, when set, keeps every candidate used (records: read or
	// written; images: created) within that long before Now.
	Until time.Duration
	// KeepStorage, when set, removes candidates least recently used first
	// only until the store (blobs, extracted layers, cache index) fits,
	// skipping those that would free nothing; then, if still over,
	// extracted layers (a cache of the blobs) oldest first.
	KeepStorage int64
	// Remove are image records to drop whatever the rest says (rmi); with
	// Only, no other candidate is considered.
	Remove []digest.Digest
	Only   bool
	// Now is the time Until counts back from; zero = time.Now().
	Now time.Time
}

// plan is what one collection removes.
type plan struct {
	g       *graph
	images  map[digest.Digest]bool
	records map[digest.Digest]bool
	hints   map[string]bool
	blobs   map[digest.Digest]bool
	dirs    map[string]bool
	size    int64 // the store's size once the plan is carried out
}

// candidate is an untagged image or a record the policy lets go.
type candidate struct {
	used  time.Time
	image *store.ImageRecord
	rec   int // index into g.records when image is nil
}

func newPlan(g *graph, p Policy) *plan {
	pl := &plan{g: g, images: map[digest.Digest]bool{}, records: map[digest.Digest]bool{},
		hints: map[string]bool{}, blobs: map[digest.Digest]bool{}, dirs: map[string]bool{}, size: g.storeSize()}
	if p.Now.IsZero() {
		p.Now = time.Now()
	}
	explicit := map[digest.Digest]bool{}
	for _, md := range p.Remove {
		explicit[md] = true
	}
	for i := range g.images {
		if explicit[g.images[i].Digest] {
			pl.dropImage(&g.images[i])
		}
	}
	for i, r := range g.records {
		if r.Broken {
			pl.dropRecord(i)
		}
	}
	pl.sweepBlobs()
	if !p.Only {
		cands := pl.candidates(p)
		if p.KeepStorage > 0 {
			pl.fit(cands, p.KeepStorage)
		} else {
			for _, c := range cands {
				pl.drop(c)
			}
			pl.sweepBlobs()
		}
		pl.pickHints(p)
	}
	pl.sweepDirs()
	if p.KeepStorage > 0 && !p.Only {
		pl.fitDirs(p.KeepStorage)
	}
	return pl
}

// candidates lists what the policy lets go, least recently used first.
func (pl *plan) candidates(p Policy) []candidate {
	g := pl.g
	cutoff := time.Time{}
	if p.Until > 0 {
		cutoff = p.Now.Add(-p.Until)
	}
	old := func(t time.Time) bool { return cutoff.IsZero() || t.Before(cutoff) }
	var out []candidate
	for i := range g.images {
		im := &g.images[i]
		if len(im.Tags) == 0 && !pl.images[im.Digest] && old(im.Created) {
			out = append(out, candidate{used: im.Created, image: im})
		}
	}
	for i, r := range g.records {
		if pl.records[r.Key] || !old(r.LastUsed) {
			continue
		}
		dangling := r.Layer != nil && !g.tagged[r.Layer.Digest]
		// A record without a layer is a few hundred bytes of metadata:
		// it goes only when asked for by age or --all.
		if p.All || dangling || (r.Layer == nil && p.Until > 0) {
			out = append(out, candidate{used: r.LastUsed, rec: i})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].used.Before(out[j].used) })
	return out
}

// fit drops candidates, least recently used first, until the store fits
// under limit. A candidate goes only if it holds a blob that dropping
// candidates can free — one no tag, lease or kept record also holds —
// so the records of a tagged image stay (removing them frees nothing).
// Its gain may come only with a later candidate (an untagged image and
// its records hold the same layer).
func (pl *plan) fit(cands []candidate, limit int64) {
	byCands := map[digest.Digest]int{}
	for _, c := range cands {
		for _, d := range pl.named(c) {
			byCands[d]++
		}
	}
	freeable := func(c candidate) bool {
		for _, d := range pl.named(c) {
			if !pl.g.pinned[d] && pl.g.holders[d] <= byCands[d] && pl.g.blobs[d].Size >= negligible {
				return true
			}
		}
		return false
	}
	for _, c := range cands {
		if pl.size <= limit {
			return
		}
		if !freeable(c) {
			continue
		}
		for _, d := range pl.named(c) {
			byCands[d]--
		}
		pl.drop(c)
		pl.sweepBlobs()
	}
}

// named lists the distinct blobs a candidate holds.
func (pl *plan) named(c candidate) []digest.Digest {
	if c.image != nil {
		return uniqueBlobs(c.image)
	}
	if l := pl.g.records[c.rec].Layer; l != nil {
		return []digest.Digest{l.Digest}
	}
	return nil
}

func (pl *plan) drop(c candidate) {
	if c.image != nil {
		pl.dropImage(c.image)
	} else {
		pl.dropRecord(c.rec)
	}
}

func (pl *plan) dropImage(im *store.ImageRecord) {
	if pl.images[im.Digest] {
		return
	}
	pl.images[im.Digest] = true
	for _, d := range uniqueBlobs(im) {
		pl.g.holders[d]--
	}
}

func (pl *plan) dropRecord(i int) {
	r := pl.g.records[i]
	if pl.records[r.Key] {
		return
	}
	pl.records[r.Key] = true
	pl.size -= r.Size
	if r.Layer != nil && !r.Broken {
		pl.g.holders[r.Layer.Digest]--
	}
}

// sweepBlobs marks every present blob nobody holds any more, until none
// is left: a blob stored as parts that goes lets its segments' blobs go.
func (pl *plan) sweepBlobs() {
	for again := true; again; {
		again = false
		for d, b := range pl.g.blobs {
			if pl.blobs[d] || !pl.g.blobGarbage(d) {
				continue
			}
			pl.blobs[d] = true
			pl.size -= b.Size
			for _, p := range b.Parts {
				pl.g.holders[p]--
				again = true
			}
			if id, ok := pl.g.dirOf[d]; ok {
				pl.g.dirHolders[id]--
				pl.sweepDir(id)
			}
		}
	}
}

// sweepDir marks an extracted layer once no remaining blob needs it.
func (pl *plan) sweepDir(id string) {
	if d, ok := pl.g.dirs[id]; ok && !pl.dirs[id] && pl.g.dirGarbage(id) {
		pl.dirs[id] = true
		pl.size -= d.Size
	}
}

// sweepDirs marks the extracted layers no remaining blob needs.
func (pl *plan) sweepDirs() {
	for id := range pl.g.dirs {
		pl.sweepDir(id)
	}
}

// fitDirs removes extracted layers, oldest first, while the store is over
// limit: they are re-extracted from their blobs when next needed.
func (pl *plan) fitDirs(limit int64) {
	var ids []string
	for id := range pl.g.dirs {
		if !pl.dirs[id] && !pl.g.pinnedDir[id] {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return pl.g.dirs[ids[i]].Changed.Before(pl.g.dirs[ids[j]].Changed) })
	for _, id := range ids {
		if pl.size <= limit {
			return
		}
		pl.dirs[id] = true
		pl.size -= pl.g.dirs[id].Size
	}
}

// pickHints chooses the miss-explanation hints to drop: all with --all,
// those not written within Until when it is set.
func (pl *plan) pickHints(p Policy) {
	for _, h := range pl.g.hints {
		if p.All || (p.Until > 0 && h.LastUsed.Before(p.Now.Add(-p.Until))) {
			pl.hints[h.Name] = true
			pl.size -= h.Size
		}
	}
}

func uniqueBlobs(im *store.ImageRecord) []digest.Digest {
	seen := map[digest.Digest]bool{}
	var out []digest.Digest
	for _, b := range im.Blobs {
		if !seen[b.Digest] {
			seen[b.Digest] = true
			out = append(out, b.Digest)
		}
	}
	return out
}
