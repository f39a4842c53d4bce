package store

import (
	"bytes"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/opencontainers/go-digest"
)

// WriteImage stores img: every layer blob that is not present yet, the
// config and the manifest (the exact bytes of img.RawManifest()), and
// records the image. Present layers are never read: only the manifest's
// descriptors are consulted for them. It returns the manifest digest.
func (s *Store) WriteImage(img v1.Image) (v1.Hash, error) {
	rawManifest, err := img.RawManifest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("write image: manifest: %w", err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(rawManifest))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("write image: parse manifest: %w", err)
	}
	var size int64
	for _, l := range m.Layers {
		size += l.Size
		d := toDigest(l.Digest)
		if s.refreshBlob(d) || s.refreshRemote(d) {
			continue // present, or remote: fetched when read
		}
		if err := s.writeLayer(img, l); err != nil {
			return v1.Hash{}, err
		}
	}

	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("write image: config: %w", err)
	}
	if err := s.PutBlob(bytes.NewReader(rawConfig), toDigest(m.Config.Digest)); err != nil {
		return v1.Hash{}, fmt.Errorf("write image config: %w", err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(rawConfig))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("write image: parse config: %w", err)
	}

	md := digest.FromBytes(rawManifest)
	if err := s.PutBlob(bytes.NewReader(rawManifest), md); err != nil {
		return v1.Hash{}, fmt.Errorf("write image manifest: %w", err)
	}
	rec := record{Config: toDigest(m.Config.Digest), Created: cfg.Created.Time.UTC(), Size: size}
	err = s.update(func(st *state) error {
		if err := s.checkBlobs(md); err != nil {
			return err
		}
		st.Images[md] = rec
		return nil
	})
	if err != nil {
		return v1.Hash{}, fmt.Errorf("write image %s: %w", md, err)
	}
	return toHash(md), nil
}

// CommitImage stores a built image whose layer blobs are already in the
// store, from its config and manifest bytes, and returns it as stored.
// A layer that went missing meanwhile is an ErrNotFound: nothing is
// recorded then.
func (s *Store) CommitImage(rawConfig, rawManifest []byte) (v1.Image, v1.Hash, error) {
	m, err := v1.ParseManifest(bytes.NewReader(rawManifest))
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("commit image: parse manifest: %w", err)
	}
	if err := s.PutBlob(bytes.NewReader(rawConfig), toDigest(m.Config.Digest)); err != nil {
		return nil, v1.Hash{}, fmt.Errorf("commit image config: %w", err)
	}
	img, err := partial.CompressedToImage(&blobImage{s: s, raw: rawManifest, m: m, mt: m.MediaType})
	if err != nil {
		return nil, v1.Hash{}, err
	}
	h, err := s.WriteImage(img)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	stored, err := s.imageByManifest(toDigest(h))
	return stored, h, err
}

// writeLayer copies one missing layer into the store, verifying its digest
// and size against the manifest descriptor.
func (s *Store) writeLayer(img v1.Image, desc v1.Descriptor) error {
	l, err := img.LayerByDigest(desc.Digest)
	if err != nil {
		return fmt.Errorf("write image: layer %s: %w", desc.Digest, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("write image: read layer %s: %w", desc.Digest, err)
	}
	defer rc.Close()
	bw, err := s.NewBlobWriter()
	if err != nil {
		return err
	}
	defer bw.Abort()
	if _, err := io.Copy(bw, rc); err != nil {
		return fmt.Errorf("write image: copy layer %s: %w", desc.Digest, err)
	}
	if bw.Size() != desc.Size {
		return fmt.Errorf("write image: layer %s: size %d, manifest says %d", desc.Digest, bw.Size(), desc.Size)
	}
	if err := bw.Commit(toDigest(desc.Digest)); err != nil {
		return fmt.Errorf("write image: layer: %w", err)
	}
	return nil
}
