package gc

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The recorded measurement skips the walk only while it proves the store
// under the cap: a recorded size over it, a filesystem that grew past it,
// a stale or missing record all mean measuring.
func TestUnderCapNeedsProof(t *testing.T) {
	root := t.TempDir()
	if underCap(root, 1<<40) {
		t.Fatal("no record: want a measurement")
	}
	used, err := fsUsed(root)
	if err != nil {
		t.Fatal(err)
	}
	write := func(st autoState) {
		b, _ := json.Marshal(st)
		if err := os.WriteFile(filepath.Join(root, autoStateFile), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A margin above what other tests on this filesystem may write meanwhile.
	const margin = 1 << 30
	write(autoState{Size: 10 << 20, FSUsed: used, At: time.Now()})
	if !underCap(root, 10<<20+margin) {
		t.Error("store recorded well under the cap: want no measurement")
	}
	if underCap(root, 5<<20) {
		t.Error("store recorded over the cap: want a measurement")
	}
	write(autoState{Size: 10 << 20, FSUsed: used - 2*margin, At: time.Now()})
	if underCap(root, 10<<20+margin) {
		t.Error("the filesystem grew past the cap since: want a measurement")
	}
	write(autoState{Size: 10 << 20, FSUsed: used, At: time.Now().Add(-2 * autoRemeasure)})
	if underCap(root, 10<<20+margin) {
		t.Error("a stale record: want a measurement")
	}
	remember(root, 1<<20)
	if !underCap(root, 1<<20+margin) {
		t.Error("remember: the record just written does not prove the store under the cap")
	}
}
