// Package layer writes deterministic layer tarballs (DESIGN.md invariant 3).
//
// Every layer minibuild creates — a RUN's diff, a COPY, a WORKDIR — goes
// through Writer, so the same entries give the same diffID and digest on
// every host: headers are normalized (no atime/ctime, no user or group
// names, whole-second mtimes clamped to SOURCE_DATE_EPOCH when set), and one
// gzip compressor runs at fixed settings. Callers add entries in a
// deterministic order (a lexical directory walk).
package layer

import (
	"archive/tar"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
)

// MediaType is the media type of every layer minibuild writes.
const MediaType = "application/vnd.oci.image.layer.v1.tar+gzip"

// compressionLevel is fixed: changing it changes every layer digest.
const compressionLevel = gzip.BestSpeed

// Options controls header normalization.
type Options struct {
	// Epoch, when non-nil, clamps every mtime to at most this time
	// (SOURCE_DATE_EPOCH).
	Epoch *time.Time
	// Tee, when non-nil, also receives the uncompressed tar stream, e.g.
	// to extract the layer while it is written.
	Tee io.Writer
}

// Descriptor is a layer's one identity, from the moment it is written to
// the moment a manifest names it: its blob (digest, size, media type) and
// its content (diffID). Cache records keep it, snapshots extract by it,
// and V1 turns it into the manifest's descriptor and the config's diffID.
type Descriptor struct {
	Digest    digest.Digest `json:"digest"` // sha256 of the compressed blob
	DiffID    digest.Digest `json:"diffID"` // sha256 of the uncompressed tar
	Size      int64         `json:"size"`   // compressed size in bytes
	MediaType string        `json:"mediaType"`
}

// FromV1 is the layer a manifest descriptor and its config's diffID name.
// Docker media types map to their OCI twins: the blob is the same, and
// minibuild writes OCI manifests.
func FromV1(desc v1.Descriptor, diffID v1.Hash) Descriptor {
	return Descriptor{Digest: digest.Digest(desc.Digest.String()), DiffID: digest.Digest(diffID.String()),
		Size: desc.Size, MediaType: ociMediaType(desc.MediaType)}
}

// Pair is one layer as an image names it: the manifest's descriptor and
// the config's diffID at the same index.
type Pair struct {
	Desc   v1.Descriptor
	DiffID v1.Hash
}

// Descriptor is the pair as minibuild's layer identity.
func (p Pair) Descriptor() Descriptor { return FromV1(p.Desc, p.DiffID) }

// Pairs pairs a manifest's layers with its config's diff_ids, in order,
// refusing a manifest and a config that disagree on how many there are:
// the one place an image's layers meet their content digests.
func Pairs(m *v1.Manifest, cf *v1.ConfigFile) ([]Pair, error) {
	if n, d := len(m.Layers), len(cf.RootFS.DiffIDs); n != d {
		return nil, fmt.Errorf("the manifest lists %d layers, the config %d diff_ids", n, d)
	}
	out := make([]Pair, len(m.Layers))
	for i, d := range m.Layers {
		out[i] = Pair{Desc: d, DiffID: cf.RootFS.DiffIDs[i]}
	}
	return out, nil
}

// V1 is the layer as a manifest names it, and its diffID as a config does.
func (d Descriptor) V1() (v1.Descriptor, v1.Hash, error) {
	h, err := v1.NewHash(string(d.Digest))
	if err != nil {
		return v1.Descriptor{}, v1.Hash{}, fmt.Errorf("layer digest %q: %w", d.Digest, err)
	}
	diffID, err := v1.NewHash(string(d.DiffID))
	if err != nil {
		return v1.Descriptor{}, v1.Hash{}, fmt.Errorf("layer diffID %q: %w", d.DiffID, err)
	}
	return v1.Descriptor{MediaType: types.MediaType(d.MediaType), Size: d.Size, Digest: h}, diffID, nil
}

func ociMediaType(mt types.MediaType) string {
	switch mt {
	case types.DockerLayer, "":
		return string(types.OCILayer)
	case types.DockerUncompressedLayer:
		return string(types.OCIUncompressedLayer)
	case types.DockerForeignLayer:
		return string(types.OCIRestrictedLayer)
	}
	return string(mt)
}

// Writer streams normalized tar entries through gzip into an io.Writer
// while computing the layer's digest and diffID.
type Writer struct {
	opts    Options
	out     *countingHash
	gz      *gzip.Writer
	diff    hash.Hash
	tw      *tar.Writer
	entries int
	closed  bool
}

// NewWriter returns a Writer that writes the compressed layer to w.
func NewWriter(w io.Writer, opts Options) *Writer {
	out := &countingHash{w: w, h: sha256.New()}
	gz, _ := gzip.NewWriterLevel(out, compressionLevel) // the level is valid
	diff := sha256.New()
	sinks := []io.Writer{gz, diff}
	if opts.Tee != nil {
		sinks = append(sinks, opts.Tee)
	}
	return &Writer{
		opts: opts,
		out:  out,
		gz:   gz,
		diff: diff,
		tw:   tar.NewWriter(io.MultiWriter(sinks...)),
	}
}

// Add writes one entry. body is read for regular files (hdr.Size bytes) and
// ignored otherwise. The header is normalized in place before writing.
func (w *Writer) Add(hdr *tar.Header, body io.Reader) error {
	Normalize(hdr, w.opts)
	if err := w.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("layer entry %s: %w", hdr.Name, err)
	}
	w.entries++
	if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
		n, err := io.Copy(w.tw, io.LimitReader(body, hdr.Size))
		if err != nil {
			return fmt.Errorf("layer entry %s: %w", hdr.Name, err)
		}
		if n != hdr.Size {
			return fmt.Errorf("layer entry %s: file changed while being read (%d of %d bytes)", hdr.Name, n, hdr.Size)
		}
	}
	return nil
}

// Entries reports how many entries were added.
func (w *Writer) Entries() int { return w.entries }

// Close finishes the tar stream and the compression and returns the
// layer's descriptor. It does not close the underlying writer.
func (w *Writer) Close() (Descriptor, error) {
	if w.closed {
		return Descriptor{}, fmt.Errorf("layer writer already closed")
	}
	w.closed = true
	if err := w.tw.Close(); err != nil {
		return Descriptor{}, err
	}
	if err := w.gz.Close(); err != nil {
		return Descriptor{}, err
	}
	return Descriptor{
		Digest:    digest.NewDigest(digest.SHA256, w.out.h),
		DiffID:    digest.NewDigest(digest.SHA256, w.diff),
		Size:      w.out.n,
		MediaType: MediaType,
	}, nil
}

// Normalize rewrites hdr so that it depends only on content: it drops
// atime, ctime, user and group names and device numbers of non-devices,
// truncates the mtime to whole seconds and clamps it to opts.Epoch.
func Normalize(hdr *tar.Header, opts Options) {
	hdr.Uname, hdr.Gname = "", ""
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	hdr.ModTime = hdr.ModTime.Truncate(time.Second).UTC()
	if opts.Epoch != nil && hdr.ModTime.After(*opts.Epoch) {
		hdr.ModTime = opts.Epoch.UTC()
	}
	if hdr.Typeflag != tar.TypeChar && hdr.Typeflag != tar.TypeBlock {
		hdr.Devmajor, hdr.Devminor = 0, 0
	}
	if hdr.Typeflag != tar.TypeReg {
		hdr.Size = 0
	}
	hdr.Format = tar.FormatPAX
	hdr.PAXRecords = filterPAX(hdr.PAXRecords)
	hdr.Xattrs = nil //nolint:staticcheck // superseded by PAXRecords, cleared for determinism
}

// filterPAX keeps only the extended attributes that change behaviour
// (capabilities and ACLs); everything else is circumstance.
func filterPAX(in map[string]string) map[string]string {
	var out map[string]string
	for k, v := range in {
		switch k {
		case "SCHILY.xattr.security.capability", "SCHILY.xattr.system.posix_acl_access", "SCHILY.xattr.system.posix_acl_default":
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

type countingHash struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}
