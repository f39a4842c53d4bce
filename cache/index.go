package cache

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/internal/atomicfile"
	"github.com/minibuild/minibuild/internal/flock"
	"github.com/minibuild/minibuild/layer"
)

// ErrMiss reports that the index holds no record for a key.
var ErrMiss = errors.New("cache miss")

// recordVersion is stored in every record; a record of another version is a miss.
const recordVersion = 1

// Record is what an instruction produced: at most one layer, the
// container config after it, and its history entry.
type Record struct {
	Version int               `json:"version"`
	Layer   *layer.Descriptor `json:"layer,omitempty"`
	Config  v1.Config         `json:"config"`
	History v1.History        `json:"history"`
}

// Index maps keys to records, one small JSON file per key, written
// atomically. Records are only written after the blobs they name.
type Index struct {
	dir string
}

// OpenIndex returns the index kept in dir, creating it when needed.
func OpenIndex(dir string) (*Index, error) {
	for _, d := range []string{"records", "hints", "locks"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("open cache index: %w", err)
		}
	}
	return &Index{dir: dir}, nil
}

// Get returns the record of key, or ErrMiss.
func (x *Index) Get(key digest.Digest) (*Record, error) {
	var r Record
	if err := readJSON(x.recordPath(key), &r); err != nil {
		return nil, err
	}
	if r.Version != recordVersion {
		return nil, ErrMiss
	}
	// The record's mtime is its last use, for prune's least-recently-used
	// order: atime cannot be trusted (noatime, relatime mounts).
	now := time.Now()
	_ = os.Chtimes(x.recordPath(key), now, now)
	return &r, nil
}

// Put records what the step with inputs in produced under key, and
// remembers under its parent which instruction and inputs it had, for
// explaining later misses. where names the step's place in its project
// (context, stage, step number): it only scopes explanations and never
// enters a key.
//
// The named inputs are kept beside the record, never in it, so that a hit
// reads only the small record.
func (x *Index) Put(key digest.Digest, where string, in *Inputs, r *Record) error {
	r.Version = recordVersion
	if err := writeJSON(x.recordPath(key), r); err != nil {
		return fmt.Errorf("record cache key %s: %w", key, err)
	}
	h := hint{Instruction: in.Instruction, Display: in.Why.Display, Inputs: in.Names(), Vars: in.Why.Vars,
		Parent: in.Parent, Base: in.Why.Base}
	if r.Layer != nil {
		h.Layer = r.Layer.DiffID
	}
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	// Hints only explain and guide (a lost one costs an explanation or a
	// patch base), so they are not synced: a step writes three.
	for _, k := range []digest.Digest{hintKey(in.Parent, where, in.Instruction), hintKey(in.Parent, where), hintKey("", where)} {
		if err := atomicfile.WriteUnsynced(x.hintPath(k), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// hintKey locates a hint: by parent and place, and optionally instruction.
func hintKey(parent digest.Digest, parts ...string) digest.Digest {
	h := sha256.New()
	writeField(h, "hint")
	writeField(h, string(parent))
	writeList(h, parts)
	return digest.NewDigest(digest.SHA256, h)
}

// Lock waits until this process is the only one executing the step of
// key, or ctx ends: concurrent builds that reach the same key execute it
// once, and the later ones find its record (BuildKit dedupes identical
// steps inside its daemon; without a daemon, the index does). release
// frees it; a killed process frees it too.
func (x *Index) Lock(ctx context.Context, key digest.Digest) (release func(), err error) {
	release, err = flock.Path(ctx, filepath.Join(x.dir, "locks", key.Encoded()))
	if err != nil {
		return nil, fmt.Errorf("lock cache key %s: %w", key, err)
	}
	return release, nil
}

func (x *Index) recordPath(key digest.Digest) string {
	return filepath.Join(x.dir, "records", key.Encoded())
}

func (x *Index) hintPath(key digest.Digest) string {
	return filepath.Join(x.dir, "hints", key.Encoded())
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return ErrMiss
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return ErrMiss // a torn or foreign file is a miss, never a failure
	}
	return nil
}

// writeJSON writes v to path atomically.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o644)
}
