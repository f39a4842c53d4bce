package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// refRegistry is Debian's docker-registry (the reference distribution
// registry) serving on a free 127.0.0.1 port with its own storage, its
// access log captured so that tests can count what crossed the wire.
type refRegistry struct {
	t    *testing.T
	host string
	log  *logBuffer
	data string // its storage root (docker/registry/v2/…)
}

// logBuffer collects the registry's output from its pipe.
type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startRegistry(t *testing.T) *refRegistry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatalf("docker-registry is not installed (apt-get install -y docker-registry)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
`, filepath.Join(dir, "data"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &refRegistry{t: t, host: addr, log: &logBuffer{}, data: filepath.Join(dir, "data")}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = r.log, r.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry did not come up on %s: %v\n%s", addr, err, r.log)
		}
	}
}

// accessRE matches an access-log line: "METHOD URI HTTP/1.1" STATUS.
var accessRE = regexp.MustCompile(`"([A-Z]+) (/v2/[^ ]*) HTTP/[0-9.]+" ([0-9]{3})`)

// request is one logged request.
type request struct {
	method, uri string
	status      string
}

// mark returns a position in the log; since(mark) lists the requests after it.
func (r *refRegistry) mark() int { return len(r.log.String()) }

func (r *refRegistry) since(mark int) []request {
	var out []request
	for _, m := range accessRE.FindAllStringSubmatch(r.log.String()[mark:], -1) {
		out = append(out, request{method: m[1], uri: m[2], status: m[3]})
	}
	return out
}

// uploads are the blob upload requests (POST or PUT to /blobs/uploads/)
// that are not cross-repo mount requests.
func uploads(reqs []request) []request {
	var out []request
	for _, q := range reqs {
		if strings.Contains(q.uri, "/blobs/uploads/") && (q.method == "POST" || q.method == "PUT") && !strings.Contains(q.uri, "mount=") {
			out = append(out, q)
		}
	}
	return out
}

// uploadedDigests are the digests completed by PUTs.
func uploadedDigests(reqs []request) map[string]bool {
	out := map[string]bool{}
	re := regexp.MustCompile(`digest=sha256%3A([0-9a-f]{64})`)
	for _, q := range uploads(reqs) {
		if m := re.FindStringSubmatch(q.uri); q.method == "PUT" && m != nil {
			out["sha256:"+m[1]] = true
		}
	}
	return out
}

// blobGets are the digests of blobs fetched with GET.
func blobGets(reqs []request) map[string]bool {
	out := map[string]bool{}
	re := regexp.MustCompile(`/blobs/(sha256:[0-9a-f]{64})$`)
	for _, q := range reqs {
		if m := re.FindStringSubmatch(q.uri); q.method == "GET" && m != nil {
			out[m[1]] = true
		}
	}
	return out
}

// imageBlobs lists the layer digests and the config digest of an image in e's store.
func (e *env) imageBlobs(ref string) (layers []string, config string) {
	e.t.Helper()
	out := e.ok("inspect", ref).stdout
	v := decodeJSON(e.t, "inspect", out)
	if arr, ok := v.([]any); ok && len(arr) > 0 {
		v = arr[0]
	}
	m, _ := findKey(v, "manifest")
	if m == nil {
		e.t.Fatalf("inspect %s shows no manifest:\n%s", ref, out)
	}
	var man struct {
		Config struct{ Digest string }   `json:"config"`
		Layers []struct{ Digest string } `json:"layers"`
	}
	b, _ := json.Marshal(m)
	if err := json.Unmarshal(b, &man); err != nil || man.Config.Digest == "" {
		e.t.Fatalf("inspect %s: manifest %s: %v", ref, b, err)
	}
	for _, l := range man.Layers {
		layers = append(layers, l.Digest)
	}
	return layers, man.Config.Digest
}

// Push a base, then an app built on it to another repository: the base's
// layers are mounted, not uploaded; pushing again uploads nothing. Pulling
// the app into a fresh root that has the base downloads none of its layers.
func TestPushMountsAndPullSkipsPresentLayers(t *testing.T) {
	reg := startRegistry(t)
	a := newEnv(t)
	baseLayers, _ := a.imageBlobs("busybox:latest")

	m := reg.mark()
	a.ok("push", "busybox:latest", reg.host+"/lib/busybox:1")
	if n := len(uploadedDigests(reg.since(m))); n != len(baseLayers)+1 {
		t.Errorf("first push uploaded %d blobs, want %d layers + config", n, len(baseLayers))
	}

	app := a.copyExample("python-app")
	ref := reg.host + "/team/app:1"
	m = reg.mark()
	b := a.build(app, nil, "-t", ref, "--push")
	reqs := reg.since(m)
	up := uploadedDigests(reqs)
	for _, d := range baseLayers {
		if up[d] {
			t.Errorf("base layer %s uploaded again to another repository", d)
		}
	}
	mounts := 0
	for _, q := range reqs {
		if strings.Contains(q.uri, "mount=") && q.status == "201" {
			mounts++
		}
	}
	if mounts != len(baseLayers) {
		t.Errorf("%d cross-repo mounts, want %d (one per base layer)", mounts, len(baseLayers))
	}
	if !strings.Contains(b.stderr, "mounted") {
		t.Errorf("push progress does not say mounted:\n%s", tail(b.stderr, 20))
	}
	appLayers, _ := a.imageBlobs(ref)
	t.Logf("app push: %d upload requests for %d new blobs, %d base layers mounted", len(uploads(reqs)), len(up), mounts)

	m = reg.mark()
	r := a.ok("push", ref)
	if n := len(uploads(reg.since(m))); n != 0 {
		t.Errorf("re-push made %d upload requests, want 0", n)
	}
	if strings.Contains(r.stderr, "pushed") || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("re-push progress:\n%s", r.stderr)
	}

	// Host B has the base (built locally, same digest) and pulls the app.
	hostB := newEnv(t)
	m = reg.mark()
	r = hostB.ok("pull", ref)
	gets := blobGets(reg.since(m))
	for _, d := range baseLayers {
		if gets[d] {
			t.Errorf("pull downloaded base layer %s that the store had", d)
		}
	}
	for _, d := range appLayers[len(baseLayers):] {
		if !gets[d] {
			t.Errorf("pull did not download new layer %s", d)
		}
	}
	if strings.Count(r.stderr, "already exists") != len(baseLayers) {
		t.Errorf("pull progress should say already exists for the %d base layers:\n%s", len(baseLayers), r.stderr)
	}
	if got, _ := hostB.imageBlobs(ref); strings.Join(got, ",") != strings.Join(appLayers, ",") {
		t.Errorf("pulled layers %v, want %v", got, appLayers)
	}
}

// Host A builds with --cache-to; host B, a fresh root holding only the
// base, builds the same project with --cache-from and executes no step,
// fetching only the app's layers; after an edit to app.py only COPY app.py
// and later steps execute.
func TestRegistryCacheAcrossHosts(t *testing.T) {
	reg := startRegistry(t)
	a := newEnv(t)
	baseLayers, _ := a.imageBlobs("busybox:latest")
	appA := a.copyExample("python-app")
	cacheRef := reg.host + "/team/app:buildcache"
	m := reg.mark()
	built := a.build(appA, nil, "-t", reg.host+"/team/app:1", "--push", "--cache-to", "type=registry,ref="+cacheRef+",mode=max")
	if built.res.StepsBuilt == 0 {
		t.Fatalf("host A built nothing:%s", built.describe())
	}
	// The cache artifact's layers are the image's: each uploaded once.
	puts := map[string]int{}
	for _, q := range uploads(reg.since(m)) {
		if re := regexp.MustCompile(`digest=sha256%3A([0-9a-f]{64})`).FindStringSubmatch(q.uri); re != nil && q.method == "PUT" {
			puts[re[1]]++
		}
	}
	for d, n := range puts {
		if n > 1 {
			t.Errorf("blob %s uploaded %d times (image and cache must share it)", d, n)
		}
	}

	b := newEnv(t)
	appB := b.copyExample("python-app")
	m = reg.mark()
	got := b.build(appB, nil, "-t", "app:b", "--cache-from", "type=registry,ref="+cacheRef)
	got.checkConsistent(t)
	for _, s := range got.steps {
		if s.Status != "cached" {
			t.Errorf("host B executed step %d %q (%s): %s", s.Step, s.Instruction, s.Status, s.Reason)
		}
	}
	if got.res.ImageID != built.res.ImageID {
		t.Errorf("host B built %s, host A %s", got.res.ImageID, built.res.ImageID)
	}
	gets := blobGets(reg.since(m))
	for _, d := range baseLayers {
		if gets[d] {
			t.Errorf("host B downloaded base layer %s it had", d)
		}
	}
	t.Logf("host B: %d steps cached, %d blobs downloaded", got.res.StepsCached, len(gets))

	appendLine(t, filepath.Join(appB, "app.py"), "print('edited on host B')")
	edited := b.build(appB, nil, "-t", "app:b", "--cache-from", "type=registry,ref="+cacheRef)
	edited.checkConsistent(t)
	at := edited.find(t, "COPY app.py")
	for i, s := range edited.steps {
		want := "cached"
		if i >= at {
			want = "done"
		}
		if s.Status != want {
			t.Errorf("after editing app.py, step %d %q is %s, want %s", s.Step, s.Instruction, s.Status, want)
		}
	}
}

// type=local keeps the records in an OCI layout directory; type=inline
// rides on the pushed image; a missing or foreign cache is a warning.
func TestLocalAndInlineCacheAndBadRefs(t *testing.T) {
	reg := startRegistry(t)
	a := newEnv(t)
	app := a.copyExample("python-app")
	dir := filepath.Join(t.TempDir(), "ci-cache")
	ref := reg.host + "/team/inline:1"
	a.build(app, nil, "-t", ref, "--push", "--cache-to", "type=local,dest="+dir, "--cache-to", "type=inline")
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		t.Fatalf("type=local wrote no OCI layout: %v", err)
	}
	tool(t, "skopeo", "inspect", "--raw", "oci:"+dir+":minibuild-cache")

	for _, from := range []string{"type=local,src=" + dir, ref} {
		b := newEnv(t)
		got := b.build(b.copyExample("python-app"), nil, "--cache-from", from)
		got.checkConsistent(t)
		if got.res.StepsBuilt != 0 {
			t.Errorf("--cache-from %s: %d steps built, want 0:%s", from, got.res.StepsBuilt, got.describe())
		}
	}

	// Missing, foreign and corrupt caches: warnings, and every step runs.
	corrupt := t.TempDir()
	os.WriteFile(filepath.Join(corrupt, "index.json"), []byte("{not json"), 0o644)
	c := newEnv(t)
	got := c.build(c.copyExample("python-app"), nil,
		"--cache-from", "type=registry,ref="+reg.host+"/nothing/here:1",
		"--cache-from", "type=registry,ref="+reg.host+"/lib/busybox:none",
		"--cache-from", "type=local,src="+corrupt)
	if got.res.StepsBuilt == 0 {
		t.Errorf("a build with only bad caches reused steps:%s", got.describe())
	}
	if n := strings.Count(got.stderr, `"event":"warning"`); n < 3 {
		t.Errorf("%d warnings for 3 bad caches:\n%s", n, tail(got.stderr, 20))
	}
}

// What minibuild pushes, skopeo copies unchanged; what skopeo pushes,
// minibuild pulls and builds FROM.
func TestSkopeoInterop(t *testing.T) {
	reg := startRegistry(t)
	a := newEnv(t)
	ref := reg.host + "/interop/app:1"
	built := a.build(a.copyExample("python-app"), nil, "-t", ref, "--push")
	layout := filepath.Join(t.TempDir(), "oci")
	tool(t, "skopeo", "copy", "--src-tls-verify=false", "docker://"+ref, "oci:"+layout+":app")
	idx := decodeJSON(t, "index.json", readFile(t, filepath.Join(layout, "index.json")))
	if d, _ := findKey(idx, "digest"); d != built.res.Digest {
		t.Errorf("skopeo copied manifest %v, minibuild pushed %s", d, built.res.Digest)
	}
	insp := decodeJSON(t, "skopeo inspect", tool(t, "skopeo", "inspect", "--tls-verify=false", "docker://"+ref))
	if d, _ := findKey(insp, "Digest"); d != built.res.Digest {
		t.Errorf("registry holds %v, minibuild pushed %s", d, built.res.Digest)
	}

	// skopeo pushes the base from a docker-archive (it compresses the layers
	// itself); a fresh root pulls it and builds FROM it.
	tarPath := filepath.Join(t.TempDir(), "base.tar")
	a.ok("save", "-o", tarPath, "busybox:latest")
	skRef := reg.host + "/skopeo/base:1"
	tool(t, "skopeo", "copy", "--dest-tls-verify=false", "docker-archive:"+tarPath, "docker://"+skRef)
	fresh := newEmptyEnv(t)
	r := fresh.ok("pull", skRef)
	if !strings.Contains(r.stdout, "Digest: sha256:") {
		t.Errorf("pull output: %s", r.stdout)
	}
	proj := project(t, "FROM "+skRef+"\nRUN echo built-on-skopeo > /marker\n", nil)
	b := fresh.build(proj, nil, "-t", "onskopeo:1")
	b.checkConsistent(t)
	if b.res.StepsBuilt != 1 {
		t.Errorf("FROM the skopeo-pushed image: %d steps built, want 1:%s", b.res.StepsBuilt, b.describe())
	}
}
