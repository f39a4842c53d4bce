package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/minibuild/minibuild/archive"
	"github.com/minibuild/minibuild/store"
)

// minibuild save writes its tar as any new file is created (0666 less the
// umask), not with a temp file's 0600, and leaves no temp file.
func TestSaveWritesANewFilesMode(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	st, err := store.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	img, _ := random.Image(512, 1)
	md, err := st.WriteImage(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Tag("saved:1", md); err != nil {
		t.Fatal(err)
	}
	outDir := filepath.Join(dir, "out")
	os.Mkdir(outDir, 0o755)
	ref, _ := os.Create(filepath.Join(outDir, "ref"))
	ref.Close()
	want, _ := os.Stat(ref.Name())

	out := filepath.Join(outDir, "saved.tar")
	cmd := newRootCommand()
	cmd.SetArgs([]string{"--root", root, "save", "-o", out, "saved:1"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want.Mode().Perm() {
		t.Errorf("save wrote mode %v, want %v (as os.Create)", fi.Mode().Perm(), want.Mode().Perm())
	}
	if entries, _ := os.ReadDir(outDir); len(entries) != 2 {
		t.Errorf("beside the tar: %v", entries)
	}
	got, err := archive.Read(out)
	if err != nil || len(got) != 1 || len(got[0].Tags) != 1 {
		t.Fatalf("read back: %v, %v", got, err)
	}
}
