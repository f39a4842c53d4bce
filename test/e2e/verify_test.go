package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// imageID is the id `inspect REF` reports.
func (e *env) imageID(ref string) string {
	e.t.Helper()
	var v struct{ Id string }
	if err := json.Unmarshal([]byte(e.ok("inspect", ref).stdout), &v); err != nil {
		e.t.Fatalf("inspect %s: %v", ref, err)
	}
	return v.Id
}

// editTar rewrites the tar at src into dst, each regular file passed
// through edit (which may change its content, and rename it through hdr).
func editTar(t *testing.T, src, dst string, edit func(hdr *tar.Header, data []byte) []byte) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var out bytes.Buffer
	tr, tw := tar.NewReader(in), tar.NewWriter(&out)
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
			data = edit(hdr, data)
			hdr.Size = int64(len(data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// dockerManifest is manifest.json of a docker-archive.
type dockerManifest []struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// readArchiveFile is one file of the tar at path.
func readArchiveFile(t *testing.T, path, file string) []byte {
	t.Helper()
	var got []byte
	editTar(t, path, filepath.Join(t.TempDir(), "copy.tar"), func(h *tar.Header, d []byte) []byte {
		if h.Name == file {
			got = d
		}
		return d
	})
	if got == nil {
		t.Fatalf("%s: no %s", path, file)
	}
	return got
}

// savedPair builds app:1 (saved as a docker-archive, then returned) and
// then another image that app:1 moves onto; it returns the archive, the
// saved image's last layer file and the id app:1 now has.
func savedPair(t *testing.T, e *env) (archive string, manifest dockerManifest, current string) {
	e.build(project(t, "FROM busybox\nRUN echo one > /one\n", nil), nil, "-t", "app:1")
	archive = filepath.Join(t.TempDir(), "app.tar")
	e.ok("save", "-o", archive, "app:1")
	current = e.build(project(t, "FROM busybox\nRUN echo two > /two\n", nil), nil, "-t", "app:1").res.ImageID
	if err := json.Unmarshal(readArchiveFile(t, archive, "manifest.json"), &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("manifest.json: %v %v", manifest, err)
	}
	return archive, manifest, current
}

// loadRefused runs load -i path and requires a failure naming want, with
// app:1 still on the image it had.
func loadRefused(t *testing.T, e *env, path, want, current string) {
	t.Helper()
	r := e.run(runOpts{}, "load", "-i", path)
	if r.code == 0 || !strings.Contains(r.stderr, want) {
		t.Errorf("load of a tampered archive: want a failure naming %q\n%s", want, r)
	}
	if got := e.imageID("app:1"); got != current {
		t.Errorf("app:1 moved to %s after a refused load (was %s)", got, current)
	}
}

// A layer whose bytes changed inside a docker-archive (manifest kept) is
// refused, naming the layer; the tag the archive names stays where it was.
func TestVerifyDockerArchiveTamperedLayer(t *testing.T) {
	e := newEnv(t)
	archive, m, current := savedPair(t, e)
	last := m[0].Layers[len(m[0].Layers)-1]
	tampered := filepath.Join(t.TempDir(), "tampered.tar")
	editTar(t, archive, tampered, func(h *tar.Header, data []byte) []byte {
		n := h.Name
		if n != last {
			return data
		}
		// A valid layer whose content differs by one byte: /one says "onf".
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(raw, []byte("one\n"))
		if i < 0 {
			t.Fatalf("layer %s does not hold /one", n)
		}
		raw[i+2] = 'f'
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(raw)
		zw.Close()
		return buf.Bytes()
	})
	loadRefused(t, e, tampered, last, current)
	// Flipped bytes of the compressed blob itself: refused too.
	flipped := filepath.Join(t.TempDir(), "flipped.tar")
	editTar(t, archive, flipped, func(h *tar.Header, data []byte) []byte {
		if h.Name == last {
			data[len(data)/2] ^= 0xff
		}
		return data
	})
	loadRefused(t, e, flipped, last, current)
	// The archive as saved loads and moves the tag.
	e.ok("load", "-i", archive)
	if e.imageID("app:1") == current {
		t.Error("the intact archive did not move app:1")
	}
}

// A layer whose blob is intact but whose diff_id in the config is wrong
// (config renamed to its new digest, so the archive is self-consistent)
// is refused, naming the layer, before the tag moves.
func TestVerifyDockerArchiveWrongDiffID(t *testing.T) {
	e := newEnv(t)
	archive, m, current := savedPair(t, e)
	var cfg map[string]any
	if err := json.Unmarshal(readArchiveFile(t, archive, m[0].Config), &cfg); err != nil {
		t.Fatal(err)
	}
	ids := cfg["rootfs"].(map[string]any)["diff_ids"].([]any)
	ids[len(ids)-1] = "sha256:" + strings.Repeat("ab", 32)
	raw, _ := json.Marshal(cfg)
	sum := sha256.Sum256(raw)
	newName := "sha256:" + hex.EncodeToString(sum[:])
	oldName := m[0].Config
	m[0].Config = newName
	rawManifest, _ := json.Marshal(m)
	lying := filepath.Join(t.TempDir(), "lying.tar")
	editTar(t, archive, lying, func(h *tar.Header, data []byte) []byte {
		switch h.Name {
		case "manifest.json":
			return rawManifest
		case oldName:
			h.Name = newName
			return raw
		}
		return data
	})
	loadRefused(t, e, lying, m[0].Layers[len(m[0].Layers)-1], current)
}

// A pull whose config names a wrong diff_id for an intact layer fails
// naming the layer; the tag keeps the image it had.
func TestVerifyPullWrongDiffID(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	ref := reg.host + "/lie:1"
	e.build(project(t, "FROM busybox\nRUN echo good > /good\n", nil), nil, "-t", ref)
	e.ok("push", ref)
	good := e.imageID(ref)

	archive := filepath.Join(t.TempDir(), "good.tar")
	e.ok("save", "-o", archive, ref)
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(archive, &tag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	last := len(cf.RootFS.DiffIDs) - 1
	cf.RootFS.DiffIDs[last] = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("cd", 32)}
	lying, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, lying); err != nil {
		t.Fatal(err)
	}
	r := e.run(runOpts{}, "pull", ref)
	if r.code == 0 || !strings.Contains(r.stderr, "diff_id") {
		t.Errorf("pull of a lying config: want a failure naming the diff_id\n%s", r)
	}
	if got := e.imageID(ref); got != good {
		t.Errorf("%s moved to %s after a refused pull (was %s)", ref, got, good)
	}
}

// A FIFO as the Dockerfile or as .dockerignore is an error at once; a
// FIFO copied by COPY lands as a FIFO (as BuildKit copies it); --jobs -1
// is refused.
func TestVerifyNonRegularInputs(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, "FROM busybox\nCOPY p /x\nRUN test -p /x && echo fifo > /r\n", nil)
	if err := syscall.Mkfifo(filepath.Join(ctx, "p"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.build(ctx, nil)

	if err := syscall.Mkfifo(filepath.Join(ctx, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.run(runOpts{timeout: time.Minute}, "build", "-f", filepath.Join(ctx, "fifo"), ctx)
	if r.code == 0 || !strings.Contains(r.stderr, "Dockerfile") || !strings.Contains(r.stderr, "is a FIFO") {
		t.Errorf("a FIFO Dockerfile:\n%s", r)
	}

	if err := syscall.Mkfifo(filepath.Join(ctx, ".dockerignore"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = e.run(runOpts{timeout: time.Minute}, "build", ctx)
	if r.code == 0 || !strings.Contains(r.stderr, ".dockerignore") || !strings.Contains(r.stderr, "is a FIFO") {
		t.Errorf("a FIFO .dockerignore:\n%s", r)
	}

	r = e.run(runOpts{}, "build", "--jobs", "-1", project(t, "FROM busybox\n", nil))
	if r.code == 0 || !strings.Contains(r.stderr, "--jobs -1") {
		t.Errorf("--jobs -1:\n%s", r)
	}
}
