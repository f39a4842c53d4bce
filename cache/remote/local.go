package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/archive"
	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/registry"
	"github.com/minibuild/minibuild/store"
)

// ExportLocal writes c into dir as an OCI layout (archive.Layout): the
// layer blobs (those already there are skipped), the config and the
// manifest, and an index.json whose only entry named LayoutRefName is the
// new manifest. Every file is written to a temp name and renamed, so a
// concurrent or interrupted export leaves the previous cache readable.
func ExportLocal(s *store.Store, c *Config, dir string) error {
	raw, config, err := c.artifact()
	if err != nil {
		return err
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return err
	}
	l := archive.LayoutAt(dir)
	for _, ld := range m.Layers {
		if err := l.PutBlob(ld.Digest, storeBlob(s, ld.Digest)); err != nil {
			return fmt.Errorf("export cache to %s: %w", dir, err)
		}
	}
	if err := l.PutBlob(m.Config.Digest, bytesOpener(config)); err != nil {
		return fmt.Errorf("export cache to %s: %w", dir, err)
	}
	if err := l.SetRef(LayoutRefName, raw, m.MediaType); err != nil {
		return fmt.Errorf("export cache to %s: %w", dir, err)
	}
	return nil
}

// ImportLocal reads the cache ExportLocal wrote to dir. Layers are copied
// into the store when a hit needs them, verified by the store's commit.
func ImportLocal(s *store.Store, dir string) (*Source, error) {
	l := archive.LayoutAt(dir)
	desc, err := l.Ref(LayoutRefName)
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", dir, err)
	}
	read := func(d v1.Descriptor) ([]byte, error) { return l.ReadBlob(d, maxConfigSize) }
	raw, err := read(desc)
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", dir, err)
	}
	c, err := configFromManifest(raw, desc.MediaType, read)
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", dir, err)
	}
	c.importFacts(s)
	return &Source{Name: dir, records: c.Records, mounts: c.CacheMounts, store: s, fetch: func(_ context.Context, d v1.Descriptor, want layer.Descriptor) error {
		f, err := l.Blob(d.Digest)
		if err != nil {
			return err
		}
		defer f.Close()
		return registry.PutLayer(s, f, want)
	}}, nil
}

// storeBlob opens blob h of the store.
func storeBlob(s *store.Store, h v1.Hash) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		d, err := digest.Parse(h.String())
		if err != nil {
			return nil, err
		}
		return s.OpenBlob(d)
	}
}

func bytesOpener(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}
