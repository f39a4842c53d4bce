package export

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/minibuild/minibuild/archive"
	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/executor"
	"github.com/minibuild/minibuild/store"
)

func TestParseAnnotations(t *testing.T) {
	got, err := ParseAnnotations([]string{"a=1", "manifest:b=2", "manifest[linux/amd64]:c=3", "org.x:y=4", "e="})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": "1", "b": "2", "c": "3", "org.x:y": "4", "e": ""}
	if len(got) != len(want) {
		t.Errorf("%v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	for _, bad := range []string{"index:a=1", "manifest-descriptor:a=1", "manifest[linux/arm64]:a=1", "novalue", "=v"} {
		if _, err := ParseAnnotations([]string{bad}); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}

// newTestStore holds one random image and returns it as a build result.
func newTestStore(t *testing.T) (*store.Store, *cache.Index, *executor.Result) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "root"))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := cache.OpenIndex(filepath.Join(dir, "root", "cache"))
	if err != nil {
		t.Fatal(err)
	}
	img, _ := random.Image(1024, 2)
	md, err := st.WriteImage(img)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := st.Image(md.String())
	id, _ := stored.ConfigName()
	return st, idx, &executor.Result{Image: stored, Digest: md, ID: id, StepsCached: 3, StepsBuilt: 1, FirstMiss: "step 4/4 RUN x — not built before"}
}

// A failing cache export names the cache and fails the build; with
// ignore-error=true it is one warning and everything after it still
// happens. Annotations and the metadata file describe the final manifest.
func TestFinishIgnoreErrorAnnotationsMetadata(t *testing.T) {
	st, idx, res := newTestStore(t)
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	os.WriteFile(blocker, nil, 0o644)
	badCache := "type=local,dest=" + filepath.Join(blocker, "cache") // under a file: cannot be made

	p, err := NewPlan(Request{Tags: []string{"app:1"}, CacheTo: []string{badCache}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Finish(context.Background(), st, idx, res); err == nil || !strings.Contains(err.Error(), "--cache-to "+filepath.Join(blocker, "cache")) {
		t.Errorf("a failed cache export: %v; want an error naming the cache", err)
	}

	var warnings []string
	meta := filepath.Join(dir, "meta.json")
	p, err = NewPlan(Request{Tags: []string{"app:1"}, CacheTo: []string{badCache + ",ignore-error=true"},
		Annotations: []string{"org.opencontainers.image.title=t"}, MetadataFile: meta,
		Warn: func(s string) { warnings = append(warnings, s) }})
	if err != nil {
		t.Fatal(err)
	}
	before := res.Digest
	if err := p.Finish(context.Background(), st, idx, res); err != nil {
		t.Fatalf("ignore-error=true: %v", err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "ignore-error=true") || strings.Contains(warnings[0], "\n") {
		t.Errorf("warnings %q, want one line", warnings)
	}
	m, _ := res.Image.Manifest()
	if res.Digest == before || m.Annotations["org.opencontainers.image.title"] != "t" {
		t.Errorf("annotations: digest %s (was %s), %v", res.Digest, before, m.Annotations)
	}
	if tagged, err := st.Image("app:1"); err != nil {
		t.Errorf("the tag after an ignored cache error: %v", err)
	} else if d, _ := tagged.Digest(); d != res.Digest {
		t.Errorf("the tag names %s, want the annotated %s", d, res.Digest)
	}
	var got map[string]any
	b, _ := os.ReadFile(meta)
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("metadata %s: %v", b, err)
	}
	raw, _ := res.Image.RawManifest()
	mt, _ := res.Image.MediaType()
	desc, _ := got["containerimage.descriptor"].(map[string]any)
	if got["containerimage.digest"] != res.Digest.String() || got["containerimage.config.digest"] != res.ID.String() ||
		desc["digest"] != res.Digest.String() || desc["size"] != float64(len(raw)) || desc["mediaType"] != string(mt) ||
		got["image.name"] != "docker.io/library/app:1" || got["minibuild.steps.cached"] != 3.0 || got["minibuild.steps.built"] != 1.0 ||
		got["minibuild.first_miss"] != res.FirstMiss {
		t.Errorf("metadata %s", b)
	}
}

func TestJoinNames(t *testing.T) {
	if got := joinNames([]string{"app:1", "r.io:5000/x/y:2", "docker.io/library/app:1", "a@sha256:" + strings.Repeat("0", 64)}); got !=
		"docker.io/library/app:1,r.io:5000/x/y:2,a@sha256:"+strings.Repeat("0", 64) {
		t.Errorf("joinNames: %s", got)
	}
}

func TestOnlyOneOutputOnStdout(t *testing.T) {
	if _, err := NewPlan(Request{Outputs: []string{"-", "type=oci,dest=-"}}); err == nil || !strings.Contains(err.Error(), "at most one") {
		t.Errorf("two stdout outputs: %v", err)
	}
	p, err := NewPlan(Request{Outputs: []string{"type=docker,dest=-"}})
	if err != nil || !p.UsesStdout() {
		t.Errorf("dest=-: %v, uses stdout %v", err, p != nil && p.UsesStdout())
	}
}

// -o - is a tar of the rootfs; type=oci,dest=- the OCI tarball, both on
// the plan's stdout.
func TestStdoutOutputs(t *testing.T) {
	img, _ := random.Image(256, 2)
	named := []archive.Named{{Image: img, Tags: []string{"a:1"}}}
	var tarOut, ociOut bytes.Buffer
	if err := (Output{Type: "tar", Dest: Stdout}).write(context.Background(), named, &tarOut, nil); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&tarOut)
	n := 0
	for {
		if _, err := tr.Next(); err != nil {
			break
		}
		n++
	}
	if n == 0 {
		t.Error("the rootfs tar is empty")
	}
	if err := (Output{Type: "oci", Dest: Stdout}).write(context.Background(), named, &ociOut, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(ociOut.Bytes(), []byte("oci-layout")) {
		t.Error("type=oci,dest=- wrote no OCI layout")
	}
}

func tarOf(t *testing.T, entries map[string]string, extra ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range entries {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg, Uid: os.Getuid(), Gid: os.Getgid()})
		tw.Write([]byte(body))
	}
	for _, h := range extra {
		tw.WriteHeader(h)
	}
	tw.Close()
	return buf.Bytes()
}

func TestContextFromTar(t *testing.T) {
	tmp := t.TempDir()
	c, err := ContextFromTar(context.Background(), bytes.NewReader(tarOf(t, map[string]string{"Dockerfile": "FROM scratch\n", "sub/a.txt": "a", "../escape": "x"})), tmp)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(c.Dir, "sub", "a.txt")); string(b) != "a" || c.Dockerfile != nil {
		t.Errorf("sub/a.txt %q, dockerfile %q", b, c.Dockerfile)
	}
	if _, err := os.Stat(filepath.Join(tmp, "escape")); err == nil {
		t.Error("../escape was written outside the context")
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("left after Release: %v", entries)
	}

	df, err := ContextFromTar(context.Background(), strings.NewReader("FROM busybox\nRUN true\n"), tmp)
	if err != nil || string(df.Dockerfile) != "FROM busybox\nRUN true\n" {
		t.Errorf("a lone Dockerfile: %q, %v", df.Dockerfile, err)
	}
	df.Release()

	dev := &tar.Header{Name: "sda", Typeflag: tar.TypeBlock, Devmajor: 8, Mode: 0o600}
	if _, err := ContextFromTar(context.Background(), bytes.NewReader(tarOf(t, map[string]string{"a": "a"}, dev)), tmp); err == nil ||
		!strings.Contains(err.Error(), "only files, directories and links") {
		t.Errorf("a device in the context: %v", err)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("left after a refused context: %v", entries)
	}
}

// load reads stdin through a spool file that is gone afterwards.
func TestLoadFromStdin(t *testing.T) {
	st, _, res := newTestStore(t)
	var buf bytes.Buffer
	if err := SaveTo(&buf, []archive.Named{{Image: res.Image, Tags: []string{"piped:1"}}}); err != nil {
		t.Fatal(err)
	}
	fresh, err := store.Open(filepath.Join(t.TempDir(), "r2"))
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := Load(fresh, "-", &buf)
	if err != nil || len(loaded) != 1 || loaded[0].ID != res.ID || len(loaded[0].Tags) != 1 {
		t.Fatalf("loaded %+v, %v", loaded, err)
	}
	if _, err := fresh.Image("piped:1"); err != nil {
		t.Error(err)
	}
	if entries, _ := os.ReadDir(filepath.Join(fresh.Root(), "tmp")); len(entries) != 0 {
		t.Errorf("spool left behind: %v", entries)
	}
	_ = st
}
