package snapshot

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestCacheMountSharing(t *testing.T) {
	requireRoot(t)
	sn, err := New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mode := uint32(0o1770)
	a, err := sn.CacheMount(ctx, "/root/.cache", CacheMountOptions{Mode: &mode, UID: 1000, GID: 100})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(a.Dir)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Mode&0o7777 != 0o1770 || st.Uid != 1000 || st.Gid != 100 {
		t.Errorf("data dir is %o %d:%d, want 1770 1000:100", st.Mode&0o7777, st.Uid, st.Gid)
	}
	if err := os.WriteFile(filepath.Join(a.Dir, "f"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}

	// shared: a second user gets the same dir at once.
	b, err := sn.CacheMount(ctx, "/root/.cache", CacheMountOptions{Sharing: SharingShared})
	if err != nil || b.Dir != a.Dir {
		t.Fatalf("shared: %v, %v", b, err)
	}
	// private: busy instance → a new one; the same id, another dir.
	p, err := sn.CacheMount(ctx, "/root/.cache", CacheMountOptions{Sharing: SharingPrivate})
	if err != nil || p.Dir == a.Dir {
		t.Fatalf("private: %v, %v", p, err)
	}
	// locked: waits while shared users hold it.
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	if _, err := sn.CacheMount(wctx, "/root/.cache", CacheMountOptions{Sharing: SharingLocked}); err == nil {
		t.Error("locked did not wait for the shared users")
	}
	cancel()
	// prune keeps what is in use.
	if removed, err := sn.PruneCacheMounts(nil); err != nil || len(removed) != 0 {
		t.Errorf("prune while in use removed %v, %v", removed, err)
	}
	a.Release()
	b.Release()
	l, err := sn.CacheMount(ctx, "/root/.cache", CacheMountOptions{Sharing: SharingLocked})
	if err != nil || l.Dir != a.Dir {
		t.Fatalf("locked after release: %v, %v", l, err)
	}
	if data, err := os.ReadFile(filepath.Join(l.Dir, "f")); err != nil || string(data) != "kept" {
		t.Errorf("content did not persist: %q, %v", data, err)
	}
	l.Release()
	list, err := sn.CacheMounts()
	if err != nil || len(list) != 2 || list[0].ID != "/root/.cache" || list[0].Size+list[1].Size != 4 {
		t.Errorf("list = %+v, %v", list, err)
	}
	removed, err := sn.PruneCacheMounts([]string{"/root/.cache"})
	if err != nil || len(removed) != 1 {
		t.Errorf("prune removed %+v, %v; want the one not held (private still is)", removed, err)
	}
	p.Release()
	if removed, err := sn.PruneCacheMounts(nil); err != nil || len(removed) != 1 {
		t.Errorf("prune all removed %+v, %v", removed, err)
	}
	if list, _ := sn.CacheMounts(); len(list) != 0 {
		t.Errorf("left after prune: %+v", list)
	}
}
