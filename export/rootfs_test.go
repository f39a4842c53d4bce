package export

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/minibuild/minibuild/archive"
)

// tarLayer is an uncompressed layer of entries "name=content" ("name/"
// is a directory, "name" with no "=" an empty file).
func tarLayer(t *testing.T, entries ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		name, body, _ := strings.Cut(e, "=")
		h := &tar.Header{Name: name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(body))}
		if strings.HasSuffix(name, "/") {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, body)
	}
	tw.Close()
	return buf.Bytes()
}

// -o type=local writes the tree RUN sees: layers applied in order, a
// later duplicate in one layer wins (a flattened tar kept the first),
// whiteouts and opaque dirs hide what is below, a file replaces a dir.
func TestLocalOutputIsWhatRunSees(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (extraction chowns)")
	}
	img := empty.Image
	for _, data := range [][]byte{
		tarLayer(t, "dup=one", "dup=two", "d/", "d/old=old", "gone=x", "x/", "x/y=y", "keep/", "keep/a=a"),
		tarLayer(t, "d/", "d/.wh..wh..opq", "d/new=new", ".wh.gone", "x=now a file", "keep/b=b"),
	} {
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	dest := filepath.Join(t.TempDir(), "out")
	if err := (Output{Type: "local", Dest: dest}).Write(context.Background(), []archive.Named{{Image: img}}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"dup": "two", "d/new": "new", "x": "now a file", "keep/a": "a", "keep/b": "b"}
	for name, body := range want {
		if b, err := os.ReadFile(filepath.Join(dest, name)); err != nil || string(b) != body {
			t.Errorf("%s = %q, %v; want %q", name, b, err, body)
		}
	}
	for _, name := range []string{"d/old", "gone", "x/y"} {
		if _, err := os.Lstat(filepath.Join(dest, name)); err == nil {
			t.Errorf("%s is in the tree; a later layer hid it", name)
		}
	}
}
