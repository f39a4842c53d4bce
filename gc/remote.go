package gc

import (
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/store"
)

// KindRemote is df's line for remote layers (store.RemoteBlob): layers a
// lazy cache hit left in their registry. They are listed among the blobs
// (store.BlobInfo.Remote, size 0) so that the collector marks and sweeps
// their records as it does blobs; df counts them here, with no bytes, and
// not as layer blobs: they are not stored locally.
const KindRemote = "remote layers"

// remoteKind is the remote layers' line, when there are any.
func remoteKind(g *graph) (KindUsage, bool) {
	k := KindUsage{Kind: KindRemote}
	for _, b := range g.blobs {
		if b.Remote {
			k.Count++
		}
	}
	return k, k.Count > 0
}

// isRemote reports whether d is a remote layer: named, but no bytes here.
func (g *graph) isRemote(d digest.Digest) bool { return g.blobs[d].Remote }

// sweepFacts removes the chain facts (store.ChainFacts) of layers that
// nothing kept names: no image the plan keeps, no record it keeps, no
// live lease. Facts are small; this keeps them from piling up.
func (pl *plan) sweepFacts(c *store.Collection) error {
	keep := map[digest.Digest]bool{}
	for _, im := range pl.g.images {
		if !pl.images[im.Digest] {
			for _, d := range im.DiffIDs {
				keep[d] = true
			}
		}
	}
	for _, r := range pl.g.records {
		if r.Layer != nil && !pl.records[r.Key] {
			keep[r.Layer.DiffID] = true
		}
	}
	_, err := c.RemoveFactsExcept(func(d digest.Digest) bool { return keep[d] || pl.g.pinned[d] }, pl.g.leaseFloor)
	return err
}
