package remote

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/archive"
	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/registry"
	"github.com/minibuild/minibuild/store"
)

func TestParseSpecCacheMounts(t *testing.T) {
	for _, in := range []string{"type=registry,ref=r/c,cache-mounts=true", "type=local,dest=d,cache-mounts"} {
		if sp, err := ParseSpec(in, true); err != nil || !sp.CacheMounts {
			t.Errorf("%s: %+v, %v", in, sp, err)
		}
	}
	for in, want := range map[string]string{
		"type=inline,cache-mounts=true":            "cache-mounts needs type=registry or type=local",
		"type=registry,ref=r/c,cache-mounts=maybe": "cache-mounts=maybe",
	} {
		if _, err := ParseSpec(in, true); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--cache-to %s: %v, want %q", in, err, want)
		}
	}
	for _, in := range []string{"type=registry,ref=r/c,cache-mounts=true", "type=local,src=d,cache-mounts=false"} {
		if _, err := ParseSpec(in, false); err == nil || !strings.Contains(err.Error(), "cache-mounts is a --cache-to option") {
			t.Errorf("--cache-from %s: %v", in, err)
		}
	}
}

// cacheMountBlob stores a layer holding one file and returns its
// CacheMount.
func cacheMountBlob(t *testing.T, s *store.Store, id string) CacheMount {
	t.Helper()
	var buf bytes.Buffer
	w := layer.NewWriter(&buf, layer.Options{})
	body := "filled"
	if err := w.Add(&tar.Header{Name: "marker", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	desc, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutBlob(bytes.NewReader(buf.Bytes()), desc.Digest); err != nil {
		t.Fatal(err)
	}
	return CacheMount{ID: id, Sharing: "locked", Layer: desc}
}

// readCacheMount reads what src holds for id, or "" when nothing.
func readCacheMount(t *testing.T, src *Source, id string) string {
	t.Helper()
	rc, ok, err := src.CacheMount(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return ""
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return digest.FromBytes(b).String()
}

func TestCacheMountsRoundTrip(t *testing.T) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()
	f := newFixture(t)
	c := Collect(f.s, f.idx, f.keys)
	m := cacheMountBlob(t, f.s, "/root/.cache/app")
	c.AddCacheMount(CacheMount{ID: "/z", Layer: m.Layer})
	c.AddCacheMount(m)
	c.AddCacheMount(m) // once per id
	if len(c.CacheMounts) != 2 || c.CacheMounts[0].ID != "/root/.cache/app" {
		t.Fatalf("cache mounts %+v", c.CacheMounts)
	}

	dir := filepath.Join(t.TempDir(), "cache")
	if err := ExportLocal(f.s, c, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := ExportRegistry(ctx, f.s, c, host+"/app:cache", registry.Options{}); err != nil {
		t.Fatal(err)
	}
	// The artifact's layer says what it is.
	desc, _ := archive.LayoutAt(dir).Ref(LayoutRefName)
	raw, _ := archive.LayoutAt(dir).ReadBlob(desc, 1<<20)
	mf, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	var annotated int
	for _, l := range mf.Layers {
		if l.Annotations[CacheMountIDAnnotation] == "/root/.cache/app" && l.Annotations[CacheMountSharingAnnotation] == "locked" {
			annotated++
		}
	}
	if annotated != 1 {
		t.Errorf("layers %+v: want one annotated with the cache mount", mf.Layers)
	}

	want := m.Layer.Digest.String()
	for name, imp := range map[string]func(*store.Store) (*Source, error){
		"local": func(s *store.Store) (*Source, error) { return ImportLocal(s, dir) },
		"registry": func(s *store.Store) (*Source, error) {
			return ImportRegistry(ctx, s, host+"/app:cache", registry.Options{})
		},
	} {
		fresh, _ := store.Open(t.TempDir())
		src, err := imp(fresh)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		check(t, f, src, fresh)
		if got := readCacheMount(t, src, "/root/.cache/app"); got != want {
			t.Errorf("%s: cache mount blob %s, want %s", name, got, want)
		}
		if got := readCacheMount(t, src, "/other"); got != "" {
			t.Errorf("%s: an id never exported was found", name)
		}
		if cm, ok := src.CacheMountLayer("/root/.cache/app"); !ok || cm.Sharing != "locked" {
			t.Errorf("%s: CacheMountLayer %+v %v", name, cm, ok)
		}
	}
}
