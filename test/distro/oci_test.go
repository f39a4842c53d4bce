package distro

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// node is one path of a flattened image filesystem: what the comparison
// looks at (never the mtime).
type node struct {
	Type   string // dir, file, symlink, char, block, fifo
	Mode   int64  // permission bits with setuid, setgid, sticky
	UID    int
	GID    int
	Size   int64  // regular files only
	SHA256 string // regular files only
	Link   string // symlink target
	Dev    string // major:minor of devices
}

func (n node) String() string {
	s := fmt.Sprintf("%s %04o %d:%d", n.Type, n.Mode, n.UID, n.GID)
	switch n.Type {
	case "file":
		s += fmt.Sprintf(" size=%d sha256=%.12s", n.Size, n.SHA256)
	case "symlink":
		s += " -> " + n.Link
	case "char", "block":
		s += " " + n.Dev
	}
	return s
}

// image is an exported image: its container config and flattened tree.
type image struct {
	config map[string]any // the "config" object of the image config
	files  map[string]node
}

// readOCIArchive unpacks an OCI layout tar (minibuild -o type=oci, buildah
// push oci-archive:) into dir and reads its single image.
func readOCIArchive(archive, dir string) (*image, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if out, err := exec.Command("tar", "-xf", archive, "-C", dir).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("untar %s: %v\n%s", archive, err, out)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(im.Manifests) != 1 {
		return nil, fmt.Errorf("%s: %d manifests in index.json, want 1", archive, len(im.Manifests))
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		return nil, err
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, err
	}
	var cfg struct {
		Config map[string]any `json:"config"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	fl := flattener{files: map[string]node{"/": {Type: "dir", Mode: 0o755}}}
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return nil, err
		}
		err = fl.apply(rc)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: layer %d: %w", archive, i, err)
		}
	}
	return &image{config: cfg.Config, files: fl.files}, nil
}

// flattener applies layers the way containerd and docker extract them: later
// entries replace earlier ones, whiteouts delete lower paths, a non-directory
// replaces a directory with its subtree, and parent directories that are
// symlinks are followed inside the rootfs.
type flattener struct {
	files map[string]node
}

func (f *flattener) apply(r io.Reader) error {
	tr := tar.NewReader(r)
	added := map[string]bool{} // paths of this layer: opaque whiteouts spare them
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		p := path.Clean("/" + h.Name)
		dir, base := path.Split(p)
		dir = f.resolve(path.Clean(dir), 0)
		switch {
		case base == ".wh..wh..opq":
			f.removeChildren(dir, added)
			continue
		case strings.HasPrefix(base, ".wh."):
			f.remove(path.Join(dir, strings.TrimPrefix(base, ".wh.")))
			continue
		}
		p = path.Join(dir, base)
		n, err := entryNode(h, tr, f.files)
		if err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		if old, ok := f.files[p]; ok && old.Type == "dir" && n.Type != "dir" {
			f.remove(p)
		}
		f.files[p] = n
		added[p] = true
	}
}

// entryNode turns a tar header (and the file's content) into a node; a hard
// link is a regular file with its target's content.
func entryNode(h *tar.Header, r io.Reader, files map[string]node) (node, error) {
	n := node{Mode: h.Mode & 0o7777, UID: h.Uid, GID: h.Gid}
	switch h.Typeflag {
	case tar.TypeDir:
		n.Type = "dir"
	case tar.TypeReg, tar.TypeRegA:
		n.Type = "file"
		sum := sha256.New()
		size, err := io.Copy(sum, r)
		if err != nil {
			return n, err
		}
		n.Size, n.SHA256 = size, hex.EncodeToString(sum.Sum(nil))
	case tar.TypeLink:
		target, ok := files[path.Clean("/"+h.Linkname)]
		if !ok {
			return n, fmt.Errorf("hard link to missing %s", h.Linkname)
		}
		return target, nil
	case tar.TypeSymlink:
		n.Type, n.Link = "symlink", h.Linkname
	case tar.TypeChar, tar.TypeBlock:
		n.Type = map[byte]string{tar.TypeChar: "char", tar.TypeBlock: "block"}[h.Typeflag]
		n.Dev = fmt.Sprintf("%d:%d", h.Devmajor, h.Devminor)
	case tar.TypeFifo:
		n.Type = "fifo"
	default:
		return n, fmt.Errorf("unexpected tar type %q", h.Typeflag)
	}
	return n, nil
}

// resolve follows symlinks in an absolute directory path inside the tree:
// absolute targets restart at the tree's root and ".." stops at it.
func (f *flattener) resolve(p string, depth int) string {
	if p == "/" || depth > 40 {
		return p
	}
	parent := f.resolve(path.Dir(p), depth+1)
	p = path.Join(parent, path.Base(p))
	n, ok := f.files[p]
	if !ok || n.Type != "symlink" {
		return p
	}
	target := n.Link
	if !path.IsAbs(target) {
		target = path.Join(parent, target)
	}
	return f.resolve(path.Clean("/"+target), depth+1)
}

// remove deletes p and everything under it.
func (f *flattener) remove(p string) {
	delete(f.files, p)
	prefix := strings.TrimSuffix(p, "/") + "/"
	for k := range f.files {
		if strings.HasPrefix(k, prefix) {
			delete(f.files, k)
		}
	}
}

// removeChildren deletes what lower layers hold under dir.
func (f *flattener) removeChildren(dir string, keep map[string]bool) {
	prefix := strings.TrimSuffix(dir, "/") + "/"
	for k := range f.files {
		if strings.HasPrefix(k, prefix) && !keep[k] {
			delete(f.files, k)
		}
	}
}
