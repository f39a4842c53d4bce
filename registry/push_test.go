package registry

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/minibuild/minibuild/store"
)

// logRegistry is an in-process registry that logs every request and can
// inject failures into blob uploads.
type logRegistry struct {
	host string
	mu   sync.Mutex
	reqs []string // "METHOD path?query"
	// failPuts answers this many blob PUTs with 503; resetPuts drops this
	// many connections mid-PUT.
	failPuts, resetPuts int
}

func newLogRegistry(t *testing.T) *logRegistry {
	t.Helper()
	lr := &logRegistry{}
	h := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lr.mu.Lock()
		lr.reqs = append(lr.reqs, r.Method+" "+r.URL.RequestURI())
		isPut := r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/")
		fail := isPut && lr.failPuts > 0
		reset := isPut && !fail && lr.resetPuts > 0
		if fail {
			lr.failPuts--
		}
		if reset {
			lr.resetPuts--
		}
		lr.mu.Unlock()
		switch {
		case fail:
			http.Error(w, "try later", http.StatusServiceUnavailable)
		case reset:
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		default:
			h.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	lr.host = strings.TrimPrefix(srv.URL, "http://")
	return lr
}

// take returns and clears the request log.
func (lr *logRegistry) take() []string {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	r := lr.reqs
	lr.reqs = nil
	return r
}

// uploads counts blob upload requests (POST or PUT to /blobs/uploads/) that
// are not mount requests, and returns the digests PUT.
func uploads(reqs []string) (n int, put map[string]bool) {
	put = map[string]bool{}
	for _, r := range reqs {
		if !strings.Contains(r, "/blobs/uploads/") || strings.Contains(r, "mount=") {
			continue
		}
		if strings.HasPrefix(r, "POST ") || strings.HasPrefix(r, "PUT ") {
			n++
		}
		if i := strings.Index(r, "digest=sha256%3A"); strings.HasPrefix(r, "PUT ") && i >= 0 {
			put["sha256:"+r[i+len("digest=sha256%3A"):][:64]] = true
		}
	}
	return n, put
}

type eventLog struct {
	mu sync.Mutex
	by map[string]string // digest → statuses joined by ";"
}

func (l *eventLog) opts() Options {
	l.by = map[string]string{}
	return Options{Progress: func(e Event) { l.mu.Lock(); l.by[e.Digest] += e.Status + ";"; l.mu.Unlock() }}
}

func TestPushSkipsMountsAndUploads(t *testing.T) {
	reg := newLogRegistry(t)
	s, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	base, _ := random.Image(1024, 2)
	extra, _ := random.Layer(512, types.OCILayer)
	app, _ := mutate.AppendLayers(base, extra)
	bmd, _ := s.WriteImage(base)
	amd, _ := s.WriteImage(app)
	storedBase, _ := s.Image(bmd.String())
	storedApp, _ := s.Image(amd.String())

	var ev eventLog
	if _, err := Push(ctx, s, storedBase, reg.host+"/team/base:1", ev.opts()); err != nil {
		t.Fatal(err)
	}
	if n, _ := uploads(reg.take()); n != 2*3 {
		t.Errorf("first push: %d upload requests, want 6 (POST+PUT for 2 layers and the config)", n)
	}
	for _, d := range layerDigests(t, base) {
		if ev.by[d] != "pushing;pushed;" {
			t.Errorf("base layer %s: events %q", d, ev.by[d])
		}
	}

	got, err := Push(ctx, s, storedApp, reg.host+"/team/app:1", ev.opts())
	if err != nil {
		t.Fatal(err)
	}
	if got != amd {
		t.Errorf("pushed digest %s, want %s", got, amd)
	}
	n, put := uploads(reg.take())
	ed, _ := extra.Digest()
	cfg, _ := app.ConfigName()
	if n != 4 || !put[ed.String()] || !put[cfg.String()] {
		t.Errorf("app push: %d uploads of %v, want only the new layer and config", n, put)
	}
	for _, d := range layerDigests(t, base) {
		// ggcr's test registry keeps blobs globally, so it says exists where
		// the reference registry mounts (see test/e2e/registry_test.go).
		if ev.by[d] != "mounted;" && ev.by[d] != "exists;" {
			t.Errorf("base layer %s in another repository: events %q, want mounted or exists", d, ev.by[d])
		}
	}

	// Pushing again uploads nothing.
	if _, err := Push(ctx, s, storedApp, reg.host+"/team/app:1", ev.opts()); err != nil {
		t.Fatal(err)
	}
	if n, _ := uploads(reg.take()); n != 0 {
		t.Errorf("re-push made %d upload requests", n)
	}
	for _, d := range layerDigests(t, app) {
		if ev.by[d] != "exists;" {
			t.Errorf("layer %s on re-push: events %q", d, ev.by[d])
		}
	}

	// What was pushed pulls back whole into a fresh store.
	s2, _ := store.Open(t.TempDir())
	if _, md, err := Pull(ctx, s2, reg.host+"/team/app:1", Options{}); err != nil || md != amd {
		t.Fatalf("pull back: %s %v", md, err)
	}
}

func TestPushRetriesTransientFailures(t *testing.T) {
	reg := newLogRegistry(t)
	s, _ := store.Open(t.TempDir())
	img, _ := random.Image(2048, 3)
	reg.failPuts, reg.resetPuts = 2, 1
	md, err := Push(context.Background(), s, img, reg.host+"/flaky:1", Options{Parallel: 1})
	if err != nil {
		t.Fatalf("push through 503s and a reset: %v", err)
	}
	s2, _ := store.Open(t.TempDir())
	if _, got, err := Pull(context.Background(), s2, reg.host+"/flaky:1", Options{}); err != nil || got != md {
		t.Fatalf("pull back: %s %v", got, err)
	}

	// A permanent failure is not retried forever, and names the blob.
	reg.failPuts = 100
	img2, _ := random.Image(64, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Push(ctx, s, img2, reg.host+"/flaky:2", Options{}); err == nil {
		t.Error("push with a cancelled context succeeded")
	}
}

func TestPushManifestOfStoreBlobs(t *testing.T) {
	reg := newLogRegistry(t)
	s, _ := store.Open(t.TempDir())
	img, _ := random.Image(256, 1)
	md, _ := s.WriteImage(img)
	m, _ := img.Manifest()
	raw, _ := img.RawManifest()
	blobs := []Blob{StoreBlob(s, m.Config), StoreBlob(s, m.Layers[0]), StoreBlob(s, m.Layers[0])}
	got, err := PushManifest(context.Background(), s, reg.host+"/art:x", raw, types.DockerManifestSchema2, blobs, Options{})
	if err != nil || got != md {
		t.Fatalf("PushManifest: %s %v", got, err)
	}
	rawGot, mt, d, err := Manifest(context.Background(), reg.host+"/art:x", Options{})
	if err != nil || string(rawGot) != string(raw) || d != md || mt != types.DockerManifestSchema2 {
		t.Fatalf("Manifest: %s %s %v", mt, d, err)
	}
	b, err := ReadBlob(context.Background(), reg.host+"/art", m.Config, 1<<20, Options{})
	if want, _ := img.RawConfigFile(); err != nil || string(b) != string(want) {
		t.Fatalf("ReadBlob: %v", err)
	}
	s2, _ := store.Open(t.TempDir())
	if err := FetchBlob(context.Background(), s2, reg.host+"/art", m.Layers[0], Options{}); err != nil {
		t.Fatal(err)
	}
	if !s2.HasBlob(digestOf(m.Layers[0].Digest.String())) {
		t.Error("FetchBlob stored nothing")
	}
	if src := s2.BlobSources(digestOf(m.Layers[0].Digest.String())); len(src) != 1 || src[0] != reg.host+"/art" {
		t.Errorf("sources after FetchBlob: %v", src)
	}
	if _, err := ReadBlob(context.Background(), reg.host+"/art", v1.Descriptor{Digest: m.Config.Digest, Size: 1 << 30}, 1<<20, Options{}); err == nil {
		t.Error("ReadBlob read a blob over its limit")
	}
}
