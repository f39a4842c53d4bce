package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// chain is a stack of extracted layer dirs, top first.
type chain []string

func (sn *Snapshotter) chainOf(ids []string) chain {
	c := make(chain, 0, len(ids))
	for i := len(ids) - 1; i >= 0; i-- {
		c = append(c, filepath.Join(sn.layersDir, ids[i]))
	}
	return c
}

func isWhiteout(fi fs.FileInfo) bool {
	if fi.Mode()&fs.ModeCharDevice == 0 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Rdev == 0
}

func isOpaque(p string) bool {
	buf := make([]byte, 4)
	n, err := unix.Lgetxattr(p, opaqueXattr, buf)
	return err == nil && n == 1 && buf[0] == 'y'
}

// lookup finds the entry for the clean relative path rel (no symlinks in
// its parents) as overlayfs would: the topmost layer holding it wins,
// whiteouts hide, opaque dirs stop the search downwards.
func (c chain) lookup(rel string) (string, fs.FileInfo, error) {
	visible := c
	var parts []string
	if rel != "" {
		parts = strings.Split(rel, "/")
	}
	for i := range parts {
		prefix := strings.Join(parts[:i+1], "/")
		var next chain
		var found fs.FileInfo
		var foundIn string
		for _, l := range visible {
			p := filepath.Join(l, prefix)
			fi, err := os.Lstat(p)
			if err != nil {
				if os.IsNotExist(err) || isNotDir(err) {
					continue
				}
				return "", nil, err
			}
			if isWhiteout(fi) {
				break
			}
			if found == nil {
				found, foundIn = fi, l
			}
			if !found.IsDir() || !fi.IsDir() {
				break // a non-dir hides everything below it
			}
			next = append(next, l)
			if isOpaque(p) {
				break
			}
		}
		if found == nil {
			return "", nil, fs.ErrNotExist
		}
		if i == len(parts)-1 {
			return filepath.Join(foundIn, prefix), found, nil
		}
		if !found.IsDir() {
			return "", nil, syscall.ENOTDIR
		}
		visible = next
	}
	if len(c) == 0 {
		return "", nil, fs.ErrNotExist
	}
	fi, err := os.Lstat(c[0])
	return c[0], fi, err
}

func isNotDir(err error) bool {
	pe, ok := err.(*fs.PathError)
	return ok && pe.Err == syscall.ENOTDIR
}

// resolve walks p (absolute or relative to the root) through the chain,
// resolving symlinks inside the rootfs, the final one only when follow is
// set. It returns the host path of the entry and its FileInfo.
func (c chain) resolve(p string, follow bool) (string, fs.FileInfo, error) {
	if len(c) == 0 {
		return "", nil, fs.ErrNotExist
	}
	todo := splitPath(p)
	var done []string
	for links := 0; ; {
		if len(todo) == 0 {
			return c.lookup(strings.Join(done, "/"))
		}
		name := todo[0]
		todo = todo[1:]
		if name == ".." {
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		cur := append(done[:len(done):len(done)], name)
		hostPath, fi, err := c.lookup(strings.Join(cur, "/"))
		if err != nil {
			return "", nil, err
		}
		if fi.Mode()&fs.ModeSymlink == 0 || (len(todo) == 0 && !follow) {
			if len(todo) > 0 && !fi.IsDir() {
				return "", nil, syscall.ENOTDIR
			}
			done = cur
			continue
		}
		if links++; links > 255 {
			return "", nil, syscall.ELOOP
		}
		target, err := os.Readlink(hostPath)
		if err != nil {
			return "", nil, err
		}
		if strings.HasPrefix(target, "/") {
			done = nil
		}
		todo = append(splitPath(target), todo...)
	}
}

func splitPath(p string) []string {
	var out []string
	for _, s := range strings.Split(p, "/") {
		if s != "" && s != "." {
			out = append(out, s)
		}
	}
	return out
}

type namedInfo struct {
	fs.FileInfo
	name string
}

func (n namedInfo) Name() string { return n.name }

func (sn *Snapshotter) stat(ctx context.Context, layers []Layer, p string, follow bool) (string, fs.FileInfo, error) {
	ids, err := sn.ensure(ctx, layers)
	if err != nil {
		return "", nil, err
	}
	if len(ids) == 0 {
		ids = []string{emptyDir}
	}
	hostPath, fi, err := sn.chainOf(ids).resolve(p, follow)
	if err != nil {
		return "", nil, &fs.PathError{Op: "stat", Path: p, Err: err}
	}
	return hostPath, namedInfo{fi, path.Base("/" + p)}, nil
}

// Stat returns the FileInfo of path in the rootfs of layers (bottom layer
// first), following symlinks like os.Stat but never out of the rootfs.
// Missing layers are extracted first. fs.ErrNotExist when absent.
func (sn *Snapshotter) Stat(ctx context.Context, layers []Layer, p string) (fs.FileInfo, error) {
	_, fi, err := sn.stat(ctx, layers, p, true)
	return fi, err
}

// Lstat is Stat without following a final symlink.
func (sn *Snapshotter) Lstat(ctx context.Context, layers []Layer, p string) (fs.FileInfo, error) {
	_, fi, err := sn.stat(ctx, layers, p, false)
	return fi, err
}

// ReadFile reads path from the rootfs of layers, e.g. /etc/passwd for USER.
func (sn *Snapshotter) ReadFile(ctx context.Context, layers []Layer, p string) ([]byte, error) {
	hostPath, fi, err := sn.stat(ctx, layers, p, true)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read %s: not a regular file", p)
	}
	return os.ReadFile(hostPath)
}

// canonical resolves p through the chain as the kernel would inside the
// rootfs (every symlink followed, never out of it) and returns the clean
// relative path it names. Components past the first missing one are kept
// as written (".." applied lexically): that is where a mount point would
// be created.
func (c chain) canonical(p string) (string, error) {
	todo := splitPath(p)
	var done []string
	for links := 0; len(todo) > 0; {
		name := todo[0]
		todo = todo[1:]
		if name == ".." {
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		cur := append(done[:len(done):len(done)], name)
		hostPath, fi, err := c.lookup(strings.Join(cur, "/"))
		if errors.Is(err, fs.ErrNotExist) {
			done = cur
			for _, n := range todo {
				if n == ".." {
					if len(done) > 0 {
						done = done[:len(done)-1]
					}
				} else {
					done = append(done, n)
				}
			}
			return strings.Join(done, "/"), nil
		}
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			if len(todo) > 0 && !fi.IsDir() {
				return "", syscall.ENOTDIR
			}
			done = cur
			continue
		}
		if links++; links > 255 {
			return "", syscall.ELOOP
		}
		target, err := os.Readlink(hostPath)
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(target, "/") {
			done = nil
		}
		todo = append(splitPath(target), todo...)
	}
	return strings.Join(done, "/"), nil
}
