// Package distro builds realistic Dockerfiles over a real Debian bookworm
// base with the minibuild binary and with Debian's buildah, and compares the
// two images: config fields and the flattened filesystem.
//
// The base is a debootstrap'ed minbase root filesystem kept in a cache
// directory outside the repository ($MINIBUILD_DISTRO_CACHE, default
// /var/cache/minibuild-test/debian-bookworm) so that a rerun reuses it. It is
// imported once with `FROM scratch` + `COPY rootfs/ /`, exported as an OCI
// archive, and that archive is loaded into every test's minibuild store and
// pulled into the suite's buildah store: both builders start from the same
// bytes (the same image id).
//
// A case is a directory under testdata/: a Dockerfile and its context (see
// harness_test.go). The tests need root, debootstrap, buildah and the Debian
// mirror; they skip when not root or when the mirror cannot be reached.
// MINIBUILD_E2E_BIN=/path/to/minibuild uses a prebuilt binary.
package distro

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// baseEpoch is the SOURCE_DATE_EPOCH the Debian base is imported with, so
// that it has the same digest in every run on the same rootfs.
const baseEpoch = "1700000000"

// baseRef is the tag the Debian base has in both builders' stores.
const baseRef = "debian:bookworm"

// suite is what TestMain prepares once.
type suite struct {
	repo      string // repository root
	tmp       string // scratch space for the whole run
	bin       string // the minibuild binary under test
	rootfs    string // the cached debootstrap rootfs
	baseOCI   string // the base image as an OCI archive (minibuild's export)
	buildah   []string
	setupErr  error        // why preparation failed; every test reports it
	skipWhy   string       // why every test skips (no mirror)
	compared  atomic.Int32 // cases compared with buildah
	identical atomic.Int32 // of those, the ones minibuild built to the same image
}

// the is set once by TestMain before any test runs.
var the suite

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		return m.Run() // every test skips itself
	}
	tmp, err := os.MkdirTemp("", "minibuild-distro-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "distro:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	the.tmp = tmp
	start := time.Now()
	the.setupErr = prepareSuite(tmp)
	fmt.Fprintf(os.Stderr, "distro: setup took %v\n", time.Since(start).Round(time.Millisecond))
	code := m.Run()
	fmt.Printf("distro: %d cases compared with buildah, %d of them identical\n", the.compared.Load(), the.identical.Load())
	return code
}

func prepareSuite(tmp string) error {
	repo, err := findRepo()
	if err != nil {
		return err
	}
	the.repo = repo
	if bin := os.Getenv("MINIBUILD_E2E_BIN"); bin != "" {
		if the.bin, err = filepath.Abs(bin); err != nil {
			return err
		}
	} else {
		the.bin = filepath.Join(tmp, "minibuild")
		cmd := exec.Command("go", "build", "-o", the.bin, "./cmd/minibuild")
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/minibuild: %v\n%s", err, out)
		}
	}
	for _, tool := range []string{"debootstrap", "buildah"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (apt-get install -y debootstrap buildah)", tool)
		}
	}
	the.rootfs, err = debianRootfs(cacheDir())
	if errors.Is(err, errNoMirror) {
		the.skipWhy = err.Error()
		return nil
	}
	if err != nil {
		return err
	}
	if err := importBase(tmp); err != nil {
		return err
	}
	return prepareBuildah(tmp)
}

// importBase builds the base image from the cached rootfs in a scratch store
// and exports it as an OCI archive: the bytes both builders start from.
func importBase(tmp string) error {
	ctxDir := filepath.Dir(the.rootfs)
	dockerfile := filepath.Join(tmp, "Dockerfile.base")
	if err := os.WriteFile(dockerfile, []byte("FROM scratch\nCOPY rootfs/ /\nCMD [\"bash\"]\n"), 0o644); err != nil {
		return err
	}
	the.baseOCI = filepath.Join(tmp, "debian-bookworm.oci.tar")
	cmd := exec.Command(the.bin, "build", "--root", filepath.Join(tmp, "base-root"), "--progress=plain",
		"-f", dockerfile, "-t", baseRef, "-o", "type=oci,dest="+the.baseOCI, ctxDir)
	cmd.Env = append(cleanEnv(), "SOURCE_DATE_EPOCH="+baseEpoch)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("import the Debian rootfs: %v\n%s", err, out)
	}
	return os.RemoveAll(filepath.Join(tmp, "base-root"))
}

// prepareBuildah makes the suite's buildah store (overlay, its own root and
// runroot; TMPDIR keeps its RUN cache mounts in the run's scratch space) and
// pulls the base from minibuild's OCI archive: the image id is the same as in
// minibuild's store because the config and layer bytes are.
func prepareBuildah(tmp string) error {
	the.buildah = []string{"--root", filepath.Join(tmp, "buildah-root"), "--runroot", filepath.Join(tmp, "buildah-run"),
		"--storage-driver", "overlay"}
	if err := os.MkdirAll(filepath.Join(tmp, "buildah-tmp"), 0o755); err != nil {
		return err
	}
	out, err := buildahCmd(3*time.Minute, "pull", "oci-archive:"+the.baseOCI)
	if err != nil {
		return fmt.Errorf("buildah pull the base: %v\n%s", err, out)
	}
	if out, err := buildahCmd(time.Minute, "tag", strings.TrimSpace(lastLine(out)), "docker.io/library/"+baseRef); err != nil {
		return fmt.Errorf("buildah tag the base: %v\n%s", err, out)
	}
	return nil
}

// buildahCmd runs buildah with the suite's storage options and returns stdout
// (stderr too on failure).
func buildahCmd(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	all := append(append([]string{}, the.buildah...), args...)
	cmd := exec.CommandContext(ctx, "buildah", all...)
	cmd.Env = append(cleanEnv(), "TMPDIR="+filepath.Join(the.tmp, "buildah-tmp"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return fmt.Sprintf("buildah %s\n%s\n%s", strings.Join(all, " "), stdout.String(), tail(stderr.String(), 60)), err
	}
	return stdout.String(), nil
}

func findRepo() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
	}
}

// requireSuite skips when not root or without a mirror, and fails when the
// suite could not be prepared.
func requireSuite(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("distro tests need root (namespaces, overlayfs, chown, debootstrap)")
	}
	if the.setupErr != nil {
		t.Fatalf("distro setup: %v", the.setupErr)
	}
	if the.skipWhy != "" {
		t.Skip(the.skipWhy)
	}
}

// env is one test's minibuild store with the Debian base loaded.
type env struct {
	t    *testing.T
	root string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	requireSuite(t)
	e := &env{t: t, root: filepath.Join(t.TempDir(), "root")}
	t.Cleanup(e.checkNoMounts)
	e.ok("load", "-i", the.baseOCI)
	return e
}

// checkNoMounts fails the test when the binary left a mount under its root.
func (e *env) checkNoMounts() {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], e.root) {
			e.t.Errorf("mount left behind after the build: %s", f[4])
			exec.Command("umount", "-l", f[4]).Run()
		}
	}
}

// result is one finished run of the binary.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("minibuild %s\nexit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, tail(r.stdout, 20), tail(r.stderr, 60))
}

// run executes `minibuild SUBCOMMAND --root ROOT ARGS...`.
func (e *env) run(extraEnv []string, args ...string) result {
	e.t.Helper()
	args = append([]string{args[0], "--root", e.root}, args[1:]...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, the.bin, args...)
	cmd.Env = append(cleanEnv(), extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		r.code = exitErr.ExitCode()
	default:
		e.t.Fatalf("run minibuild %v: %v", args, err)
	}
	if ctx.Err() != nil {
		e.t.Fatalf("minibuild %v did not finish in time\n%s", args, r)
	}
	return r
}

// ok runs the binary and fails the test unless it exits 0.
func (e *env) ok(args ...string) result {
	e.t.Helper()
	r := e.run(nil, args...)
	if r.code != 0 {
		e.t.Fatalf("expected success:\n%s", r)
	}
	return r
}

// cleanEnv is the test process environment without variables that would
// change a builder's behaviour behind the test's back.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "MINIBUILD_ROOT", "SOURCE_DATE_EPOCH", "BUILDKIT_PROGRESS", "DOCKER_CONFIG", "BUILDAH_FORMAT", "BUILDAH_LAYERS", "TMPDIR":
			continue
		}
		out = append(out, kv)
	}
	return out
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"…"}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
