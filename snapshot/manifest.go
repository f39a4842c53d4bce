package snapshot

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/minibuild/minibuild/internal/atomicfile"
)

// A manifest lists what an extracted layer dir holds, entry by entry, so
// that a later layer differing by a few entries can be made from it by
// touching only those (patch.go). It sits beside the dir, as
// layers/<id>.manifest, and is a cache like the dir: written without
// fsync after the dir is in place, removed before the dir is taken away;
// a dir without one is simply never patched.
//
// Each entry is its tar name (cleaned), its kind and a fingerprint of
// everything extraction made of it: for a regular file its pool key
// (content, mode, owner, mtime, xattrs and path), for anything else a
// hash of its header. A layer with hard links, whiteouts or a name twice
// gets no manifest: patching those in place is not worth its risks.
type manifest struct {
	entries map[string]manifestEntry
	order   []string // names in tar order, for writing
}

type manifestEntry struct {
	kind byte   // 'd' dir, 'D' dir with xattrs, 'l' symlink, 'f' anything else
	fp   string // "" when unknown: the entry is then always made again
}

const manifestMagic = "minibuild-manifest/v1\n"

func newManifest() *manifest { return &manifest{entries: map[string]manifestEntry{}} }

// add records rel; false if rel is there already.
func (m *manifest) add(rel string, e manifestEntry) bool {
	if _, dup := m.entries[rel]; dup {
		return false
	}
	m.entries[rel] = e
	m.order = append(m.order, rel)
	return true
}

// entryKind is the manifest kind of hdr.
func entryKind(hdr *tar.Header) byte {
	switch hdr.Typeflag {
	case tar.TypeDir:
		if hasXattrs(hdr) {
			return 'D'
		}
		return 'd'
	case tar.TypeSymlink:
		return 'l'
	}
	return 'f'
}

// dirKind tells whether a manifest kind is a directory's.
func dirKind(k byte) bool { return k == 'd' || k == 'D' }

func hasXattrs(hdr *tar.Header) bool { return len(appliedXattrs(hdr)) > 0 }

// headerPrint fingerprints a non-regular entry: everything applyMeta and
// createEntry take from its header.
func headerPrint(hdr *tar.Header) string {
	h := sha256.New()
	fmt.Fprintf(h, "minibuild entry v1\x00%c\x00%o %d %d %d\x00%s\x00%d %d\x00", hdr.Typeflag, hdr.Mode&0o7777,
		hdr.Uid, hdr.Gid, hdr.ModTime.UnixNano(), hdr.Linkname, hdr.Devmajor, hdr.Devminor)
	hashXattrs(h, hdr)
	return hex.EncodeToString(h.Sum(nil))
}

func manifestPath(layerDir string) string { return layerDir + ".manifest" }

// write stores m beside the layer dir dir.
func (m *manifest) write(dir string) error {
	var b bytes.Buffer
	b.WriteString(manifestMagic)
	for _, rel := range m.order {
		e := m.entries[rel]
		fp := e.fp
		if fp == "" {
			fp = "-"
		}
		b.WriteByte(e.kind)
		b.WriteByte(' ')
		b.WriteString(fp)
		b.WriteByte(' ')
		b.WriteString(rel)
		b.WriteByte(0) // a tar name holds no NUL
	}
	return atomicfile.WriteUnsynced(manifestPath(dir), b.Bytes(), 0o600)
}

// readManifest reads the manifest beside the layer dir dir.
func readManifest(dir string) (*manifest, error) {
	b, err := os.ReadFile(manifestPath(dir))
	if err != nil {
		return nil, err
	}
	rest, ok := bytes.CutPrefix(b, []byte(manifestMagic))
	if !ok {
		return nil, errors.New("not a layer manifest")
	}
	m := newManifest()
	for len(rest) > 0 {
		rec, tail, ok := bytes.Cut(rest, []byte{0})
		if !ok || len(rec) < 4 || rec[1] != ' ' {
			return nil, errors.New("truncated layer manifest")
		}
		fp, rel, ok := strings.Cut(string(rec[2:]), " ")
		if !ok {
			return nil, errors.New("bad layer manifest entry")
		}
		if fp == "-" {
			fp = ""
		}
		if !m.add(rel, manifestEntry{kind: rec[0], fp: fp}) {
			return nil, errors.New("layer manifest names an entry twice")
		}
		rest = tail
	}
	return m, nil
}

// removeManifest drops the manifest of the layer dir dir, if any.
func removeManifest(dir string) {
	os.Remove(manifestPath(dir))
}

// manifestName is hdr's name as a manifest keys it: cleaned, relative,
// "." for the root.
func manifestName(hdr *tar.Header) string {
	rel := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
	if rel == "" {
		return "."
	}
	return rel
}

// note records an extracted entry in x.man, or drops the manifest when
// the layer has a shape that is never patched.
func (x *extractor) note(hdr *tar.Header) {
	if x.man == nil || hdr.Typeflag == tar.TypeXGlobalHeader || hdr.Typeflag == tar.TypeXHeader {
		return
	}
	rel := manifestName(hdr)
	if hdr.Typeflag == tar.TypeLink || strings.HasPrefix(path.Base(rel), whiteoutPrefix) {
		x.man = nil
		return
	}
	e := manifestEntry{kind: entryKind(hdr)}
	if isRegular(hdr) {
		x.regs = append(x.regs, rel) // its pool key, if it is pooled, is known at the end
	} else {
		e.fp = headerPrint(hdr)
	}
	if !x.man.add(rel, e) {
		x.man = nil
	}
}

// finalManifest completes x.man once extraction into root is done: the
// regular files' fingerprints are their pool keys, where the pool took
// them at their own path (a file under a symlinked dir stays unknown).
func (x *extractor) finalManifest(root string) *manifest {
	if x.man == nil || x.pool == nil {
		return nil
	}
	for _, rel := range x.regs {
		if e := x.man.entries[rel]; e.fp == "" {
			e.fp = x.pool.pooled[filepath.Join(root, rel)]
			x.man.entries[rel] = e
		}
	}
	return x.man
}

// parents lists every dir above an entry of m.
func (m *manifest) parents() map[string]bool {
	out := map[string]bool{}
	for _, rel := range m.order {
		for d := path.Dir(rel); d != "." && !out[d]; d = path.Dir(d) {
			out[d] = true
		}
	}
	return out
}
