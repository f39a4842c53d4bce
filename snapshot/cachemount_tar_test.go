package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minibuild/minibuild/layer"
)

func TestCacheMountRoundTrip(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	a, err := New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var empty bytes.Buffer
	if ok, err := a.WriteCacheMount(ctx, "/c", layer.NewWriter(&empty, layer.Options{})); ok || err != nil {
		t.Fatalf("absent cache mount written: %v %v", ok, err)
	}
	cm, err := a.CacheMount(ctx, "/c", CacheMountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(cm.Dir, "sub"), 0o750)
	os.WriteFile(filepath.Join(cm.Dir, "sub", "f"), []byte("content"), 0o640)
	os.Link(filepath.Join(cm.Dir, "sub", "f"), filepath.Join(cm.Dir, "g"))
	os.Symlink("sub/f", filepath.Join(cm.Dir, "l"))
	cm.Release()

	write := func() []byte {
		var buf bytes.Buffer
		w := layer.NewWriter(&buf, layer.Options{})
		if ok, err := a.WriteCacheMount(ctx, "/c", w); !ok || err != nil {
			t.Fatalf("write: %v %v", ok, err)
		}
		if _, err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	blob := write()
	if !bytes.Equal(blob, write()) {
		t.Error("the same cache mount gave two different tarballs")
	}

	b, err := New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	mode := uint32(0o700)
	if ok, err := b.RestoreCacheMount(ctx, "/c", CacheMountOptions{Mode: &mode}, bytes.NewReader(blob)); !ok || err != nil {
		t.Fatalf("restore: %v %v", ok, err)
	}
	if ok, err := b.RestoreCacheMount(ctx, "/c", CacheMountOptions{}, bytes.NewReader(blob)); ok || err != nil {
		t.Fatalf("restore over an existing instance: %v %v", ok, err)
	}
	got, err := b.CacheMount(ctx, "/c", CacheMountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer got.Release()
	if data, err := os.ReadFile(filepath.Join(got.Dir, "l")); err != nil || string(data) != "content" {
		t.Errorf("restored content: %q %v", data, err)
	}
	fi1, _ := os.Stat(filepath.Join(got.Dir, "g"))
	fi2, _ := os.Stat(filepath.Join(got.Dir, "sub", "f"))
	if !os.SameFile(fi1, fi2) {
		t.Error("hard link not kept")
	}
	if fi, _ := os.Stat(got.Dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %o, want the options' 700", fi.Mode().Perm())
	}
}

func TestRestoreCacheMountRefuses(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	for name, hdr := range map[string]*tar.Header{
		"device":   {Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666},
		"fifo":     {Name: "p", Typeflag: tar.TypeFifo, Mode: 0o644},
		"whiteout": {Name: "d/.wh.x", Typeflag: tar.TypeReg, Mode: 0o644},
	} {
		t.Run(name, func(t *testing.T) {
			sn, err := New(t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			tw.WriteHeader(hdr)
			tw.Close()
			if _, err := sn.RestoreCacheMount(ctx, "/c", CacheMountOptions{}, &buf); err == nil || !strings.Contains(err.Error(), "cache mount") {
				t.Fatalf("err = %v", err)
			}
			if sn.HasCacheMount("/c") {
				t.Error("a refused tarball left an instance")
			}
		})
	}

	// Paths and links resolve inside the data dir.
	sn, err := New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "esc", Typeflag: tar.TypeSymlink, Linkname: outside})
	tw.WriteHeader(&tar.Header{Name: "esc/pwned", Typeflag: tar.TypeReg, Mode: 0o644})
	tw.WriteHeader(&tar.Header{Name: "../../up", Typeflag: tar.TypeReg, Mode: 0o644})
	tw.Close()
	if _, err := sn.RestoreCacheMount(ctx, "/c", CacheMountOptions{}, &buf); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(outside, "pwned")); err == nil {
		t.Error("an entry escaped through a symlink")
	}
}
