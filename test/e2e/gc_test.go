package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// depsDockerfile has a 20 MB dependency step after COPY app.py, so every
// edit of app.py makes a new 20 MB layer.
const depsDockerfile = `FROM busybox
WORKDIR /app
COPY app.py .
RUN head -c 20000000 /dev/urandom > /deps.bin && cat app.py >> /deps.bin
CMD ["python", "app.py"]
`

// dfUsage is `df --format json`.
type dfUsage struct {
	Kinds []struct {
		Kind        string `json:"kind"`
		Count       int    `json:"count"`
		Size        int64  `json:"size"`
		Reclaimable int64  `json:"reclaimable"`
	} `json:"kinds"`
	Total struct {
		Size        int64 `json:"size"`
		Reclaimable int64 `json:"reclaimable"`
	} `json:"total"`
}

func (e *env) df() dfUsage {
	e.t.Helper()
	var u dfUsage
	r := e.ok("df", "--format", "json")
	if err := json.Unmarshal([]byte(r.stdout), &u); err != nil {
		e.t.Fatalf("df --format json: %v\n%s", err, r.stdout)
	}
	return u
}

func (u dfUsage) kind(name string) (size, reclaimable int64) {
	for _, k := range u.Kinds {
		if k.Kind == name {
			return k.Size, k.Reclaimable
		}
	}
	return -1, -1
}

// storeSize is what --keep-storage measures.
func (u dfUsage) storeSize() int64 {
	var n int64
	for _, k := range []string{"images", "layer blobs", "extracted layers", "cache records"} {
		s, _ := u.kind(k)
		n += s
	}
	return n
}

// verifyImage saves ref, copies it with skopeo (which checks every
// digest) into an OCI layout, unpacks it with umoci and checks app.py.
func (e *env) verifyImage(ref, appPy string) {
	e.t.Helper()
	dir := e.t.TempDir()
	tarPath := filepath.Join(dir, "img.tar")
	e.ok("save", "-o", tarPath, ref)
	layout := filepath.Join(dir, "layout")
	tool(e.t, "skopeo", "copy", "docker-archive:"+tarPath, "oci:"+layout+":img")
	bundle := filepath.Join(dir, "bundle")
	tool(e.t, "umoci", "unpack", "--image", layout+":img", bundle)
	if got := readFile(e.t, filepath.Join(bundle, "rootfs/app/app.py")); got != appPy {
		e.t.Errorf("%s: /app/app.py = %q, want %q", ref, got, appPy)
	}
}

func TestPruneAfterTenBuilds(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, depsDockerfile, map[string]string{"app.py": "print(0)\n"})
	for i := 0; i < 10; i++ {
		os.WriteFile(filepath.Join(ctx, "app.py"), []byte(fmt.Sprintf("print(%d)\n", i)), 0o644)
		e.build(ctx, nil, "-t", fmt.Sprintf("app:%d", i))
	}
	for i := 0; i < 9; i++ {
		e.ok("rmi", fmt.Sprintf("app:%d", i))
	}
	before := e.df()
	if _, rec := before.kind("layer blobs"); rec < 9*19_000_000 {
		t.Errorf("df shows %d reclaimable layer bytes after rmi of 9 images; want ≥ 9 × 20 MB\n%s", rec, e.ok("df").stdout)
	}
	r := e.ok("prune")
	if !strings.Contains(r.stdout, "freed") {
		t.Errorf("prune does not say what it freed:\n%s", r.stdout)
	}
	after := e.df()
	blobs, rec := after.kind("layer blobs")
	if rec != 0 || blobs > 25_000_000 {
		t.Errorf("after prune: layer blobs %d bytes, %d reclaimable; want about one 20 MB layer and the base\n%s", blobs, rec, e.ok("df", "-v").stdout)
	}
	if ex, _ := after.kind("extracted layers"); ex > 25_000_000 {
		t.Errorf("after prune: extracted layers hold %d bytes", ex)
	}
	if imgs := e.ok("images").stdout; strings.Contains(imgs, "<none>") {
		t.Errorf("a dangling image after prune:\n%s", imgs)
	}
	e.verifyImage("app:9", "print(9)\n")
	if b := e.build(ctx, nil, "-t", "app:9"); b.res.StepsBuilt != 0 {
		t.Errorf("rebuild of app:9 after prune built %d steps:\n%s", b.res.StepsBuilt, b.describe())
	}
}

func TestPruneKeepStorage(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, depsDockerfile, map[string]string{"app.py": "print(0)\n"})
	for i := 0; i < 4; i++ {
		os.WriteFile(filepath.Join(ctx, "app.py"), []byte(fmt.Sprintf("print(%d)\n", i)), 0o644)
		e.build(ctx, nil, "-t", "app:latest")
	}
	before := e.df().storeSize()
	const limit = 50_000_000 // the newest image: a 20 MB blob (perhaps extracted too), and the base
	if before < limit+20_000_000 {
		t.Fatalf("store holds only %d bytes after four builds", before)
	}
	e.ok("prune", "--keep-storage", "50000000")
	if after := e.df().storeSize(); after > limit {
		t.Errorf("prune --keep-storage 50000000 left %d bytes (was %d)\n%s", after, before, e.ok("df", "-v").stdout)
	}
	if b := e.build(ctx, nil, "-t", "app:latest"); b.res.StepsBuilt != 0 {
		t.Errorf("rebuild of the newest image after prune --keep-storage built %d steps:\n%s", b.res.StepsBuilt, b.describe())
	}
	e.verifyImage("app:latest", "print(3)\n")
}

// GC in a loop while four builds run on one --root: every build succeeds
// and every image verifies.
func TestGCWhileBuilding(t *testing.T) {
	e := newEnv(t)
	stop := make(chan struct{})
	var gcRuns int
	var gcErr error
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			args := []string{"prune"}
			if i%2 == 1 {
				args = append(args, "--all")
			}
			if r := e.run(runOpts{}, args...); r.code != 0 && gcErr == nil {
				gcErr = fmt.Errorf("%s", r)
			}
			gcRuns++
		}
	}()
	var wg sync.WaitGroup
	results := make([]string, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			ctx := project(t, "FROM busybox\nWORKDIR /app\nCOPY app.py .\nRUN cat app.py > /copy && head -c 300000 /dev/urandom > /blob\n",
				map[string]string{"app.py": "x\n"})
			for i := 0; i < 3; i++ {
				app := fmt.Sprintf("print(%d, %d)\n", w, i)
				os.WriteFile(filepath.Join(ctx, "app.py"), []byte(app), 0o644)
				b := e.buildJSON(ctx, nil, "-t", fmt.Sprintf("w%d:latest", w))
				if b.code != 0 {
					results[w] = fmt.Sprintf("build %d of worker %d failed:\n%s", i, w, b.result)
					return
				}
				results[w] = app
				time.Sleep(50 * time.Millisecond)
			}
		}(w)
	}
	wg.Wait()
	close(stop)
	<-gcDone
	if gcErr != nil {
		t.Errorf("prune failed while builds ran: %v", gcErr)
	}
	t.Logf("%d collections ran during the builds", gcRuns)
	for w, res := range results {
		if !strings.HasPrefix(res, "print(") {
			t.Fatal(res)
		}
		e.verifyImage(fmt.Sprintf("w%d:latest", w), res)
	}
	e.ok("prune")
	for w, res := range results {
		e.verifyImage(fmt.Sprintf("w%d:latest", w), res)
	}
}

// A build that leaves the store over --gc-keep-storage collects least
// recently used cache right after it and says so in its summary; the
// image it built stays whole and its rebuild fully cached.
func TestAutomaticGCAfterBuild(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, depsDockerfile, map[string]string{"app.py": "print(0)\n"})
	for i := 0; i < 3; i++ {
		os.WriteFile(filepath.Join(ctx, "app.py"), []byte(fmt.Sprintf("print(%d)\n", i)), 0o644)
		e.build(ctx, nil, "-t", "app:latest", "--gc-keep-storage", "10GB") // measured, under the cap: recorded (gc/autostate.go)
	}
	// A live build's lease protects what changed within 2 s of its start
	// (store/lease.go): let the earlier builds' blobs age past that.
	time.Sleep(2500 * time.Millisecond)
	os.WriteFile(filepath.Join(ctx, "app.py"), []byte("print(3)\n"), 0o644)
	b := e.buildJSON(ctx, nil, "-t", "app:latest", "--gc-keep-storage", "50MB")
	if b.code != 0 || !strings.Contains(b.stderr, "gc: store over") {
		t.Fatalf("the build over the cap did not collect:\n%s", b.result)
	}
	if size := e.df().storeSize(); size > 50<<20 {
		t.Errorf("after automatic GC the store holds %d bytes, cap 50MB\n%s", size, e.ok("df", "-v").stdout)
	}
	if again := e.build(ctx, nil, "-t", "app:latest"); again.res.StepsBuilt != 0 {
		t.Errorf("rebuild after automatic GC built %d steps:%s", again.res.StepsBuilt, again.describe())
	}
	e.verifyImage("app:latest", "print(3)\n")
}
