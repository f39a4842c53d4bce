package archive

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestLayoutDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "layout")
	l := LayoutAt(dir)
	if _, err := l.Index(); err == nil || !strings.Contains(err.Error(), "no OCI layout") {
		t.Fatalf("index of nothing: %v", err)
	}
	data := []byte("blob content")
	h := sha256Of(data)
	if err := l.PutBlob(sha256Of([]byte("other")), bytesOpener(data)); err == nil {
		t.Error("a blob stored under the wrong digest")
	}
	if _, err := os.Stat(l.BlobPath(sha256Of([]byte("other")))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a rejected blob left its file: %v", err)
	}
	if err := l.PutBlob(h, bytesOpener(data)); err != nil {
		t.Fatal(err)
	}
	if err := l.PutBlob(h, func() (io.ReadCloser, error) { return nil, errors.New("not opened again") }); err != nil {
		t.Errorf("a present blob was written again: %v", err)
	}
	if b, err := l.ReadBlob(v1.Descriptor{Digest: h, Size: int64(len(data))}, 1<<20); err != nil || string(b) != string(data) {
		t.Errorf("ReadBlob = %q, %v", b, err)
	}
	if _, err := l.ReadBlob(v1.Descriptor{Digest: h, Size: int64(len(data))}, 4); err == nil {
		t.Error("ReadBlob read past its limit")
	}

	for _, m := range []string{`{"a":1}`, `{"a":2}`} {
		if err := l.SetRef("cache", []byte(m), types.OCIManifestSchema1); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.SetRef("other", []byte(`{"b":1}`), types.OCIManifestSchema1); err != nil {
		t.Fatal(err)
	}
	idx, err := l.Index()
	if err != nil || len(idx.Manifests) != 2 {
		t.Fatalf("index: %+v, %v", idx, err)
	}
	d, err := l.Ref("cache")
	if err != nil || d.Digest != sha256Of([]byte(`{"a":2}`)) {
		t.Errorf("Ref = %v, %v", d, err)
	}
	if _, err := l.Ref("missing"); err == nil {
		t.Error("a missing ref found")
	}
	// what Read accepts as a layout directory
	if b, err := os.ReadFile(filepath.Join(dir, layoutFile)); err != nil || string(b) != layoutJSON {
		t.Errorf("oci-layout: %q, %v", b, err)
	}
}
