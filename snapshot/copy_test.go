package snapshot

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/minibuild/minibuild/mount"
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
	s, err := sn.Prepare(context.Background(), []Layer{base, mid, top}, sandboxPoints(mount.Point{Path: "/run/secrets/x"})...)
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

// auto copies when the probe mount fails, and says why once; an explicit
// kind never probes.
func TestProbeFallback(t *testing.T) {
	requireRoot(t)
	b := &snapshottest.Blobs{}
	base := addLayer(t, b, E{Name: "a", Mode: 0o644, Body: "a"})
	sn, err := New(t.TempDir(), b)
	if err != nil {
		t.Fatal(err)
	}
	if err := sn.Probe(); err != nil {
		t.Fatalf("overlay does not work here: %v", err)
	}
	if sn.copies() {
		t.Error("auto copies where overlay works")
	}
	sn.SetKind(KindAuto)
	sn.probeOverlay = func() error { return errors.New("refused") }
	if err := sn.Probe(); err == nil || err.Error() != "refused" {
		t.Errorf("first Probe after a failed mount = %v, want the reason", err)
	}
	if err := sn.Probe(); err != nil {
		t.Errorf("second Probe = %v, want nil (told once)", err)
	}
	s, err := sn.Prepare(context.Background(), []Layer{base})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	if m := s.Mounts(); m[0].Type != "bind" {
		t.Errorf("auto after a failed probe mounts %+v, want a copy", m)
	}
	v, release, err := sn.BindView(context.Background(), t.TempDir(), "/src", true)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if v.Type != "bind" || v.ReadOnly || v.Target != "/src" {
		t.Errorf("writable bind view while copying = %+v, want a bind of a scratch copy", v)
	}
	sn.SetKind(KindOverlay)
	sn.probeOverlay = func() error { t.Error("an explicit kind probed"); return nil }
	if err := sn.Probe(); err != nil || sn.copies() {
		t.Errorf("explicit overlay: Probe %v, copies %v", err, sn.copies())
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

// overlayfs ignores an opaque marker on a layer's root (only dirs inside
// a layer can be opaque): the copy, the view and lookups agree with it.
func TestRootOpaqueIgnored(t *testing.T) {
	requireRoot(t)
	b := &snapshottest.Blobs{}
	base := addLayer(t, b, E{Name: "a", Mode: 0o644, Body: "a"})
	top := addLayer(t, b, E{Name: ".wh..wh..opq"}, E{Name: "b", Mode: 0o644, Body: "b"})
	sn, err := New(t.TempDir(), b)
	if err != nil {
		t.Fatal(err)
	}
	sn.SetKind(KindCopy)
	ctx := context.Background()
	s, err := sn.Prepare(ctx, []Layer{base, top})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	if got := strings.Join(tree(t, s.Mounts()[0].Source), " "); got != "a b" {
		t.Errorf("copied rootfs: %s, want a b", got)
	}
	view, err := sn.View(ctx, []Layer{base, top})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(tree(t, view), " "); got != "a b" {
		t.Errorf("view: %s, want a b", got)
	}
	if _, err := sn.Stat(ctx, []Layer{base, top}, "/a"); err != nil {
		t.Errorf("Stat /a: %v", err)
	}
}
