package remote

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/registry"
	"github.com/minibuild/minibuild/store"
)

// A registry import's hits stay remote (LazyLayer downloads nothing), and
// the store fetches each layer, verified, when it is opened; the chain
// facts the exporting store knew travel with the records.
func TestRegistryImportIsLazy(t *testing.T) {
	var blobGets atomic.Int32
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			blobGets.Add(1)
		}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()
	f := newFixture(t)
	rec0, err := f.idx.Get(f.keys[0])
	if err != nil || rec0.Layer == nil {
		t.Fatalf("the fixture's first record has no layer: %v", err)
	}
	top := rec0.Layer.DiffID
	facts := store.ChainFacts{DiffIDs: []digest.Digest{digest.FromString("base"), top}, Facts: map[string]store.Fact{"resolve /app": {Resolved: "/app"}}}
	if err := f.s.AddChainFacts(facts); err != nil {
		t.Fatal(err)
	}
	c := Collect(f.s, f.idx, f.keys)
	if _, err := registry.Push(ctx, f.s, f.img, host+"/app:1", registry.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ExportRegistry(ctx, f.s, c, host+"/app:cache", registry.Options{}); err != nil {
		t.Fatal(err)
	}

	fresh, _ := store.Open(t.TempDir())
	before := blobGets.Load()
	src, err := ImportRegistry(ctx, fresh, host+"/app:cache", registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var lazy []digest.Digest
	for _, k := range f.keys {
		rec, _ := src.Record(k)
		if rec.Layer == nil {
			continue
		}
		if err := src.LazyLayer(ctx, *rec.Layer); err != nil {
			t.Fatal(err)
		}
		if fresh.HasBlob(rec.Layer.Digest) || !fresh.HasContent(rec.Layer.Digest) {
			t.Fatalf("layer %s after LazyLayer: HasBlob %v, HasContent %v; want remote", rec.Layer.Digest, fresh.HasBlob(rec.Layer.Digest), fresh.HasContent(rec.Layer.Digest))
		}
		lazy = append(lazy, rec.Layer.Digest)
	}
	if n := blobGets.Load() - before; n != 1 {
		t.Errorf("import and lazy hits made %d blob GETs, want 1 (the records)", n)
	}
	fresh.SetFetcher(registry.NewFetcher(ctx, registry.Options{}))
	for _, d := range lazy {
		rc, err := fresh.OpenBlob(d)
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
		if !fresh.HasBlob(d) {
			t.Errorf("layer %s not stored after it was read", d)
		}
	}
	if got, ok := fresh.ChainFacts(facts.DiffIDs); !ok || got.Facts["resolve /app"].Resolved != "/app" {
		t.Errorf("the chain facts did not travel with the records: %+v, %v", got, ok)
	}
}
