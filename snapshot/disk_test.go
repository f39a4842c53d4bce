package snapshot

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/minibuild/minibuild/internal/diskspace"
	"github.com/minibuild/minibuild/snapshot/snapshottest"
)

// A layer whose extraction would leave less than the reserve free fails
// with diskspace.ErrLow, naming the layer, and leaves nothing behind.
func TestExtractKeepsReserve(t *testing.T) {
	requireRoot(t)
	var blobs snapshottest.Blobs
	l := addLayer(t, &blobs, E{Name: "small", Mode: 0o644, Body: "x"}, E{Name: "big", Mode: 0o644, Body: strings.Repeat("\x00", 16<<20)})
	sn, err := New(t.TempDir(), &blobs)
	if err != nil {
		t.Fatal(err)
	}
	free, err := diskspace.Free(sn.tmpDir)
	if err != nil {
		t.Fatal(err)
	}
	sn.SetMinFreeSpace(free - 8<<20)
	_, err = sn.ensure(context.Background(), []Layer{l})
	if !errors.Is(err, diskspace.ErrLow) || !strings.Contains(err.Error(), "extract layer "+l.Digest.String()) {
		t.Fatalf("err = %v", err)
	}
	for _, d := range []string{sn.tmpDir, sn.layersDir} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if e.Name() != emptyDir && !strings.HasSuffix(e.Name(), ".lock") {
				t.Errorf("left in %s: %s", d, e.Name())
			}
		}
	}
	sn.SetMinFreeSpace(0)
	if _, err := sn.ensure(context.Background(), []Layer{l}); err != nil {
		t.Errorf("without the reserve: %v", err)
	}
}
