package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/internal/atomicfile"
	"github.com/minibuild/minibuild/store"
)

// ExportLocal writes c into dir as an OCI layout: the layer blobs (those
// already there are skipped), the config and the manifest, and an
// index.json whose only entry named LayoutRefName is the new manifest.
// Every file is written to a temp name and renamed, so a concurrent or
// interrupted export leaves the previous cache readable.
func ExportLocal(s *store.Store, c *Config, dir string) error {
	raw, config, err := c.artifact()
	if err != nil {
		return err
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return fmt.Errorf("export cache to %s: %w", dir, err)
	}
	if err := writeFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return fmt.Errorf("export cache to %s: %w", dir, err)
	}
	for _, l := range m.Layers {
		if err := copyBlob(s, dir, l.Digest); err != nil {
			return fmt.Errorf("export cache to %s: %w", dir, err)
		}
	}
	md := digest.FromBytes(raw)
	for _, b := range []struct {
		d    digest.Digest
		data []byte
	}{{digest.FromBytes(config), config}, {md, raw}} {
		if err := writeFile(blobPath(dir, b.d), b.data); err != nil {
			return fmt.Errorf("export cache to %s: %w", dir, err)
		}
	}
	idx, _ := readIndex(dir) // a missing or broken index is replaced
	if idx == nil {
		idx = &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	}
	var kept []v1.Descriptor
	for _, d := range idx.Manifests {
		if d.Annotations[ocispecRefName] != LayoutRefName {
			kept = append(kept, d)
		}
	}
	mh, _ := v1.NewHash(md.String())
	idx.Manifests = append(kept, v1.Descriptor{
		MediaType: types.OCIManifestSchema1, Size: int64(len(raw)), Digest: mh,
		Annotations: map[string]string{ocispecRefName: LayoutRefName},
	})
	b, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "index.json"), b); err != nil {
		return fmt.Errorf("export cache to %s: %w", dir, err)
	}
	return nil
}

const ocispecRefName = "org.opencontainers.image.ref.name"

// ImportLocal reads the cache ExportLocal wrote to dir. Layers are copied
// into the store when a hit needs them, verified by the store's commit.
func ImportLocal(s *store.Store, dir string) (*Source, error) {
	idx, err := readIndex(dir)
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", dir, err)
	}
	var desc *v1.Descriptor
	for i, d := range idx.Manifests {
		if d.Annotations[ocispecRefName] == LayoutRefName {
			desc = &idx.Manifests[i]
		}
	}
	if desc == nil {
		return nil, fmt.Errorf("cache %s: the layout has no %q manifest", dir, LayoutRefName)
	}
	read := func(d v1.Descriptor) ([]byte, error) {
		if d.Size > maxConfigSize {
			return nil, fmt.Errorf("blob %s: %d bytes is too big", d.Digest, d.Size)
		}
		dg, err := digest.Parse(d.Digest.String())
		if err != nil {
			return nil, err
		}
		b, err := os.ReadFile(blobPath(dir, dg))
		if err != nil {
			return nil, err
		}
		if digest.FromBytes(b) != dg {
			return nil, fmt.Errorf("blob %s is corrupt", dg)
		}
		return b, nil
	}
	raw, err := read(*desc)
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", dir, err)
	}
	c, err := configFromManifest(raw, desc.MediaType, read)
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", dir, err)
	}
	return &Source{Name: dir, records: c.Records, store: s, fetch: func(_ context.Context, d v1.Descriptor) error {
		dg, err := digest.Parse(d.Digest.String())
		if err != nil {
			return err
		}
		f, err := os.Open(blobPath(dir, dg))
		if err != nil {
			return err
		}
		defer f.Close()
		return s.PutBlob(f, dg)
	}}, nil
}

func readIndex(dir string) (*v1.IndexManifest, error) {
	f, err := os.Open(filepath.Join(dir, "index.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no OCI layout (index.json) there")
		}
		return nil, err
	}
	defer f.Close()
	idx, err := v1.ParseIndexManifest(f)
	if err != nil {
		return nil, fmt.Errorf("index.json: %w", err)
	}
	return idx, nil
}

func blobPath(dir string, d digest.Digest) string {
	return filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// copyBlob copies a store blob into the layout unless it is there.
func copyBlob(s *store.Store, dir string, h v1.Hash) error {
	d, err := digest.Parse(h.String())
	if err != nil {
		return err
	}
	dst := blobPath(dir, d)
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	rc, err := s.OpenBlob(d)
	if err != nil {
		return err
	}
	defer rc.Close()
	return atomicfile.Write(dst, rc, 0o644)
}

func writeFile(path string, data []byte) error {
	return atomicfile.WriteFile(path, data, 0o644)
}
