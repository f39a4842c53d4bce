package flock

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSweepSkipsHeld(t *testing.T) {
	dir := t.TempDir()
	held, err := CreateTemp(dir, "blob-")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	stale := filepath.Join(dir, "blob-stale")
	if err := os.WriteFile(stale, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	staleDir := filepath.Join(dir, "context-stale")
	if err := os.MkdirAll(filepath.Join(staleDir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	n, err := Sweep(dir, nil)
	if err != nil || n != 2 {
		t.Fatalf("Sweep = %d, %v; want the 2 unheld", n, err)
	}
	if _, err := os.Stat(held.Name()); err != nil {
		t.Fatalf("a held temp file was swept: %v", err)
	}
	held.Close()
	if n, err := Sweep(dir, nil); err != nil || n != 1 {
		t.Fatalf("after close: Sweep = %d, %v", n, err)
	}
}
