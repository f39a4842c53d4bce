package copier

import (
	"archive/tar"
	"context"
	"io/fs"
	"path"

	"github.com/minibuild/minibuild/buildctx"
	"github.com/minibuild/minibuild/cache"
	"github.com/opencontainers/go-digest"
)

// TreeDigest digests rel ("" or "." = the root) and everything under it in
// c, as a RUN --mount=type=bind shows them, with the tree encoding a COPY
// key uses (cache.TreeHasher): each entry's path relative to rel (rel
// itself is ""; the root is not an entry), type, mode, uid/gid, content
// sha256 and link target, in tree order. Unlike a COPY, ownership is kept
// and sockets, fifos and devices count. An absent rel digests as an empty
// tree: the caller checks that the source exists.
func TreeDigest(ctx context.Context, c *buildctx.Context, rel string) (digest.Digest, error) {
	rel = path.Clean("/" + rel)[1:]
	files := c.Under(rel)
	if rel != "" {
		f, ok := c.Lookup(rel)
		if !ok {
			files = nil
		} else {
			files = append([]*buildctx.File{f}, files...)
		}
	}
	if err := c.DigestAll(ctx, files); err != nil {
		return "", err
	}
	skip := len(prefixOf(rel))
	h := cache.NewTreeHasher()
	var te cache.TreeEntry
	for _, f := range files {
		te.Path = ""
		if len(f.Path) > skip {
			te.Path = f.Path[skip:]
		}
		te.Type, te.Mode, te.UID, te.GID, te.Link = treeType(f.Mode), tarMode(f.Mode), f.UID, f.GID, f.Link
		if !f.Mode.IsRegular() {
			h.Add(&te)
			continue
		}
		sum, err := c.Sum(f)
		if err != nil {
			return "", err
		}
		h.AddSHA256(&te, &sum)
	}
	return h.Digest(), nil
}

// treeType is the tar typeflag of a file mode; a socket, which a tar cannot
// hold, is 's'.
func treeType(m fs.FileMode) byte {
	switch {
	case m.IsRegular():
		return tar.TypeReg
	case m.IsDir():
		return tar.TypeDir
	case m&fs.ModeSymlink != 0:
		return tar.TypeSymlink
	case m&fs.ModeNamedPipe != 0:
		return tar.TypeFifo
	case m&fs.ModeCharDevice != 0:
		return tar.TypeChar
	case m&fs.ModeDevice != 0:
		return tar.TypeBlock
	case m&fs.ModeSocket != 0:
		return 's'
	}
	return '?' // no other type exists on Linux
}
