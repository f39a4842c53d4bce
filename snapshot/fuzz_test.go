package snapshot_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minibuild/minibuild/snapshot"
)

// fuzzTar is a tar of hdrs, each regular file holding its name.
func fuzzTar(hdrs ...*tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(h.Name))
		}
		if tw.WriteHeader(h) != nil {
			return nil
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(h.Name))
		}
	}
	tw.Close()
	return buf.Bytes()
}

// FuzzExtract unpacks arbitrary tars into a root inside a temp dir, with
// Extract (layer dirs) and ExtractTree (-o type=local): nothing may panic,
// and nothing may appear, change or go outside the root, however the
// entries' names, symlinks and hard links point.
func FuzzExtract(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("needs root (ownership and device nodes)")
	}
	reg := func(n string) *tar.Header { return &tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644} }
	for _, seed := range [][]byte{
		fuzzTar(&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}, reg("d/f"), reg(".wh.x"), reg("d/.wh..wh..opq")),
		fuzzTar(reg("../escape"), reg("/abs"), reg("a/../../up")),
		fuzzTar(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../.."}, reg("l/escape")),
		fuzzTar(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/"}, reg("l/tmp/escape")),
		fuzzTar(&tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../outside"}, reg("h")),
		fuzzTar(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../outside"}, &tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "l"}, reg("h")),
		fuzzTar(reg("f"), &tar.Header{Name: "f/", Typeflag: tar.TypeDir, Mode: 0o755}, reg("f/g"), reg("f")),
		fuzzTar(&tar.Header{Name: "n", Typeflag: tar.TypeBlock, Mode: 0o600, Devmajor: 7}, &tar.Header{Name: "p", Typeflag: tar.TypeFifo, Mode: 0o600}),
		fuzzTar(&tar.Header{Name: "x", Typeflag: tar.TypeReg, Mode: 0o4755, PAXRecords: map[string]string{"SCHILY.xattr.user.k": "v"}}),
		[]byte("not a tar"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		outside := filepath.Join(parent, "outside")
		if err := os.WriteFile(outside, []byte("host"), 0o644); err != nil {
			t.Fatal(err)
		}
		layerRoot, treeRoot := filepath.Join(parent, "layer"), filepath.Join(parent, "tree")
		for _, d := range []string{layerRoot, treeRoot} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		ctx := context.Background()
		_, _ = snapshot.Extract(ctx, bytes.NewReader(data), layerRoot)
		_, _ = snapshot.ExtractTree(ctx, bytes.NewReader(data), treeRoot)

		err := filepath.WalkDir(parent, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch {
			case p == parent:
			case p == outside:
				if b, err := os.ReadFile(p); err != nil || string(b) != "host" || !d.Type().IsRegular() {
					t.Errorf("the file outside the roots changed: %q, %v", b, err)
				}
			case p == layerRoot || p == treeRoot || strings.HasPrefix(p, layerRoot+"/") || strings.HasPrefix(p, treeRoot+"/"):
			default:
				t.Errorf("%s was written outside the roots", p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
