// Package e2e runs the real minibuild binary over real busybox base images
// and checks what a user would see: cache hits and misses, image contents,
// archives that other tools accept, and errors that name the Dockerfile line.
//
// The tests need root (namespaces, overlayfs, chown) and Debian's
// busybox-static, skopeo and umoci; they skip when not run as root.
// MINIBUILD_E2E_BIN=/path/to/minibuild uses a prebuilt binary instead of
// building ./cmd/minibuild.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// baseEpoch is the SOURCE_DATE_EPOCH every test base image is built with, so
// that the busybox base has the same digest in every test root.
const baseEpoch = "1700000000"

// suite is what TestMain prepares once: the binary and the busybox rootfs.
type suite struct {
	repo     string // repository root
	bin      string // the minibuild binary under test
	baseCtx  string // examples/base copy with a prepared rootfs/
	setupErr error  // why preparation failed; every test reports it
}

// the is set once by TestMain before any test runs and only read afterwards.
var the suite

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		return m.Run() // every test skips itself
	}
	tmp, err := os.MkdirTemp("", "minibuild-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	the.setupErr = prepareSuite(tmp)
	return m.Run()
}

func prepareSuite(tmp string) error {
	repo, err := findRepo()
	if err != nil {
		return err
	}
	the.repo = repo
	if bin := os.Getenv("MINIBUILD_E2E_BIN"); bin != "" {
		the.bin, err = filepath.Abs(bin)
		if err != nil {
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
	the.baseCtx = filepath.Join(tmp, "base")
	if err := copyTree(filepath.Join(repo, "examples", "base"), the.baseCtx); err != nil {
		return fmt.Errorf("copy examples/base: %w", err)
	}
	os.RemoveAll(filepath.Join(the.baseCtx, "rootfs"))
	cmd := exec.Command(filepath.Join(the.baseCtx, "prepare.sh"), filepath.Join(the.baseCtx, "rootfs"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("examples/base/prepare.sh: %v\n%s", err, out)
	}
	return nil
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

// env is one test's world: its own store root and scratch space.
type env struct {
	t      *testing.T
	root   string
	baseID string // image id of busybox:latest in this root
}

// newEnv gives the test a fresh store with busybox:latest built into it.
func newEnv(t *testing.T) *env {
	e := newEmptyEnv(t)
	b := e.build(the.baseCtx, []string{"SOURCE_DATE_EPOCH=" + baseEpoch}, "-t", "busybox:latest")
	e.baseID = b.res.ImageID
	return e
}

// newEmptyEnv gives the test a fresh, empty store.
func newEmptyEnv(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("end-to-end tests need root (namespaces, overlayfs, chown)")
	}
	if the.setupErr != nil {
		t.Fatalf("e2e setup: %v", the.setupErr)
	}
	e := &env{t: t, root: filepath.Join(t.TempDir(), "root")}
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(func() { e.checkNoMounts() })
	return e
}

// checkNoMounts fails the test when the binary left a mount under its root,
// and lazily unmounts it so that the temp dir can be removed.
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
	return fmt.Sprintf("minibuild %s\nexit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, tail(r.stderr, 60))
}

// runOpts tunes one invocation.
type runOpts struct {
	env     []string // extra KEY=VALUE
	stdin   string
	dir     string
	noRoot  bool // do not add --root (the test passes it or MINIBUILD_ROOT)
	timeout time.Duration
}

// run executes `minibuild SUBCOMMAND --root ROOT ARGS...`.
func (e *env) run(o runOpts, args ...string) result {
	e.t.Helper()
	if !o.noRoot && len(args) > 0 {
		args = append([]string{args[0], "--root", e.root}, args[1:]...)
	}
	if o.timeout == 0 {
		o.timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, the.bin, args...)
	cmd.Env = append(cleanEnv(), o.env...)
	cmd.Dir = o.dir
	if o.stdin != "" {
		cmd.Stdin = strings.NewReader(o.stdin)
	}
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
		e.t.Fatalf("minibuild %v did not finish within %v\n%s", args, o.timeout, r)
	}
	return r
}

// ok runs the binary and fails the test unless it exits 0.
func (e *env) ok(args ...string) result {
	e.t.Helper()
	r := e.run(runOpts{}, args...)
	if r.code != 0 {
		e.t.Fatalf("expected success:\n%s", r)
	}
	return r
}

// cleanEnv is the test process environment without variables that would
// change the binary's behaviour behind the test's back.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "MINIBUILD_ROOT", "SOURCE_DATE_EPOCH", "BUILDKIT_PROGRESS", "DOCKER_CONFIG":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// stepEvent is one {"event":"step"} line of --progress=json.
type stepEvent struct {
	Event       string `json:"event"`
	Stage       string `json:"stage"`
	Step        int    `json:"step"`
	Steps       int    `json:"steps"`
	Instruction string `json:"instruction"`
	Status      string `json:"status"`
	Key         string `json:"key"`
	DurationMS  int64  `json:"duration_ms"`
	Reason      string `json:"reason"`
	Miss        *struct {
		Kind    string `json:"kind"`
		Changes []struct {
			Input, How, Old, New string
		} `json:"changes"`
	} `json:"miss"`
}

// resultEvent is the final {"event":"result"} line of --progress=json.
type resultEvent struct {
	Event       string   `json:"event"`
	ImageID     string   `json:"image_id"`
	Digest      string   `json:"digest"`
	Tags        []string `json:"tags"`
	StepsCached int      `json:"steps_cached"`
	StepsBuilt  int      `json:"steps_built"`
	DurationMS  int64    `json:"duration_ms"`
}

// built is a parsed --progress=json build.
type built struct {
	result
	events []stepEvent         // every step event, in order
	steps  []stepEvent         // the last event of each step, in order of first appearance
	res    resultEvent         // zero when the build printed none
	seen   map[string][]string // "stage/step" → statuses in order
}

var idRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// build runs `build --progress=json ARGS... CONTEXT` and requires success.
func (e *env) build(dir string, extraEnv []string, args ...string) built {
	e.t.Helper()
	b := e.buildJSON(dir, extraEnv, args...)
	if b.code != 0 {
		e.t.Fatalf("build failed:\n%s", b.result)
	}
	if !idRE.MatchString(b.res.ImageID) {
		e.t.Fatalf("build printed no result event with an image_id:\n%s", b.result)
	}
	return b
}

// buildJSON runs a --progress=json build and parses its events, whatever the outcome.
func (e *env) buildJSON(dir string, extraEnv []string, args ...string) built {
	e.t.Helper()
	all := append([]string{"build", "--progress=json"}, args...)
	all = append(all, dir)
	r := e.run(runOpts{env: extraEnv}, all...)
	return parseBuild(e.t, r)
}

func parseBuild(t *testing.T, r result) built {
	t.Helper()
	b := built{result: r, seen: map[string][]string{}}
	index := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(r.stderr))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var probe struct {
			Event string `json:"event"`
		}
		if json.Unmarshal([]byte(line), &probe) != nil {
			continue
		}
		switch probe.Event {
		case "step":
			var s stepEvent
			if err := json.Unmarshal([]byte(line), &s); err != nil {
				t.Fatalf("bad step event %q: %v", line, err)
			}
			b.events = append(b.events, s)
			id := fmt.Sprintf("%s/%d", s.Stage, s.Step)
			b.seen[id] = append(b.seen[id], s.Status)
			if i, ok := index[id]; ok {
				b.steps[i] = s
			} else {
				index[id] = len(b.steps)
				b.steps = append(b.steps, s)
			}
		case "result":
			if err := json.Unmarshal([]byte(line), &b.res); err != nil {
				t.Fatalf("bad result event %q: %v", line, err)
			}
		}
	}
	return b
}

// stage returns the steps of one stage (by name as reported), in order.
func (b built) stage(name string) []stepEvent {
	var out []stepEvent
	for _, s := range b.steps {
		if s.Stage == name {
			out = append(out, s)
		}
	}
	return out
}

// reasons joins every reason reported for the step at index i of b.steps.
func (b built) reasons(i int) string {
	var out []string
	for _, s := range b.events {
		if s.Stage == b.steps[i].Stage && s.Step == b.steps[i].Step && s.Reason != "" {
			out = append(out, s.Reason)
		}
	}
	return strings.Join(out, "; ")
}

// find returns the index in b.steps of the first step whose instruction starts with prefix.
func (b built) find(t *testing.T, prefix string) int {
	t.Helper()
	for i, s := range b.steps {
		if strings.HasPrefix(strings.Join(strings.Fields(s.Instruction), " "), prefix) {
			return i
		}
	}
	t.Fatalf("no step %q among %s", prefix, b.describe())
	return -1
}

// describe lists the steps for failure messages.
func (b built) describe() string {
	var sb strings.Builder
	for _, s := range b.steps {
		fmt.Fprintf(&sb, "\n  [%s] %d/%d %-40q %-7s %s %s", s.Stage, s.Step, s.Steps, s.Instruction, s.Status, short(s.Key), s.Reason)
	}
	return sb.String()
}

// checkConsistent verifies what every build must satisfy: step numbering,
// keys on every step, running before done, and result counts that match.
func (b built) checkConsistent(t *testing.T) {
	t.Helper()
	cached, done := 0, 0
	for _, s := range b.steps {
		if s.Steps <= 0 || s.Step < 1 || s.Step > s.Steps {
			t.Errorf("step %d/%d out of range: %+v", s.Step, s.Steps, s)
		}
		if !idRE.MatchString(s.Key) {
			t.Errorf("step %d %q has no sha256 key: %q", s.Step, s.Instruction, s.Key)
		}
		seen := b.seen[fmt.Sprintf("%s/%d", s.Stage, s.Step)]
		switch s.Status {
		case "cached":
			cached++
			if len(seen) != 1 {
				t.Errorf("step %d %q: a reused step reports only cached, got %v", s.Step, s.Instruction, seen)
			}
		case "done":
			done++
			if len(seen) < 2 || seen[0] != "running" {
				t.Errorf("step %d %q: an executed step reports running then done, got %v", s.Step, s.Instruction, seen)
			}
		default:
			t.Errorf("step %d %q: final status %q after %v", s.Step, s.Instruction, s.Status, seen)
		}
	}
	// The contract leaves open whether a reused FROM counts as a cached step.
	fromCached := 0
	for _, s := range b.steps {
		if s.Step == 1 && s.Status == "cached" {
			fromCached++
		}
	}
	if b.res.StepsBuilt != done || (b.res.StepsCached != cached && b.res.StepsCached != cached-fromCached) {
		t.Errorf("result says %d cached, %d built; the step events say %d cached (%d of them FROM), %d done%s",
			b.res.StepsCached, b.res.StepsBuilt, cached, fromCached, done, b.describe())
	}
}

// copyExample copies examples/NAME into a fresh directory and returns it.
func (e *env) copyExample(name string) string {
	e.t.Helper()
	dst := filepath.Join(e.t.TempDir(), name)
	if err := copyTree(filepath.Join(the.repo, "examples", name), dst); err != nil {
		e.t.Fatal(err)
	}
	return dst
}

// writeFiles creates a directory holding files (relative path → content).
func writeFiles(t *testing.T, dir string, files map[string]string) string {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// project writes a context with a Dockerfile and files into a new temp dir.
func project(t *testing.T, dockerfile string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	all := map[string]string{"Dockerfile": dockerfile}
	for k, v := range files {
		all[k] = v
	}
	return writeFiles(t, dir, all)
}

// copyTree copies a directory tree: regular files, dirs and symlinks, with modes.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			return os.Chmod(target, info.Mode().Perm()|info.Mode()&(fs.ModeSticky|fs.ModeSetgid|fs.ModeSetuid))
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			in, err := os.Open(p)
			if err != nil {
				return err
			}
			defer in.Close()
			out, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, info.Mode().Perm())
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, in); err != nil {
				out.Close()
				return err
			}
			return out.Close()
		}
		return nil // sockets and devices are not part of any example
	})
}

// dirSize sums the sizes of the regular files under dir.
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("size of %s: %v", dir, err)
	}
	return n
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}

func short(key string) string {
	if len(key) > 19 {
		return key[:19]
	}
	return key
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"…"}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// tool runs an external program (skopeo, umoci, tar) and returns its stdout.
func tool(t *testing.T, name string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is not installed (apt-get install -y %s)", name, name)
	}
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// decodeJSON parses s, failing the test with the text when it is not JSON.
func decodeJSON(t *testing.T, what, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%s is not JSON: %v\n%s", what, err, s)
	}
	return v
}

// findKey searches a decoded JSON tree breadth-first for a key
// (case-insensitive), so that checks hold for docker- and OCI-shaped output.
func findKey(v any, key string) (any, bool) {
	queue := []any{v}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		switch x := cur.(type) {
		case map[string]any:
			for k, val := range x {
				if strings.EqualFold(k, key) {
					return val, true
				}
			}
			for _, val := range x {
				queue = append(queue, val)
			}
		case []any:
			queue = append(queue, x...)
		}
	}
	return nil, false
}

// imageConfig finds the container config (the object holding Env or Cmd) in
// `inspect` output or a raw image config.
func imageConfig(t *testing.T, v any) map[string]any {
	t.Helper()
	queue := []any{v}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		switch x := cur.(type) {
		case map[string]any:
			for k := range x {
				if strings.EqualFold(k, "Env") || strings.EqualFold(k, "Cmd") || strings.EqualFold(k, "Entrypoint") {
					return x
				}
			}
			for _, val := range x {
				queue = append(queue, val)
			}
		case []any:
			queue = append(queue, x...)
		}
	}
	t.Fatalf("no image config (an object with Env/Cmd) in %v", v)
	return nil
}

// field reads a key case-insensitively.
func field(m map[string]any, key string) any {
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return nil
}

// strs turns a decoded JSON array into []string (nil for null or absent).
func strs(v any) []string {
	arr, _ := v.([]any)
	var out []string
	for _, x := range arr {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

// keys returns the sorted keys of a decoded JSON object.
func keys(v any) []string {
	m, _ := v.(map[string]any)
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
