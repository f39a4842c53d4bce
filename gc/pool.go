package gc

// The file pool (snapshot/pool.go) holds the regular files of every
// extracted layer, each once. Its bytes belong to "extracted layers":
// LayerDir.Size leaves pooled files out, so they are counted here, once,
// and what removing the planned dirs frees of them is what no other dir
// or view still links.

// poolFreed adds to f what the plan's removal of extracted dirs frees of
// the pool (computed before they go, dry or not).
func (s *Stores) poolFreed(pl *plan, f *Freed) {
	var ids []string
	for id := range pl.dirs {
		ids = append(ids, id)
	}
	f.LayerBytes += s.Snapshots.PoolFreed(ids)
}

// sweepPool removes the pooled files no extracted layer or view links any
// more (after the dirs are purged).
func (s *Stores) sweepPool() error {
	_, err := s.Snapshots.SweepPool()
	return err
}

// addPool counts the pool in df's extracted layers: its bytes once, and
// as reclaimable what the default prune would free of it.
func (u *Usage) addPool(s *Stores, pl *plan) {
	pu, err := s.Snapshots.PoolUsage()
	if err != nil {
		return
	}
	var ids []string
	for id := range pl.dirs {
		ids = append(ids, id)
	}
	for i := range u.Kinds {
		if u.Kinds[i].Kind == KindExtracted {
			u.Kinds[i].Size += pu.Size
			u.Kinds[i].Reclaimable += s.Snapshots.PoolFreed(ids)
		}
	}
}
