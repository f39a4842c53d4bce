package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// lazyFixture is host A's build, its image pushed and its cache exported
// to registry one, and the layers a fresh host may leave remote: those
// the cache records name (A's own steps; the base is every host's).
type lazyFixture struct {
	reg      *refRegistry
	cacheRef string
	imageRef string
	app      string   // the context (python-app: WORKDIR, COPY, RUN, COPY)
	layers   []string // the image's layers A built (not the base's)
	built    built
}

func newLazyFixture(t *testing.T) *lazyFixture {
	reg := startRegistry(t)
	a := newEnv(t)
	baseLayers, _ := a.imageBlobs("busybox:latest")
	f := &lazyFixture{reg: reg, cacheRef: reg.host + "/team/app:buildcache", imageRef: reg.host + "/team/app:1"}
	f.app = a.copyExample("python-app")
	f.built = a.build(f.app, nil, "-t", f.imageRef, "--push", "--cache-to", "type=registry,ref="+f.cacheRef+",mode=max")
	layers, _ := a.imageBlobs(f.imageRef)
	for _, l := range layers {
		if !contains(baseLayers, l) {
			f.layers = append(f.layers, l)
		}
	}
	if len(f.layers) < 3 {
		t.Fatalf("host A's image has %d layers of its own, want WORKDIR, COPY, RUN, COPY", len(f.layers))
	}
	return f
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// lazyHost is a fresh host that builds with the registry cache: every step
// must hit and no layer blob cross the wire or land in its blobs dir.
func (f *lazyFixture) lazyHost(t *testing.T, args ...string) (*env, built) {
	t.Helper()
	b := newEnv(t)
	m := f.reg.mark()
	got := b.build(b.copyExample("python-app"), nil, append([]string{"-t", "app:b", "--cache-from", "type=registry,ref=" + f.cacheRef}, args...)...)
	for _, s := range got.steps {
		if s.Status != "cached" {
			t.Fatalf("fresh host executed step %d %q (%s): %s", s.Step, s.Instruction, s.Status, s.Reason)
		}
	}
	if got.res.ImageID != f.built.res.ImageID {
		t.Fatalf("fresh host built %s, host A %s", got.res.ImageID, f.built.res.ImageID)
	}
	if len(args) == 0 {
		gets := blobGets(f.reg.since(m))
		for _, l := range f.layers {
			if gets[l] {
				t.Errorf("the fresh host downloaded layer %s; every step hit", l)
			}
			if _, err := os.Stat(filepath.Join(b.root, "blobs", "sha256", strings.TrimPrefix(l, "sha256:"))); err == nil {
				t.Errorf("layer %s is in the fresh host's blobs dir; every step hit", l)
			}
		}
	}
	return b, got
}

// Every step hits on a fresh host and no layer is downloaded; images,
// inspect and df say so. A push to another registry, an OCI export and
// save then fetch what they need, and each output is complete: skopeo
// inspects and copies the pushed image, umoci unpacks the export, a third
// host loads the saved tar. A push back to the first registry uploads no
// layer A built.
func TestLazyLayersFromRegistryCache(t *testing.T) {
	f := newLazyFixture(t)
	b, _ := f.lazyHost(t)
	imgs := b.ok("images").stdout
	if !strings.Contains(imgs, "REMOTE") || !strings.Contains(imgs, "layers, in "+f.reg.host+"/team/app") {
		t.Errorf("images does not say which layers are remote:\n%s", imgs)
	}
	var remote []struct{ Digest, Repo string }
	if err := json.Unmarshal([]byte(b.ok("inspect", "--format", "{{json .RemoteLayers}}", "app:b").stdout), &remote); err != nil || len(remote) != len(f.layers) {
		t.Errorf("inspect .RemoteLayers = %+v (%v), want the %d layers host A built", remote, err, len(f.layers))
	}
	if df := b.ok("df").stdout; !regexp.MustCompile(`remote layers\s+` + strconv.Itoa(len(f.layers)) + `\s+0B`).MatchString(df) {
		t.Errorf("df does not count %d remote layers as not stored here:\n%s", len(f.layers), df)
	}

	// A push back to the registry that holds them: the same repository
	// skips every layer, another one mounts A's; none is downloaded.
	m := f.reg.mark()
	b.ok("push", "app:b", f.reg.host+"/team/app:b")
	b.ok("push", "app:b", f.reg.host+"/other/app:b")
	reqs := f.reg.since(m)
	up, gets := uploadedDigests(reqs), blobGets(reqs)
	for _, l := range f.layers {
		if up[l] || gets[l] {
			t.Errorf("pushing back to the first registry uploaded (%v) or downloaded (%v) layer %s", up[l], gets[l], l)
		}
	}
	if n := len(uploadsTo(reqs, "/team/app/")); n != 0 {
		t.Errorf("pushing to the repository that has the image made %d uploads", n)
	}

	checkLazyOutputs(t, f, b)
}

// checkLazyOutputs pushes the lazy image of b to another registry, exports
// it with -o type=oci and as a cache, and saves it, each from a host whose
// layers are remote: each output is complete and verifies.
func checkLazyOutputs(t *testing.T, f *lazyFixture, b *env) {
	// Another registry: the layers are fetched (verified) and uploaded.
	reg2 := startRegistry(t)
	pushed := reg2.host + "/copy/app:b"
	b.ok("push", "app:b", pushed)
	var sk struct{ Layers []string }
	if err := json.Unmarshal([]byte(tool(t, "skopeo", "inspect", "--tls-verify=false", "docker://"+pushed)), &sk); err != nil {
		t.Fatal(err)
	}
	if len(sk.Layers) != len(f.layers)+1 {
		t.Errorf("skopeo sees %d layers in %s, want %d", len(sk.Layers), pushed, len(f.layers)+1)
	}
	ociDir := filepath.Join(t.TempDir(), "copied")
	tool(t, "skopeo", "copy", "--src-tls-verify=false", "docker://"+pushed, "oci:"+ociDir+":b")

	// An OCI export of a lazy build, on another fresh host.
	ociTar := filepath.Join(t.TempDir(), "app.oci.tar")
	f.lazyHost(t, "-o", "type=oci,dest="+ociTar)
	layout := filepath.Join(t.TempDir(), "layout")
	os.MkdirAll(layout, 0o755)
	tool(t, "tar", "-xf", ociTar, "-C", layout)
	index := decodeJSON(t, "index.json", readFile(t, filepath.Join(layout, "index.json")))
	ref, _ := findKey(index, "org.opencontainers.image.ref.name")
	tag, _ := ref.(string)
	bundle := filepath.Join(t.TempDir(), "bundle")
	tool(t, "umoci", "unpack", "--image", layout+":"+tag, bundle)
	if got, want := readFile(t, filepath.Join(bundle, "rootfs/app/app.py")), readFile(t, filepath.Join(f.app, "app.py")); got != want {
		t.Errorf("umoci unpacked /app/app.py = %q, want %q", got, want)
	}

	// A cache export to another place (an OCI layout) from a lazy build:
	// every layer its records name is fetched into it, whole.
	cacheDir := filepath.Join(t.TempDir(), "ci-cache")
	f.lazyHost(t, "--cache-to", "type=local,dest="+cacheDir+",mode=max")
	tool(t, "skopeo", "inspect", "--raw", "oci:"+cacheDir+":minibuild-cache")
	for _, l := range f.layers {
		hex := strings.TrimPrefix(l, "sha256:")
		if sum := strings.Fields(tool(t, "sha256sum", filepath.Join(cacheDir, "blobs", "sha256", hex))); len(sum) == 0 || sum[0] != hex {
			t.Errorf("the exported cache's blob %s is not whole: %v", l, sum)
		}
	}

	// save on a third fresh host, loaded into a fourth.
	s, _ := f.lazyHost(t)
	tarPath := filepath.Join(t.TempDir(), "x.tar")
	s.ok("save", "-o", tarPath, "app:b")
	c := newEmptyEnv(t)
	c.ok("load", "-i", tarPath)
	if id := strings.TrimSpace(c.ok("inspect", "--format", "{{.Id}}", "app:b").stdout); id != f.built.res.ImageID {
		t.Errorf("the saved tar loads as %s, want %s", id, f.built.res.ImageID)
	}
}

// uploadsTo are the upload requests into one repository path ("/team/app/").
func uploadsTo(reqs []request, repo string) []request {
	var out []request
	for _, q := range uploads(reqs) {
		if strings.Contains(q.uri, "/v2"+repo) {
			out = append(out, q)
		}
	}
	return out
}

// A remote layer that the registry lost, needed by a step that runs, is a
// clear error naming the layer, the registry and the step.
func TestLazyLayerMissingIsClearError(t *testing.T) {
	f := newLazyFixture(t)
	b, _ := f.lazyHost(t)
	for _, l := range f.layers {
		hex := strings.TrimPrefix(l, "sha256:")
		if err := os.Remove(filepath.Join(f.reg.data, "docker/registry/v2/blobs/sha256", hex[:2], hex, "data")); err != nil {
			t.Fatal(err)
		}
	}
	app := b.copyExample("python-app")
	appendLine(t, filepath.Join(app, "Dockerfile"), "RUN cat /app/app.py")
	r := b.run(runOpts{}, "build", "--progress=plain", "-t", "app:c", app)
	if r.code == 0 {
		t.Fatalf("a RUN over lost remote layers succeeded:\n%s", r)
	}
	msg := r.stderr
	named := false
	for _, l := range f.layers {
		named = named || strings.Contains(msg, l)
	}
	if !named || !strings.Contains(msg, f.reg.host+"/team/app") || !strings.Contains(msg, "RUN cat /app/app.py") {
		t.Errorf("the error does not name the layer, the registry and the step:\n%s", r)
	}
	t.Logf("the error: %s", tail(msg, 3))
	// The image built before is intact, and still remote.
	if imgs := b.ok("images").stdout; !strings.Contains(imgs, "app") || !strings.Contains(imgs, "layers, in ") {
		t.Errorf("images lost app:b or its remote layers:\n%s", imgs)
	}
	// Untagged, its remote records are collected as blobs would be.
	b.ok("rmi", "app:b")
	b.ok("prune")
	if left, _ := filepath.Glob(filepath.Join(b.root, "remote", "sha256", "*")); len(left) != 0 {
		t.Errorf("prune left %d remote records of an image that is gone: %v", len(left), left)
	}
	if left, _ := filepath.Glob(filepath.Join(b.root, "remote", "facts", "*", "*")); len(left) != 0 {
		t.Errorf("prune left the rootfs facts of %d chains no image or record names: %v", len(left), left)
	}
}

// COPY --chown over layers that stay remote reads the image's passwd and
// group files from the chain's facts: nothing is downloaded either.
func TestLazyChownCopyFetchesNothing(t *testing.T) {
	reg := startRegistry(t)
	dockerfile := "FROM busybox\nWORKDIR /srv\nRUN echo built > /srv/built\nCOPY --chown=app:app a.txt ./\nRUN ls -ln /srv/a.txt > /srv/owner\n"
	files := map[string]string{"a.txt": "hello\n"}
	cacheRef := reg.host + "/team/chown:cache"
	a := newEnv(t)
	a.build(project(t, dockerfile, files), nil, "-t", "chown:a", "--cache-to", "type=registry,ref="+cacheRef+",mode=max")
	layers, _ := a.imageBlobs("chown:a")

	b := newEnv(t)
	m := reg.mark()
	got := b.build(project(t, dockerfile, files), nil, "-t", "chown:b", "--cache-from", "type=registry,ref="+cacheRef)
	for _, s := range got.steps {
		if s.Status != "cached" {
			t.Errorf("step %d %q: %s (%s)", s.Step, s.Instruction, s.Status, s.Reason)
		}
	}
	gets := blobGets(reg.since(m))
	for _, l := range layers {
		if gets[l] {
			t.Errorf("the fresh host downloaded layer %s for COPY --chown's key", l)
		}
	}
}

// A fresh host whose first miss is a COPY keys the COPYs after it from
// the cache's facts about the chain below, through its own new layers,
// where their walks show those layers change nothing (or decide the
// answer themselves): the RUN's layer is never fetched, and the image is
// the one host A builds from the same edit with its layers on disk. The
// walks cross a symlink the RUN made and a file the first miss wrote.
func TestLazyCopiesAfterAMissFetchNothing(t *testing.T) {
	reg := startRegistry(t)
	dockerfile := "FROM busybox\nWORKDIR /app\n" +
		"RUN mkdir -p /deps && seq 1 20000 > /deps/data && ln -s /deps /app/vendor\n" +
		"COPY a.txt ./\nCOPY lib/ ./lib/\nCOPY b.txt ./vendor/\nCOPY b.txt ./a.txt\n"
	files := map[string]string{"a.txt": "one\n", "b.txt": "bee\n", "lib/m.py": "x = 1\n"}
	cacheRef := reg.host + "/team/miss:cache"
	epoch := []string{"SOURCE_DATE_EPOCH=1000"} // the new steps' history dates
	a := newEnv(t)
	ctxA := project(t, dockerfile, files)
	a.build(ctxA, epoch, "-t", "miss:a", "--cache-to", "type=registry,ref="+cacheRef+",mode=max")
	runLayers, _ := a.imageBlobs("miss:a")
	runLayer := runLayers[len(runLayers)-5] // under the four COPYs

	files["a.txt"] = "one, edited\n"
	os.WriteFile(filepath.Join(ctxA, "a.txt"), []byte(files["a.txt"]), 0o644)
	want := a.build(ctxA, epoch, "-t", "miss:a2")

	b := newEnv(t)
	m := reg.mark()
	got := b.build(project(t, dockerfile, files), epoch, "-t", "miss:b", "--cache-from", "type=registry,ref="+cacheRef)
	for _, s := range got.steps {
		if built := s.Step >= 4; (s.Status == "cached") == built {
			t.Errorf("step %d %q: %s (%s)", s.Step, s.Instruction, s.Status, s.Reason)
		}
	}
	if got.res.ImageID != want.res.ImageID {
		t.Errorf("fresh host built %s, host A %s from the same edit", got.res.ImageID, want.res.ImageID)
	}
	if blobGets(reg.since(m))[runLayer] {
		t.Errorf("the fresh host downloaded the RUN's layer %s to key the COPYs after its miss", runLayer)
	}
}
