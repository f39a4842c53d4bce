package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// Read opens the images in a docker-archive tar, an OCI layout tar or an
// OCI layout directory. Tags come from RepoTags (docker) or from the index
// annotations (OCI: io.containerd.image.name, else
// org.opencontainers.image.ref.name as written — which may be a bare tag
// such as "1.1" in layouts from other tools). Images are read lazily from
// path, which must stay in place while they are used, but every image is
// verified first (each blob read once): the manifest against the index's
// digest, the config against the manifest, each layer's content against
// the config's diff_id and its blob against the manifest's digest and
// size — so that a tampered archive is an error naming the layer before
// anything is stored or tagged. An OCI index entry that is itself an index
// contributes its linux/amd64 image.
func Read(path string) ([]Named, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read archive: %w", err)
	}
	if fi.IsDir() {
		if _, err := os.Stat(filepath.Join(path, layoutFile)); err != nil {
			return nil, fmt.Errorf("read archive %s: a directory must be an OCI image layout (no oci-layout file)", path)
		}
		imgs, err := readOCI(LayoutAt(path).open)
		if err != nil {
			return nil, fmt.Errorf("read archive %s: %w", path, err)
		}
		return imgs, nil
	}
	entries, err := scanTar(path)
	if err != nil {
		return nil, fmt.Errorf("read archive %s: %w", path, err)
	}
	var imgs []Named
	switch {
	case entries[layoutFile] != nil && entries[indexFile] != nil:
		imgs, err = readOCI(tarFiles(path, entries))
	case entries["manifest.json"] != nil:
		imgs, err = readDocker(path)
	default:
		err = errors.New("neither a docker archive (manifest.json) nor an OCI layout (oci-layout, index.json)")
	}
	if err != nil {
		return nil, fmt.Errorf("read archive %s: %w", path, err)
	}
	return imgs, nil
}

// tarEntry is where a regular file's content lies in an uncompressed tar.
type tarEntry struct {
	offset, size int64
}

// countingReader tracks the offset tar.Reader has consumed, which after
// Next() is where the entry's content starts.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// scanTar indexes the regular files of the tar at path by cleaned name.
func scanTar(path string) (map[string]*tarEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cr := &countingReader{r: f}
	tr := tar.NewReader(cr)
	entries := map[string]*tarEntry{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("not a tar archive: %w", err)
		}
		if hdr.Typeflag == tar.TypeReg {
			entries[cleanName(hdr.Name)] = &tarEntry{offset: cr.n, size: hdr.Size}
		}
	}
	return entries, nil
}

// tarFiles opens the files of an OCI layout inside the tar at path.
func tarFiles(path string, entries map[string]*tarEntry) layoutFiles {
	return func(name string) (io.ReadCloser, error) {
		e := entries[name]
		if e == nil {
			return nil, fmt.Errorf("%s: not in the archive", name)
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		return struct {
			io.Reader
			io.Closer
		}{io.NewSectionReader(f, e.offset, e.size), f}, nil
	}
}

// readOCI walks an OCI layout's index.
func readOCI(open layoutFiles) ([]Named, error) {
	blob := func(h v1.Hash) (io.ReadCloser, error) { return open(blobName(h)) }
	readAll := func(h v1.Hash) ([]byte, error) {
		rc, err := blob(h)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	idx, err := parseIndex(open)
	if err != nil {
		return nil, err
	}
	var out []Named
	pos := map[v1.Hash]int{} // one Named per image, several tags
	for _, d := range idx.Manifests {
		md := d
		if d.MediaType.IsIndex() {
			child, err := readAll(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("index %s: %w", d.Digest, err)
			}
			ci, err := v1.ParseIndexManifest(bytes.NewReader(child))
			if err != nil {
				return nil, fmt.Errorf("index %s: %w", d.Digest, err)
			}
			found := false
			for _, c := range ci.Manifests {
				if c.MediaType.IsImage() && (c.Platform == nil || c.Platform.OS == "linux" && c.Platform.Architecture == "amd64") {
					md, found = c, true
					break
				}
			}
			if !found {
				return nil, fmt.Errorf("index %s: no linux/amd64 image", d.Digest)
			}
		} else if !d.MediaType.IsImage() {
			continue
		}
		i, ok := pos[md.Digest]
		if !ok {
			rawManifest, err := readAll(md.Digest)
			if err != nil {
				return nil, fmt.Errorf("manifest %s: %w", md.Digest, err)
			}
			if got := digest.FromBytes(rawManifest); got.String() != md.Digest.String() {
				return nil, fmt.Errorf("manifest %s: content has digest %s", md.Digest, got)
			}
			img, err := newBlobImage(rawManifest, md.MediaType, blob)
			if err == nil {
				err = verifyImage(img, true, nil)
			}
			if err != nil {
				return nil, fmt.Errorf("manifest %s: %w", md.Digest, err)
			}
			i = len(out)
			pos[md.Digest] = i
			out = append(out, Named{Image: img})
		}
		if t := d.Annotations[annotationImageName]; t != "" {
			out[i].Tags = append(out[i].Tags, t)
		} else if t := d.Annotations[AnnotationRefName]; t != "" {
			out[i].Tags = append(out[i].Tags, t)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("index.json lists no images")
	}
	return out, nil
}

// newBlobImage is a lazily read image over layout blobs.
func newBlobImage(raw []byte, mt types.MediaType, blob func(v1.Hash) (io.ReadCloser, error)) (v1.Image, error) {
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	if m.MediaType != "" {
		mt = m.MediaType
	}
	return partial.CompressedToImage(&layoutImage{raw: raw, m: m, mt: mt, blob: blob})
}

type layoutImage struct {
	raw  []byte
	m    *v1.Manifest
	mt   types.MediaType
	blob func(v1.Hash) (io.ReadCloser, error)
}

func (i *layoutImage) MediaType() (types.MediaType, error) { return i.mt, nil }
func (i *layoutImage) RawManifest() ([]byte, error)        { return i.raw, nil }
func (i *layoutImage) RawConfigFile() ([]byte, error) {
	rc, err := i.blob(i.m.Config.Digest)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func (i *layoutImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == i.m.Config.Digest {
		return &layoutBlob{desc: i.m.Config, blob: i.blob}, nil
	}
	for _, l := range i.m.Layers {
		if l.Digest == h {
			return &layoutBlob{desc: l, blob: i.blob}, nil
		}
	}
	return nil, fmt.Errorf("layer %s: not in the image", h)
}

type layoutBlob struct {
	desc v1.Descriptor
	blob func(v1.Hash) (io.ReadCloser, error)
}

func (b *layoutBlob) Digest() (v1.Hash, error)            { return b.desc.Digest, nil }
func (b *layoutBlob) Size() (int64, error)                { return b.desc.Size, nil }
func (b *layoutBlob) MediaType() (types.MediaType, error) { return b.desc.MediaType, nil }
func (b *layoutBlob) Descriptor() (*v1.Descriptor, error) { d := b.desc; return &d, nil }
func (b *layoutBlob) Compressed() (io.ReadCloser, error)  { return b.blob(b.desc.Digest) }

// readDocker opens the images of a docker-archive with go-containerregistry.
func readDocker(path string) ([]Named, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(path) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("manifest.json: %w", err)
	}
	var out []Named
	for i, d := range m {
		var tag *name.Tag
		if len(d.RepoTags) > 0 {
			t, err := name.NewTag(d.RepoTags[0])
			if err != nil {
				return nil, fmt.Errorf("manifest.json: tag %q: %w", d.RepoTags[0], err)
			}
			tag = &t
		} else if len(m) > 1 {
			return nil, fmt.Errorf("manifest.json: image %d has no tag; an untagged image must be alone in a docker archive", i)
		}
		img, err := tarball.Image(opener, tag)
		if err == nil {
			err = verifyDocker(img, d)
		}
		if err != nil {
			return nil, fmt.Errorf("image %d: %w", i, err)
		}
		out = append(out, Named{Image: img, Tags: append([]string(nil), d.RepoTags...)})
	}
	if len(out) == 0 {
		return nil, errors.New("manifest.json lists no images")
	}
	return out, nil
}
