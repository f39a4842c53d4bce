package store

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// ImageInfo describes one stored image for listings.
type ImageInfo struct {
	Tags    []string // display form ("myapp:1.1"), sorted; empty for a dangling image
	Digest  v1.Hash  // manifest digest
	ID      v1.Hash  // config digest
	Created time.Time
	Size    int64 // sum of compressed layer sizes
}

// Image resolves ref to a stored image backed by blob files. ref may be a
// tag ("myapp:1.1", "busybox"), a digest ref ("busybox@sha256:…"), a
// manifest digest or image id ("sha256:<64 hex>"), a bare 64-hex id, or a
// unique id prefix of at least 4 hex digits. Tags win over id prefixes,
// as in docker.
func (s *Store) Image(ref string) (v1.Image, error) {
	md, err := s.Resolve(ref)
	if err != nil {
		return nil, err
	}
	return s.imageByManifest(toDigest(md))
}

// Resolve is Image without opening: it returns the manifest digest.
func (s *Store) Resolve(ref string) (v1.Hash, error) {
	st, err := s.load()
	if err != nil {
		return v1.Hash{}, err
	}
	md, err := st.resolve(ref)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image %q: %w", ref, err)
	}
	return toHash(md), nil
}

func (st *state) resolve(ref string) (digest.Digest, error) {
	ref = strings.TrimSpace(ref)
	// A full digest: a manifest digest first, then an image id.
	if h, ok := strings.CutPrefix(ref, "sha256:"); ok {
		if len(h) != 64 || !isHex(h) {
			return "", fmt.Errorf("invalid digest")
		}
		return st.byFullDigest(digest.Digest(ref))
	}
	if len(ref) == 64 && isHex(ref) {
		return st.byFullDigest(digest.Digest("sha256:" + ref))
	}
	if norm, err := NormalizeRef(ref); err == nil {
		if i := strings.LastIndex(norm, "@"); i >= 0 {
			d := digest.Digest(norm[i+1:])
			if _, ok := st.Images[d]; ok {
				return d, nil
			}
		} else if d, ok := st.Tags[norm]; ok {
			return d, nil
		}
	}
	if len(ref) >= 4 && isHex(ref) {
		return st.byIDPrefix(ref)
	}
	return "", ErrNotFound
}

func (st *state) byFullDigest(d digest.Digest) (digest.Digest, error) {
	if _, ok := st.Images[d]; ok {
		return d, nil
	}
	return st.byIDPrefix(d.Encoded())
}

// byIDPrefix finds the image whose id (config digest) starts with prefix.
// Several manifests may share one config; then a tagged one is preferred,
// else the newest, so "the image with this id" stays well defined.
func (st *state) byIDPrefix(prefix string) (digest.Digest, error) {
	var ids = map[digest.Digest][]digest.Digest{}
	for md, r := range st.Images {
		if strings.HasPrefix(r.Config.Encoded(), prefix) {
			ids[r.Config] = append(ids[r.Config], md)
		}
	}
	switch len(ids) {
	case 0:
		return "", ErrNotFound
	case 1:
	default:
		return "", fmt.Errorf("id prefix %s is ambiguous (%d images)", prefix, len(ids))
	}
	var mds []digest.Digest
	for _, v := range ids {
		mds = v
	}
	tagged := map[digest.Digest]bool{}
	for _, d := range st.Tags {
		tagged[d] = true
	}
	sort.Slice(mds, func(i, j int) bool {
		a, b := mds[i], mds[j]
		if tagged[a] != tagged[b] {
			return tagged[a]
		}
		return a < b
	})
	return mds[0], nil
}

// imageByManifest opens the stored image with manifest digest md.
func (s *Store) imageByManifest(md digest.Digest) (v1.Image, error) {
	raw, err := s.readBlob(md)
	if err != nil {
		return nil, fmt.Errorf("open image %s: %w", md, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("open image %s: parse manifest: %w", md, err)
	}
	mt := m.MediaType
	if mt == "" {
		mt = types.OCIManifestSchema1
	}
	if !mt.IsImage() {
		return nil, fmt.Errorf("open image %s: %s is not an image manifest", md, mt)
	}
	return partial.CompressedToImage(&blobImage{s: s, raw: raw, m: m, mt: mt})
}

// blobImage is the partial.CompressedImageCore of a stored image; the rest
// of v1.Image comes from partial.CompressedToImage.
type blobImage struct {
	s   *Store
	raw []byte
	m   *v1.Manifest
	mt  types.MediaType

	diffIDsOnce sync.Once
	diffIDs     []v1.Hash // from the config, read once
}

// configDiffIDs reads the diffIDs from the config so that a layer's DiffID
// never needs a decompression. Unreadable config = no diffIDs.
func (i *blobImage) configDiffIDs() []v1.Hash {
	i.diffIDsOnce.Do(func() {
		raw, err := i.RawConfigFile()
		if err != nil {
			return
		}
		if cfg, err := v1.ParseConfigFile(bytes.NewReader(raw)); err == nil {
			i.diffIDs = cfg.RootFS.DiffIDs
		}
	})
	return i.diffIDs
}

func (i *blobImage) MediaType() (types.MediaType, error) { return i.mt, nil }
func (i *blobImage) RawManifest() ([]byte, error)        { return i.raw, nil }

func (i *blobImage) RawConfigFile() ([]byte, error) {
	return i.s.readBlob(toDigest(i.m.Config.Digest))
}

func (i *blobImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == i.m.Config.Digest {
		return &blobLayer{s: i.s, desc: i.m.Config}, nil
	}
	for n, l := range i.m.Layers {
		if l.Digest != h {
			continue
		}
		bl := &blobLayer{s: i.s, desc: l}
		if ids := i.configDiffIDs(); n < len(ids) {
			bl.diffID = ids[n]
		}
		return bl, nil
	}
	return nil, fmt.Errorf("layer %s: not in image: %w", h, ErrNotFound)
}

// blobLayer is a layer (or config) blob in the store.
type blobLayer struct {
	s      *Store
	desc   v1.Descriptor
	diffID v1.Hash
}

func (l *blobLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *blobLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *blobLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *blobLayer) Descriptor() (*v1.Descriptor, error) { d := l.desc; return &d, nil }
func (l *blobLayer) Compressed() (io.ReadCloser, error)  { return l.s.OpenBlob(toDigest(l.desc.Digest)) }
func (l *blobLayer) Exists() (bool, error)               { return l.s.HasBlob(toDigest(l.desc.Digest)), nil }
func (l *blobLayer) DiffID() (v1.Hash, error) {
	if l.diffID == (v1.Hash{}) {
		return v1.Hash{}, fmt.Errorf("layer %s: no diffID in the config", l.desc.Digest)
	}
	return l.diffID, nil
}

// Tag points ref at the stored manifest. A manifest blob that is present but
// unrecorded (stored with PutBlob) is recorded first.
func (s *Store) Tag(ref string, manifest v1.Hash) error {
	norm, err := NormalizeTag(ref)
	if err != nil {
		return err
	}
	md := toDigest(manifest)
	st, err := s.load()
	if err != nil {
		return err
	}
	rec, known := st.Images[md]
	if !known {
		if rec, err = s.recordFromBlobs(md); err != nil {
			return fmt.Errorf("tag %s: %w", DisplayRef(norm), err)
		}
	}
	return s.update(func(st *state) error {
		if _, ok := st.Images[md]; !ok {
			// Not recorded (or collected since we looked): record it only
			// while every blob it names is there; GC holds this lock.
			if err := s.checkBlobs(md); err != nil {
				return fmt.Errorf("tag %s: %w", DisplayRef(norm), err)
			}
			st.Images[md] = rec
		}
		st.Tags[norm] = md
		return nil
	})
}

// checkBlobs reports the first blob of the image with manifest md (the
// manifest, its config, its layers) that is not in the store. Called
// under the store lock before a record is written, it keeps images.json
// from naming a blob a concurrent GC removed.
func (s *Store) checkBlobs(md digest.Digest) error {
	raw, err := s.readBlob(md)
	if err != nil {
		return err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("image %s: parse manifest: %w", md, err)
	}
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if !s.HasContent(toDigest(d.Digest)) {
			return fmt.Errorf("image %s: blob %s: %w", md, d.Digest, ErrNotFound)
		}
	}
	return nil
}

// recordFromBlobs builds an image record from the manifest and config blobs.
func (s *Store) recordFromBlobs(md digest.Digest) (record, error) {
	img, err := s.imageByManifest(md)
	if err != nil {
		return record{}, err
	}
	m, err := img.Manifest()
	if err != nil {
		return record{}, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return record{}, fmt.Errorf("image %s: config: %w", md, err)
	}
	rec := record{Config: toDigest(m.Config.Digest), Created: cfg.Created.Time.UTC()}
	for _, l := range m.Layers {
		rec.Size += l.Size
	}
	return rec, nil
}

// Untag removes a tag; the image itself stays until GC.
func (s *Store) Untag(ref string) error {
	norm, err := NormalizeTag(ref)
	if err != nil {
		return err
	}
	return s.update(func(st *state) error {
		if _, ok := st.Tags[norm]; !ok {
			return fmt.Errorf("untag %s: %w", DisplayRef(norm), ErrNotFound)
		}
		delete(st.Tags, norm)
		return nil
	})
}

// Images lists every recorded image, newest first (ties by digest).
func (s *Store) Images() ([]ImageInfo, error) {
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	tags := map[digest.Digest][]string{}
	for ref, d := range st.Tags {
		tags[d] = append(tags[d], DisplayRef(ref))
	}
	out := make([]ImageInfo, 0, len(st.Images))
	for md, r := range st.Images {
		t := tags[md]
		sort.Strings(t)
		out = append(out, ImageInfo{Tags: t, Digest: toHash(md), ID: toHash(r.Config), Created: r.Created, Size: r.Size})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].Digest.String() < out[j].Digest.String()
	})
	return out, nil
}

// GC removes every image record that no tag names and every blob that no
// remaining image references, except the blobs keep names (a caller's
// cache records). Blobs younger than grace are kept too, so a write in
// flight in another process (blobs committed, image not yet recorded) is
// not collected. It returns the removed blobs. It never runs on its own.
func (s *Store) GC(keep []digest.Digest, grace time.Duration) ([]digest.Digest, error) {
	var removed []digest.Digest
	err := s.update(func(st *state) error {
		live := map[digest.Digest]bool{}
		for _, d := range keep {
			live[d] = true
		}
		tagged := map[digest.Digest]bool{}
		for _, d := range st.Tags {
			tagged[d] = true
		}
		for md := range st.Images {
			if !tagged[md] {
				delete(st.Images, md)
			}
		}
		for md := range st.Images {
			raw, err := s.readBlob(md)
			if err != nil {
				return fmt.Errorf("gc: %w", err)
			}
			m, err := v1.ParseManifest(bytes.NewReader(raw))
			if err != nil {
				return fmt.Errorf("gc: manifest %s: %w", md, err)
			}
			live[md] = true
			live[toDigest(m.Config.Digest)] = true
			for _, l := range m.Layers {
				live[toDigest(l.Digest)] = true
			}
		}
		dir := filepath.Join(s.root, "blobs", "sha256")
		ents, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("gc: %w", err)
		}
		for _, e := range ents {
			d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
			if live[d] {
				continue
			}
			if fi, err := e.Info(); err != nil || time.Since(fi.ModTime()) < grace {
				continue
			}
			if err := s.removeBlob(d); err != nil {
				return fmt.Errorf("gc: %w", err)
			}
			s.removeBlobSources(d)
			removed = append(removed, d)
		}
		return nil
	})
	return removed, err
}

func toDigest(h v1.Hash) digest.Digest { return digest.Digest(h.String()) }

func toHash(d digest.Digest) v1.Hash {
	return v1.Hash{Algorithm: d.Algorithm().String(), Hex: d.Encoded()}
}
