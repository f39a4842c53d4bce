package snapshot

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/minibuild/minibuild/snapshot/snapshottest"
)

// A view shows what overlay (and the copy snapshotter) shows: a non-dir
// in a layer hides a lower layer's dir of the same name even when an upper
// layer has a dir there again (tar-apply semantics: the file replaced the
// dir, the upper dir replaced the file).
func TestViewMatchesMergedChain(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name   string
		layers [][]E
		want   string
	}{
		{
			name: "file between dirs hides the lower dir",
			layers: [][]E{
				{{Name: "a/", Mode: 0o755}, {Name: "a/x", Mode: 0o644, Body: "x"}},
				{{Name: "a", Mode: 0o644, Body: "file"}},
				{{Name: "a/", Mode: 0o755}, {Name: "a/y", Mode: 0o644, Body: "y"}},
			},
			want: "a a/y",
		},
		{
			name: "symlink between dirs hides the lower dir",
			layers: [][]E{
				{{Name: "a/", Mode: 0o755}, {Name: "a/x", Mode: 0o644, Body: "x"}},
				{{Name: "a", Link: "/tmp", Symlink: true}},
				{{Name: "a/", Mode: 0o755}, {Name: "a/y", Mode: 0o644, Body: "y"}},
			},
			want: "a a/y",
		},
		{
			name: "dirs merge, whiteouts and opaque dirs hide",
			layers: [][]E{
				{{Name: "a/", Mode: 0o755}, {Name: "a/x", Mode: 0o644}, {Name: "o/", Mode: 0o755}, {Name: "o/old", Mode: 0o644}, {Name: "g", Mode: 0o644}},
				{{Name: "a/", Mode: 0o755}, {Name: "a/y", Mode: 0o644}, {Name: ".wh.g"}, {Name: "o/", Mode: 0o755}, {Name: "o/.wh..wh..opq"}, {Name: "o/new", Mode: 0o644}},
			},
			want: "a a/x a/y o o/new",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &snapshottest.Blobs{}
			var chain []Layer
			for _, entries := range tt.layers {
				chain = append(chain, addLayer(t, b, entries...))
			}
			sn, err := New(t.TempDir(), b)
			if err != nil {
				t.Fatal(err)
			}
			dir, err := sn.View(context.Background(), chain)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(tree(t, dir), " "); got != tt.want {
				t.Errorf("view:\n got %s\nwant %s", got, tt.want)
			}
			// The lookup through the chain agrees.
			for _, p := range strings.Fields(tt.want) {
				if _, err := sn.Lstat(context.Background(), chain, "/"+p); err != nil {
					t.Errorf("Lstat /%s: %v", p, err)
				}
			}
		})
	}
}

func TestPruneViewsKeepsRecentOnes(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	var blobs snapshottest.Blobs
	sn, err := New(t.TempDir(), &blobs)
	if err != nil {
		t.Fatal(err)
	}
	l := addLayer(t, &blobs, E{Name: "a", Mode: 0o644, Body: "x"})
	dir, err := sn.View(ctx, []Layer{l})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := sn.PruneViews(time.Hour); err != nil || n != 0 {
		t.Fatalf("a fresh view was pruned: %d, %v", n, err)
	}
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(dir, old, old)
	if n, err := sn.PruneViews(time.Hour); err != nil || n != 1 {
		t.Fatalf("an old view was not pruned: %d, %v", n, err)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("view still there: %v", err)
	}
	if again, err := sn.View(ctx, []Layer{l}); err != nil || again != dir {
		t.Errorf("view not rebuilt on demand: %q, %v", again, err)
	}
}
