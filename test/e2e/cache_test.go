package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// appendLine appends a line to a file, as a developer editing it would.
func appendLine(t *testing.T, p, line string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// Build, append a line to app.py, rebuild: every step before COPY app.py is
// cached with the same key; COPY app.py and the rest execute; the image holds
// the new app.py and the RUN's files; the summary names the first miss.
func TestRebuildAfterAppendingToAppPy(t *testing.T) {
	e := newEnv(t)
	app := e.copyExample("python-app")

	b1 := e.build(app, nil, "-t", "myapp:1.0")
	b1.checkConsistent(t)
	for _, s := range b1.steps[1:] {
		if s.Status != "done" {
			t.Errorf("first build into an empty cache: step %d %q is %s, want done", s.Step, s.Instruction, s.Status)
		}
	}

	appendLine(t, filepath.Join(app, "app.py"), "print('edited')")
	b2 := e.build(app, nil, "-t", "myapp:1.1")
	b2.checkConsistent(t)
	if len(b2.steps) != len(b1.steps) {
		t.Fatalf("the two builds report %d and %d steps:%s%s", len(b1.steps), len(b2.steps), b1.describe(), b2.describe())
	}
	miss := b2.find(t, "COPY app.py")
	if miss < 4 {
		t.Fatalf("COPY app.py is step %d; the example has FROM, ENV, WORKDIR, COPY, RUN before it", miss+1)
	}
	for i, s := range b2.steps {
		before := b1.steps[i]
		if s.Instruction != before.Instruction || s.Step != before.Step {
			t.Errorf("step %d is %q now, %q before", i+1, s.Instruction, before.Instruction)
		}
		if i < miss {
			if s.Status != "cached" || s.Key != before.Key {
				t.Errorf("step %d %q: status %s key %s; want cached with the first build's key %s",
					s.Step, s.Instruction, s.Status, short(s.Key), short(before.Key))
			}
		} else if s.Status != "done" {
			t.Errorf("step %d %q: status %s, want done (at or after the first miss)", s.Step, s.Instruction, s.Status)
		}
	}
	if b2.steps[miss].Key == b1.steps[miss].Key {
		t.Errorf("COPY app.py kept its key %s although app.py changed", short(b1.steps[miss].Key))
	}
	if r := b2.reasons(miss); !strings.Contains(r, "app.py") {
		t.Errorf("the first miss should explain itself naming app.py, reasons = %q", r)
	}
	if b2.res.ImageID == b1.res.ImageID {
		t.Errorf("the image id did not change after editing app.py: %s", b1.res.ImageID)
	}
	if !slicesContains(b2.res.Tags, "myapp:1.1") {
		t.Errorf("result tags %v do not include myapp:1.1", b2.res.Tags)
	}

	// The rootfs of the image, via the local exporter: a no-op rebuild.
	out := filepath.Join(t.TempDir(), "rootfs")
	b3 := e.build(app, nil, "-t", "myapp:1.1", "-o", "type=local,dest="+out)
	b3.checkConsistent(t)
	if b3.res.StepsBuilt != 0 {
		t.Errorf("exporting an unchanged project rebuilt %d steps:%s", b3.res.StepsBuilt, b3.describe())
	}
	if got, want := readFile(t, filepath.Join(out, "app/app.py")), readFile(t, filepath.Join(app, "app.py")); got != want {
		t.Errorf("/app/app.py in the image:\n%s\nwant the edited file:\n%s", got, want)
	}
	if got := readFile(t, filepath.Join(out, "app/installed.txt")); strings.Count(got, "==") != 8 {
		t.Errorf("/app/installed.txt should list the 8 requirements:\n%s", got)
	}
	if n := dirSize(t, filepath.Join(out, "app/site-packages")); n < 5<<20 {
		t.Errorf("the RUN installed only %d bytes into /app/site-packages; want several MB", n)
	}
	flask := readFile(t, filepath.Join(out, "app/site-packages/flask/_mod00.py"))
	click := readFile(t, filepath.Join(out, "app/site-packages/click/_mod00.py"))
	if strings.TrimPrefix(flask, "import flask") == strings.TrimPrefix(click, "import click") {
		t.Errorf("pip-install.sh generated the same modules for two packages: its per-package seed is broken")
	}
	for _, p := range []string{"app/site-packages/flask/__init__.py", "app/site-packages/flask-3.0.3.dist-info/RECORD", "bin/busybox", "etc/passwd"} {
		if _, err := os.Stat(filepath.Join(out, p)); err != nil {
			t.Errorf("the exported rootfs lacks /%s: %v", p, err)
		}
	}

	// The plain progress ends with the summary line naming the first miss.
	appendLine(t, filepath.Join(app, "app.py"), "print('edited again')")
	r := e.ok("build", "--progress=plain", "-t", "myapp:1.2", app)
	re := regexp.MustCompile(`(?m)^built myapp:1\.2 sha256:[0-9a-f]{12,64} in [0-9.]+(µs|ms|s): (\d+) cached, (\d+) built; first miss: step (\d+)/(\d+) (COPY app\.py[^\n]*)$`)
	m := re.FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("no summary line like `built myapp:1.2 sha256:… in 0.42s: 5 cached, 2 built; first miss: step 6/8 COPY app.py . — app.py changed`:\n%s", r)
	}
	total := len(b2.steps)
	if m[2] != strconv.Itoa(b2.res.StepsCached) || m[3] != strconv.Itoa(b2.res.StepsBuilt) ||
		m[4] != strconv.Itoa(miss+1) || m[5] != strconv.Itoa(total) || !strings.Contains(m[6], "app.py changed") {
		t.Errorf("summary %q: want %d cached, %d built, first miss step %d/%d, reason \"app.py changed\"",
			m[0], b2.res.StepsCached, b2.res.StepsBuilt, miss+1, total)
	}
	if n := strings.Count(r.stderr, "CACHED"); n < miss-1 {
		t.Errorf("plain progress shows CACHED %d times; want it on each of the %d reused steps:\n%s", n, miss-1, r.stderr)
	}
}

// touch of every context file (mtime only): every step is cached, same image.
func TestTouchEveryFileKeepsEverythingCached(t *testing.T) {
	e := newEnv(t)
	app := e.copyExample("python-app")
	b1 := e.build(app, nil, "-t", "myapp:1.0")

	now := time.Now()
	err := filepath.Walk(app, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, now, now)
	})
	if err != nil {
		t.Fatal(err)
	}
	b2 := e.build(app, nil, "-t", "myapp:1.0")
	b2.checkConsistent(t)
	for i, s := range b2.steps {
		if s.Status != "cached" || s.Key != b1.steps[i].Key {
			t.Errorf("after touch: step %d %q is %s with key %s; want cached with key %s",
				s.Step, s.Instruction, s.Status, short(s.Key), short(b1.steps[i].Key))
		}
	}
	if b2.res.StepsBuilt != 0 || b2.res.ImageID != b1.res.ImageID {
		t.Errorf("after touch: %d steps built, image %s (was %s)", b2.res.StepsBuilt, b2.res.ImageID, b1.res.ImageID)
	}
}

// An edit that keeps size and mtime (BuildKit's #4817) is still seen: the
// stat cache must not trust size+mtime alone.
func TestSameSizeSameMtimeEditIsSeen(t *testing.T) {
	e := newEnv(t)
	app := e.copyExample("python-app")
	p := filepath.Join(app, "app.py")
	b1 := e.build(app, nil, "-t", "myapp:1.0")

	info, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	old := readFile(t, p)
	edited := strings.Replace(old, "hello from minibuild", "HELLO FROM MINIBUILD", 1)
	if edited == old || len(edited) != len(old) {
		t.Fatal("app.py no longer holds the text this test edits")
	}
	if err := os.WriteFile(p, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, info.ModTime(), info.ModTime()); err != nil {
		t.Fatal(err)
	}
	b2 := e.build(app, nil, "-t", "myapp:1.1")
	b2.checkConsistent(t)
	i := b2.find(t, "COPY app.py")
	if b2.steps[i].Status != "done" || b2.steps[i].Key == b1.steps[i].Key {
		t.Errorf("an edit with the same size and mtime was missed: COPY app.py is %s with key %s (was %s)",
			b2.steps[i].Status, short(b2.steps[i].Key), short(b1.steps[i].Key))
	}
}

// The same project in two directories, built into two roots with
// SOURCE_DATE_EPOCH: identical step keys and an identical image digest.
func TestReproducibleAcrossDirectoriesAndRoots(t *testing.T) {
	e1, e2 := newEnv(t), newEnv(t)
	if e1.baseID != e2.baseID {
		t.Fatalf("the busybox base built twice with SOURCE_DATE_EPOCH=%s differs: %s vs %s", baseEpoch, e1.baseID, e2.baseID)
	}
	dir1 := e1.copyExample("python-app")
	dir2 := filepath.Join(t.TempDir(), "elsewhere", "deeper", "checkout")
	if err := copyTree(filepath.Join(the.repo, "examples", "python-app"), dir2); err != nil {
		t.Fatal(err)
	}
	epoch := []string{"SOURCE_DATE_EPOCH=1704067200"}
	b1 := e1.build(dir1, epoch, "-t", "myapp:1.0")
	time.Sleep(1100 * time.Millisecond) // a different wall clock second for the second build
	b2 := e2.build(dir2, epoch, "-t", "other:7")
	b1.checkConsistent(t)
	b2.checkConsistent(t)
	if len(b1.steps) != len(b2.steps) {
		t.Fatalf("different step counts:%s%s", b1.describe(), b2.describe())
	}
	for i := range b1.steps {
		if b1.steps[i].Key != b2.steps[i].Key {
			t.Errorf("step %d %q: key %s in %s, %s in %s", i+1, b1.steps[i].Instruction, b1.steps[i].Key, dir1, b2.steps[i].Key, dir2)
		}
	}
	if b1.res.Digest != b2.res.Digest || b1.res.ImageID != b2.res.ImageID || !idRE.MatchString(b1.res.Digest) {
		t.Errorf("not reproducible: digest %s / %s, image id %s / %s", b1.res.Digest, b2.res.Digest, b1.res.ImageID, b2.res.ImageID)
	}
}

// Two Dockerfiles in two projects that share a base and their first
// instructions share those steps, and the second grows the store by about its
// own new layer only.
func TestDifferentDockerfilesShareSteps(t *testing.T) {
	e := newEnv(t)
	app := e.copyExample("python-app")
	blobs := blobsDir(t, e.root)
	s0 := dirSize(t, blobs)
	a := e.build(app, nil, "-t", "myapp:1.0")
	s1 := dirSize(t, blobs)

	worker := project(t, `# a second service of the same team
FROM busybox
ENV PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.txt pip-install.sh ./
RUN sh pip-install.sh requirements.txt /app/site-packages
COPY worker.py .
CMD ["python", "worker.py"]
`, map[string]string{
		"requirements.txt": readFile(t, filepath.Join(app, "requirements.txt")),
		"pip-install.sh":   readFile(t, filepath.Join(app, "pip-install.sh")),
		"worker.py":        "print('working')\n",
	})
	if err := os.Chmod(filepath.Join(worker, "pip-install.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	b := e.build(worker, nil, "-t", "worker:1.0")
	s2 := dirSize(t, blobs)
	b.checkConsistent(t)

	shared := b.find(t, "COPY worker.py")
	for i := 0; i < shared; i++ {
		if b.steps[i].Status != "cached" || b.steps[i].Key != a.steps[i].Key {
			t.Errorf("step %d %q: %s with key %s; want cached with python-app's key %s",
				i+1, b.steps[i].Instruction, b.steps[i].Status, short(b.steps[i].Key), short(a.steps[i].Key))
		}
	}
	if b.steps[shared].Status != "done" {
		t.Errorf("COPY worker.py is %s, want done", b.steps[shared].Status)
	}
	t.Logf("blobs: base %d B, +python-app %d B, +worker %d B", s0, s1-s0, s2-s1)
	if s1-s0 < 1<<20 {
		t.Errorf("python-app added only %d bytes of blobs; its install layer alone is MBs", s1-s0)
	}
	if grow := s2 - s1; grow > 128<<10 || grow*20 > s1-s0 {
		t.Errorf("worker grew the store by %d bytes; its only new layer holds worker.py (python-app grew it by %d)", grow, s1-s0)
	}
}

func slicesContains(s []string, want string) bool {
	for _, x := range s {
		if x == want || strings.HasSuffix(x, "/"+want) {
			return true
		}
	}
	return false
}

// blobsDir finds the store's blobs directory under root (root/blobs, or
// deeper if the store keeps it in a subdirectory).
func blobsDir(t *testing.T, root string) string {
	t.Helper()
	found := ""
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || found != "" {
			return filepath.SkipDir
		}
		if d.IsDir() && d.Name() == "blobs" {
			if _, err := os.Stat(filepath.Join(p, "sha256")); err == nil {
				found = p
				return filepath.SkipAll
			}
		}
		return nil
	})
	if found == "" {
		t.Fatalf("no blobs/sha256 directory under the store root %s", root)
	}
	return found
}

// The first key is the base image's content (its id: config and diff_ids),
// not its packaging: a base that arrives through save/load has another
// manifest digest, and a runner that got it that way still reuses every
// step another runner built and exported, through a registry cache or a
// local one.
func TestBaseKeyedOnContentNotPackaging(t *testing.T) {
	reg := startRegistry(t)
	a := newEnv(t)
	app := a.copyExample("python-app")
	cacheDir := filepath.Join(t.TempDir(), "cache")
	cacheRef := reg.host + "/team/app:buildcache"
	first := a.build(app, nil, "-t", "myapp:1.0", "--cache-to", "type=local,dest="+cacheDir+",mode=max",
		"--cache-to", "type=registry,ref="+cacheRef+",mode=max")
	saved := filepath.Join(t.TempDir(), "busybox.tar")
	a.ok("save", "-o", saved, "busybox:latest")

	for _, from := range []string{"type=registry,ref=" + cacheRef, "type=local,src=" + cacheDir} {
		b := newEmptyEnv(t)
		b.ok("load", "-i", saved)
		again := b.build(app, nil, "-t", "myapp:1.0", "--cache-from", from)
		again.checkConsistent(t)
		if again.res.StepsBuilt != 0 {
			t.Errorf("--cache-from %s over a loaded base: %d steps built:%s", from, again.res.StepsBuilt, again.describe())
		}
		if first.steps[0].Key != again.steps[0].Key {
			t.Errorf("FROM keys differ: %s vs %s", first.steps[0].Key, again.steps[0].Key)
		}
	}
}

// Concurrent builds on one --root that reach the same step execute it
// once: the others wait for it and reuse its record, so every image names
// the same layer (issue 13: 8 builds stored 2–3 layers for one step).
func TestConcurrentBuildsExecuteASharedStepOnce(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, "FROM busybox\nRUN sleep 1 && date +%s%N > /stamp\nLABEL done=yes\n", nil)
	const builds = 8
	results := make([]result, builds)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(the.bin, "build", "--root", e.root, "--progress=json", ctx)
			cmd.Env = cleanEnv()
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			results[i] = result{args: cmd.Args, stdout: stdout.String(), stderr: stderr.String()}
			if err != nil {
				results[i].code = -1
			}
		}()
	}
	wg.Wait()
	executed, images := 0, map[string]bool{}
	for _, r := range results {
		if r.code != 0 {
			t.Fatalf("a concurrent build failed:\n%s", r)
		}
		b := parseBuild(t, r)
		run := b.steps[b.find(t, "RUN sleep 1")]
		if run.Status == "done" {
			executed++
		}
		images[b.res.ImageID] = true
	}
	if executed != 1 || len(images) != 1 {
		t.Errorf("the shared RUN executed %d times over %d builds, giving %d different images; want once, one image", executed, builds, len(images))
	}
}
