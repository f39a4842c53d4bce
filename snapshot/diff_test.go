package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/snapshot/snapshottest"
	"golang.org/x/sys/unix"
)

// A RUN that leaves a unix socket behind (a daemon it started) still
// makes a layer: sockets are not part of one, as in docker and BuildKit,
// with either snapshotter kind.
func TestDiffSkipsSockets(t *testing.T) {
	requireRoot(t)
	for _, kind := range []Kind{KindOverlay, KindCopy} {
		t.Run(string(kind), func(t *testing.T) {
			b := &snapshottest.Blobs{}
			base := addLayer(t, b, E{Name: "run/", Mode: 0o755})
			sn, err := New(t.TempDir(), b)
			if err != nil {
				t.Fatal(err)
			}
			sn.SetKind(kind)
			s, err := sn.Prepare(context.Background(), []Layer{base})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Release()
			w := s.writable()
			if err := os.MkdirAll(filepath.Join(w, "run"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(w, "run/pid"), []byte("1"), 0o644); err != nil {
				t.Fatal(err)
			}
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			if err := unix.Bind(fd, &unix.SockaddrUnix{Name: filepath.Join(w, "run/d.sock")}); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			lw := layer.NewWriter(&buf, layer.Options{})
			if err := s.Diff(lw); err != nil {
				t.Fatalf("Diff: %v", err)
			}
			if _, err := lw.Close(); err != nil {
				t.Fatal(err)
			}
			zr, err := Decompress(&buf)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			tr := tar.NewReader(zr)
			for {
				hdr, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				names = append(names, hdr.Name)
			}
			if want := []string{"run/", "run/pid"}; !equal(names, want) {
				t.Errorf("entries %q, want %q", names, want)
			}
		})
	}
}
