package layer

import (
	"context"
	"fmt"
	"io"

	"github.com/minibuild/minibuild/internal/compression"
	"github.com/opencontainers/go-digest"
)

// Check verifies a layer blob as it streams by, so that an import can
// refuse a layer before anything points at it: the blob's digest and size
// against a manifest's descriptor, and the digest of its uncompressed
// content (gzip and zstd are undone; a plain tar is its own content)
// against a config's diff_id. Feed it the whole blob through Write, then
// Close tells whether it matched. A zero Digest, Size or DiffID in the
// descriptor is not checked (a docker-archive's uncompressed layer has no
// blob digest of its own, only a diff_id).
type Check struct {
	want    Descriptor
	blob    digest.Digester
	size    int64
	pw      *io.PipeWriter
	diffID  chan result
	started bool
}

type result struct {
	d   digest.Digest
	err error
}

// NewCheck starts checking a blob against want.
func NewCheck(want Descriptor) *Check {
	c := &Check{want: want, blob: digest.Canonical.Digester()}
	if want.DiffID != "" {
		pr, pw := io.Pipe()
		c.pw, c.diffID, c.started = pw, make(chan result, 1), true
		go func() {
			d, err := uncompressedDigest(pr)
			// Drain what the decompressor left (trailing bytes), so Write never blocks.
			_, _ = io.Copy(io.Discard, pr)
			pr.Close()
			c.diffID <- result{d, err}
		}()
	}
	return c
}

func uncompressedDigest(r io.Reader) (digest.Digest, error) {
	zr, err := compression.Decompress(context.Background(), r, compression.Layer)
	if err != nil {
		return "", err
	}
	defer zr.Close()
	dg := digest.Canonical.Digester()
	if _, err := io.Copy(dg.Hash(), zr); err != nil {
		return "", err
	}
	return dg.Digest(), nil
}

// Write feeds the next bytes of the blob.
func (c *Check) Write(p []byte) (int, error) {
	c.blob.Hash().Write(p)
	c.size += int64(len(p))
	if c.started {
		if _, err := c.pw.Write(p); err != nil {
			return 0, fmt.Errorf("layer %s: %w", c.name(), err)
		}
	}
	return len(p), nil
}

// Close ends the blob and reports the first mismatch: "layer X: size …",
// "layer X: content has digest …", "layer X: uncompressed content is …,
// the config's diff_id is …".
func (c *Check) Close() error {
	var diff result
	if c.started {
		c.pw.Close()
		diff = <-c.diffID
		c.started = false
	}
	switch {
	case c.want.Size > 0 && c.size != c.want.Size:
		return fmt.Errorf("layer %s: %d bytes, the manifest says %d", c.name(), c.size, c.want.Size)
	case c.want.Digest != "" && c.blob.Digest() != c.want.Digest:
		return fmt.Errorf("layer %s: content has digest %s", c.name(), c.blob.Digest())
	case diff.err != nil:
		return fmt.Errorf("layer %s: decompress: %w", c.name(), diff.err)
	case c.want.DiffID != "" && diff.d != c.want.DiffID:
		return fmt.Errorf("layer %s: uncompressed content is %s, the config's diff_id is %s", c.name(), diff.d, c.want.DiffID)
	}
	return nil
}

func (c *Check) name() digest.Digest {
	if c.want.Digest != "" {
		return c.want.Digest
	}
	return c.want.DiffID
}

// Verify reads r to its end through a Check of want.
func Verify(r io.Reader, want Descriptor) error {
	c := NewCheck(want)
	if _, err := io.Copy(c, r); err != nil {
		c.Close()
		return err
	}
	return c.Close()
}
