package snapshot

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/internal/diskspace"
	"github.com/minibuild/minibuild/internal/flock"
)

// Ingest extracts a layer while it is being written: the layer writer
// tees its uncompressed tar stream here, so the layer a step just made is
// ready as a lower dir for the next step without reading its blob back
// and decompressing it. Extraction goes through the same safe path as
// Extract, so the result is the same as extracting the blob later.
//
// Extraction is an optimization: when it fails, Write keeps accepting
// (and dropping) bytes so the layer itself still gets written, and Commit
// reports the failure; the layer is then extracted from its blob when
// first needed.
type Ingest struct {
	sn   *Snapshotter
	pw   *io.PipeWriter
	root string
	done chan error
	man  *manifest // what root holds, once done; nil if it cannot be patched

	mu       sync.Mutex
	writeErr error // the first failed write: extraction stopped early

	waitOnce    sync.Once
	waitErr     error
	releaseOnce sync.Once
	release     func() error
}

// NewIngest starts extracting a tar stream into a temp dir.
func (sn *Snapshotter) NewIngest(ctx context.Context) (*Ingest, error) {
	tmp, release, err := sn.tempDir("i")
	if err != nil {
		return nil, err
	}
	if err := os.Mkdir(filepath.Join(tmp, "l"), 0o755); err != nil {
		release()
		return nil, fmt.Errorf("ingest layer: %w", err)
	}
	return sn.startIngest(ctx, tmp, release, nil), nil
}

// startIngest extracts into tmp/l, which exists: empty, or the dir the
// patch state describes (patch.go).
func (sn *Snapshotter) startIngest(ctx context.Context, tmp string, release func() error, patch *patchState) *Ingest {
	root := filepath.Join(tmp, "l")
	pr, pw := io.Pipe()
	in := &Ingest{sn: sn, pw: pw, root: root, release: release, done: make(chan error, 1)}
	go func() {
		x := &extractor{meter: sn.reserve.NewMeter("extract the new layer"), pool: sn.newFilePool(root), man: newManifest(), patch: patch}
		err := x.run(ctx, tar.NewReader(pr), root)
		if err == nil {
			_, err = io.Copy(io.Discard, pr) // the tar's trailing padding
		}
		pr.CloseWithError(err) // unblock the writer if extraction stopped early
		in.man = x.finalManifest(root)
		in.done <- err
	}()
	return in
}

// Write feeds the uncompressed tar stream. It fails only when the disk is
// too full for the extraction (diskspace.ErrLow: the layer would not fit
// extracted either, so writing it on is pointless); any other broken
// extraction only costs the optimization.
func (in *Ingest) Write(p []byte) (int, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.writeErr == nil {
		if _, err := in.pw.Write(p); err != nil {
			in.writeErr = err
		}
	}
	if errors.Is(in.writeErr, diskspace.ErrLow) {
		return 0, in.writeErr
	}
	return len(p), nil
}

// wait ends the stream (with cause, nil for a normal end) and waits for
// the extractor, once.
func (in *Ingest) wait(cause error) error {
	in.waitOnce.Do(func() {
		in.pw.CloseWithError(cause)
		in.waitErr = <-in.done
		if in.waitErr == nil && in.writeErr != nil {
			in.waitErr = in.writeErr
		}
	})
	return in.waitErr
}

// Err ends the stream and waits for the extraction: its error, nil when
// it succeeded. A caller that must not record a layer the disk cannot
// hold checks errors.Is(err, diskspace.ErrLow) before committing the blob.
func (in *Ingest) Err() error { return in.wait(nil) }

func (in *Ingest) cleanup() { in.releaseOnce.Do(func() { in.release() }) }

// Commit finishes the extraction and makes it the extracted dir of the
// layer with this diffID, unless that dir exists already.
func (in *Ingest) Commit(ctx context.Context, diffID digest.Digest) error {
	defer in.cleanup()
	if err := in.wait(nil); errors.Is(err, errNoPatch) {
		return nil // the layer is extracted from its blob when first needed
	} else if err != nil {
		return fmt.Errorf("ingest layer %s: %w", diffID, err)
	}
	id, err := layerID(Layer{DiffID: diffID})
	if err != nil {
		return err
	}
	dst := filepath.Join(in.sn.layersDir, id)
	unlock, err := flock.Path(ctx, dst+".lock")
	if err != nil {
		return fmt.Errorf("ingest layer %s: lock: %w", diffID, err)
	}
	defer unlock()
	if _, err := os.Lstat(dst); err == nil {
		return nil
	}
	if err := os.Rename(in.root, dst); err != nil {
		if _, statErr := os.Lstat(dst); statErr == nil {
			return nil
		}
		return fmt.Errorf("ingest layer %s: %w", diffID, err)
	}
	if in.man != nil {
		in.man.write(dst) // a cache: without it the dir is only never patched
	}
	return nil
}

// Abort stops the extraction and removes what it wrote; after Commit it
// does nothing.
func (in *Ingest) Abort() {
	in.wait(errors.New("ingest aborted"))
	in.cleanup()
}
