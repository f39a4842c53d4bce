package buildctx

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	write(t, filepath.Join(dir, "old"), "old content", old)
	write(t, filepath.Join(dir, "fresh"), "fresh content", time.Now())
	write(t, filepath.Join(dir, "swapped"), "before", old)
	write(t, filepath.Join(dir, "stale"), "stale", time.Now())
	c, err := Open(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lookup := func(name string) *File {
		f, ok := c.Lookup(name)
		if !ok {
			t.Fatalf("%s missing", name)
		}
		return f
	}
	buf := make([]byte, 0, 4)
	for _, name := range []string{"old", "fresh"} {
		data, sum, err := c.ReadFile(lookup(name), buf)
		if err != nil {
			t.Fatal(err)
		}
		if want := name + " content"; string(data) != want || sum != sha256.Sum256([]byte(want)) {
			t.Errorf("%s: read %q %x", name, data, sum)
		}
	}

	// Written after the walk (same size): the fstat after the read sees it.
	sw := lookup("swapped")
	if err := os.WriteFile(filepath.Join(dir, "swapped"), []byte("after!"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(dir, "swapped"), old, old); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadFile(sw, nil); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Errorf("a file rewritten after the walk: %v", err)
	}

	// A fresh file is hashed as read, never taken on its digest's word.
	st := lookup("stale")
	if _, err := c.Sum(st); err != nil {
		t.Fatal(err)
	}
	st.state.sum[0] ^= 1
	if _, _, err := c.ReadFile(st, nil); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Errorf("a recent file whose digest disagrees with its bytes: %v", err)
	}
}
