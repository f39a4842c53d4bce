package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/minibuild/minibuild/layer"
)

// RecordInfo is one record of the index as the collector sees it.
type RecordInfo struct {
	Key   digest.Digest
	Layer *layer.Descriptor // nil for a step that made no layer
	Size  int64             // of the record file
	// LastUsed is when the record was last written or read: the later of
	// its mtime and atime (atime moves on a read under relatime, at least
	// once a day).
	LastUsed time.Time
	// Broken records cannot be read (torn, foreign or another version):
	// a miss for every build, so always collectable.
	Broken bool
}

// HintInfo is one miss-explanation hint file.
type HintInfo struct {
	Name     string
	Size     int64
	LastUsed time.Time
}

// Records lists every record in the index.
func (x *Index) Records() ([]RecordInfo, error) {
	ents, err := os.ReadDir(filepath.Join(x.dir, "records"))
	if err != nil {
		return nil, fmt.Errorf("list cache records: %w", err)
	}
	out := make([]RecordInfo, 0, len(ents))
	for _, e := range ents {
		key := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if key.Validate() != nil {
			continue // a temp file of a write in flight, or foreign
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		ri := RecordInfo{Key: key, Size: fi.Size(), LastUsed: lastUsed(fi)}
		var r Record
		if err := readQuietly(x.recordPath(key), &r); err != nil || r.Version != recordVersion {
			ri.Broken = true
		} else {
			ri.Layer = r.Layer
		}
		out = append(out, ri)
	}
	return out, nil
}

// Hints lists the miss-explanation hints.
func (x *Index) Hints() ([]HintInfo, error) {
	ents, err := os.ReadDir(filepath.Join(x.dir, "hints"))
	if err != nil {
		return nil, fmt.Errorf("list cache hints: %w", err)
	}
	out := make([]HintInfo, 0, len(ents))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue // a write in flight (atomicfile's temp name)
		}
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			out = append(out, HintInfo{Name: e.Name(), Size: fi.Size(), LastUsed: lastUsed(fi)})
		}
	}
	return out, nil
}

// Remove deletes the records of keys; a missing record is not an error.
// Records go before the blobs they name (the collector's order), so a
// crash between the two leaves only unreferenced blobs.
func (x *Index) Remove(keys ...digest.Digest) error {
	var errs []error
	for _, k := range keys {
		if err := os.Remove(x.recordPath(k)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RemoveHints deletes hints by name; later misses at their place are then
// explained as "not built before".
func (x *Index) RemoveHints(names ...string) error {
	var errs []error
	for _, n := range names {
		if filepath.Base(n) != n || strings.HasPrefix(n, ".") {
			continue
		}
		if err := os.Remove(filepath.Join(x.dir, "hints", n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// readQuietly reads a record without moving its atime (O_NOATIME, for
// the file's owner or root), so that looking at records for collection
// does not make them all look just used.
func readQuietly(path string, v any) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
	if err != nil {
		return readJSON(path, v)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	if json.Unmarshal(b, v) != nil {
		return ErrMiss
	}
	return nil
}

// lastUsed is a record's mtime: Get touches it on every hit (atime is
// no clock here: noatime and relatime mounts).
func lastUsed(fi os.FileInfo) time.Time { return fi.ModTime() }
