package snapshot

import (
	"context"
	"strings"
	"testing"

	"github.com/minibuild/minibuild/snapshot/snapshottest"
)

// The copied rootfs is the merged chain: a layer that does not touch a dir
// hides nothing, whiteouts and opaque dirs do, stubs are added.
func TestCopyMaterializesChain(t *testing.T) {
	requireRoot(t)
	b := &snapshottest.Blobs{}
	base := addLayer(t, b, E{Name: "d/", Mode: 0o755}, E{Name: "d/a", Mode: 0o644, Body: "a"},
		E{Name: "o/", Mode: 0o755}, E{Name: "o/old", Mode: 0o644}, E{Name: "gone", Mode: 0o644}, E{Name: "w/", Mode: 0o755}, E{Name: "w/x", Mode: 0o644})
	mid := addLayer(t, b, E{Name: "m", Mode: 0o644, Body: "m"}, E{Name: ".wh.gone"}, E{Name: "w/.wh.x"})
	top := addLayer(t, b, E{Name: "d/", Mode: 0o755}, E{Name: "d/b", Mode: 0o644, Body: "b"},
		E{Name: "o/", Mode: 0o700}, E{Name: "o/.wh..wh..opq"}, E{Name: "o/new", Mode: 0o644}, E{Name: "d/b2", Link: "d/b"})
	sn, err := New(t.TempDir(), b)
	if err != nil {
		t.Fatal(err)
	}
	sn.SetKind(KindCopy)
	s, err := sn.Prepare(context.Background(), []Layer{base, mid, top}, MountPoint{Path: "/run/secrets/x"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	m := s.Mounts()
	if len(m) != 1 || m[0].Type != "bind" {
		t.Fatalf("mounts = %+v, want one bind", m)
	}
	got := strings.Join(tree(t, m[0].Source), " ")
	want := "d d/a d/b d/b2 dev etc etc/hosts etc/resolv.conf m o o/new proc run run/secrets run/secrets/x sys w"
	if got != want {
		t.Errorf("copied rootfs:\n got %s\nwant %s", got, want)
	}
}

// auto switches to copying once, when told an overlay mount failed.
func TestKindFallback(t *testing.T) {
	sn, err := New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if sn.Kind() != KindOverlay {
		t.Errorf("auto starts as %s", sn.Kind())
	}
	if !sn.OverlayFailed() || sn.Kind() != KindCopy || sn.OverlayFailed() {
		t.Errorf("auto after a failed overlay: kind %s", sn.Kind())
	}
	sn2, _ := New(t.TempDir(), nil)
	sn2.SetKind(KindOverlay)
	if sn2.OverlayFailed() || sn2.Kind() != KindOverlay {
		t.Error("an explicit overlay kind fell back")
	}
	for in, want := range map[string]Kind{"": KindAuto, "copy": KindCopy, "overlay": KindOverlay, "auto": KindAuto} {
		if k, err := ParseKind(in); err != nil || k != want {
			t.Errorf("ParseKind(%q) = %s, %v", in, k, err)
		}
	}
	if _, err := ParseKind("zfs"); err == nil {
		t.Error("ParseKind(zfs) succeeded")
	}
}
