package cache

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/internal/atomicfile"
)

// ErrMiss reports that the index holds no record for a key.
var ErrMiss = errors.New("cache miss")

// recordVersion is stored in every record; a record of another version is a miss.
const recordVersion = 1

// Layer names the layer blob an instruction produced.
type Layer struct {
	Digest    digest.Digest `json:"digest"`
	DiffID    digest.Digest `json:"diffID"`
	Size      int64         `json:"size"`
	MediaType string        `json:"mediaType"`
}

// Record is what an instruction produced: at most one layer, the
// container config after it, and its history entry.
type Record struct {
	Version int        `json:"version"`
	Layer   *Layer     `json:"layer,omitempty"`
	Config  v1.Config  `json:"config"`
	History v1.History `json:"history"`
}

// Index maps keys to records, one small JSON file per key, written
// atomically. Records are only written after the blobs they name.
type Index struct {
	dir string
}

// OpenIndex returns the index kept in dir, creating it when needed.
func OpenIndex(dir string) (*Index, error) {
	for _, d := range []string{"records", "hints"} {
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
	h := hint{Instruction: in.Instruction, Display: r.History.CreatedBy, Inputs: in.Names()}
	if err := writeJSON(x.hintPath(hintKey(in.Parent, where, in.Instruction)), h); err != nil {
		return err
	}
	return writeJSON(x.hintPath(hintKey(in.Parent, where)), h)
}

// hintKey locates a hint: by parent and place, and optionally instruction.
func hintKey(parent digest.Digest, parts ...string) digest.Digest {
	h := sha256.New()
	writeField(h, "hint")
	writeField(h, string(parent))
	writeList(h, parts)
	return digest.NewDigest(digest.SHA256, h)
}

// hint is what the last step recorded under a parent had as instruction and inputs.
type hint struct {
	Instruction string            `json:"instruction"`
	Display     string            `json:"display,omitempty"` // as the user wrote it
	Inputs      map[string]string `json:"inputs,omitempty"`
}

// Explain says why the step with inputs in missed at place where: which
// inputs changed since the same instruction last ran on the same parent,
// or that the instruction at this place changed.
func (x *Index) Explain(where string, in *Inputs) string {
	var prev hint
	if err := readJSON(x.hintPath(hintKey(in.Parent, where, in.Instruction)), &prev); err == nil {
		if d := diffInputs(prev.Inputs, in.Names()); d != "" {
			return d
		}
		return "record missing from the cache"
	}
	if err := readJSON(x.hintPath(hintKey(in.Parent, where)), &prev); err == nil {
		was := prev.Display
		if was == "" {
			was = prev.Instruction
		}
		return "instruction changed (was: " + was + ")"
	}
	return "not built before"
}

// diffInputs names the inputs that changed, were added or removed.
func diffInputs(old, cur map[string]string) string {
	var changed, added, removed []string
	for k, v := range cur {
		switch ov, ok := old[k]; {
		case !ok:
			added = append(added, k)
		case ov != v:
			changed = append(changed, k)
		}
	}
	for k := range old {
		if _, ok := cur[k]; !ok {
			removed = append(removed, k)
		}
	}
	var parts []string
	for _, g := range []struct {
		names []string
		verb  string
	}{{changed, "changed"}, {added, "added"}, {removed, "removed"}} {
		if len(g.names) == 0 {
			continue
		}
		sort.Strings(g.names)
		list := g.names
		more := ""
		if len(list) > 3 {
			more = fmt.Sprintf(" and %d more", len(list)-3)
			list = list[:3]
		}
		parts = append(parts, strings.Join(list, ", ")+more+" "+g.verb)
	}
	return strings.Join(parts, "; ")
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
