package gc

// The file pool (snapshot/pool.go) holds the regular files of every
// extracted layer, each once. Its bytes belong to "extracted layers": a
// LayerDir's Size holds of them only those no other dir links (Pooled),
// so that --keep-storage's LRU sees what removing it frees; the rest (the
// files two layers share) is counted here, once, and what removing the
// planned dirs frees of the pool is what no other dir or view still links.

// poolFreed adds to f what the plan's removal of extracted dirs frees of
// the pool (computed before they go, dry or not).
func (s *Stores) poolFreed(pl *plan, f *Freed) {
	f.LayerBytes += pl.poolFreed(s)
}

// poolFreed is what removing the plan's dirs frees of the pool beyond
// their Pooled bytes (already in their Size).
func (pl *plan) poolFreed(s *Stores) int64 {
	var ids []string
	var counted int64
	for id := range pl.dirs {
		ids = append(ids, id)
		counted += pl.g.dirs[id].Pooled
	}
	return max(s.Snapshots.PoolFreed(ids)-counted, 0)
}

// sweepPool removes the pooled files no extracted layer or view links any
// more (after the dirs are purged).
func (s *Stores) sweepPool() error {
	_, err := s.Snapshots.SweepPool()
	return err
}

// sharedPool is the pool's bytes no dir's Size holds: the files two
// layers share, and garbage.
func (s *Stores) sharedPool(g *graph) int64 {
	pu, err := s.Snapshots.PoolUsage()
	if err != nil {
		return 0
	}
	n := pu.Size
	for _, d := range g.dirs {
		n -= d.Pooled
	}
	return max(n, 0)
}

// addPool counts the pool in df's extracted layers: its bytes once, and
// as reclaimable what the default prune would free of it.
func (u *Usage) addPool(s *Stores, pl *plan) {
	for i := range u.Kinds {
		if u.Kinds[i].Kind == KindExtracted {
			u.Kinds[i].Size += pl.g.pooled
			u.Kinds[i].Reclaimable += pl.poolFreed(s)
		}
	}
}
