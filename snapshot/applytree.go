package snapshot

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Applying layers to a plain tree (-o type=local): whiteouts and opaque
// markers remove what lower layers made, instead of being kept in
// overlay's form as in a layer dir.

// ExtractTree unpacks a (possibly compressed, flattened) image filesystem
// into the dir root on the host, for -o type=local, as Extract does but
// without device nodes: they are left out and their paths returned, so
// that the caller can say so. A char or block node a layer carries is
// inert inside RUN (the rootfs is mounted nodev), but a node written into
// a host directory would open the host's device for whoever can reach it.
// Left out rather than made empty regular files: a file would claim a
// type the image does not have, and a copy of the tree into a real rootfs
// would carry the lie on.
func ExtractTree(ctx context.Context, r io.Reader, root string) (devices []string, err error) {
	return ExtractLayers(ctx, []func() (io.ReadCloser, error){func() (io.ReadCloser, error) { return io.NopCloser(r), nil }}, root)
}

// ExtractLayers applies an image's layers (each opened by its func, bottom
// first; compressed or not) to the dir root on the host, as ExtractTree
// does for one tar: whiteouts remove what lower layers made and opaque
// markers what they put in the dir, so the tree is the rootfs RUN sees,
// duplicates and file/directory replacements decided by layer.Replaces in
// the same order as in a layer dir (a flattened tar, as go-containerregistry's
// mutate.Extract makes, keeps the first of two entries instead).
func ExtractLayers(ctx context.Context, layers []func() (io.ReadCloser, error), root string) (devices []string, err error) {
	for i, open := range layers {
		if err := extractTreeLayer(ctx, open, root, &devices); err != nil {
			return devices, fmt.Errorf("layer %d: %w", i+1, err)
		}
	}
	return devices, nil
}

func extractTreeLayer(ctx context.Context, open func() (io.ReadCloser, error), root string, devices *[]string) error {
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	zr, err := Decompress(rc)
	if err != nil {
		return err
	}
	defer zr.Close()
	x := &extractor{devices: devices, apply: true, made: map[string]bool{}}
	return x.run(ctx, tar.NewReader(zr), root)
}

// mark records, when applying, that this tar made parent/base and every
// dir above it, so that an opaque marker keeps them.
func (x *extractor) mark(root, parent, base string) {
	if !x.apply {
		return
	}
	for p := filepath.Join(parent, base); len(p) > len(root) && !x.made[p]; p = filepath.Dir(p) {
		x.made[p] = true
	}
}

// applyWhiteout applies a whiteout to a tree: .wh.NAME removes NAME, the
// opaque marker removes what the dir held that this tar did not make.
func (x *extractor) applyWhiteout(root, parent, base string) error {
	switch {
	case base == whiteoutOpaque:
		x.mark(root, filepath.Dir(parent), filepath.Base(parent))
		ents, err := os.ReadDir(parent)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if p := filepath.Join(parent, e.Name()); !x.made[p] {
				if err := removeAllForce(p); err != nil {
					return err
				}
			}
		}
		return nil
	case strings.HasPrefix(base, whiteoutMeta):
		return nil
	}
	name := strings.TrimPrefix(base, whiteoutPrefix)
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("invalid whiteout name")
	}
	return removeAllForce(filepath.Join(parent, name))
}
