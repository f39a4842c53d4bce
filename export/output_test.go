package export

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/minibuild/minibuild/archive"
)

func TestParseOutput(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want Output
		err  string
	}{
		{spec: "out/dir", want: Output{Type: "local", Dest: "out/dir"}},
		{spec: "type=local,dest=d", want: Output{Type: "local", Dest: "d"}},
		{spec: "type=oci,dest=a.tar", want: Output{Type: "oci", Dest: "a.tar"}},
		{spec: "type=docker,dest=a.tar", want: Output{Type: "docker", Dest: "a.tar"}},
		{spec: "type=registry", want: Output{Type: "registry"}},
		{spec: "type=registry,name=r/a:1", want: Output{Type: "registry", Name: "r/a:1"}},
		{spec: "type=image,push=true,name=r/a:1", want: Output{Type: "registry", Name: "r/a:1"}},
		{spec: "type=image,name=r/a:1", want: Output{Type: "image", Name: "r/a:1"}},
		{spec: "type=image,push=false,name=r/a:1", want: Output{Type: "image", Name: "r/a:1"}},
		{spec: "-", want: Output{Type: "tar", Dest: "-"}},
		{spec: "type=tar,dest=x", want: Output{Type: "tar", Dest: "x"}},
		{spec: "type=tar,dest=-", want: Output{Type: "tar", Dest: "-"}},
		{spec: "type=local,dest=-", want: Output{Type: "tar", Dest: "-"}},
		{spec: "type=oci,dest=-", want: Output{Type: "oci", Dest: "-"}},
		{spec: "type=oci,dest=a.tar,compression=gzip,oci-mediatypes=true,force-compression=false", want: Output{Type: "oci", Dest: "a.tar"}},
		{spec: "type=oci,dest=a.tar,compression=zstd", err: "compression=zstd is not supported: layers are gzip"},
		{spec: "type=oci,dest=a.tar,compression-level=3", err: "compression-level is not supported"},
		{spec: "type=oci,dest=a.tar,force-compression=true", err: "force-compression=true is not supported"},
		{spec: "type=oci,dest=a.tar,oci-mediatypes=false", err: "oci-mediatypes=false is not supported"},
		{spec: "type=oci,dest=a.tar,annotation.a=b", err: "--annotation"},
		{spec: "type=oci,dest=a.tar,name=x", err: "name is for"},
		{spec: "type=image,push=maybe", err: "push=maybe: want true or false"},
		{spec: "type=oci", err: "dest is required"},
		{spec: "type=zip,dest=x", err: "type must be"},
		{spec: "type=oci,dest=x,color=red", err: `unknown key "color"`},
	} {
		got, err := ParseOutput(tc.spec)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.spec, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
	}
	if _, err := ParseOutputs([]string{"type=oci,dest=a", "type=bogus"}); err == nil {
		t.Error("ParseOutputs accepted a bad spec")
	}
}

// newFileMode is the mode os.Create gives a new file here (0666 less the
// umask), which every output file must have.
func newFileMode(t *testing.T, dir string) os.FileMode {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "reference"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	fi, err := os.Stat(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(f.Name())
	return fi.Mode().Perm()
}

// checkTar reads path back and finds img in it under tag.
func checkTar(t *testing.T, path string, img v1.Image, tag string, mode os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != mode {
		t.Errorf("%s: mode %v, want %v (as os.Create)", path, fi.Mode().Perm(), mode)
	}
	got, err := archive.Read(path)
	if err != nil {
		t.Fatalf("read back %s: %v", path, err)
	}
	if len(got) != 1 {
		t.Fatalf("%s holds %d images, want 1", path, len(got))
	}
	wantID, _ := img.ConfigName()
	if id, _ := got[0].Image.ConfigName(); id != wantID {
		t.Errorf("%s: image id %s, want %s", path, id, wantID)
	}
	wantLayers, _ := img.Layers()
	layers, err := got[0].Image.Layers()
	if err != nil || len(layers) != len(wantLayers) {
		t.Fatalf("%s: %d layers (%v), want %d", path, len(layers), err, len(wantLayers))
	}
	for i := range layers {
		d, _ := layers[i].DiffID()
		w, _ := wantLayers[i].DiffID()
		if d != w {
			t.Errorf("%s: layer %d diffID %s, want %s", path, i, d, w)
		}
	}
	if !strings.Contains(strings.Join(got[0].Tags, " "), tag) {
		t.Errorf("%s: tags %v, want %s", path, got[0].Tags, tag)
	}
}

func TestWriteOCIAndDockerTarsReadBack(t *testing.T) {
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	mode := newFileMode(t, dir)
	named := []archive.Named{{Image: img, Tags: []string{"example.com/app:1"}}}
	for _, typ := range []string{"oci", "docker"} {
		dest := filepath.Join(dir, "sub", typ+".tar") // the directory is made
		if err := (Output{Type: typ, Dest: dest}).Write(context.Background(), named); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		checkTar(t, dest, img, "app", mode)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "sub"))
	if len(entries) != 2 {
		t.Errorf("left beside the outputs: %v", entries)
	}
	if err := (Output{Type: "registry"}).Write(context.Background(), named); err != nil {
		t.Errorf("type=registry writes nothing, but: %v", err)
	}
}

// save's tar is a docker archive with a new file's mode (it once was a
// temp file's 0600), and a failed save leaves nothing.
func TestSaveHasNewFileMode(t *testing.T) {
	img, _ := random.Image(512, 1)
	dir := t.TempDir()
	mode := newFileMode(t, dir)
	out := filepath.Join(dir, "saved.tar")
	if err := Save(out, []archive.Named{{Image: img, Tags: []string{"saved:1"}}}); err != nil {
		t.Fatal(err)
	}
	checkTar(t, out, img, "saved", mode)

	if err := Save(filepath.Join(dir, "missing", "x.tar"), []archive.Named{{Image: img}}); err == nil {
		t.Error("save into a missing directory succeeded")
	}
	if err := Save(filepath.Join(dir, "bad.tar"), []archive.Named{{Image: img, Tags: []string{"Not A Tag"}}}); err == nil {
		t.Error("save of a bad tag succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left after the failed saves: %v", entries)
	}
}
