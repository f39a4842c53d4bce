package archive

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzRead reads arbitrary bytes as an image archive (docker-archive or
// OCI layout tar), then every part of each image Read returns: nothing
// may panic, and an image Read accepts must be readable whole.
func FuzzRead(f *testing.F) {
	img := testImage(f, 2)
	f.Add(archiveBytes(f, WriteDocker, Named{Image: img, Tags: []string{"app:1"}}))
	f.Add(archiveBytes(f, WriteOCI, Named{Image: img, Tags: []string{"app:1"}}, Named{Image: img}))
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "a.tar")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		imgs, err := Read(p)
		if err != nil {
			return
		}
		for _, n := range imgs {
			if _, err := n.Image.Manifest(); err != nil {
				t.Fatalf("manifest of an image Read accepted: %v", err)
			}
			if _, err := n.Image.ConfigFile(); err != nil {
				t.Fatalf("config of an image Read accepted: %v", err)
			}
			ls, err := n.Image.Layers()
			if err != nil {
				t.Fatalf("layers of an image Read accepted: %v", err)
			}
			for _, l := range ls {
				rc, err := l.Compressed()
				if err != nil {
					t.Fatalf("layer of an image Read accepted: %v", err)
				}
				_, err = io.Copy(io.Discard, rc)
				rc.Close()
				if err != nil {
					t.Fatalf("layer of an image Read accepted: %v", err)
				}
			}
		}
	})
}
