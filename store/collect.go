package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
)

// Collection is the store's side of one garbage collection (package gc
// decides; the store only lists and removes). It exists only inside
// Collect, under the store lock: no image is recorded, no tag moved and
// no lease taken or extended meanwhile, so what it lists stays true until
// fn returns. Removal goes referrers first — image records, then blobs —
// so a crash at any point leaves only unreferenced blobs, which the next
// collection finds again.
type Collection struct {
	s      *Store
	st     *state
	leases []LeaseInfo
}

// ImageRecord is one recorded image with what it names.
type ImageRecord struct {
	Digest  digest.Digest // manifest
	Config  digest.Digest // the image id
	Created time.Time
	Tags    []string // normalized refs, sorted; empty = dangling
	// Blobs are the manifest, the config and the layers, with their sizes;
	// DiffIDs are the layers' diffIDs from the config, in layer order.
	Blobs   []BlobRef
	Layers  []BlobRef
	DiffIDs []digest.Digest
}

// BlobRef is a blob an image names.
type BlobRef struct {
	Digest digest.Digest
	Size   int64
}

// BlobInfo is a blob file as found on disk. A blob stored as its parts
// (parts.go) names the blobs that hold them, which it keeps alive; its Size
// is its parts list's, as the segments' bytes count in their own blobs.
type BlobInfo struct {
	Digest  digest.Digest
	Size    int64
	ModTime time.Time
	Remote  bool // a remote record (remote.go): no bytes here, Size 0
	Parts   []digest.Digest
}

// Collect runs fn under the store lock with the current images and the
// live leases (dead leases are removed first).
func (s *Store) Collect(fn func(c *Collection) error) error {
	return s.locked(func(st *state) error {
		leases, err := s.liveLeases()
		if err != nil {
			return err
		}
		return fn(&Collection{s: s, st: st, leases: leases})
	})
}

// Leases are the live leases.
func (c *Collection) Leases() []LeaseInfo { return c.leases }

// Images lists every recorded image with the blobs it names, newest
// first. An image whose manifest cannot be read is listed with only its
// manifest digest, so it can still be removed.
func (c *Collection) Images() []ImageRecord {
	tags := map[digest.Digest][]string{}
	for ref, d := range c.st.Tags {
		tags[d] = append(tags[d], ref)
	}
	out := make([]ImageRecord, 0, len(c.st.Images))
	for md, r := range c.st.Images {
		t := tags[md]
		sort.Strings(t)
		ir := ImageRecord{Digest: md, Config: r.Config, Created: r.Created, Tags: t}
		c.s.describe(&ir)
		out = append(out, ir)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].Digest < out[j].Digest
	})
	return out
}

// describe fills in the blobs and diffIDs an image record names.
func (s *Store) describe(ir *ImageRecord) {
	raw, err := s.readBlob(ir.Digest)
	if err != nil {
		return
	}
	ir.Blobs = append(ir.Blobs, BlobRef{ir.Digest, int64(len(raw))})
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return
	}
	ir.Blobs = append(ir.Blobs, BlobRef{toDigest(m.Config.Digest), m.Config.Size})
	for _, l := range m.Layers {
		ir.Layers = append(ir.Layers, BlobRef{toDigest(l.Digest), l.Size})
	}
	ir.Blobs = append(ir.Blobs, ir.Layers...)
	if rawCfg, err := s.readBlob(toDigest(m.Config.Digest)); err == nil {
		if cfg, err := v1.ParseConfigFile(bytes.NewReader(rawCfg)); err == nil {
			for _, d := range cfg.RootFS.DiffIDs {
				ir.DiffIDs = append(ir.DiffIDs, toDigest(d))
			}
		}
	}
}

// Blobs lists the blob files with their sizes and mtimes, and the remote
// records whose bytes are not here (Remote, Size 0).
func (c *Collection) Blobs() ([]BlobInfo, error) {
	dir := filepath.Join(c.s.root, "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	out := make([]BlobInfo, 0, len(ents))
	for _, e := range ents {
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if d.Validate() != nil {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, BlobInfo{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()})
	}
	out, err = c.s.withParts(out)
	if err != nil {
		return nil, err
	}
	return c.s.withRemote(out), nil
}

// Resolve finds the image ref names, as Store.Resolve does; isTag tells
// whether ref named it by a tag.
func (c *Collection) Resolve(ref string) (md digest.Digest, isTag bool, err error) {
	md, err = c.st.resolve(ref)
	if err != nil {
		return "", false, fmt.Errorf("image %q: %w", ref, err)
	}
	if norm, err := NormalizeTag(ref); err == nil && c.st.Tags[norm] == md && !looksLikeHex(ref) {
		return md, true, nil
	}
	return md, false, nil
}

// looksLikeHex tells an id prefix ("5cec6eec7938") from a name, as
// resolve does: a full hex id or a sha256: digest always means an id.
func looksLikeHex(ref string) bool {
	return strings.HasPrefix(ref, "sha256:") || (len(ref) == 64 && isHex(ref))
}

// Untag removes tags (normalized refs); their images stay recorded.
func (c *Collection) Untag(refs ...string) error {
	for _, r := range refs {
		delete(c.st.Tags, r)
	}
	return c.s.save(c.st)
}

// RemoveImages forgets the image records (and any tag naming them) and
// saves images.json at once: after it returns, no image names their blobs.
func (c *Collection) RemoveImages(mds ...digest.Digest) error {
	if len(mds) == 0 {
		return nil
	}
	gone := map[digest.Digest]bool{}
	for _, md := range mds {
		gone[md] = true
		delete(c.st.Images, md)
	}
	for ref, d := range c.st.Tags {
		if gone[d] {
			delete(c.st.Tags, ref)
		}
	}
	return c.s.save(c.st)
}

// RemoveBlob deletes blob d unless its mtime shows it was written or
// refreshed at or after keepAfter (zero: no such check) — the last look
// before removal, for a write a lease covers. It reports whether the blob
// was removed; an absent blob is not an error. A remote record (Blobs'
// Remote) is removed the same way.
func (c *Collection) RemoveBlob(d digest.Digest, keepAfter time.Time) (bool, error) {
	p, err := c.s.blobPath(d)
	if err != nil {
		return false, err
	}
	fi, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		fi, err = os.Stat(c.s.partsPath(d))
	}
	if errors.Is(err, os.ErrNotExist) {
		return c.s.removeRemoteIfOld(d, keepAfter)
	}
	if err != nil {
		return false, fmt.Errorf("remove blob %s: %w", d, err)
	}
	if !keepAfter.IsZero() && !fi.ModTime().Before(keepAfter) {
		return false, nil
	}
	if err := c.s.removeBlob(d); err != nil {
		return false, err
	}
	c.s.removeRemote(d) // a stale record of bytes that had arrived
	c.s.removeBlobSources(d)
	return true, nil
}
