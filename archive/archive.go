// Package archive moves images in and out of tarballs: docker-archive (what
// `docker save` writes and `docker load` reads) and the OCI image layout,
// as a tar stream or a directory.
//
// The OCI layout is encoded and decoded in one place (layout.go), which
// also serves other users of a layout directory (Layout: the type=local
// build cache).
//
// Images stay v1.Image at the boundary, so a store-backed image is written
// straight from its blob files and an image read from an archive is read
// lazily from the file (each blob is opened when something asks for it).
package archive

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Named is an image with the tags it is exported or was imported under
// ("myapp:1.1"). An image may have no tags.
type Named struct {
	Image v1.Image
	Tags  []string
}

// WriteDocker writes imgs as a docker-archive (manifest.json with RepoTags,
// config and layer blobs) using go-containerregistry's tarball writer.
func WriteDocker(w io.Writer, imgs []Named) error {
	refs := map[name.Reference]v1.Image{}
	// tarball dedups by image value: give every tag of one digest one value.
	byDigest := map[v1.Hash]v1.Image{}
	for _, n := range imgs {
		d, err := n.Image.Digest()
		if err != nil {
			return fmt.Errorf("docker archive: image digest: %w", err)
		}
		img, ok := byDigest[d]
		if !ok {
			img = n.Image
			byDigest[d] = img
		}
		if len(n.Tags) == 0 {
			ref, err := name.NewDigest("untagged@" + d.String())
			if err != nil {
				return fmt.Errorf("docker archive: %w", err)
			}
			refs[ref] = img
		}
		for _, t := range n.Tags {
			tag, err := name.NewTag(t)
			if err != nil {
				return fmt.Errorf("docker archive: tag %q: %w", t, err)
			}
			refs[tag] = img
		}
	}
	if len(refs) == 0 {
		return fmt.Errorf("docker archive: no images")
	}
	if err := tarball.MultiRefWrite(refs, w); err != nil {
		return fmt.Errorf("write docker archive: %w", err)
	}
	return nil
}

// fixedTime is the mtime of every entry WriteOCI writes, so that the same
// images give the same bytes.
var fixedTime = time.Unix(0, 0).UTC()

// ociBlob is a blob to write: its size and how to read it.
type ociBlob struct {
	size int64
	open func() (io.ReadCloser, error)
}

// WriteOCI writes imgs as an OCI image layout in a tar stream: oci-layout,
// index.json (one descriptor per tag, or one without annotations for an
// untagged image) and blobs/sha256/<hex>. Output is deterministic: entries
// are sorted, blobs deduplicated and all mtimes fixed. Every blob is
// verified against its digest while it is copied. Images with docker media
// types are written with OCI ones (see asOCI), which changes their manifest
// digest but not their id.
func WriteOCI(w io.Writer, imgs []Named) error {
	blobs := map[v1.Hash]ociBlob{}
	index := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for _, n := range imgs {
		img, err := asOCI(n.Image)
		if err != nil {
			return fmt.Errorf("oci archive: convert to OCI media types: %w", err)
		}
		desc, err := addImageBlobs(blobs, img)
		if err != nil {
			return fmt.Errorf("oci archive: %w", err)
		}
		entries, err := indexEntries(desc, n.Tags)
		if err != nil {
			return fmt.Errorf("oci archive: %w", err)
		}
		index.Manifests = append(index.Manifests, entries...)
	}
	if len(index.Manifests) == 0 {
		return fmt.Errorf("oci archive: no images")
	}
	if err := writeLayoutTar(w, &index, blobs); err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	return nil
}

// addImageBlobs adds img's manifest, config and layers to blobs and
// returns the manifest's descriptor.
func addImageBlobs(blobs map[v1.Hash]ociBlob, img v1.Image) (v1.Descriptor, error) {
	raw, err := img.RawManifest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("manifest: %w", err)
	}
	desc, err := partial.Descriptor(img)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("descriptor: %w", err)
	}
	m, err := img.Manifest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("manifest: %w", err)
	}
	blobs[desc.Digest] = ociBlob{int64(len(raw)), bytesOpener(raw)}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("config: %w", err)
	}
	blobs[m.Config.Digest] = ociBlob{int64(len(rawCfg)), bytesOpener(rawCfg)}
	for _, ld := range m.Layers {
		if _, ok := blobs[ld.Digest]; ok {
			continue
		}
		l, err := img.LayerByDigest(ld.Digest)
		if err != nil {
			return v1.Descriptor{}, fmt.Errorf("layer %s: %w", ld.Digest, err)
		}
		blobs[ld.Digest] = ociBlob{ld.Size, l.Compressed}
	}
	return v1.Descriptor{MediaType: desc.MediaType, Size: desc.Size, Digest: desc.Digest}, nil
}

// indexEntries are the index descriptors of one image: one per tag, with
// the full name and the tag as annotations, or one bare descriptor when it
// has no tag.
func indexEntries(base v1.Descriptor, tags []string) ([]v1.Descriptor, error) {
	if len(tags) == 0 {
		return []v1.Descriptor{base}, nil
	}
	var out []v1.Descriptor
	for _, t := range tags {
		tag, err := name.NewTag(t)
		if err != nil {
			return nil, fmt.Errorf("tag %q: %w", t, err)
		}
		d := base
		d.Annotations = map[string]string{
			annotationImageName: fullName(tag),
			AnnotationRefName:   tag.TagStr(),
		}
		out = append(out, d)
	}
	return out, nil
}

// writeLayoutTar writes the layout in lexical order: blobs/,
// blobs/sha256/, blobs/sha256/<hex>…, index.json, oci-layout.
func writeLayoutTar(w io.Writer, index *v1.IndexManifest, blobs map[v1.Hash]ociBlob) error {
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return fmt.Errorf("index: %w", err)
	}
	tw := tar.NewWriter(w)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: fixedTime, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	digests := make([]v1.Hash, 0, len(blobs))
	for d := range blobs {
		digests = append(digests, d)
	}
	sort.Slice(digests, func(i, j int) bool { return digests[i].String() < digests[j].String() })
	for _, d := range digests {
		if d.Algorithm != "sha256" {
			return fmt.Errorf("blob %s: only sha256 is supported", d)
		}
		b := blobs[d]
		if err := writeBlob(tw, blobName(d), d, b.size, b.open); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{indexFile, indexJSON}, {layoutFile, []byte(layoutJSON)}} {
		if err := writeFile(tw, f.name, f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// fullName is docker's normalized name ("docker.io/library/myapp:1.1").
func fullName(t name.Tag) string {
	reg := t.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + t.RepositoryStr() + ":" + t.TagStr()
}

func writeFile(tw *tar.Writer, name string, data []byte) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: fixedTime, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// writeBlob copies one blob into the tar, checking its size and digest.
func writeBlob(tw *tar.Writer, path string, d v1.Hash, size int64, open func() (io.ReadCloser, error)) error {
	rc, err := open()
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	defer rc.Close()
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: path, Mode: 0o644, Size: size, ModTime: fixedTime, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tw, h), rc)
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	if n != size {
		return fmt.Errorf("blob %s: %d bytes, descriptor says %d", d, n, size)
	}
	return checkDigest(d, v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))})
}

// cleanName strips "./" and "/" so tar entry names compare as layout paths.
func cleanName(n string) string {
	n = strings.TrimPrefix(n, "./")
	return strings.TrimPrefix(n, "/")
}

// ociMediaTypes maps docker media types to their OCI equivalents.
var ociMediaTypes = map[types.MediaType]types.MediaType{
	types.DockerManifestSchema2:   types.OCIManifestSchema1,
	types.DockerConfigJSON:        types.OCIConfigJSON,
	types.DockerLayer:             types.OCILayer,
	types.DockerUncompressedLayer: types.OCIUncompressedLayer,
	types.DockerForeignLayer:      types.OCIRestrictedLayer,
}

// asOCI returns img with OCI media types: tools that read OCI layouts
// (skopeo, umoci) skip docker-typed manifests. Blobs are unchanged; only
// the manifest is rewritten, so its digest changes, as with BuildKit's
// oci-mediatypes conversion.
func asOCI(img v1.Image) (v1.Image, error) {
	mt, err := img.MediaType()
	if err != nil {
		return nil, err
	}
	if mt != types.DockerManifestSchema2 {
		return img, nil
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	m = m.DeepCopy()
	conv := func(t types.MediaType) types.MediaType {
		if o, ok := ociMediaTypes[t]; ok {
			return o
		}
		return t
	}
	m.MediaType = conv(m.MediaType)
	m.Config.MediaType = conv(m.Config.MediaType)
	for i := range m.Layers {
		m.Layers[i].MediaType = conv(m.Layers[i].MediaType)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return partial.CompressedToImage(&ociImage{orig: img, raw: raw, m: m})
}

// ociImage serves the blobs of orig under a converted manifest.
type ociImage struct {
	orig v1.Image
	raw  []byte
	m    *v1.Manifest
}

func (i *ociImage) MediaType() (types.MediaType, error) { return i.m.MediaType, nil }
func (i *ociImage) RawManifest() ([]byte, error)        { return i.raw, nil }
func (i *ociImage) RawConfigFile() ([]byte, error)      { return i.orig.RawConfigFile() }

func (i *ociImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, d := range i.m.Layers {
		if d.Digest == h {
			l, err := i.orig.LayerByDigest(h)
			if err != nil {
				return nil, err
			}
			return &ociLayer{Layer: l, mt: d.MediaType}, nil
		}
	}
	return nil, fmt.Errorf("layer %s: not in the image", h)
}

// ociLayer is a layer with its media type replaced.
type ociLayer struct {
	v1.Layer
	mt types.MediaType
}

func (l *ociLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
