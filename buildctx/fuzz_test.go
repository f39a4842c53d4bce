package buildctx

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDockerignore opens a context over a small tree with arbitrary
// .dockerignore text: nothing may panic, and every entry listed must be
// one of the tree's own (nothing outside the dir, no "..", no absolute
// path), openable inside the dir.
func FuzzDockerignore(f *testing.F) {
	for _, s := range []string{
		"*\n!a\n",
		"**/*.go\n!keep/**\n# comment\n\n",
		"../outside\n/abs\n!../outside\n!/\n",
		"a/b\n!a/b/c\nd/**/e\n",
		"[\n\\\n**\n!**\n",
		".dockerignore\nDockerfile\n",
		"  spaced  \n!\n/\n.\n..\n",
	} {
		f.Add(s)
	}
	tree := []string{"a", "a2/", "a2/b", "d/", "d/x/", "d/x/e", "keep/", "keep/m.go", "z.go", ".hidden"}
	f.Fuzz(func(t *testing.T, ignore string) {
		parent := t.TempDir()
		root := filepath.Join(parent, "ctx")
		mktree(t, root, tree...)
		if err := os.WriteFile(filepath.Join(parent, "outside"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, ".dockerignore"), []byte(ignore), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Open(context.Background(), root, Options{})
		if err != nil {
			return // a bad pattern is an error, not a panic
		}
		defer c.Close()
		known := map[string]bool{".dockerignore": true}
		for _, n := range tree {
			known[filepath.Clean(n)] = true
		}
		for _, fl := range c.Files() {
			if !known[fl.Path] {
				t.Fatalf("entry %q is not in the context dir", fl.Path)
			}
			if fl.Mode.IsRegular() {
				of, err := c.Open(fl)
				if err != nil {
					t.Fatalf("open %s: %v", fl.Path, err)
				}
				of.Close()
			}
		}
		if len(c.Tree()) != len(c.Files()) {
			t.Fatalf("Tree lists %d entries, Files %d", len(c.Tree()), len(c.Files()))
		}
	})
}
