package snapshot

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"syscall"
	"testing"

	"github.com/minibuild/minibuild/snapshot/snapshottest"
)

// Whenever Over derives an answer through a top layer, it is the answer
// the whole chain gives; and it derives the common cases (a dir merged on
// the way, an entry at the walk's end) while refusing the ones that change
// the walk.
func TestOverAgreesWithTheChain(t *testing.T) {
	requireRoot(t)
	var blobs snapshottest.Blobs
	base := addLayer(t, &blobs,
		E{Name: "app/", Mode: 0o755},
		E{Name: "app/a", Mode: 0o644, Body: "a"},
		E{Name: "deps/", Mode: 0o750, UID: 7},
		E{Name: "app/vendor", Symlink: true, Link: "/deps"},
		E{Name: "opt/", Mode: 0o755},
		E{Name: "opt/x/", Mode: 0o755},
	)
	tops := map[string][]E{
		"merges app":       {{Name: "app/", Mode: 0o755}, {Name: "app/new", Mode: 0o644, Body: "n"}},
		"writes app/a":     {{Name: "app/", Mode: 0o755}, {Name: "app/a", Mode: 0o600, UID: 3, Body: "edited"}},
		"replaces vendor":  {{Name: "app/", Mode: 0o755}, {Name: "app/vendor/", Mode: 0o700}},
		"whites out a":     {{Name: "app/", Mode: 0o755}, {Name: "app/.wh.a"}},
		"opaque app":       {{Name: "app/", Mode: 0o755}, {Name: "app/.wh..wh..opq"}},
		"adds missing dir": {{Name: "srv/", Mode: 0o755}, {Name: "srv/y", Mode: 0o644, Body: "y"}},
		"links opt":        {{Name: "opt", Symlink: true, Link: "/deps"}},
	}
	paths := []string{"/app", "/app/a", "/app/new", "/app/vendor", "/app/vendor/z", "/deps", "/srv/y", "/srv", "/opt/x", "/nope/deeper"}
	wantDerived := map[string][]string{ // top -> paths Over must derive
		"merges app":       {"/app/a", "/app/new", "/app/vendor", "/deps", "/srv/y", "/opt/x"},
		"writes app/a":     {"/app/a", "/app/vendor"},
		"adds missing dir": {"/app", "/srv"},
	}
	wantRefused := map[string][]string{ // top -> paths only a lookup can tell
		"replaces vendor":  {"/app/vendor", "/app/vendor/z"},
		"whites out a":     {"/app/a"},
		"opaque app":       {"/app/a", "/app/vendor"},
		"adds missing dir": {"/srv/y"},
		"links opt":        {"/opt/x"},
	}
	sn, err := New(t.TempDir(), &blobs)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	lower := []Layer{base}
	for name, entries := range tops {
		top := addLayer(t, &blobs, entries...)
		chain := []Layer{base, top}
		if _, err := sn.ensure(ctx, chain); err != nil {
			t.Fatal(err)
		}
		derived := map[string]bool{}
		for _, p := range paths {
			w, err := sn.Trace(ctx, lower, p)
			if err != nil {
				continue
			}
			w2, fi, ok := sn.Over(top, w)
			if !ok {
				continue
			}
			derived[p] = true
			// The derived stat: top's entry, or the lower chain's answer.
			if fi == nil {
				fi, err = sn.Stat(ctx, lower, p)
			}
			want, wantErr := sn.Stat(ctx, chain, p)
			switch {
			case (err != nil) != (wantErr != nil) || errors.Is(err, fs.ErrNotExist) != errors.Is(wantErr, fs.ErrNotExist):
				t.Errorf("%s, %s: derived stat error %v, the chain's %v", name, p, err, wantErr)
			case err == nil && (fi.Mode() != want.Mode() || !fi.ModTime().Equal(want.ModTime()) || owner(fi) != owner(want)):
				t.Errorf("%s, %s: derived %v %v, the chain %v %v", name, p, fi.Mode(), owner(fi), want.Mode(), owner(want))
			}
			r1, err1 := sn.Resolve(ctx, lower, p)
			r2, err2 := sn.Resolve(ctx, chain, p)
			if r1 != r2 || (err1 == nil) != (err2 == nil) {
				t.Errorf("%s, %s: derived resolve %q, the chain's %q", name, p, r1, r2)
			}
			if tw, err := sn.Trace(ctx, chain, p); err != nil || !slices.Equal(tw, w2) {
				t.Errorf("%s, %s: derived walk %v, the chain's %v", name, p, w2, tw)
			}
		}
		for _, p := range wantDerived[name] {
			if !derived[p] {
				t.Errorf("%s: %s not derived", name, p)
			}
		}
		for _, p := range wantRefused[name] {
			if derived[p] {
				t.Errorf("%s: %s derived through a changed walk", name, p)
			}
		}
	}
}

func owner(fi fs.FileInfo) [2]uint32 {
	st := fi.Sys().(*syscall.Stat_t)
	return [2]uint32{st.Uid, st.Gid}
}
