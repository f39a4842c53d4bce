package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
)

// walkPath resolves p (absolute or relative to the root) through the
// chain as the kernel would inside the rootfs: ".." applied, symlinks
// followed (the final one only when follow is set), never out of the
// rootfs. It returns the clean relative path p names. With missingOK,
// the components from the first missing one on are kept as written (".."
// applied lexically): that is where a mount point would be created. When
// trace is not nil it gets every lookup made, in order (see Walk).
func (c chain) walkPath(p string, follow, missingOK bool, trace *Walk) (string, error) {
	todo := splitPath(p)
	var done []string
	for links := 0; len(todo) > 0; {
		name := todo[0]
		todo = todo[1:]
		if name == ".." {
			done = parentOf(done)
			continue
		}
		cur := append(done[:len(done):len(done)], name)
		hostPath, fi, err := c.lookup(strings.Join(cur, "/"))
		if trace != nil {
			trace.add(strings.Join(cur, "/"), fi, err, len(todo) == 0)
		}
		if missingOK && errors.Is(err, fs.ErrNotExist) {
			done = cur
			for _, n := range todo {
				if n == ".." {
					done = parentOf(done)
				} else {
					done = append(done, n)
				}
			}
			break
		}
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 || (len(todo) == 0 && !follow) {
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

func parentOf(done []string) []string {
	if len(done) > 0 {
		return done[:len(done)-1]
	}
	return done
}

// resolve walks p through the chain (see walkPath) and returns the host
// path of the entry and its FileInfo.
func (c chain) resolve(p string, follow bool) (string, fs.FileInfo, error) {
	if len(c) == 0 {
		return "", nil, fs.ErrNotExist
	}
	rel, err := c.walkPath(p, follow, false, nil)
	if err != nil {
		return "", nil, err
	}
	return c.lookup(rel)
}

// canonical resolves p through the chain, every symlink followed, and
// returns the clean relative path it names, missing components kept (see
// walkPath).
func (c chain) canonical(p string) (string, error) {
	return c.walkPath(p, true, true, nil)
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

// Resolve returns the absolute path p names in the rootfs of layers, as
// the kernel would resolve it inside that root: ".." applied, every
// symlink followed (absolute targets against the rootfs root, never out
// of it), and the components from the first missing one kept as written.
// It is where an instruction that writes p must write.
func (sn *Snapshotter) Resolve(ctx context.Context, layers []Layer, p string) (string, error) {
	ids, err := sn.ensure(ctx, layers)
	if err != nil {
		return "", err
	}
	if len(ids) == 0 {
		ids = []string{emptyDir}
	}
	rel, err := sn.chainOf(ids).canonical(p)
	if err != nil {
		return "", &fs.PathError{Op: "resolve", Path: p, Err: err}
	}
	return "/" + rel, nil
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
