package gc

import (
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/store"
)

// Usage is what `minibuild df` shows: totals by kind, each blob counted
// once however many images share it, with what a plain prune would free.
type Usage struct {
	Kinds  []KindUsage  `json:"kinds"`
	Total  KindUsage    `json:"total"`
	Images []ImageUsage `json:"images,omitempty"`
	Layers []LayerUsage `json:"layers,omitempty"`
}

// KindUsage is one line of df.
type KindUsage struct {
	Kind        string `json:"kind"`
	Count       int    `json:"count"`
	Size        int64  `json:"size"`
	Reclaimable int64  `json:"reclaimable"`
}

// ImageUsage is one image of df -v. Unique is what removing the image
// alone would free of the blobs: its bytes no other image names (a cache
// record may still hold some of them until prune).
type ImageUsage struct {
	ID      digest.Digest `json:"id"`
	Digest  digest.Digest `json:"digest"`
	Tags    []string      `json:"tags"`
	Created time.Time     `json:"created"`
	Size    int64         `json:"size"`
	Shared  int64         `json:"shared"`
	Unique  int64         `json:"unique"`
}

// LayerUsage is one layer blob of df -v and the images that use it.
type LayerUsage struct {
	Digest digest.Digest   `json:"digest"`
	Size   int64           `json:"size"`
	Images []digest.Digest `json:"images"` // image ids
}

// The kinds of df, in order.
const (
	KindImages      = "images"           // manifests and configs
	KindLayerBlobs  = "layer blobs"      // compressed layers (and unnamed blobs)
	KindExtracted   = "extracted layers" // snapshots/layers: a cache of the blobs
	KindCache       = "cache records"    // records and miss hints
	KindCacheMounts = "cache mounts"     // RUN --mount=type=cache
	KindContext     = "context caches"   // buildctx stat caches
	KindTemp        = "temp"             // in-flight writes, scratch dirs, COPY --from views
)

// DiskUsage measures the stores under root; verbose adds per image and
// per layer lines. Reclaimable is what `prune` (with the default policy)
// would free; cache mounts not in use, context caches and temp count as
// reclaimable by `prune --cache-mounts` / `--all` / cleanup.
func DiskUsage(s *Stores, verbose bool) (*Usage, error) {
	u := &Usage{}
	var err error
	cerr := s.Store.Collect(func(c *store.Collection) error {
		var pl *plan
		if pl, err = s.plan(c, Policy{}); err != nil {
			return err
		}
		u.storeKinds(pl)
		u.addPool(s, pl)
		if verbose {
			u.perImage(pl.g)
		}
		return nil
	})
	if cerr != nil {
		return nil, cerr
	}
	mounts, err := s.Snapshots.CacheMounts()
	if err != nil {
		return nil, err
	}
	cm := KindUsage{Kind: KindCacheMounts, Count: len(mounts)}
	for _, m := range mounts {
		cm.Size += m.Size
		if !m.InUse {
			cm.Reclaimable += m.Size
		}
	}
	root := s.Store.Root()
	ctxSize, ctxN := fileSizes(filepath.Join(root, "buildctx"), 0)
	tmpSize, _ := fileSizes(filepath.Join(root, "tmp"), 0)
	staleTmp, _ := fileSizes(filepath.Join(root, "tmp"), 24*time.Hour)
	temp := KindUsage{Kind: KindTemp, Size: tmpSize + s.Snapshots.TempSize(), Reclaimable: staleTmp}
	u.Kinds = append(u.Kinds, cm, KindUsage{Kind: KindContext, Count: ctxN, Size: ctxSize, Reclaimable: ctxSize}, temp)
	for _, k := range u.Kinds {
		u.Total.Count += k.Count
		u.Total.Size += k.Size
		u.Total.Reclaimable += k.Reclaimable
	}
	u.Total.Kind = "total"
	return u, nil
}

// storeKinds fills the kinds the collector plans for.
func (u *Usage) storeKinds(pl *plan) {
	g := pl.g
	meta := metaBlobs(g.images)
	im := KindUsage{Kind: KindImages}
	lb := KindUsage{Kind: KindLayerBlobs}
	for d, b := range g.blobs {
		if b.Remote {
			continue // not stored here: remoteKind
		}
		k := &lb
		if meta[d] {
			k = &im
		}
		k.Size += b.Size
		if pl.blobs[d] {
			k.Reclaimable += b.Size
		}
	}
	im.Count = len(g.images)
	lb.Count = len(g.blobs) - len(meta)
	rk, remote := remoteKind(g)
	lb.Count -= rk.Count
	ex := KindUsage{Kind: KindExtracted, Count: len(g.dirs)}
	for id, d := range g.dirs {
		ex.Size += d.Size
		if pl.dirs[id] {
			ex.Reclaimable += d.Size
		}
	}
	ca := KindUsage{Kind: KindCache, Count: len(g.records)}
	for _, r := range g.records {
		ca.Size += r.Size
		if pl.records[r.Key] {
			ca.Reclaimable += r.Size
		}
	}
	for _, h := range g.hints {
		ca.Size += h.Size
	}
	u.Kinds = append(u.Kinds, im, lb, ex, ca)
	if remote {
		u.Kinds = append(u.Kinds, rk)
	}
}

// perImage computes, for each image, its size and the bytes it shares
// with other images, and for each layer the images that use it.
func (u *Usage) perImage(g *graph) {
	users := map[digest.Digest]map[digest.Digest]bool{} // blob → image ids
	for i := range g.images {
		for _, d := range uniqueBlobs(&g.images[i]) {
			if users[d] == nil {
				users[d] = map[digest.Digest]bool{}
			}
			users[d][g.images[i].Config] = true
		}
	}
	for i := range g.images {
		im := &g.images[i]
		iu := ImageUsage{ID: im.Config, Digest: im.Digest, Created: im.Created, Tags: []string{}}
		for _, t := range im.Tags {
			iu.Tags = append(iu.Tags, store.DisplayRef(t))
		}
		for _, b := range dedupe(im.Blobs) {
			if g.isRemote(b.Digest) {
				continue // counted where it is stored: its registry
			}
			size := g.storedSize(b.Digest, b.Size)
			iu.Size += size
			if len(users[b.Digest]) > 1 {
				iu.Shared += size
			}
		}
		iu.Unique = iu.Size - iu.Shared
		u.Images = append(u.Images, iu)
	}
	seen := map[digest.Digest]bool{}
	for i := range g.images {
		for _, l := range g.images[i].Layers {
			if seen[l.Digest] {
				continue
			}
			seen[l.Digest] = true
			lu := LayerUsage{Digest: l.Digest, Size: g.storedSize(l.Digest, l.Size)}
			for id := range users[l.Digest] {
				lu.Images = append(lu.Images, id)
			}
			sort.Slice(lu.Images, func(a, b int) bool { return lu.Images[a] < lu.Images[b] })
			u.Layers = append(u.Layers, lu)
		}
	}
	sort.SliceStable(u.Layers, func(a, b int) bool { return len(u.Layers[a].Images) > len(u.Layers[b].Images) })
}

func dedupe(refs []store.BlobRef) []store.BlobRef {
	seen := map[digest.Digest]bool{}
	var out []store.BlobRef
	for _, r := range refs {
		if !seen[r.Digest] {
			seen[r.Digest] = true
			out = append(out, r)
		}
	}
	return out
}

// fileSizes sums the regular files under dir not modified within age
// (age 0: all of them).
func fileSizes(dir string, age time.Duration) (int64, int) {
	var n int64
	count := 0
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && (age == 0 || time.Since(fi.ModTime()) > age) {
			n += fi.Size()
			count++
		}
		return nil
	})
	return n, count
}

// storedSize is what blob d takes here: a parts-backed layer only its pack
// and parts list, a pooled one its member index too (store/parts.go);
// named, the layer blobs' kind and the per-layer lines add up. A blob not
// found (collected meanwhile) counts as named.
func (g *graph) storedSize(d digest.Digest, named int64) int64 {
	if b, ok := g.blobs[d]; ok {
		return b.Size
	}
	return named
}
