package archive

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// archiveBytes is imgs written by write.
func archiveBytes(t testing.TB, write func(io.Writer, []Named) error, imgs ...Named) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := write(&buf, imgs); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rewriteTar copies the tar b, passing each regular file through edit.
func rewriteTar(t testing.TB, b []byte, edit func(name string, data []byte) []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	tr, tw := tar.NewReader(bytes.NewReader(b)), tar.NewWriter(&out)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			data = edit(hdr.Name, data)
			hdr.Size = int64(len(data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	tw.Close()
	return out.Bytes()
}

func readBytes(t *testing.T, b []byte) error {
	p := filepath.Join(t.TempDir(), "a.tar")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Read(p)
	return err
}

// A config whose diff_id is not its layer's, in an archive that is
// otherwise consistent, and a layer whose bytes changed under an intact
// manifest: both refused by Read, naming the layer.
func TestReadVerifies(t *testing.T) {
	img := testImage(t, 2)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs[1] = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("cd", 32)}
	lying, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := img.Manifest()
	second := m.Layers[1].Digest.Hex
	flip := func(name string, data []byte) []byte {
		if strings.Contains(name, second) {
			data = bytes.Clone(data)
			data[len(data)/2] ^= 0xff
		}
		return data
	}
	for _, w := range []struct {
		name  string
		write func(io.Writer, []Named) error
	}{{"docker", WriteDocker}, {"oci", WriteOCI}} {
		t.Run(w.name, func(t *testing.T) {
			good := archiveBytes(t, w.write, Named{Image: img, Tags: []string{"app:1"}})
			if err := readBytes(t, good); err != nil {
				t.Fatalf("the intact archive: %v", err)
			}
			err := readBytes(t, archiveBytes(t, w.write, Named{Image: lying, Tags: []string{"app:1"}}))
			if err == nil || !strings.Contains(err.Error(), "layer 2") || !strings.Contains(err.Error(), "diff_id") {
				t.Errorf("a lying diff_id: %v", err)
			}
			err = readBytes(t, rewriteTar(t, good, flip))
			if err == nil || !strings.Contains(err.Error(), "layer 2") {
				t.Errorf("a flipped layer byte: %v", err)
			}
		})
	}
}
