package registry

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/minibuild/minibuild/store"
	"github.com/opencontainers/go-digest"
)

// countingRegistry serves an in-process registry and records blob GETs.
type countingRegistry struct {
	mu      sync.Mutex
	gets    map[string]int // digest → GET count
	corrupt string         // a digest whose body is served wrong
	host    string
}

func newRegistry(t *testing.T) *countingRegistry {
	t.Helper()
	cr := &countingRegistry{gets: map[string]int{}}
	h := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if i := strings.Index(r.URL.Path, "/blobs/sha256:"); i >= 0 && r.Method == http.MethodGet {
			d := r.URL.Path[i+len("/blobs/"):]
			cr.mu.Lock()
			cr.gets[d]++
			bad := d == cr.corrupt
			cr.mu.Unlock()
			if bad {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				body := rec.Body.Bytes()
				body[len(body)/2] ^= 0xff
				w.WriteHeader(rec.Code)
				w.Write(body)
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	cr.host = strings.TrimPrefix(srv.URL, "http://")
	return cr
}

func (cr *countingRegistry) reset() map[string]int {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	g := cr.gets
	cr.gets = map[string]int{}
	return g
}

func (cr *countingRegistry) push(t *testing.T, repo string, img v1.Image) {
	t.Helper()
	ref, err := name.ParseReference(cr.host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	cr.reset()
}

func layerDigests(t *testing.T, img v1.Image) []string {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range m.Layers {
		out = append(out, l.Digest.String())
	}
	return out
}

func TestPullDownloadsOnlyMissingLayers(t *testing.T) {
	reg := newRegistry(t)
	s, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	base, err := random.Image(2048, 3)
	if err != nil {
		t.Fatal(err)
	}
	extra, err := random.Layer(1024, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	app, err := mutate.AppendLayers(base, extra)
	if err != nil {
		t.Fatal(err)
	}
	reg.push(t, "base:1", base)
	reg.push(t, "app:2", app)

	var events []Event
	var mu sync.Mutex
	opts := Options{Progress: func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() }}

	img, md, err := Pull(context.Background(), s, reg.host+"/base:1", opts)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := base.Digest(); md != want {
		t.Fatalf("digest %s, want %s", md, want)
	}
	if d, _ := img.Digest(); d != md {
		t.Fatalf("returned image has digest %s", d)
	}
	gets := reg.reset()
	for _, d := range layerDigests(t, base) {
		if gets[d] != 1 {
			t.Errorf("first pull fetched layer %s %d times", d, gets[d])
		}
	}

	events = nil
	_, md2, err := Pull(context.Background(), s, reg.host+"/app:2", opts)
	if err != nil {
		t.Fatal(err)
	}
	gets = reg.reset()
	ed, _ := extra.Digest()
	cfg, _ := app.ConfigName()
	for d, n := range gets {
		if d != ed.String() && d != cfg.String() {
			t.Errorf("second pull fetched %s (%d times), which the store had", d, n)
		}
	}
	if gets[ed.String()] != 1 {
		t.Errorf("new layer fetched %d times", gets[ed.String()])
	}
	status := map[string]string{}
	for _, e := range events {
		status[e.Digest] += e.Status + ";"
		if e.Ref != reg.host+"/app:2" || e.Size <= 0 {
			t.Errorf("bad event %+v", e)
		}
	}
	for _, d := range layerDigests(t, base) {
		if status[d] != "exists;" {
			t.Errorf("layer %s: events %q", d, status[d])
		}
	}
	if status[ed.String()] != "downloading;done;" {
		t.Errorf("new layer: events %q", status[ed.String()])
	}

	// The pulled image is tagged under its normalized name and intact.
	got, err := s.Image(reg.host + "/app:2")
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := got.Digest(); d != md2 {
		t.Errorf("tag points at %s, want %s", d, md2)
	}
	wm, _ := app.RawManifest()
	gm, _ := got.RawManifest()
	if string(wm) != string(gm) {
		t.Error("stored manifest differs from the registry's")
	}
	layers, _ := got.Layers()
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
	}
}

func TestPullIndexPicksLinuxAmd64(t *testing.T) {
	reg := newRegistry(t)
	s, _ := store.Open(t.TempDir())
	amd, _ := random.Image(256, 1)
	arm, _ := random.Image(256, 1)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	ref, _ := name.ParseReference(reg.host + "/multi:1")
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	_, md, err := Pull(context.Background(), s, ref.String(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := amd.Digest(); md != want {
		t.Fatalf("pulled %s, want the amd64 image %s", md, want)
	}
}

func TestPullRejectsCorruptLayer(t *testing.T) {
	reg := newRegistry(t)
	s, _ := store.Open(t.TempDir())
	img, _ := random.Image(4096, 2)
	reg.push(t, "bad:1", img)
	bad := layerDigests(t, img)[1]
	reg.corrupt = bad
	if _, _, err := Pull(context.Background(), s, reg.host+"/bad:1", Options{}); err == nil {
		t.Fatal("pull of a corrupt layer succeeded")
	}
	if s.HasBlob(digestOf(bad)) {
		t.Error("corrupt layer stored")
	}
	if _, err := s.Image(reg.host + "/bad:1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("failed pull left a tag: %v", err)
	}
}

func TestPullErrors(t *testing.T) {
	reg := newRegistry(t)
	s, _ := store.Open(t.TempDir())
	if _, _, err := Pull(context.Background(), s, reg.host+"/missing:1", Options{}); err == nil {
		t.Error("pull of a missing image succeeded")
	}
	if _, _, err := Pull(context.Background(), s, "Bad Ref", Options{}); err == nil {
		t.Error("pull of an invalid ref succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	img, _ := random.Image(256, 1)
	reg.push(t, "c:1", img)
	if _, _, err := Pull(ctx, s, reg.host+"/c:1", Options{}); err == nil {
		t.Error("pull with a cancelled context succeeded")
	}
}

func TestPushFromStore(t *testing.T) {
	reg := newRegistry(t)
	s, _ := store.Open(t.TempDir())
	img, _ := random.Image(512, 2)
	md, err := s.WriteImage(img)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := s.Image(md.String())
	got, err := Push(context.Background(), s, stored, reg.host+"/pushed:1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got != md {
		t.Errorf("pushed %s, want %s", got, md)
	}
	// Pulling it back into a fresh store gives the same image.
	s2, _ := store.Open(t.TempDir())
	_, md2, err := Pull(context.Background(), s2, reg.host+"/pushed:1", Options{})
	if err != nil || md2 != md {
		t.Fatalf("pull back: %s %v", md2, err)
	}
}

func TestReferenceScheme(t *testing.T) {
	tests := []struct {
		ref      string
		insecure []string
		scheme   string
	}{
		{"busybox", nil, "https"},
		{"localhost:5000/app", nil, "http"},
		{"127.0.0.1:5000/app:1", nil, "http"},
		{"localhost/x", nil, "http"},
		{"localhost/x:1", nil, "http"},
		{"127.0.0.1/x", nil, "http"},
		{"[::1]:5000/x", nil, "http"},
		{"localhost.example/x", nil, "https"},
		{"myreg.example:5000/app", nil, "https"},
		{"myreg.example:5000/app", []string{"myreg.example:5000"}, "http"},
		{"myreg.example/app", []string{"myreg.example:5000"}, "https"},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			r, err := Reference(tt.ref, tt.insecure)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Context().Scheme(); got != tt.scheme {
				t.Errorf("scheme %s, want %s", got, tt.scheme)
			}
		})
	}
}

func digestOf(s string) digest.Digest { return digest.Digest(s) }

// lyingConfig is img with the config's diff_id of layer i replaced.
func lyingConfig(t *testing.T, img v1.Image, i int) v1.Image {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs[i] = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	bad, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return bad
}

// A config whose diff_id does not match its layer is refused before the
// tag moves, whether the layer is downloaded or in the store already.
func TestPullChecksDiffIDs(t *testing.T) {
	reg := newRegistry(t)
	s, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	good, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	bad := lyingConfig(t, good, 1)
	reg.push(t, "bad", bad)
	if _, _, err := Pull(context.Background(), s, reg.host+"/bad:latest", Options{}); err == nil || !strings.Contains(err.Error(), "diff_id") {
		t.Fatalf("pull of a lying config (layers downloaded): %v", err)
	}
	if _, err := s.Image(reg.host + "/bad:latest"); err == nil {
		t.Error("the lying image was tagged")
	}

	reg.push(t, "good", good)
	if _, _, err := Pull(context.Background(), s, reg.host+"/good:latest", Options{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Pull(context.Background(), s, reg.host+"/bad:latest", Options{}); err == nil || !strings.Contains(err.Error(), "diff_id") {
		t.Fatalf("pull of a lying config (layers in the store): %v", err)
	}
	if _, err := s.Image(reg.host + "/bad:latest"); err == nil {
		t.Error("the lying image was tagged")
	}
	// The good image pulled again (its manifest known) is still fine.
	if _, _, err := Pull(context.Background(), s, reg.host+"/good:latest", Options{}); err != nil {
		t.Fatal(err)
	}
}
