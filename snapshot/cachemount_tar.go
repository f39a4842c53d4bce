package snapshot

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/minibuild/minibuild/layer"
)

// A cache mount's content travels between hosts (--cache-to
// …,cache-mounts=true, --cache-from) as a layer tarball of its data dir:
// WriteCacheMount writes it, RestoreCacheMount makes a missing instance
// from it. The tarball is never part of an image, and its content never
// enters a key.

// HasCacheMount tells whether the cache mount id has an instance on this
// root (its first one: a private user makes the others after it).
func (sn *Snapshotter) HasCacheMount(id string) bool {
	_, err := os.Lstat(filepath.Join(sn.cacheDir, cacheHash(id), "lock"))
	return err == nil
}

// WriteCacheMount writes the content of the cache mount id's first
// instance into w, in lexical walk order with hard links kept, as Diff
// writes a new dir (sockets are left out). It holds the instance shared
// meanwhile, so a sharing=locked user finishes first. It reports false,
// writing nothing, when the id has no instance.
func (sn *Snapshotter) WriteCacheMount(ctx context.Context, id string, w *layer.Writer) (bool, error) {
	if !sn.HasCacheMount(id) {
		return false, nil
	}
	cm, err := sn.CacheMount(ctx, id, CacheMountOptions{Sharing: SharingShared})
	if err != nil {
		return false, err
	}
	defer cm.Release()
	d := &differ{s: &Snapshot{}, w: w, upper: cm.Dir, links: map[inodeKey]string{}}
	if err := d.walk("", false); err != nil {
		return false, fmt.Errorf("cache mount %s: %w", id, err)
	}
	return true, nil
}

// RestoreCacheMount makes the cache mount id's first instance from r, a
// (possibly compressed) tar as WriteCacheMount writes, when the id has
// none; it reports false, reading nothing, when one exists (the local copy
// wins). opts apply to the data dir as when CacheMount creates it. Every
// path and link resolves inside the data dir (Extract's checks); only
// files, dirs and links are accepted, and no whiteout names. The instance
// appears whole or not at all.
func (sn *Snapshotter) RestoreCacheMount(ctx context.Context, id string, opts CacheMountOptions, r io.Reader) (bool, error) {
	if id == "" {
		return false, errors.New("cache mount: empty id")
	}
	if sn.HasCacheMount(id) {
		return false, nil
	}
	_, made, err := sn.makeCacheInstance(cacheHash(id), id, opts, func(data string) error {
		zr, err := Decompress(r)
		if err != nil {
			return err
		}
		defer zr.Close()
		return (&extractor{check: cacheMountEntry}).run(ctx, tar.NewReader(zr), data)
	})
	return made, err
}

// cacheMountEntry refuses what a cache mount's tarball cannot hold.
func cacheMountEntry(hdr *tar.Header) error {
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeXHeader, tar.TypeXGlobalHeader:
	default:
		return fmt.Errorf("a cache mount holds only files, directories and links (type %q)", hdr.Typeflag)
	}
	if strings.HasPrefix(path.Base(hdr.Name), whiteoutPrefix) {
		return errors.New("a whiteout name in a cache mount")
	}
	return nil
}
