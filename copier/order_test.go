package copier_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/minibuild/minibuild/buildctx"
	"github.com/minibuild/minibuild/copier"
	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/snapshot"
)

// orderEntry is one tar member: a name ending in "/" is a directory.
type orderEntry struct {
	name string
	mode int64
	body string
}

func orderTar(t *testing.T, es []orderEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Mode: e.mode, Typeflag: tar.TypeReg, Size: int64(len(e.body))}
		if strings.HasSuffix(e.name, "/") {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, e.body)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// listTree is "path mode [content]" for everything under dir.
func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		r, _ := filepath.Rel(dir, p)
		line := fmt.Sprintf("%s %o", r, fi.Mode()&fs.ModePerm)
		if fi.IsDir() {
			line = fmt.Sprintf("%s/ %o", r, fi.Mode()&fs.ModePerm)
		} else if b, err := os.ReadFile(p); err == nil {
			line += " " + string(b)
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTarOrder runs the one tar rule (layer.Replaces: later entries win,
// a file replaces a directory and a directory a file, two directories
// merge) through every reader minibuild has: layer extraction
// (snapshot.Extract), -o type=local (snapshot.ExtractTree) and ADD of a
// local archive (copier, whose layer is then extracted); all agree.
func TestTarOrder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (extraction chowns)")
	}
	for _, tc := range []struct {
		name    string
		entries []orderEntry
		want    []string // "" entry: an error containing errText
		errText string
	}{
		{"dir then file", []orderEntry{{"a/", 0o755, ""}, {"a/x", 0o644, "x"}, {"a", 0o600, "file"}}, []string{"a 600 file"}, ""},
		{"file then dir", []orderEntry{{"a", 0o600, "file"}, {"a/", 0o755, ""}, {"a/x", 0o644, "x"}}, []string{"a/ 755", "a/x 644 x"}, ""},
		{"two files", []orderEntry{{"a", 0o644, "one"}, {"a", 0o600, "two"}}, []string{"a 600 two"}, ""},
		{"two dirs", []orderEntry{{"a/", 0o755, ""}, {"a/x", 0o644, "x"}, {"a/", 0o700, ""}}, []string{"a/ 700", "a/x 644 x"}, ""},
		{"deep dir then file", []orderEntry{{"a/", 0o755, ""}, {"a/b/", 0o755, ""}, {"a/b/c", 0o644, "c"}, {"a/y", 0o644, "y"}, {"a", 0o644, "f"}, {"b", 0o644, "b"}},
			[]string{"a 644 f", "b 644 b"}, ""},
		{"file then child", []orderEntry{{"a", 0o644, "file"}, {"a/x", 0o644, "x"}}, nil, "parent a is not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := orderTar(t, tc.entries)
			check := func(path string, got []string, err error) {
				t.Helper()
				if tc.errText != "" {
					if err == nil || !strings.Contains(err.Error(), tc.errText) {
						t.Errorf("%s: err = %v, want %q", path, err, tc.errText)
					}
					return
				}
				if err != nil {
					t.Fatalf("%s: %v", path, err)
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("%s: got %q, want %q", path, got, tc.want)
				}
			}

			dir := t.TempDir()
			_, err := snapshot.Extract(context.Background(), bytes.NewReader(data), dir)
			check("layer extraction", listTree(t, dir), err)

			dir = t.TempDir()
			_, err = snapshot.ExtractTree(context.Background(), bytes.NewReader(data), dir)
			check("-o type=local", listTree(t, dir), err)

			got, err := addArchive(t, data)
			check("ADD", got, err)
		})
	}
}

// addArchive ADDs the archive data to /out/ of an empty image and
// extracts the layer the copier writes: what lands under /out.
func addArchive(t *testing.T, data []byte) ([]string, error) {
	t.Helper()
	ctxDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(ctxDir, "t.tar"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := buildctx.Open(context.Background(), ctxDir, buildctx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := copier.Plan(context.Background(), c, copier.Request{Sources: []string{"t.tar"}, Dest: "/out/", Add: true})
	if err != nil {
		return nil, err
	}
	defer p.Close()
	var buf bytes.Buffer
	w := layer.NewWriter(&buf, layer.Options{})
	if err := p.Write(w); err != nil {
		return nil, err
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if _, err := snapshot.Extract(context.Background(), &buf, root); err != nil {
		return nil, fmt.Errorf("the layer ADD wrote does not extract: %w", err)
	}
	return listTree(t, filepath.Join(root, "out")), nil
}
