package copier

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/minibuild/minibuild/buildctx"
	"github.com/opencontainers/go-digest"
)

func treeDigestOf(t *testing.T, dir, rel string) digest.Digest {
	t.Helper()
	c, err := buildctx.Open(context.Background(), dir, buildctx.Options{})
	must(t, err)
	defer c.Close()
	d, err := TreeDigest(context.Background(), c, rel)
	must(t, err)
	return d
}

func TestTreeDigest(t *testing.T) {
	dir := t.TempDir()
	fixture(t, dir)
	root, src := treeDigestOf(t, dir, ""), treeDigestOf(t, dir, "src")
	if root == src || root != treeDigestOf(t, dir, ".") {
		t.Fatal("the root is not one tree")
	}
	if treeDigestOf(t, dir, "src/a.go") == treeDigestOf(t, dir, "app.py") {
		t.Error("two files, one digest")
	}

	// paths are relative to rel: the same tree elsewhere digests the same
	must(t, os.MkdirAll(filepath.Join(dir, "copy"), 0o755))
	for _, n := range []string{"a.go", "hard.go", "sub/b.go"} {
		data, err := os.ReadFile(filepath.Join(dir, "src", n))
		must(t, err)
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, "copy", n)), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, "copy", n), data, 0o644))
	}
	must(t, os.Symlink("a.go", filepath.Join(dir, "copy/rel-link")))
	if got := treeDigestOf(t, dir, "copy"); got != src {
		t.Errorf("the same tree under another name: %s, want %s", got, src)
	}

	// an mtime is not content; content and mode are
	old := time.Now().Add(-time.Hour)
	must(t, os.Chtimes(filepath.Join(dir, "src/a.go"), old, old))
	if treeDigestOf(t, dir, "src") != src {
		t.Error("an mtime changed the digest")
	}
	must(t, os.Chmod(filepath.Join(dir, "src/sub/b.go"), 0o600))
	if treeDigestOf(t, dir, "src") == src {
		t.Error("a mode change kept the digest")
	}
	must(t, os.WriteFile(filepath.Join(dir, "src/sub/b.go"), []byte("package c\n"), 0o600))
	if treeDigestOf(t, dir, "src") == src {
		t.Error("a content change kept the digest")
	}
	if treeDigestOf(t, dir, "missing") != treeDigestOf(t, t.TempDir(), "") {
		t.Error("an absent source is not an empty tree")
	}
}
