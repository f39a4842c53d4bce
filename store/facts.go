package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Chain facts are what a step's key learned from its parent's rootfs
// without changing it: COPY's destination resolved through the image's
// symlinks, and the metadata of the directories it lands under. They
// depend only on the layer chain's content (its diffIDs), so a host that
// had the chain extracted can record them and another host, whose chain
// is remote (lazy cache hits), can key the same COPY without fetching a
// layer. They travel with the cache records (cache/remote) and are as
// trusted as those: a claim of the same cache. Written unsynced
// (writeUnsynced: a lost fact is asked again). Files: root/remote/facts/
// <hex of the chain's top diffID>/<hex of the chain id>.json.

// Fact is one answer about a rootfs: a stat (Missing, or the entry's mode,
// owner and mtime), a resolved path, or a small file's content; Walk is
// how the chain resolved the path (snapshot.Walk), so that a host with a
// new layer on top of the chain can tell whether the answer still holds.
type Fact struct {
	Missing  bool     `json:"missing,omitempty"`
	Mode     uint32   `json:"mode,omitempty"` // fs.FileMode
	UID      int      `json:"uid,omitempty"`
	GID      int      `json:"gid,omitempty"`
	Size     int64    `json:"size,omitempty"`
	MTime    int64    `json:"mtime,omitempty"` // unix nanoseconds
	Resolved string   `json:"resolved,omitempty"`
	Data     []byte   `json:"data,omitempty"` // a small file's content (/etc/passwd for --chown)
	Walk     []string `json:"walk,omitempty"`
}

// ChainFacts are the facts known about the rootfs of one layer chain,
// by question ("stat /app", "resolve /app/").
type ChainFacts struct {
	DiffIDs []digest.Digest `json:"diffIDs"`
	Facts   map[string]Fact `json:"facts"`
}

// ChainID names a chain of layers by their diffIDs, in order.
func ChainID(diffIDs []digest.Digest) digest.Digest {
	var b strings.Builder
	for _, d := range diffIDs {
		b.WriteString(d.String() + "\n")
	}
	return digest.FromString(b.String())
}

func (s *Store) factsPath(diffIDs []digest.Digest) (string, error) {
	if len(diffIDs) == 0 {
		return "", fmt.Errorf("chain facts: no layers")
	}
	top := diffIDs[len(diffIDs)-1]
	if err := top.Validate(); err != nil {
		return "", fmt.Errorf("chain facts: %w", err)
	}
	return filepath.Join(s.root, "remote", "facts", top.Encoded(), ChainID(diffIDs).Encoded()+".json"), nil
}

// ChainFacts returns what is known about the chain's rootfs.
func (s *Store) ChainFacts(diffIDs []digest.Digest) (ChainFacts, bool) {
	p, err := s.factsPath(diffIDs)
	if err != nil {
		return ChainFacts{}, false
	}
	return readFacts(p, diffIDs)
}

func readFacts(p string, diffIDs []digest.Digest) (ChainFacts, bool) {
	b, err := os.ReadFile(p)
	if err != nil {
		return ChainFacts{}, false
	}
	var cf ChainFacts
	if json.Unmarshal(b, &cf) != nil || (diffIDs != nil && ChainID(cf.DiffIDs) != ChainID(diffIDs)) {
		return ChainFacts{}, false
	}
	return cf, true
}

// AddChainFacts merges cf into what the store knows about its chain
// (answers already known are kept: a rootfs does not change; one without
// a walk takes the walk). Nothing new, nothing written.
func (s *Store) AddChainFacts(cf ChainFacts) error {
	p, err := s.factsPath(cf.DiffIDs)
	if err != nil {
		return err
	}
	old, ok := readFacts(p, cf.DiffIDs)
	if !ok {
		old = ChainFacts{DiffIDs: cf.DiffIDs, Facts: map[string]Fact{}}
	}
	added := false
	for q, f := range cf.Facts {
		if was, known := old.Facts[q]; !known || len(was.Walk) == 0 && len(f.Walk) > 0 {
			old.Facts[q] = f
			added = true
		}
	}
	if !added {
		return nil
	}
	b, err := json.Marshal(old)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("record chain facts: %w", err)
	}
	return writeUnsynced(p, b)
}

// FactsOnTop lists the chains whose top layer is diffID, with their
// facts: what a cache export of that layer's record carries along.
func (s *Store) FactsOnTop(diffID digest.Digest) []ChainFacts {
	if diffID.Validate() != nil {
		return nil
	}
	dir := filepath.Join(s.root, "remote", "facts", diffID.Encoded())
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []ChainFacts
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if cf, ok := readFacts(filepath.Join(dir, e.Name()), nil); ok && len(cf.DiffIDs) > 0 && cf.DiffIDs[len(cf.DiffIDs)-1] == diffID {
			out = append(out, cf)
		}
	}
	return out
}

// RemoveFactsExcept deletes the facts of every chain whose top layer's
// diffID keep rejects, unless written at or after keepAfter (zero: no
// such check): the collector keeps those of the layers an image or a
// cache record still names. It reports how many chains went.
func (c *Collection) RemoveFactsExcept(keep func(diffID digest.Digest) bool, keepAfter time.Time) (int, error) {
	dir := filepath.Join(c.s.root, "remote", "facts")
	tops, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("list chain facts: %w", err)
	}
	n := 0
	for _, t := range tops {
		top := digest.NewDigestFromEncoded(digest.SHA256, t.Name())
		if top.Validate() != nil || keep(top) {
			continue
		}
		sub := filepath.Join(dir, t.Name())
		files, _ := os.ReadDir(sub)
		for _, f := range files {
			fi, err := f.Info()
			if err != nil || !keepAfter.IsZero() && !fi.ModTime().Before(keepAfter) {
				continue
			}
			if os.Remove(filepath.Join(sub, f.Name())) == nil && !strings.HasPrefix(f.Name(), ".") {
				n++
			}
		}
		os.Remove(sub) // only when empty
	}
	return n, nil
}
