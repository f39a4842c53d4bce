package remote

import (
	"maps"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/store"
)

// collectFacts adds the store's facts about the chains each record's
// layer tops, once each.
func (c *Config) collectFacts(s *store.Store) {
	seen := map[digest.Digest]bool{}
	for _, k := range slices.Sorted(maps.Keys(c.Records)) {
		r := c.Records[k]
		if r.Layer == nil || seen[r.Layer.DiffID] {
			continue
		}
		seen[r.Layer.DiffID] = true
		c.Facts = append(c.Facts, s.FactsOnTop(r.Layer.DiffID)...)
	}
}

// importFacts records what the cache knows about rootfs chains in the
// store, for keying COPYs over remote layers. A failure costs a fetch.
func (c *Config) importFacts(s *store.Store) {
	for _, cf := range c.Facts {
		if len(cf.DiffIDs) > 0 && len(cf.Facts) > 0 {
			_ = s.AddChainFacts(cf)
		}
	}
}
