package archive

import (
	"bytes"
	"fmt"
	"io"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/minibuild/minibuild/layer"
	"github.com/opencontainers/go-digest"
)

// verifyImage reads every blob of img once and checks it against what
// names it, so that a load refuses a tampered archive before a tag moves:
// the config against the manifest's digest, the number of layers against
// the config's diff_ids, and each layer's content against its diff_id
// and — with blobs, for an OCI layout whose manifest names blobs by
// digest — its digest and size. names, when set, are the layers' file
// names in the archive (docker's manifest.json), for messages.
func verifyImage(img v1.Image, blobs bool, names []string) error {
	m, err := img.Manifest()
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if blobs {
		if got := digest.FromBytes(raw); got.String() != m.Config.Digest.String() {
			return fmt.Errorf("config %s: content has digest %s", m.Config.Digest, got)
		}
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	pairs, err := layer.Pairs(m, cf)
	if err != nil {
		return err
	}
	for i, p := range pairs {
		desc := p.Desc
		want := layer.Descriptor{DiffID: digest.Digest(p.DiffID.String())}
		if blobs {
			want.Digest, want.Size = digest.Digest(desc.Digest.String()), desc.Size
		}
		if err := verifyLayer(img, desc.Digest, blobs, want); err != nil {
			if i < len(names) {
				return fmt.Errorf("layer %d (%s): %w", i+1, names[i], err)
			}
			return fmt.Errorf("layer %d: %w", i+1, err)
		}
	}
	return nil
}

// verifyLayer reads one layer: the blob as stored (blobs), else its
// uncompressed form (a docker-archive layer is a tar, or compressed).
func verifyLayer(img v1.Image, h v1.Hash, blobs bool, want layer.Descriptor) error {
	l, err := img.LayerByDigest(h)
	if err != nil {
		return err
	}
	var rc io.ReadCloser
	if blobs {
		rc, err = l.Compressed()
	} else {
		rc, err = l.Uncompressed()
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	return layer.Verify(rc, want)
}

// configName checks a docker-archive config file name that is a digest
// ("<hex>.json", "sha256:<hex>", "blobs/sha256/<hex>") against the config's content.
func configName(file string, raw []byte) error {
	hex := strings.TrimPrefix(strings.TrimSuffix(path.Base(file), ".json"), "sha256:")
	if len(hex) != 64 || strings.Trim(hex, "0123456789abcdef") != "" {
		return nil
	}
	if got := digest.FromBytes(raw); got.Encoded() != hex {
		return fmt.Errorf("config %s: content has digest %s", file, got)
	}
	return nil
}

// verifyDocker verifies an image of a docker-archive, d its manifest.json
// entry: the config file's name when it is a digest, each layer file's
// content against the config's diff_ids.
func verifyDocker(img v1.Image, d tarball.Descriptor) error {
	raw, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := configName(d.Config, raw); err != nil {
		return err
	}
	return verifyImage(img, false, d.Layers)
}
