package export

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/minibuild/minibuild/cache/remote"
	"github.com/minibuild/minibuild/executor"
	"github.com/minibuild/minibuild/snapshot"
	"github.com/minibuild/minibuild/store"
)

// Finish with cache-mounts=true puts the content of the build's cache
// mounts into the local cache; one this root lacks is left out, and a
// spec without the option carries none.
func TestFinishExportsCacheMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("cache mounts are chowned: needs root")
	}
	ctx := context.Background()
	st, idx, res := newTestStore(t)
	sn, err := snapshot.New(st.Root(), st)
	if err != nil {
		t.Fatal(err)
	}
	cm, err := sn.CacheMount(ctx, "/root/.cache", snapshot.CacheMountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(cm.Dir, "marker"), []byte("filled"), 0o644)
	cm.Release()
	res.CacheMounts = []executor.CacheMountUse{{ID: "/absent", Sharing: "shared"}, {ID: "/root/.cache", Sharing: "locked"}}

	dir := t.TempDir()
	with, without := filepath.Join(dir, "with"), filepath.Join(dir, "without")
	p, err := NewPlan(Request{CacheTo: []string{"type=local,dest=" + with + ",cache-mounts=true", "type=local,dest=" + without}, Snapshots: sn})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Finish(ctx, st, idx, res); err != nil {
		t.Fatal(err)
	}
	fresh, _ := store.Open(t.TempDir())
	src, err := remote.ImportLocal(fresh, with)
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := src.CacheMountLayer("/root/.cache"); !ok || m.Sharing != "locked" {
		t.Errorf("cache mount in the export: %+v %v", m, ok)
	}
	if _, ok := src.CacheMountLayer("/absent"); ok {
		t.Error("a cache mount this root lacks was exported")
	}
	rc, ok, err := src.CacheMount(ctx, "/root/.cache")
	if err != nil || !ok {
		t.Fatalf("CacheMount: %v %v", ok, err)
	}
	defer rc.Close()
	sn2, _ := snapshot.New(fresh.Root(), fresh)
	if _, err := sn2.RestoreCacheMount(ctx, "/root/.cache", snapshot.CacheMountOptions{}, rc); err != nil {
		t.Fatal(err)
	}
	got, _ := sn2.CacheMount(ctx, "/root/.cache", snapshot.CacheMountOptions{})
	defer got.Release()
	if b, err := os.ReadFile(filepath.Join(got.Dir, "marker")); err != nil || string(b) != "filled" {
		t.Errorf("restored marker %q %v", b, err)
	}
	plain, err := remote.ImportLocal(fresh, without)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := plain.CacheMountLayer("/root/.cache"); ok {
		t.Error("a --cache-to without cache-mounts=true carries a cache mount")
	}
}
