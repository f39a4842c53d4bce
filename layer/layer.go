// Package layer writes deterministic layer tarballs (DESIGN.md invariant 3).
//
// Every layer minibuild creates — a RUN's diff, a COPY, a WORKDIR — goes
// through Writer, so the same entries give the same diffID and digest on
// every host: headers are normalized (no atime/ctime, no user or group
// names, whole-second mtimes clamped to SOURCE_DATE_EPOCH when set), and one
// gzip compressor runs at fixed settings, one gzip member per header and
// per file's data (see Writer). Callers add entries in a deterministic
// order (a lexical directory walk).
package layer

import (
	"archive/tar"
	"bytes"
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
	// Tee, when non-nil, also receives the uncompressed tar stream, in
	// order, e.g. to extract the layer while it is written. It is written
	// on a goroutine of its own, so that the caller of Add does not wait
	// for it; Close returns after its last Write, and a Write error fails
	// the next Add or Close. As io.Writer requires, Write must not retain
	// p: the Writer reuses the buffer. A Tee that is a SumHinter also
	// gets each AddFile entry's content digest, before its bytes.
	Tee io.Writer
	// Pool, when non-nil, supplies the members of entries already stored.
	Pool Pool
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

// Writer streams normalized tar entries into a gzip layer while computing
// the layer's digest and diffID. Every entry's header blocks become a gzip
// member at the fixed settings, a regular file's data and padding others
// (one per ChunkSize), and the tar trailer is the last one: the same
// header or content always gives the same member bytes, so a Pool can
// supply the members of entries written before instead of compressing
// them again, and every gzip reader still reads the blob as one tar
// stream (eStargz layers are made the same way). The digest and diffID
// are hashed over the real streams either way.
type Writer struct {
	opts    Options
	out     io.Writer
	sink    Sink       // out as a Sink, or nil
	blobSum DigestSink // out when it hashes the blob itself, or nil
	hinter  SumHinter  // the Tee as a SumHinter, or nil
	blob    hash.Hash  // nil when blobSum hashes
	size    int64
	diff    hash.Hash // fed in order by the pipeline's writer goroutine
	tw      *tar.Writer
	blk     [blockSize]byte // a header ustarHeader formats
	cut     *cutter
	pipe    *pipeline
	entries int
	closed  bool
}

// NewWriter returns a Writer that writes the compressed layer to w (member
// by member when w is a Sink), taking members from opts.Pool when it has
// them. The Writer compresses on every core: Close or Abort it.
func NewWriter(w io.Writer, opts Options) *Writer {
	lw := &Writer{opts: opts, out: w, diff: sha256.New()}
	lw.sink, _ = w.(Sink)
	lw.hinter, _ = opts.Tee.(SumHinter)
	if lw.blobSum, _ = w.(DigestSink); lw.blobSum == nil {
		lw.blob = sha256.New()
	}
	lw.cut = &cutter{emit: lw.emit, bufs: &bufPool{}}
	lw.tw = tar.NewWriter(lw.cut)
	lw.pipe = newPipeline(opts.Pool, lw.diff.Write, opts.Tee, lw.writeMember, lw.cut.bufs)
	return lw
}

// emit sends one member's uncompressed bytes on to compression; the
// pipeline hashes the diffID and feeds the Tee, in order, on its own
// goroutine. A Tee error stops the layer at the next entry.
func (w *Writer) emit(raw []byte, sum *[sha256.Size]byte, size int64) error {
	if err := w.pipe.teeFailed(); err != nil {
		return err
	}
	return w.pipe.submit(raw, sum, size)
}

// writeMember writes one compressed member, in order.
func (w *Writer) writeMember(m *member) error {
	if w.blob != nil {
		w.blob.Write(m.out)
	}
	w.size += int64(len(m.out))
	if w.sink != nil {
		return w.sink.WriteMember(m.key, m.from, m.out)
	}
	_, err := w.out.Write(m.out)
	return err
}

// Add writes one entry. body is read for regular files (hdr.Size bytes) and
// ignored otherwise. The header is normalized in place before writing.
func (w *Writer) Add(hdr *tar.Header, body io.Reader) error {
	return w.add(hdr, body, nil)
}

// add writes one entry whose content is body, or data when body is nil.
// A plain header (ustarHeader) is formatted here and the entry written
// straight to the cutter; any other goes through archive/tar. Both give
// the same bytes.
func (w *Writer) add(hdr *tar.Header, body io.Reader, data []byte) error {
	if w.closed {
		return fmt.Errorf("layer entry %s: the layer writer is closed", hdr.Name)
	}
	Normalize(hdr, w.opts)
	if w.cut.sum != nil && w.hinter != nil {
		w.hinter.HintSum(hdr.Name, *w.cut.sum)
	}
	w.cut.next = 2048 // header blocks
	w.entries++
	if !ustarHeader(hdr, &w.blk) {
		return w.addTar(hdr, body, data)
	}
	if _, err := w.cut.Write(w.blk[:]); err != nil {
		return fmt.Errorf("layer entry %s: %w", hdr.Name, err)
	}
	if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
		if err := w.startData(hdr); err != nil {
			return err
		}
		var n int64
		var err error
		if body == nil {
			var k int
			k, err = w.cut.Write(data)
			n = int64(k)
		} else {
			n, err = io.Copy(w.cut, io.LimitReader(body, hdr.Size))
		}
		if err != nil {
			return fmt.Errorf("layer entry %s: %w", hdr.Name, err)
		}
		if n != hdr.Size {
			return fmt.Errorf("layer entry %s: file changed while being read (%d of %d bytes)", hdr.Name, n, hdr.Size)
		}
		if pad := (blockSize - hdr.Size%blockSize) % blockSize; pad > 0 {
			if _, err := w.cut.Write(zeroBlock[:pad]); err != nil {
				return fmt.Errorf("layer entry %s: %w", hdr.Name, err)
			}
		}
	}
	if err := w.cut.end(); err != nil {
		return fmt.Errorf("layer entry %s: %w", hdr.Name, err)
	}
	return nil
}

var zeroBlock [blockSize]byte

// startData ends the member of a regular file's header blocks, so that
// its data starts a member of its own.
func (w *Writer) startData(hdr *tar.Header) error {
	if err := w.cut.endHeader(); err != nil {
		return fmt.Errorf("layer entry %s: %w", hdr.Name, err)
	}
	w.cut.next = int(min(hdr.Size, ChunkSize)) + blockSize // data and padding
	return nil
}

// addTar writes an entry through archive/tar.
func (w *Writer) addTar(hdr *tar.Header, body io.Reader, data []byte) error {
	if err := w.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("layer entry %s: %w", hdr.Name, err)
	}
	if body == nil {
		body = bytes.NewReader(data)
	}
	if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
		if err := w.startData(hdr); err != nil {
			return err
		}
		n, err := io.Copy(w.tw, io.LimitReader(body, hdr.Size))
		if err != nil {
			return fmt.Errorf("layer entry %s: %w", hdr.Name, err)
		}
		if n != hdr.Size {
			return fmt.Errorf("layer entry %s: file changed while being read (%d of %d bytes)", hdr.Name, n, hdr.Size)
		}
	}
	if err := w.tw.Flush(); err != nil {
		return fmt.Errorf("layer entry %s: %w", hdr.Name, err)
	}
	if err := w.cut.end(); err != nil {
		return fmt.Errorf("layer entry %s: %w", hdr.Name, err)
	}
	return nil
}

// AddFile writes one regular file whose content is data and whose sha256
// is sum. The caller vouches for sum: it must be the digest of exactly
// data (computed while data was read, or proven to describe those bytes,
// see buildctx.Context.ReadFile), since the key of data that fits one
// member is then taken from sum instead of hashing data again. The layer's bytes are those Add would write.
func (w *Writer) AddFile(hdr *tar.Header, data []byte, sum [sha256.Size]byte) error {
	if hdr.Typeflag != tar.TypeReg || int64(len(data)) != hdr.Size {
		return fmt.Errorf("layer entry %s: AddFile takes a regular file of %d bytes, got %d", hdr.Name, hdr.Size, len(data))
	}
	w.cut.sum, w.cut.size = &sum, hdr.Size
	defer func() { w.cut.sum = nil }()
	return w.add(hdr, nil, data)
}

// SumHinter is a Tee that takes the content digest of a regular file
// before its bytes (AddFile knows it): an extraction can then tell an
// unchanged file without hashing it again. The digest is of the bytes the
// entry carries, proven as AddFile's caller proves it.
type SumHinter interface {
	HintSum(name string, sum [sha256.Size]byte)
}

// Entries reports how many entries were added.
func (w *Writer) Entries() int { return w.entries }

// Close finishes the tar stream (its trailer is the last member) and the
// compression and returns the layer's descriptor. It does not close the
// underlying writer.
func (w *Writer) Close() (Descriptor, error) {
	if w.closed {
		return Descriptor{}, fmt.Errorf("layer writer already closed")
	}
	w.closed = true
	err := w.tw.Close()
	if err == nil {
		err = w.cut.end()
	}
	if perr := w.pipe.close(); err == nil {
		err = perr
	}
	if err != nil {
		return Descriptor{}, err
	}
	var blob digest.Digest
	if w.blobSum != nil {
		blob = w.blobSum.Digest()
	} else {
		blob = digest.NewDigest(digest.SHA256, w.blob)
	}
	return Descriptor{
		Digest:    blob,
		DiffID:    digest.NewDigest(digest.SHA256, w.diff),
		Size:      w.size,
		MediaType: MediaType,
	}, nil
}

// Abort stops the compression of a layer that will not be closed (its
// caller failed); after Close it does nothing.
func (w *Writer) Abort() {
	if w.closed {
		return
	}
	w.closed = true
	w.pipe.close()
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
