package snapshot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/minibuild/minibuild/mount"
)

type dirMeta struct {
	mode     uint32
	uid, gid uint32
}

// addStub creates the mount point mp where the rootfs lacks it, with any
// missing parents, in the writable dir, and records them so that Diff
// leaves them out. Symlinks along the path resolve inside the rootfs.
func (s *Snapshot) addStub(mp mount.Point) error {
	rel, err := s.chain.canonical(mp.Path)
	if err != nil {
		return err
	}
	if rel == "" {
		return errors.New("cannot mount over the root")
	}
	w := s.writable()
	parts := strings.Split(rel, "/")
	var restore []string // existing dirs whose mtime a stub changed
	defer func() {
		for _, p := range restore {
			if _, fi, err := s.chain.lookup(p); err == nil {
				os.Chtimes(filepath.Join(w, p), fi.ModTime(), fi.ModTime())
			}
		}
	}()
	for i := 1; i < len(parts); i++ {
		made, err := s.stubParent(strings.Join(parts[:i], "/"))
		if err != nil {
			return err
		}
		if made && i > 1 {
			restore = append(restore, strings.Join(parts[:i-1], "/"))
		}
	}
	if s.stubs[rel] {
		return nil
	}
	if _, fi, err := s.chain.lookup(rel); err == nil {
		if fi.IsDir() != mp.Dir {
			return fmt.Errorf("/%s exists and is not a %s", rel, map[bool]string{true: "directory", false: "file"}[mp.Dir])
		}
		return nil // the image has it; the sandbox mounts over it
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if _, ok := s.stubParents[rel]; ok {
		return nil // already made as a parent of another stub
	}
	dst := filepath.Join(w, rel)
	if mp.Dir {
		err = os.Mkdir(dst, 0o755)
	} else {
		err = os.WriteFile(dst, nil, 0o644)
	}
	if err != nil {
		return err
	}
	if len(parts) > 1 {
		restore = append(restore, strings.Join(parts[:len(parts)-1], "/"))
	}
	s.stubs[rel] = true
	return nil
}

// stubParent makes sure the dir parent of a stub is in the writable dir
// (overlay: an upper twin of the chain's dir, with its metadata), and
// tells whether it made one.
func (s *Snapshot) stubParent(parent string) (bool, error) {
	if _, ok := s.stubParents[parent]; ok {
		return false, nil
	}
	w := filepath.Join(s.writable(), parent)
	_, fi, err := s.chain.lookup(parent)
	switch {
	case err == nil && fi.IsDir():
		if s.copied {
			return false, nil // already in the copy
		}
		if _, err := os.Lstat(w); err == nil {
			return false, nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		meta := dirMeta{mode: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid}
		if err := os.Mkdir(w, 0o755); err != nil {
			return false, err
		}
		if err := applyDirMeta(w, meta, fi.ModTime()); err != nil {
			return false, err
		}
		s.stubParents[parent] = meta
	case err == nil:
		return false, fmt.Errorf("/%s is not a directory", parent)
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(w, 0o755); err != nil {
			return false, err
		}
		if err := applyDirMeta(w, dirMeta{mode: 0o755}, time.Time{}); err != nil {
			return false, err
		}
		s.stubParents[parent] = dirMeta{mode: 0o755}
	default:
		return false, err
	}
	return true, nil
}

func applyDirMeta(p string, m dirMeta, mtime time.Time) error {
	if err := os.Lchown(p, int(m.uid), int(m.gid)); err != nil {
		return err
	}
	if err := unix.Chmod(p, m.mode); err != nil {
		return err
	}
	if !mtime.IsZero() {
		return os.Chtimes(p, mtime, mtime)
	}
	return nil
}
