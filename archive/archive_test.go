package archive

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/minibuild/minibuild/store"
)

// testImage is a random image with a linux/amd64 config, as tools expect.
func testImage(t testing.TB, layers int) v1.Image {
	t.Helper()
	img, err := random.Image(512, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Cmd = []string{"/bin/sh"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func writeTestFile(t testing.TB, path string, write func(io.Writer) error) {
	t.Helper()
	var buf bytes.Buffer
	if err := write(&buf); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func digestOf(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func configOf(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// layerBytes reads every compressed layer of img.
func layerBytes(t *testing.T, img v1.Image) [][]byte {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func untar(t *testing.T, tarPath, dir string) {
	t.Helper()
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, hdr.Name)
		if hdr.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		b, _ := io.ReadAll(tr)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOCIRoundTrip(t *testing.T) {
	a, b := testImage(t, 2), testImage(t, 1)
	// b is OCI already: it must come back byte-identical, same digest.
	b, err := asOCI(b)
	if err != nil {
		t.Fatal(err)
	}
	// c shares a's layers: they must appear once in the archive.
	c, err := mutate.Config(a, v1.Config{Env: []string{"C=1"}})
	if err != nil {
		t.Fatal(err)
	}
	in := []Named{
		{Image: a, Tags: []string{"myapp:1.1", "ghcr.io/o/r:2"}},
		{Image: b},
		{Image: c, Tags: []string{"other"}},
	}
	dir := t.TempDir()
	tarPath := filepath.Join(dir, "img.tar")
	writeTestFile(t, tarPath, func(w io.Writer) error { return WriteOCI(w, in) })

	// Deterministic: a second write gives the same bytes.
	var again bytes.Buffer
	if err := WriteOCI(&again, in); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(tarPath)
	if !bytes.Equal(first, again.Bytes()) {
		t.Error("WriteOCI is not deterministic")
	}

	layoutDir := filepath.Join(dir, "layout")
	untar(t, tarPath, layoutDir)
	blobs, _ := os.ReadDir(filepath.Join(layoutDir, "blobs", "sha256"))
	// a: 2 layers + config + manifest; b: 1+1+1; c: config + manifest.
	if len(blobs) != 9 {
		t.Errorf("%d blobs, want 9 (shared layers once)", len(blobs))
	}

	for _, p := range []string{tarPath, layoutDir} {
		t.Run(filepath.Base(p), func(t *testing.T) {
			out, err := Read(p)
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != 3 {
				t.Fatalf("read %d images", len(out))
			}
			wantTags := [][]string{{"docker.io/library/myapp:1.1", "ghcr.io/o/r:2"}, nil, {"docker.io/library/other:latest"}}
			for i := range in {
				if !reflect.DeepEqual(out[i].Tags, wantTags[i]) {
					t.Errorf("image %d tags %q, want %q", i, out[i].Tags, wantTags[i])
				}
				if mt, _ := out[i].Image.MediaType(); mt != types.OCIManifestSchema1 {
					t.Errorf("image %d media type %s", i, mt)
				}
				if configOf(t, out[i].Image) != configOf(t, in[i].Image) {
					t.Errorf("image %d id changed", i)
				}
				want, err := asOCI(in[i].Image)
				if err != nil {
					t.Fatal(err)
				}
				wm, _ := want.RawManifest()
				gm, err := out[i].Image.RawManifest()
				if err != nil || !bytes.Equal(wm, gm) {
					t.Fatalf("image %d manifest differs (%v)", i, err)
				}
				wc, _ := in[i].Image.RawConfigFile()
				gc, err := out[i].Image.RawConfigFile()
				if err != nil || !bytes.Equal(wc, gc) {
					t.Fatalf("image %d config differs (%v)", i, err)
				}
				if !reflect.DeepEqual(layerBytes(t, in[i].Image), layerBytes(t, out[i].Image)) {
					t.Fatalf("image %d layers differ", i)
				}
			}
		})
	}

	var idx v1.IndexManifest
	raw, _ := os.ReadFile(filepath.Join(layoutDir, "index.json"))
	if err := json.Unmarshal(raw, &idx); err != nil {
		t.Fatal(err)
	}
	if idx.Manifests[2].Digest != digestOf(t, b) {
		t.Errorf("an OCI image changed digest: %s, want %s", idx.Manifests[2].Digest, digestOf(t, b))
	}
	if got := idx.Manifests[0].Annotations; got[AnnotationRefName] != "1.1" || got[annotationImageName] != "docker.io/library/myapp:1.1" {
		t.Errorf("annotations %v", got)
	}
}

func TestDockerRoundTrip(t *testing.T) {
	a, b := testImage(t, 2), testImage(t, 1)
	dir := t.TempDir()
	p := filepath.Join(dir, "img.tar")
	writeTestFile(t, p, func(w io.Writer) error {
		return WriteDocker(w, []Named{{Image: a, Tags: []string{"myapp:1.1", "myapp:latest"}}, {Image: b, Tags: []string{"b:1"}}})
	})
	out, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 {
		t.Fatalf("read %d images", len(out))
	}
	byConfig := map[v1.Hash]Named{}
	for _, n := range out {
		byConfig[configOf(t, n.Image)] = n
	}
	for _, tc := range []struct {
		img  v1.Image
		tags []string
	}{{a, []string{"myapp:1.1", "myapp:latest"}}, {b, []string{"b:1"}}} {
		got, ok := byConfig[configOf(t, tc.img)]
		if !ok {
			t.Fatalf("image with config %s missing", configOf(t, tc.img))
		}
		gotTags := append([]string(nil), got.Tags...)
		sort.Strings(gotTags) // go-containerregistry writes RepoTags in map order
		if strings.Join(gotTags, ",") != strings.Join(tc.tags, ",") {
			t.Errorf("tags %q, want %q", gotTags, tc.tags)
		}
		if !reflect.DeepEqual(layerBytes(t, tc.img), layerBytes(t, got.Image)) {
			t.Error("layers differ")
		}
	}

	// A single untagged image is allowed.
	p2 := filepath.Join(dir, "untagged.tar")
	writeTestFile(t, p2, func(w io.Writer) error { return WriteDocker(w, []Named{{Image: b}}) })
	out, err = Read(p2)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || len(out[0].Tags) != 0 || configOf(t, out[0].Image) != configOf(t, b) {
		t.Fatalf("untagged read back as %+v", out)
	}
}

func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	notTar := filepath.Join(dir, "x.tar")
	os.WriteFile(notTar, []byte("hello"), 0o644)
	emptyTar := filepath.Join(dir, "empty.tar")
	writeTestFile(t, emptyTar, func(w io.Writer) error { return tar.NewWriter(w).Close() })
	for _, p := range []string{notTar, emptyTar, dir, filepath.Join(dir, "missing")} {
		if _, err := Read(p); err == nil {
			t.Errorf("Read(%s) succeeded", p)
		}
	}
	if err := WriteOCI(io.Discard, nil); err == nil {
		t.Error("WriteOCI of nothing succeeded")
	}
}

func TestCorruptBlobRefused(t *testing.T) {
	img := testImage(t, 1)
	ls, _ := img.Layers()
	m, _ := img.Manifest()
	bad := badLayer{Layer: ls[0]}
	var buf bytes.Buffer
	err := writeBlob(tar.NewWriter(&buf), "blobs/sha256/x", m.Layers[0].Digest, m.Layers[0].Size, bad.Compressed)
	if err == nil {
		t.Fatal("a blob with the wrong content was written")
	}
}

type badLayer struct{ v1.Layer }

func (b badLayer) Compressed() (io.ReadCloser, error) {
	size, _ := b.Layer.Size()
	return io.NopCloser(bytes.NewReader(make([]byte, size))), nil
}

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed", name)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestSkopeoAndUmoci(t *testing.T) {
	img := testImage(t, 2)
	dir := t.TempDir()
	docker := filepath.Join(dir, "docker.tar")
	oci := filepath.Join(dir, "oci.tar")
	in := []Named{{Image: img, Tags: []string{"myapp:1.1"}}}
	writeTestFile(t, docker, func(w io.Writer) error { return WriteDocker(w, in) })
	writeTestFile(t, oci, func(w io.Writer) error { return WriteOCI(w, in) })
	want := configOf(t, img)

	t.Run("skopeo", func(t *testing.T) {
		needTool(t, "skopeo")
		for _, ref := range []string{"docker-archive:" + docker, "oci-archive:" + oci, "oci-archive:" + oci + ":1.1"} {
			var info struct {
				Digest string
				Layers []string
			}
			// The raw config must be the very bytes the image id names.
			out := run(t, "skopeo", "inspect", "--config", "--raw", ref)
			if d, _, _ := v1.SHA256(strings.NewReader(out)); d != want {
				t.Errorf("%s: config digest %s, want %s", ref, d, want)
			}
			out = run(t, "skopeo", "inspect", ref)
			if err := json.Unmarshal([]byte(out), &info); err != nil {
				t.Fatalf("%s: %v", ref, err)
			}
			if len(info.Layers) != 2 {
				t.Errorf("%s: %d layers", ref, len(info.Layers))
			}
			if strings.HasPrefix(ref, "oci") {
				oci, _ := asOCI(img)
				if info.Digest != digestOf(t, oci).String() {
					t.Errorf("%s: digest %s, want %s", ref, info.Digest, digestOf(t, oci))
				}
			}
		}
	})
	t.Run("docker", func(t *testing.T) {
		needTool(t, "docker")
		if err := exec.Command("docker", "info").Run(); err != nil {
			t.Skip("no docker daemon")
		}
		out := run(t, "docker", "load", "-i", docker)
		if !strings.Contains(out, "myapp:1.1") {
			t.Errorf("docker load: %s", out)
		}
		exec.Command("docker", "rmi", "myapp:1.1").Run()
	})
	t.Run("umoci", func(t *testing.T) {
		needTool(t, "umoci")
		layoutDir := filepath.Join(dir, "layout")
		untar(t, oci, layoutDir)
		bundle := filepath.Join(dir, "bundle")
		run(t, "umoci", "unpack", "--image", layoutDir+":1.1", bundle)
		if _, err := os.Stat(filepath.Join(bundle, "rootfs")); err != nil {
			t.Fatal(err)
		}
		ents, _ := os.ReadDir(filepath.Join(bundle, "rootfs"))
		if len(ents) == 0 {
			t.Error("empty rootfs")
		}
	})
}

// TestStoreBackedExport exports images read from the store, the way
// `minibuild build -o type=oci|docker` does.
func TestStoreBackedExport(t *testing.T) {
	s, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	md, err := s.WriteImage(testImage(t, 2))
	if err != nil {
		t.Fatal(err)
	}
	img, err := s.Image(md.String())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range []struct {
		name  string
		write func(io.Writer, []Named) error
	}{{"docker.tar", WriteDocker}, {"oci.tar", WriteOCI}} {
		p := filepath.Join(dir, f.name)
		writeTestFile(t, p, func(w io.Writer) error { return f.write(w, []Named{{Image: img, Tags: []string{"app:1"}}}) })
		out, err := Read(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != 1 || configOf(t, out[0].Image) != configOf(t, img) {
			t.Fatalf("%s: read back %+v", f.name, out)
		}
		if !reflect.DeepEqual(layerBytes(t, img), layerBytes(t, out[0].Image)) {
			t.Fatalf("%s: layers differ", f.name)
		}
		// And into a second store: the archive image is a valid source.
		s2, _ := store.Open(t.TempDir())
		if _, err := s2.WriteImage(out[0].Image); err != nil {
			t.Fatalf("%s: store the imported image: %v", f.name, err)
		}
	}
}
