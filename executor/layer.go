package executor

import (
	"context"
	"errors"
	"time"

	"github.com/minibuild/minibuild/internal/diskspace"
	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/snapshot"
)

// writeLayer writes the step's layer into the store: the blob is
// committed, whole and verified, before any record names it. Members the
// store's pool already holds are not compressed again, and a layer made
// mostly of them is stored as its parts (store.LayerWriter).
func (s *step) writeLayer(ctx context.Context, fill func(*layer.Writer) error) (*layer.Descriptor, error) {
	opts := s.run.b.opts
	lw, err := opts.Store.NewLayerWriter()
	if err != nil {
		return nil, err
	}
	defer lw.Abort()
	lopts := layer.Options{Epoch: opts.Epoch, Pool: lw.Pool()}
	var ingest *snapshot.Ingest
	if s.feedsRootfs {
		// Extract the layer as it is written: a later step needs it as a
		// lower dir, and reading the blob back means decompressing it.
		// The dir of the layer this step made last time, if no one uses
		// it, becomes the new one by changing only what differs.
		if ingest, err = opts.Snapshots.NewPatchIngest(ctx, s.prevLayer, opts.Store.Unheld); err != nil {
			return nil, err
		}
		defer ingest.Abort()
		lopts.Tee = ingest
	}
	w := layer.NewWriter(lw, lopts)
	defer w.Abort()
	if err := fill(w); err != nil {
		return nil, err
	}
	desc, err := w.Close()
	if err != nil {
		return nil, err
	}
	if ingest != nil {
		if err := ingest.Err(); errors.Is(err, diskspace.ErrLow) {
			return nil, err // the blob is not committed: the store stays as it was
		}
	}
	if err := lw.Commit(desc); err != nil {
		return nil, err
	}
	// Leased before its dir appears: no other build patches it away while
	// a later step of this one reads it (snapshot.NewPatchIngest).
	if err := s.run.b.lease.Add(desc.DiffID); err != nil {
		return nil, err
	}
	if ingest != nil {
		if err := ingest.Commit(ctx, desc.DiffID); err != nil {
			// Only an optimization: the layer is extracted from its blob when needed.
			s.run.b.warn(err.Error())
		}
	}
	return &desc, nil
}

// layerTime is the mtime of entries minibuild itself creates: the epoch
// when set, else the Unix epoch, so such layers are deterministic anyway.
func (s *step) layerTime() time.Time {
	if e := s.run.b.opts.Epoch; e != nil {
		return *e
	}
	return time.Unix(0, 0)
}
