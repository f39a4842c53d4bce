package snapshot_test

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/minibuild/minibuild/snapshot"
)

// devicesTar is a layer with a block node (a loop device's 7:0), a char
// node and a file.
func devicesTar(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "node", Typeflag: tar.TypeBlock, Mode: 0o666, Devmajor: 7, Devminor: 0},
		{Name: "dev/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "dev/mem", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 1},
		{Name: "file", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte("hi"))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A host tree (-o type=local) gets no device node; a layer dir (only ever
// mounted nodev) keeps them, so the rootfs RUN sees is the image's.
func TestExtractDevices(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	layer := devicesTar(t)
	tree := t.TempDir()
	devices, err := snapshot.ExtractTree(context.Background(), bytes.NewReader(layer), tree)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(devices, []string{"node", "dev/mem"}) {
		t.Errorf("skipped devices = %q", devices)
	}
	for _, n := range []string{"node", "dev/mem"} {
		if _, err := os.Lstat(filepath.Join(tree, n)); err == nil {
			t.Errorf("ExtractTree made %s on the host", n)
		}
	}
	if b, err := os.ReadFile(filepath.Join(tree, "file")); err != nil || string(b) != "hi" {
		t.Errorf("file = %q, %v", b, err)
	}

	dir := t.TempDir()
	if _, err := snapshot.Extract(context.Background(), bytes.NewReader(layer), dir); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "node"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Major(st.Rdev) != 7 {
		t.Errorf("layer dir node: %+v, %v", st, err)
	}
}
