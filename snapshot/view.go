package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// View returns a directory holding the merged rootfs of a chain, for
// reading (COPY --from). It is built once per chain under
// root/snapshots/views/<chain id> out of hard links into the extracted
// layers, so it costs no copy of file data, and being immutable it keeps
// its inodes and ctimes: a stat cache over it stays valid across builds.
// Its files are the pooled inodes of the layers (pool.go), so callers
// must never write into it: COPY --from reads it, and BindView mounts it
// read-only or under a throwaway writable layer. Each path of the view is
// a distinct inode (the pool's key holds the path), so a copier reading
// it finds no hard links the layers did not have.
func (sn *Snapshotter) View(ctx context.Context, layers []Layer) (string, error) {
	ids, err := sn.ensure(ctx, layers)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, id := range ids {
		fmt.Fprintf(h, "%s\n", id)
	}
	viewsDir := filepath.Join(filepath.Dir(sn.layersDir), "views")
	dst := filepath.Join(viewsDir, hex.EncodeToString(h.Sum(nil))[:32])
	if _, err := os.Lstat(dst); err == nil {
		return dst, nil
	}
	if err := os.MkdirAll(viewsDir, 0o700); err != nil {
		return "", fmt.Errorf("create view: %w", err)
	}
	tmp, release, err := sn.tempDir("v")
	if err != nil {
		return "", err
	}
	defer release()
	root := filepath.Join(tmp, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		return "", fmt.Errorf("create view: %w", err)
	}
	if err := mergeLayers(ctx, sn.chainOf(ids), root); err != nil {
		return "", fmt.Errorf("create view: %w", err)
	}
	if err := os.Rename(root, dst); err != nil {
		if _, statErr := os.Lstat(dst); statErr == nil {
			return dst, nil // a concurrent build made the same view
		}
		return "", fmt.Errorf("create view: %w", err)
	}
	return dst, nil
}

// mergeLayers fills root with the union of the chain's layer dirs (top
// first), as overlayfs would show it. Files are hard-linked, dirs and
// symlinks recreated with their owners and modes; devices and fifos are
// left out.
func mergeLayers(ctx context.Context, c chain, root string) error {
	return c.walk(ctx, "", func(rel string, e entry) error {
		return placeEntry(e.path, filepath.Join(root, rel), e.fi)
	}, func(rel string, e entry) error {
		// Last: filling the dir moved its mtime.
		return setTimes(filepath.Join(root, rel), e.fi.ModTime())
	})
}

// placeEntry puts one layer entry into the view.
func placeEntry(src, dst string, fi fs.FileInfo) error {
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode().IsRegular():
		return os.Link(src, dst)
	case fi.IsDir():
		if err := os.Mkdir(dst, fi.Mode().Perm()); err != nil {
			return err
		}
		if err := os.Chmod(dst, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return err
		}
	case fi.Mode()&fs.ModeSymlink != 0:
		link, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(link, dst); err != nil {
			return err
		}
	default:
		return nil
	}
	if st != nil {
		return os.Lchown(dst, int(st.Uid), int(st.Gid))
	}
	return nil
}

// PruneViews removes the views not made within grace: they are rebuilt on
// demand, and a build reads a view only for the moments of one COPY
// --from, so the grace keeps a view in use from vanishing under it.
func (sn *Snapshotter) PruneViews(grace time.Duration) (int, error) {
	viewsDir := filepath.Join(filepath.Dir(sn.layersDir), "views")
	entries, err := os.ReadDir(viewsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < grace {
			continue
		}
		tmp, release, err := sn.tempDir("p")
		if err != nil {
			return removed, err
		}
		// Renamed first, so no build ever sees a half-removed view.
		if err := os.Rename(filepath.Join(viewsDir, e.Name()), filepath.Join(tmp, "view")); err == nil {
			removed++
		}
		if err := release(); err != nil {
			return removed, err
		}
	}
	return removed, nil
}
