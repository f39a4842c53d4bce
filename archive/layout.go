package archive

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/minibuild/minibuild/internal/atomicfile"
)

// The OCI image layout, in one place: what its files are called and what
// they hold. WriteOCI writes it as a tar, Read reads it from a tar or a
// directory, and Layout reads and updates a directory in place (the
// type=local build cache).
const (
	layoutFile = "oci-layout"
	indexFile  = "index.json"
	layoutJSON = `{"imageLayoutVersion":"1.0.0"}`

	// AnnotationRefName names an index entry: an image's tag alone (what
	// `skopeo oci-archive:F:TAG` and `umoci --image DIR:TAG` match), or any
	// name, such as the build cache's.
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// annotationImageName is containerd's full image name, written beside
	// the tag as BuildKit and containerd do.
	annotationImageName = "io.containerd.image.name"
)

// blobName is where a blob lives inside a layout.
func blobName(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// layoutFiles opens a layout's files by their slash name (indexFile,
// blobName(h)): a directory, or the entries of a tar.
type layoutFiles func(name string) (io.ReadCloser, error)

// parseIndex reads index.json.
func parseIndex(open layoutFiles) (*v1.IndexManifest, error) {
	rc, err := open(indexFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", indexFile, err)
	}
	defer rc.Close()
	idx, err := v1.ParseIndexManifest(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", indexFile, err)
	}
	return idx, nil
}

// Layout is an OCI image layout directory, read and updated in place.
// Every file is written to a temp name and renamed, so a concurrent or
// interrupted writer leaves the previous layout readable.
type Layout struct{ dir string }

// LayoutAt is the layout in dir (which need not exist yet).
func LayoutAt(dir string) *Layout { return &Layout{dir: dir} }

func (l *Layout) open(name string) (io.ReadCloser, error) {
	return os.Open(filepath.Join(l.dir, filepath.FromSlash(name)))
}

// Index reads index.json.
func (l *Layout) Index() (*v1.IndexManifest, error) {
	idx, err := parseIndex(l.open)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no OCI layout (%s) there", indexFile)
	}
	return idx, err
}

// BlobPath is the file that holds blob h.
func (l *Layout) BlobPath(h v1.Hash) string {
	return filepath.Join(l.dir, filepath.FromSlash(blobName(h)))
}

// Blob opens blob h.
func (l *Layout) Blob(h v1.Hash) (io.ReadCloser, error) { return os.Open(l.BlobPath(h)) }

// ReadBlob reads a small blob whole (at most limit bytes), verified
// against its digest.
func (l *Layout) ReadBlob(d v1.Descriptor, limit int64) ([]byte, error) {
	if d.Size > limit {
		return nil, fmt.Errorf("blob %s: %d bytes is too big", d.Digest, d.Size)
	}
	b, err := os.ReadFile(l.BlobPath(d.Digest))
	if err != nil {
		return nil, err
	}
	if err := checkDigest(d.Digest, sha256Of(b)); err != nil {
		return nil, fmt.Errorf("blob %s is corrupt", d.Digest)
	}
	return b, nil
}

// PutBlob stores blob h from open, unless the layout has it. The content
// is verified against h before it appears under its name.
func (l *Layout) PutBlob(h v1.Hash, open func() (io.ReadCloser, error)) error {
	dst := l.BlobPath(h)
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	rc, err := open()
	if err != nil {
		return fmt.Errorf("blob %s: %w", h, err)
	}
	defer rc.Close()
	vr := &verifyingReader{r: rc, h: sha256.New(), want: h}
	return atomicfile.Write(dst, vr, 0o644)
}

// SetRef stores manifest raw and makes it the index's only entry named
// ref (AnnotationRefName); other entries are kept. A missing or broken
// index is replaced, and oci-layout is written.
func (l *Layout) SetRef(ref string, raw []byte, mt types.MediaType) error {
	desc := v1.Descriptor{MediaType: mt, Size: int64(len(raw)), Digest: sha256Of(raw),
		Annotations: map[string]string{AnnotationRefName: ref}}
	if err := l.PutBlob(desc.Digest, bytesOpener(raw)); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(l.dir, layoutFile), []byte(layoutJSON), 0o644); err != nil {
		return err
	}
	idx, _ := l.Index()
	if idx == nil {
		idx = &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	}
	var kept []v1.Descriptor
	for _, d := range idx.Manifests {
		if d.Annotations[AnnotationRefName] != ref {
			kept = append(kept, d)
		}
	}
	idx.Manifests = append(kept, desc)
	b, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(l.dir, indexFile), b, 0o644)
}

// Ref is the index entry named ref (the last one, if several are).
func (l *Layout) Ref(ref string) (v1.Descriptor, error) {
	idx, err := l.Index()
	if err != nil {
		return v1.Descriptor{}, err
	}
	var desc *v1.Descriptor
	for i, d := range idx.Manifests {
		if d.Annotations[AnnotationRefName] == ref {
			desc = &idx.Manifests[i]
		}
	}
	if desc == nil {
		return v1.Descriptor{}, fmt.Errorf("the layout has no %q manifest", ref)
	}
	return *desc, nil
}

func sha256Of(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// checkDigest compares content's digest with the one it should have.
func checkDigest(want, got v1.Hash) error {
	if want.Algorithm != "sha256" {
		return fmt.Errorf("blob %s: only sha256 is supported", want)
	}
	if got != want {
		return fmt.Errorf("blob %s: content has digest %s", want, got)
	}
	return nil
}

// verifyingReader fails at EOF when what it read is not want.
type verifyingReader struct {
	r    io.Reader
	h    hash.Hash
	want v1.Hash
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	if err == io.EOF {
		got := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(v.h.Sum(nil))}
		if cerr := checkDigest(v.want, got); cerr != nil {
			return n, cerr
		}
	}
	return n, err
}

func bytesOpener(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}
