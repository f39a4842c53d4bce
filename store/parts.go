package store

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/internal/atomicfile"
	"github.com/minibuild/minibuild/layer"
)

// A blob stored as its parts: when a new layer is mostly members that
// already sit in stored blobs, the store keeps only its new members (a
// "pack" blob) and a parts list, parts/sha256/<hex>: the segments (blob,
// offset, length) whose concatenation is the blob. OpenBlob assembles it
// and checks the digest as it streams; HasBlob counts it as present; the
// collector keeps a parts list's segment blobs while the list is kept.
// Segments always name whole blob files (a pack or a whole layer), never
// another parts list.

// mostlyPooled is the share of a layer's bytes that must come from stored
// blobs for it to be kept as parts: below it, a whole copy costs little
// and does not keep older blobs alive for a few members.
const mostlyPooled = 0.5

// Segment is one range of a blob file.
type Segment struct {
	Blob   digest.Digest `json:"blob"`
	Offset int64         `json:"offset"`
	Length int64         `json:"length"`
}

// partsList is the file parts/sha256/<hex>.
type partsList struct {
	Size     int64     `json:"size"`
	Segments []Segment `json:"segments"`
}

// LayerWriter stores a layer written by layer.Writer (a layer.Sink and a
// layer.Pool): members the pool supplied are kept by reference, new ones
// go to a pack; Commit stores the layer whole or as its parts. It ends in
// exactly one Commit or Abort, like BlobWriter.
type LayerWriter struct {
	s       *Store
	pack    *BlobWriter
	pool    *poolReader
	h       hash.Hash
	size    int64
	pooled  int64
	members []indexEntry // in layer order; seg.Blob "" is the pack
}

// NewLayerWriter starts a layer write whose pool is the members of the
// recently written layers.
func (s *Store) NewLayerWriter() (*LayerWriter, error) {
	pack, err := s.NewBlobWriter()
	if err != nil {
		return nil, err
	}
	return &LayerWriter{s: s, pack: pack, pool: s.members.reader(s), h: sha256.New()}, nil
}

// Digest is the sha256 of the blob written so far (layer.DigestSink): the
// store hashes what it keeps, and the layer's writer takes its digest
// from here instead of hashing the same bytes again.
func (lw *LayerWriter) Digest() digest.Digest { return digest.NewDigest(digest.SHA256, lw.h) }

// Pool is where the layer's writer finds stored members.
func (lw *LayerWriter) Pool() layer.Pool { return lw.pool }

// Write takes bytes that are not members (a writer that is no Sink).
func (lw *LayerWriter) Write(p []byte) (int, error) {
	return len(p), lw.WriteMember(layer.Key{}, nil, p)
}

// WriteMember implements layer.Sink.
func (lw *LayerWriter) WriteMember(k layer.Key, from *layer.Loc, b []byte) error {
	lw.h.Write(b)
	n := int64(len(b))
	seg := Segment{Offset: lw.pack.Size(), Length: n}
	if from != nil {
		seg = Segment{Blob: from.Blob, Offset: from.Offset, Length: from.Length}
		lw.pooled += n
	} else if _, err := lw.pack.Write(b); err != nil {
		return err
	}
	lw.members = append(lw.members, indexEntry{key: k, seg: seg, at: lw.size})
	lw.size += n
	return nil
}

// segments are the members' ranges, adjacent ones joined.
func (lw *LayerWriter) segments() []Segment {
	var out []Segment
	for _, m := range lw.members {
		if last := len(out) - 1; last >= 0 && out[last].Blob == m.seg.Blob && out[last].Offset+out[last].Length == m.seg.Offset {
			out[last].Length += m.seg.Length
			continue
		}
		out = append(out, m.seg)
	}
	return out
}

// referable tells, per blob the pool supplied members from, whether the
// layer uses at least half of it: only such a blob is worth keeping alive
// by reference; the members of the others are copied. It returns the
// bytes the layer would keep by reference.
func (lw *LayerWriter) referable() (map[digest.Digest]bool, int64) {
	used := map[digest.Digest]int64{}
	for _, m := range lw.members {
		if m.seg.Blob != "" {
			used[m.seg.Blob] += m.seg.Length
		}
	}
	ok := map[digest.Digest]bool{}
	var n int64
	for d, u := range used {
		if size, err := lw.pool.size(d); err == nil && 2*u >= size {
			ok[d] = true
			n += u
		}
	}
	return ok, n
}

// Commit stores the layer under desc.Digest after checking it against
// what was written: as the pack itself when nothing was pooled; as a pack
// and a parts list when at least half its bytes are in blobs it uses at
// least half of (a pack then also takes the members of the other blobs);
// else as a whole copy. The layer's member index is written last (a
// cache: losing it loses no data).
func (lw *LayerWriter) Commit(desc layer.Descriptor) error {
	defer lw.Abort()
	got := digest.NewDigest(digest.SHA256, lw.h)
	if got != desc.Digest || lw.size != desc.Size {
		return fmt.Errorf("commit layer %s: wrote %s (%d bytes, descriptor says %d)", desc.Digest, got, lw.size, desc.Size)
	}
	var err error
	whole := desc.Digest
	ref, n := lw.referable()
	switch {
	case lw.pooled == 0:
		err = lw.pack.Commit(desc.Digest)
	case float64(n) >= mostlyPooled*float64(lw.size):
		whole, err = "", lw.commitParts(desc.Digest, ref)
	default:
		err = lw.commitCopy(desc.Digest)
	}
	if err != nil {
		return err
	}
	lw.s.writeIndex(desc.Digest, lw.members, whole)
	return nil
}

// commitParts stores the pack (if any member is in it) and the parts list:
// members from blobs not in ref are copied into the pack first.
func (lw *LayerWriter) commitParts(d digest.Digest, ref map[digest.Digest]bool) error {
	for i, m := range lw.members {
		if m.seg.Blob == "" || ref[m.seg.Blob] {
			continue
		}
		r, err := lw.pool.section(m.seg)
		if err == nil {
			lw.members[i].seg = Segment{Offset: lw.pack.Size(), Length: m.seg.Length}
			_, err = io.Copy(lw.pack, r)
		}
		if err != nil {
			return fmt.Errorf("commit layer %s: %w", d, err)
		}
	}
	pd := lw.pack.Digest()
	if lw.pack.Size() > 0 {
		if err := lw.pack.Commit(pd); err != nil {
			return err
		}
	}
	for i := range lw.members {
		if lw.members[i].seg.Blob == "" {
			lw.members[i].seg.Blob = pd
		}
	}
	pl := partsList{Size: lw.size, Segments: lw.segments()}
	for _, sg := range pl.Segments {
		// Present now, and renewed: this process's lease covers them until
		// the record that names the layer is written.
		if !lw.s.refreshBlob(sg.Blob) {
			return fmt.Errorf("commit layer %s: its part %s: %w", d, sg.Blob, ErrNotFound)
		}
	}
	b, err := json.Marshal(pl)
	if err != nil {
		return err
	}
	p := lw.s.partsPath(d)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("commit layer %s: %w", d, err)
	}
	if err := atomicfile.WriteFile(p, b, 0o444); err != nil {
		return fmt.Errorf("commit layer %s: parts list: %w", d, err)
	}
	return nil
}

// commitCopy stores the layer whole: the pack's bytes and the pooled
// segments, in order, verified by the blob writer's Commit.
func (lw *LayerWriter) commitCopy(d digest.Digest) error {
	bw, err := lw.s.NewBlobWriter()
	if err != nil {
		return err
	}
	defer bw.Abort()
	for _, sg := range lw.segments() {
		var r io.Reader
		if sg.Blob == "" {
			r = io.NewSectionReader(lw.pack.f, sg.Offset, sg.Length)
		} else if r, err = lw.pool.section(sg); err != nil {
			return fmt.Errorf("commit layer %s: %w", d, err)
		}
		if _, err := io.Copy(bw, r); err != nil {
			return fmt.Errorf("commit layer %s: %w", d, err)
		}
	}
	return bw.Commit(d)
}

// Abort discards what was written; it is safe after Commit.
func (lw *LayerWriter) Abort() {
	lw.pack.Abort()
	lw.pool.close()
}

// sweepPartsTemps removes what killed writers of parts lists, member
// indexes and remote records left (atomicfile's temp files, flock-held by
// live writers).
func (s *Store) sweepPartsTemps() {
	atomicfile.SweepDir(filepath.Join(s.root, "parts", "sha256"))
	atomicfile.SweepDir(filepath.Join(s.root, "members"))
	atomicfile.SweepDir(filepath.Join(s.root, "remote", "sha256"))
}

func (s *Store) partsPath(d digest.Digest) string {
	return filepath.Join(s.root, "parts", "sha256", d.Encoded())
}

// readParts reads the parts list of blob d; a missing one is ErrNotFound.
func (s *Store) readParts(d digest.Digest) (partsList, error) {
	var pl partsList
	b, err := os.ReadFile(s.partsPath(d))
	if errors.Is(err, os.ErrNotExist) {
		return pl, fmt.Errorf("blob %s: %w", d, ErrNotFound)
	}
	if err == nil {
		err = json.Unmarshal(b, &pl)
	}
	var n int64
	for _, sg := range pl.Segments {
		if err == nil {
			err = sg.Blob.Validate()
		}
		n += sg.Length
	}
	if err == nil && n != pl.Size {
		err = fmt.Errorf("segments hold %d bytes, the list says %d", n, pl.Size)
	}
	if err != nil {
		return pl, fmt.Errorf("blob %s: parts list: %w", d, err)
	}
	return pl, nil
}

// openParts assembles blob d from its parts list (OpenBlob's fallback).
func (s *Store) openParts(d digest.Digest) (io.ReadCloser, error) {
	pl, err := s.readParts(d)
	if err != nil {
		return nil, err
	}
	return &assembly{s: s, d: d, pl: pl, h: sha256.New()}, nil
}

// assembly reads a parts-backed blob segment by segment and fails at EOF
// if the bytes are not the blob's digest: whatever leaves the store from
// it stays verified.
type assembly struct {
	s    *Store
	d    digest.Digest
	pl   partsList
	h    hash.Hash
	n    int64
	cur  io.Reader
	f    *os.File
	next int
}

func (a *assembly) Read(p []byte) (int, error) {
	for {
		if a.cur != nil {
			n, err := a.cur.Read(p)
			a.h.Write(p[:n])
			a.n += int64(n)
			if err == io.EOF {
				a.cur, err = nil, nil
				if n == 0 {
					continue
				}
			}
			return n, err
		}
		if a.next == len(a.pl.Segments) {
			return 0, a.verify()
		}
		if err := a.open(a.pl.Segments[a.next]); err != nil {
			return 0, err
		}
		a.next++
	}
}

func (a *assembly) open(sg Segment) error {
	if a.f != nil {
		a.f.Close()
		a.f = nil
	}
	p, err := a.s.blobPath(sg.Blob)
	if err == nil {
		a.f, err = os.Open(p)
	}
	if err != nil {
		return fmt.Errorf("blob %s: its part %s: %w", a.d, sg.Blob, err)
	}
	a.cur = io.NewSectionReader(a.f, sg.Offset, sg.Length)
	return nil
}

func (a *assembly) verify() error {
	if got := digest.NewDigest(digest.SHA256, a.h); got != a.d || a.n != a.pl.Size {
		return fmt.Errorf("blob %s assembled from its parts is %s (%d bytes): the parts list is corrupt", a.d, got, a.n)
	}
	return io.EOF
}

func (a *assembly) Close() error {
	if a.f != nil {
		return a.f.Close()
	}
	return nil
}

// hasParts reports whether blob d is stored as parts.
func (s *Store) hasParts(d digest.Digest) bool {
	_, err := os.Stat(s.partsPath(d))
	return err == nil
}

// refreshParts renews the mtime of d's parts list, as refreshBlob does for
// a blob file (its segments are held by the list itself).
func (s *Store) refreshParts(d digest.Digest) bool {
	now := time.Now()
	return os.Chtimes(s.partsPath(d), now, now) == nil
}

// removeParts deletes d's parts list and member index; absent is fine.
func (s *Store) removeParts(d digest.Digest) error {
	os.Remove(s.indexPath(d))
	if err := os.Remove(s.partsPath(d)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove blob %s: %w", d, err)
	}
	return nil
}

// listParts lists the parts-backed blobs for a collection: the list's
// own size (the segments count in their blobs) and the segment blobs.
func (s *Store) listParts() ([]BlobInfo, error) {
	ents, err := os.ReadDir(filepath.Join(s.root, "parts", "sha256"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list parts: %w", err)
	}
	var out []BlobInfo
	for _, e := range ents {
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		fi, err := e.Info()
		if d.Validate() != nil || err != nil {
			continue
		}
		bi := BlobInfo{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()}
		if pl, err := s.readParts(d); err == nil {
			seen := map[digest.Digest]bool{}
			for _, sg := range pl.Segments {
				if !seen[sg.Blob] {
					seen[sg.Blob] = true
					bi.Parts = append(bi.Parts, sg.Blob)
				}
			}
		}
		out = append(out, bi)
	}
	return out, nil
}

// withParts adds the parts-backed blobs to a listing of blob files, in
// digest order, and counts each layer's member index in its size (it goes
// with the blob). A digest with both (a whole copy written later) counts
// both files and keeps the parts list's segments.
func (s *Store) withParts(files []BlobInfo) ([]BlobInfo, error) {
	parts, err := s.listParts()
	if err != nil {
		return nil, err
	}
	at := map[digest.Digest]int{}
	for i, b := range files {
		at[b.Digest] = i
	}
	for _, p := range parts {
		if i, ok := at[p.Digest]; ok {
			files[i].Size += p.Size
			files[i].Parts = p.Parts
			continue
		}
		at[p.Digest] = len(files)
		files = append(files, p)
	}
	s.countIndexes(files, at)
	sort.Slice(files, func(i, j int) bool { return files[i].Digest < files[j].Digest })
	return files, nil
}

// countIndexes adds each member index's size to its layer's entry.
func (s *Store) countIndexes(files []BlobInfo, at map[digest.Digest]int) {
	ents, _ := os.ReadDir(filepath.Join(s.root, "members"))
	for _, e := range ents {
		i, ok := at[digest.NewDigestFromEncoded(digest.SHA256, e.Name())]
		if fi, err := e.Info(); ok && err == nil {
			files[i].Size += fi.Size()
		}
	}
}
