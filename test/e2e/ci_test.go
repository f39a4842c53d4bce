package e2e

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// recipe runs one of examples/ci's scripts as a CI job does (`sh
// ci/SCRIPT` in the job's directory, the job's variables in the
// environment), with this env's store as the runner's MINIBUILD_ROOT and the
// binary under test as MINIBUILD.
func (e *env) recipe(script, dir string, vars ...string) result {
	e.t.Helper()
	path := filepath.Join(the.repo, "examples", "ci", script)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", path)
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), "MINIBUILD="+the.bin, "MINIBUILD_ROOT="+e.root)
	cmd.Env = append(cmd.Env, vars...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: append([]string{"(examples/ci/" + script + ")"}, vars...), stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		r.code = exitErr.ExitCode()
	default:
		e.t.Fatalf("run examples/ci/%s: %v", script, err)
	}
	if ctx.Err() != nil {
		e.t.Fatalf("examples/ci/%s did not finish:\n%s", script, r)
	}
	return r
}

// ciBuild runs examples/ci/build.sh with --progress=json and requires a
// successful build.
func (e *env) ciBuild(dir string, vars ...string) built {
	e.t.Helper()
	r := e.recipe("build.sh", dir, append(vars, "PROGRESS=json")...)
	b := parseBuild(e.t, r)
	if b.code != 0 || !idRE.MatchString(b.res.ImageID) {
		e.t.Fatalf("build.sh failed:\n%s", b.result)
	}
	b.checkConsistent(e.t)
	return b
}

// requireAllCached fails unless every step of b was reused.
func requireAllCached(t *testing.T, who string, b built) {
	t.Helper()
	if b.res.StepsBuilt != 0 || len(b.steps) == 0 {
		t.Errorf("%s: %d steps built, want every step cached:%s", who, b.res.StepsBuilt, b.describe())
	}
	for _, s := range b.steps {
		if s.Status != "cached" {
			t.Errorf("%s executed step %d %q (%s): %s", who, s.Step, s.Instruction, s.Status, s.Reason)
		}
	}
}

// recipeCalls checks that a CI file runs the scripts the tests run.
func recipeCalls(t *testing.T, file string, scripts ...string) {
	t.Helper()
	yml := readFile(t, filepath.Join(the.repo, "examples", "ci", file))
	for _, s := range scripts {
		if !strings.Contains(yml, "sh ci/"+s) {
			t.Errorf("examples/ci/%s does not run `sh ci/%s`", file, s)
		}
	}
}

// The GitHub Actions recipe on three runners: A builds cold (no cache yet:
// warnings only) and exports to its cache dir and the registry; B, a fresh
// root with A's cache dir restored as actions/cache does, reuses every step
// and exports again; C, with B's dir and no registry cache, reuses every step.
func TestGitHubActionsRecipe(t *testing.T) {
	recipeCalls(t, "github-actions.yml", "build.sh")
	reg := startRegistry(t)
	repo := reg.host + "/ci/gh"
	job := func(e *env, image string, cacheDir string, withRegistry bool) built {
		t.Helper()
		vars := []string{"IMAGE=" + repo + ":" + image, "CONTEXT=" + e.copyExample("python-app"),
			"CACHE_DIR=" + cacheDir, "METADATA_FILE=" + filepath.Join(t.TempDir(), "metadata.json")}
		if withRegistry {
			vars = append(vars, "CACHE_REF="+repo+":buildcache")
		}
		return e.ciBuild(t.TempDir(), vars...)
	}

	dirA := filepath.Join(t.TempDir(), "minibuild-cache")
	a := job(newEnv(t), "a", dirA, true)
	if a.res.StepsBuilt == 0 {
		t.Fatalf("runner A built nothing:%s", a.describe())
	}
	if _, err := os.Stat(filepath.Join(dirA, "index.json")); err != nil {
		t.Fatalf("runner A left no local cache: %v", err)
	}
	if _, err := os.Stat(dirA + "-new"); !os.IsNotExist(err) {
		t.Errorf("build.sh left %s-new behind (%v)", dirA, err)
	}
	tool(t, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+repo+":buildcache")

	dirB := filepath.Join(t.TempDir(), "minibuild-cache")
	if err := copyTree(dirA, dirB); err != nil { // actions/cache restores A's directory
		t.Fatal(err)
	}
	b := job(newEnv(t), "b", dirB, true)
	requireAllCached(t, "runner B", b)
	if b.res.ImageID != a.res.ImageID {
		t.Errorf("runner B built %s, runner A %s", b.res.ImageID, a.res.ImageID)
	}

	dirC := filepath.Join(t.TempDir(), "minibuild-cache")
	if err := copyTree(dirB, dirC); err != nil {
		t.Fatal(err)
	}
	c := job(newEnv(t), "c", dirC, false)
	requireAllCached(t, "runner C (local cache only)", c)
}

// The GitLab CI recipe: runner A builds cold and exports to the registry
// cache; runner B, a fresh root, reuses every step and hands its metadata
// file to the deploy job, whose read-digest.sh (jq) pins the image by the
// digest skopeo sees in the registry.
func TestGitLabRecipe(t *testing.T) {
	recipeCalls(t, "gitlab-ci.yml", "build.sh", "read-digest.sh")
	reg := startRegistry(t)
	repo := reg.host + "/ci/gl"
	job := func(e *env, image string) (built, string) {
		t.Helper()
		dir := t.TempDir()
		b := e.ciBuild(dir, "IMAGE="+repo+":"+image, "CACHE_REF="+repo+":buildcache",
			"CONTEXT="+e.copyExample("python-app"), "METADATA_FILE=metadata.json")
		return b, filepath.Join(dir, "metadata.json")
	}
	a, _ := job(newEnv(t), "a")
	if a.res.StepsBuilt == 0 {
		t.Fatalf("runner A built nothing:%s", a.describe())
	}
	b, meta := job(newEnv(t), "b")
	requireAllCached(t, "runner B", b)

	// The artifact arrives in the deploy job's directory.
	deploy := t.TempDir()
	if err := os.WriteFile(filepath.Join(deploy, "metadata.json"), []byte(readFile(t, meta)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("jq"); err != nil {
		t.Fatalf("jq is not installed (apt-get install -y jq)")
	}
	r := newEmptyEnv(t).recipe("read-digest.sh", deploy, "METADATA_FILE=metadata.json")
	if r.code != 0 {
		t.Fatalf("read-digest.sh:\n%s", r)
	}
	pinned := strings.TrimSpace(r.stdout)
	var sk struct{ Digest string }
	if err := json.Unmarshal([]byte(tool(t, "skopeo", "inspect", "--tls-verify=false", "docker://"+repo+":b")), &sk); err != nil {
		t.Fatal(err)
	}
	if sk.Digest == "" || pinned != repo+"@"+sk.Digest || sk.Digest != b.res.Digest {
		t.Errorf("deploy job pins %q; skopeo reports %s, the build %s", pinned, sk.Digest, b.res.Digest)
	}
	var byDigest struct{ Digest string }
	json.Unmarshal([]byte(tool(t, "skopeo", "inspect", "--tls-verify=false", "docker://"+pinned)), &byDigest)
	if byDigest.Digest != sk.Digest {
		t.Errorf("skopeo inspect %s: digest %q", pinned, byDigest.Digest)
	}
}

// `make image` builds minibuild's own image into MINIBUILD_ROOT: FROM
// scratch, a static /minibuild, CA certificates; a Dockerfile FROM it runs
// the image's own binary in minibuild's RUN sandbox.
func TestMakeImage(t *testing.T) {
	e := newEmptyEnv(t)
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make is not installed (apt-get install -y make)")
	}
	const version = "v0.0.0-e2e"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "-C", the.repo, "image", "VERSION="+version)
	for _, kv := range cleanEnv() {
		// The test may itself run under make: its jobserver is not this make's.
		if k, _, _ := strings.Cut(kv, "="); k != "MAKEFLAGS" && k != "MFLAGS" && k != "MAKELEVEL" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "MINIBUILD_ROOT="+e.root)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, tail(string(out), 40))
	}

	id := func(ref string) string {
		return strings.TrimSpace(e.ok("inspect", "--format", "{{.Id}}", ref).stdout)
	}
	if a, b := id("minibuild:"+version), id("minibuild:latest"); !idRE.MatchString(a) || a != b {
		t.Errorf("minibuild:%s is %q, minibuild:latest %q", version, a, b)
	}
	cfg := imageConfig(t, decodeJSON(t, "inspect", e.ok("inspect", "minibuild:latest").stdout))
	if ep := strs(field(cfg, "Entrypoint")); !slices.Equal(ep, []string{"/minibuild"}) {
		t.Errorf("entrypoint %v, want [/minibuild]", ep)
	}

	// The whole filesystem: nothing but what the Dockerfile copies.
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	e.ok("build", "--progress=plain", "-o", "type=local,dest="+rootfs, project(t, "FROM minibuild:latest\n", nil))
	var files []string
	filepath.WalkDir(rootfs, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(rootfs, p)
			files = append(files, rel)
		}
		return nil
	})
	want := []string{"etc/group", "etc/passwd", "etc/ssl/certs/ca-certificates.crt", "minibuild"}
	if !slices.Equal(files, want) {
		t.Errorf("the image holds %v, want %v", files, want)
	}
	if certs := readFile(t, filepath.Join(rootfs, "etc/ssl/certs/ca-certificates.crt")); !strings.Contains(certs, "BEGIN CERTIFICATE") {
		t.Errorf("ca-certificates.crt holds no certificate")
	}
	bin, err := elf.Open(filepath.Join(rootfs, "minibuild"))
	if err != nil {
		t.Fatalf("/minibuild: %v", err)
	}
	defer bin.Close()
	for _, p := range bin.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("/minibuild is dynamically linked")
		}
	}

	run := e.build(project(t, "FROM minibuild:latest\nRUN [\"/minibuild\", \"version\"]\n", nil), nil)
	var lines []string
	for _, l := range strings.Split(run.stderr, "\n") {
		var ev struct{ Event, Line string }
		if json.Unmarshal([]byte(l), &ev) == nil && ev.Event == "log" {
			lines = append(lines, ev.Line)
		}
	}
	if len(lines) != 3 || lines[0] != "minibuild "+version || !strings.HasPrefix(lines[1], "commit: ") || !strings.HasPrefix(lines[2], "go: go1.") {
		t.Errorf("RUN /minibuild version logged %q, want minibuild %s, its commit and Go version", lines, version)
	}
}
