package remote

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/archive"
	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/registry"
	"github.com/minibuild/minibuild/store"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		in     string
		export bool
		want   Spec
		err    string
	}{
		{"type=registry,ref=r:5000/c:1", true, Spec{Type: "registry", Ref: "r:5000/c:1", Mode: "min"}, ""},
		{"type=registry,ref=r/c,mode=max", true, Spec{Type: "registry", Ref: "r/c", Mode: "max"}, ""},
		{"r:5000/app:1", false, Spec{Type: "registry", Ref: "r:5000/app:1", Mode: "min"}, ""},
		{"type=local,dest=/tmp/c", true, Spec{Type: "local", Dir: "/tmp/c", Mode: "min"}, ""},
		{"type=local,src=/tmp/c", false, Spec{Type: "local", Dir: "/tmp/c", Mode: "min"}, ""},
		{"type=inline", true, Spec{Type: "inline", Mode: "min"}, ""},
		{"type=local,src=/tmp/c", true, Spec{}, "src is for --cache-from"},
		{"type=local,dest=/tmp/c", false, Spec{}, "dest is for --cache-to"},
		{"type=registry", true, Spec{}, "needs ref="},
		{"type=registry,ref=x,mode=all", true, Spec{}, "mode must be"},
		{"type=inline", false, Spec{}, "give the image's reference"},
		{"type=inline,mode=max", true, Spec{}, "mode=min"},
		{"type=gha", true, Spec{}, "type must be"},
		{"type=registry,ref=x,colour=red", true, Spec{}, "unknown key"},
	}
	for _, tt := range tests {
		got, err := ParseSpec(tt.in, tt.export)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseSpec(%q, %v) = %v, want error %q", tt.in, tt.export, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseSpec(%q, %v) = %+v, %v; want %+v", tt.in, tt.export, got, err, tt.want)
		}
	}
}

// fixture is a store holding an image and an index with one record per
// layer plus one metadata-only record.
type fixture struct {
	s    *store.Store
	idx  *cache.Index
	img  v1.Image
	keys []digest.Digest
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	s, err := store.Open(filepath.Join(dir, "root"))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := cache.OpenIndex(filepath.Join(dir, "root", "cache"))
	if err != nil {
		t.Fatal(err)
	}
	img, _ := random.Image(1024, 2)
	md, err := s.WriteImage(img)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := s.Image(md.String())
	m, _ := img.Manifest()
	cf, _ := img.ConfigFile()
	f := &fixture{s: s, idx: idx, img: stored}
	parent := cache.FromKey("scratch")
	for i, l := range m.Layers {
		in := &cache.Inputs{Parent: parent, Instruction: "RUN step", Files: digest.FromString(string(rune('a' + i)))}
		key := in.Key()
		rec := &cache.Record{Layer: &layer.Descriptor{Digest: digest.Digest(l.Digest.String()), DiffID: digest.Digest(cf.RootFS.DiffIDs[i].String()), Size: l.Size, MediaType: string(l.MediaType)},
			History: v1.History{CreatedBy: "RUN step"}}
		if err := idx.Put(key, "test", in, rec); err != nil {
			t.Fatal(err)
		}
		f.keys = append(f.keys, key)
		parent = key
	}
	in := &cache.Inputs{Parent: parent, Instruction: "ENV A=1"}
	key := in.Key()
	if err := idx.Put(key, "test", in, &cache.Record{Config: v1.Config{Env: []string{"A=1"}}}); err != nil {
		t.Fatal(err)
	}
	f.keys = append(f.keys, key)
	return f
}

// check imports src into a fresh store and fetches every layer.
func check(t *testing.T, f *fixture, src *Source, fresh *store.Store) {
	t.Helper()
	if src.Len() != len(f.keys) {
		t.Fatalf("imported %d records, want %d", src.Len(), len(f.keys))
	}
	for _, k := range f.keys {
		want, _ := f.idx.Get(k)
		got, ok := src.Record(k)
		if !ok {
			t.Fatalf("record %s missing", k)
		}
		if (got.Layer == nil) != (want.Layer == nil) || got.Layer != nil && *got.Layer != *want.Layer || got.History.CreatedBy != want.History.CreatedBy {
			t.Errorf("record %s: %+v, want %+v", k, got, want)
		}
		if got.Layer != nil {
			if err := src.FetchLayer(context.Background(), *got.Layer); err != nil {
				t.Fatal(err)
			}
			if !fresh.HasBlob(got.Layer.Digest) {
				t.Errorf("layer %s not in the store after FetchLayer", got.Layer.Digest)
			}
		}
	}
	if _, ok := src.Record(digest.FromString("unknown")); ok {
		t.Error("a key never exported was found")
	}
}

func TestLocalRoundTrip(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Join(t.TempDir(), "cache")
	c := Collect(f.s, f.idx, append(f.keys, digest.FromString("missing")))
	if err := ExportLocal(f.s, c, dir); err != nil {
		t.Fatal(err)
	}
	// Exporting twice replaces the cache entry rather than adding one.
	if err := ExportLocal(f.s, c, dir); err != nil {
		t.Fatal(err)
	}
	layout := archive.LayoutAt(dir)
	idx, err := layout.Index()
	if err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("index.json: %v %v", idx, err)
	}
	fresh, _ := store.Open(t.TempDir())
	src, err := ImportLocal(fresh, dir)
	if err != nil {
		t.Fatal(err)
	}
	check(t, f, src, fresh)

	// Corrupt records are an error (a warning for the build), never a panic.
	cfg := v1.Descriptor{}
	m, _ := os.ReadFile(layout.BlobPath(idx.Manifests[0].Digest))
	mf, _ := v1.ParseManifest(strings.NewReader(string(m)))
	cfg = mf.Config
	os.Chmod(layout.BlobPath(cfg.Digest), 0o644)
	os.WriteFile(layout.BlobPath(cfg.Digest), []byte("{garbage"), 0o644)
	if _, err := ImportLocal(fresh, dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("corrupt cache: %v", err)
	}
	if _, err := ImportLocal(fresh, t.TempDir()); err == nil {
		t.Error("an empty directory imported")
	}
}

type statusLog struct {
	mu sync.Mutex
	by map[string][]string
}

func (l *statusLog) add(e registry.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.by[e.Digest] = append(l.by[e.Digest], e.Status)
}

func TestRegistryRoundTripSharesLayers(t *testing.T) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()
	f := newFixture(t)
	if _, err := registry.Push(ctx, f.s, f.img, host+"/app:1", registry.Options{}); err != nil {
		t.Fatal(err)
	}
	log := &statusLog{by: map[string][]string{}}
	c := Collect(f.s, f.idx, f.keys)
	if _, err := ExportRegistry(ctx, f.s, c, host+"/app:cache", registry.Options{Progress: log.add}); err != nil {
		t.Fatal(err)
	}
	m, _ := f.img.Manifest()
	for _, l := range m.Layers {
		if st := log.by[l.Digest.String()]; len(st) != 1 || st[0] != registry.StatusExists {
			t.Errorf("layer %s exported as %v, want exists (shared with the image)", l.Digest, st)
		}
	}
	fresh, _ := store.Open(t.TempDir())
	src, err := ImportRegistry(ctx, fresh, host+"/app:cache", registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	check(t, f, src, fresh)

	// Inline: the records ride on the image's manifest.
	val, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	inl := mutate.Annotations(f.img, map[string]string{InlineAnnotation: val}).(v1.Image)
	if _, err := registry.Push(ctx, f.s, inl, host+"/app:inline", registry.Options{}); err != nil {
		t.Fatal(err)
	}
	fresh2, _ := store.Open(t.TempDir())
	src, err = ImportRegistry(ctx, fresh2, host+"/app:inline", registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	check(t, f, src, fresh2)

	// A plain image, a missing ref: errors for a warning.
	if _, err := ImportRegistry(ctx, fresh, host+"/app:1", registry.Options{}); err == nil || !strings.Contains(err.Error(), "neither") {
		t.Errorf("foreign ref: %v", err)
	}
	if _, err := ImportRegistry(ctx, fresh, host+"/nothing:here", registry.Options{}); err == nil {
		t.Error("a missing ref imported")
	}
}

// BuildKit's other cache options are honoured (mode, ignore-error), accepted
// where they name what happens (image-manifest=true, compression=gzip,
// oci-mediatypes=true, force-compression=false) or refused by name.
func TestParseSpecOptions(t *testing.T) {
	sp, err := ParseSpec("type=registry,ref=r/c,mode=max,ignore-error=true,image-manifest=true,oci-mediatypes=true,compression=gzip,force-compression=false", true)
	if err != nil || !sp.IgnoreError || sp.Mode != "max" {
		t.Errorf("%+v, %v", sp, err)
	}
	for in, want := range map[string]string{
		"type=registry,ref=r/c,compression=zstd":       "compression=zstd is not supported: layers are gzip",
		"type=registry,ref=r/c,compression=brotli":     "compression=brotli",
		"type=registry,ref=r/c,compression-level=9":    "compression-level is not supported",
		"type=registry,ref=r/c,force-compression=true": "force-compression=true is not supported",
		"type=registry,ref=r/c,oci-mediatypes=false":   "oci-mediatypes=false is not supported",
		"type=registry,ref=r/c,image-manifest=false":   "image-manifest=false is not supported",
		"type=registry,ref=r/c,ignore-error=perhaps":   "ignore-error=perhaps: want true or false",
		"type=local,dest=d,compression=estargz":        "compression=estargz is not supported",
	} {
		if _, err := ParseSpec(in, true); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--cache-to") {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
	for _, in := range []string{"type=registry,ref=r/c,ignore-error=true", "type=registry,ref=r/c,mode=max", "type=local,src=d,compression=gzip"} {
		if _, err := ParseSpec(in, false); err == nil || !strings.Contains(err.Error(), "is a --cache-to option") {
			t.Errorf("--cache-from %s: %v", in, err)
		}
	}
}

// An imported record's diffID is a claim: FetchLayer holds the layer to it,
// fetched (nothing is committed) or already in the store.
func TestFetchLayerChecksDiffID(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Join(t.TempDir(), "cache")
	if err := ExportLocal(f.s, Collect(f.s, f.idx, f.keys), dir); err != nil {
		t.Fatal(err)
	}
	fresh, _ := store.Open(t.TempDir())
	src, err := ImportLocal(fresh, dir)
	if err != nil {
		t.Fatal(err)
	}
	rec, ok := src.Record(f.keys[0])
	if !ok || rec.Layer == nil {
		t.Fatalf("record %s: %+v", f.keys[0], rec)
	}
	lie := *rec.Layer
	lie.DiffID = digest.FromString("not this layer")
	if err := src.FetchLayer(context.Background(), lie); err == nil || !strings.Contains(err.Error(), "diff_id") {
		t.Fatalf("FetchLayer of a lying record: %v", err)
	}
	if fresh.HasBlob(lie.Digest) {
		t.Error("the layer of a lying record was committed")
	}
	if err := src.FetchLayer(context.Background(), *rec.Layer); err != nil {
		t.Fatal(err)
	}
	if err := src.FetchLayer(context.Background(), lie); err == nil || !strings.Contains(err.Error(), "diff_id") {
		t.Fatalf("FetchLayer of a lying record, the blob present: %v", err)
	}
}
