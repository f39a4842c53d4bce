package export

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"

	"github.com/minibuild/minibuild/cache/remote"
)

func TestNewPlanChecksBeforeTheBuild(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  Request
		err  string
	}{
		{"push without a tag", Request{Push: true}, "nothing to push to"},
		{"registry output without a name or tag", Request{Outputs: []string{"type=registry"}}, "nothing to push to"},
		{"push with only a registry output name", Request{Push: true, Outputs: []string{"type=registry,name=r.io/a:1"}}, "--push needs at least one -t"},
		{"bad tag", Request{Tags: []string{"Bad Tag"}}, "invalid tag"},
		{"bad output", Request{Outputs: []string{"type=zip,dest=x"}}, "type must be"},
		{"bad cache-from", Request{CacheFrom: []string{"type=local"}}, "needs src="},
		{"cache-to inline max", Request{CacheTo: []string{"type=inline,mode=max"}}, "mode=min"},
	} {
		if _, err := NewPlan(tc.req); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.err)
		}
	}
	p, err := NewPlan(Request{Tags: []string{"app:1"}, Push: true, Outputs: []string{"type=registry,name=r.io/a:1"},
		CacheFrom: []string{"r.io/cache"}, CacheTo: []string{"type=local,dest=d"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"app:1", "r.io/a:1"}; !slices.Equal(p.pushTo, want) {
		t.Errorf("push targets %v, want %v", p.pushTo, want)
	}
}

func TestPushTargets(t *testing.T) {
	reg := func(name string) Output { return Output{Type: "registry", Name: name} }
	for _, tc := range []struct {
		name string
		push bool
		tags []string
		outs []Output
		want []string
	}{
		{"nothing", false, []string{"a:1"}, nil, nil},
		{"push: every tag", true, []string{"a:1", "b:1"}, nil, []string{"a:1", "b:1"}},
		{"nameless registry output: every tag", false, []string{"a:1"}, []Output{reg("")}, []string{"a:1"}},
		{"named registry output", false, []string{"a:1"}, []Output{reg("r/x:1,r/y:1")}, []string{"r/x:1", "r/y:1"}},
		{"each once, in order", true, []string{"a:1"}, []Output{reg("a:1,r/x:1"), reg("")}, []string{"a:1", "r/x:1"}},
		{"other outputs push nothing", false, []string{"a:1"}, []Output{{Type: "oci", Dest: "x"}}, nil},
	} {
		if got := pushTargets(tc.push, tc.tags, tc.outs); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Finish, over a real store and an in-process registry: inline records
// change the manifest (not the id), the push sends that manifest, the
// tags, the outputs, the iidfile and a local cache export all appear.
func TestFinish(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, idx, res := newTestStore(t)
	md, id := res.Digest, res.ID

	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	var mu sync.Mutex
	var statuses []string
	ociTar, iid, cacheDir := filepath.Join(dir, "out.oci.tar"), filepath.Join(dir, "iid"), filepath.Join(dir, "cache-out")
	p, err := NewPlan(Request{
		Tags:     []string{host + "/app:1"},
		Push:     true,
		Outputs:  []string{"type=oci,dest=" + ociTar},
		CacheTo:  []string{"type=inline", "type=local,dest=" + cacheDir},
		IIDFile:  iid,
		Registry: Registry{Progress: func(e BlobEvent) { mu.Lock(); statuses = append(statuses, e.Status); mu.Unlock() }},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Finish(ctx, st, idx, res); err != nil {
		t.Fatal(err)
	}

	if res.Digest == md || res.ID != id {
		t.Errorf("after inline records: digest %s (was %s), id %s (was %s); want a new digest, the same id", res.Digest, md, res.ID, id)
	}
	m, _ := res.Image.Manifest()
	if _, ok := m.Annotations[remote.InlineAnnotation]; !ok {
		t.Errorf("the manifest lacks %s: %v", remote.InlineAnnotation, m.Annotations)
	}
	tagged, err := st.Image(host + "/app:1")
	if d, _ := tagged.Digest(); err != nil || d != res.Digest {
		t.Errorf("the tag names %v (%v), want %s", d, err, res.Digest)
	}
	pushed, _, err := Registry{}.Pull(ctx, st, host+"/app:1")
	if d, _ := pushed.Digest(); err != nil || d != res.Digest {
		t.Errorf("the registry holds %v (%v), want %s", d, err, res.Digest)
	}
	if !slices.Contains(statuses, StatusPushed) {
		t.Errorf("blob progress %v lacks %s", statuses, StatusPushed)
	}
	if got, _ := os.ReadFile(iid); string(got) != id.String() {
		t.Errorf("iidfile %q, want %s", got, id)
	}
	if _, err := os.Stat(ociTar); err != nil {
		t.Errorf("the OCI output: %v", err)
	}
	if _, err := remote.ImportLocal(st, cacheDir); err != nil {
		t.Errorf("the local cache export does not import: %v", err)
	}
}
