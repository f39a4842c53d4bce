package distro

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// A case is testdata/NAME/: a Dockerfile and its context, optionally with
//
//	build-args   one KEY=VALUE a line, passed as --build-arg to both builders
//	snapshotters more minibuild snapshotters to build with (e.g. copy), one a line
//	expect.txt   hand-stated expectations on minibuild's image (see expect_test.go);
//	             a line "nobuildah: WHY" builds the case with minibuild alone
//	             (heredocs: buildah 1.28 has none)
//
// runCase builds it with buildah and minibuild, exports both as OCI archives
// and compares the config fields and the flattened filesystems.
func runCase(t *testing.T, dir string) {
	name := filepath.Base(dir)
	exp, err := readExpectations(filepath.Join(dir, "expect.txt"))
	if err != nil {
		t.Fatal(err)
	}
	args, err := readBuildArgs(filepath.Join(dir, "build-args"))
	if err != nil {
		t.Fatal(err)
	}
	snapshotters, err := readLines(filepath.Join(dir, "snapshotters"))
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()

	var theirs *image
	if exp.noBuildah == "" {
		start := time.Now()
		theirs = buildahBuild(t, dir, name, args, work)
		t.Logf("buildah: %v", time.Since(start).Round(time.Millisecond))
		the.compared.Add(1)
	}
	// The default snapshotter, then any the case lists in its snapshotters file.
	same := true
	for _, snap := range append([]string{""}, snapshotters...) {
		label := "minibuild"
		if snap != "" {
			label += " --snapshotter=" + snap
		}
		e := newEnv(t)
		start := time.Now()
		ours := e.minibuildBuild(dir, name, args, snap, filepath.Join(work, "snap-"+snap))
		t.Logf("%s: %v", label, time.Since(start).Round(time.Millisecond))
		if theirs != nil {
			diffs := compareConfig(ours.config, theirs.config)
			diffs = append(diffs, compareFiles(ours.files, theirs.files)...)
			if len(diffs) > 0 {
				same = false
				t.Errorf("%s: %s's image differs from buildah's in %d places:\n%s", name, label, len(diffs), formatDiffs(diffs, 30))
			} else {
				t.Logf("%s: %s: same config and filesystem as buildah (%d paths compared)", name, label, countCompared(ours.files))
			}
		}
		if errs := exp.check(ours); len(errs) > 0 {
			same = false
			t.Errorf("%s: %s's image does not meet expect.txt:\n%s", name, label, formatDiffs(errs, 30))
		}
	}
	if theirs != nil {
		if errs := exp.check(theirs); len(errs) > 0 {
			t.Errorf("%s: buildah's image does not meet expect.txt (the expectation is wrong?):\n%s", name, formatDiffs(errs, 30))
		}
		if same {
			the.identical.Add(1)
		}
	}
}

// minibuildBuild builds the case and reads back its OCI export.
func (e *env) minibuildBuild(dir, name string, buildArgs []string, snapshotter, work string) *image {
	e.t.Helper()
	if err := os.MkdirAll(work, 0o755); err != nil {
		e.t.Fatal(err)
	}
	archive := filepath.Join(work, "minibuild.oci.tar")
	args := []string{"build", "--progress=plain", "-t", "case-" + name, "-o", "type=oci,dest=" + archive}
	if snapshotter != "" {
		args = append(args, "--snapshotter", snapshotter)
	}
	for _, a := range buildArgs {
		args = append(args, "--build-arg", a)
	}
	r := e.run(nil, append(args, dir)...)
	if r.code != 0 {
		e.t.Fatalf("minibuild build failed:\n%s", r)
	}
	img, err := readOCIArchive(archive, filepath.Join(work, "minibuild"))
	if err != nil {
		e.t.Fatal(err)
	}
	return img
}

// buildahBuild builds the case with buildah (docker format, so that
// HEALTHCHECK, SHELL and ONBUILD are kept; chroot isolation; --layers), pushes
// it to an OCI archive for the filesystem, and takes the config from `buildah
// inspect` because converting to OCI drops those docker-only fields.
func buildahBuild(t *testing.T, dir, name string, buildArgs []string, work string) *image {
	t.Helper()
	ref := "localhost/case-" + name
	args := []string{"bud", "--layers", "--format", "docker", "--isolation", "chroot", "--pull-never", "-t", ref}
	for _, a := range buildArgs {
		args = append(args, "--build-arg", a)
	}
	if out, err := buildahCmd(20*time.Minute, append(args, dir)...); err != nil {
		t.Fatalf("buildah cannot build the case (fix the case): %v\n%s", err, out)
	}
	archive := filepath.Join(work, "buildah.oci.tar")
	if out, err := buildahCmd(5*time.Minute, "push", ref, "oci-archive:"+archive); err != nil {
		t.Fatalf("buildah push: %v\n%s", err, out)
	}
	img, err := readOCIArchive(archive, filepath.Join(work, "buildah"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := buildahCmd(time.Minute, "inspect", "--type", "image", ref)
	if err != nil {
		t.Fatalf("buildah inspect: %v\n%s", err, out)
	}
	var insp struct {
		Docker struct {
			Config map[string]any `json:"config"`
		}
	}
	if err := json.Unmarshal([]byte(out), &insp); err != nil {
		t.Fatalf("buildah inspect output: %v", err)
	}
	img.config = insp.Docker.Config
	return img
}

// configFields are the image config fields a Dockerfile sets.
var configFields = []string{"Env", "Entrypoint", "Cmd", "WorkingDir", "User", "ExposedPorts", "Labels",
	"Volumes", "StopSignal", "Healthcheck", "Shell", "OnBuild"}

// compareConfig lists the config fields that differ; empty and absent are
// the same, and buildah's io.buildah.version label is not the Dockerfile's.
func compareConfig(ours, theirs map[string]any) []string {
	var out []string
	for _, f := range configFields {
		a, b := configField(ours, f), configField(theirs, f)
		if !reflect.DeepEqual(a, b) {
			out = append(out, fmt.Sprintf("config %s: minibuild %s | buildah %s", f, jsonText(a), jsonText(b)))
		}
	}
	return out
}

// configField reads one field, normalised: nil for empty values, no zero
// Healthcheck durations, no io.buildah.version label.
func configField(cfg map[string]any, name string) any {
	v := cfg[name]
	switch x := v.(type) {
	case string:
		if x == "" {
			return nil
		}
	case []any:
		if len(x) == 0 {
			return nil
		}
	case map[string]any:
		m := map[string]any{}
		for k, val := range x {
			if name == "Labels" && k == "io.buildah.version" {
				continue
			}
			if name == "Healthcheck" && (val == float64(0) || val == nil) {
				continue
			}
			m[k] = val
		}
		if len(m) == 0 {
			return nil
		}
		return m
	}
	return v
}

func jsonText(v any) string {
	if v == nil {
		return "(none)"
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// ignored says whether a path legitimately differs between two runs of the
// same Dockerfile: apt's lists and caches, logs, the dynamic linker's cache,
// compiled Python, and the files a runtime bind-mounts into RUN.
func ignored(p string) bool {
	for _, prefix := range []string{"/var/lib/apt/", "/var/cache/apt/", "/var/log/"} {
		if strings.HasPrefix(p, prefix) {
			return true
		}
	}
	switch p {
	case "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/etc/ld.so.cache", "/var/cache/ldconfig/aux-cache":
		// ldconfig's aux-cache records inodes and ctimes of the libraries.
		return true
	case "/var/lib/apt", "/var/cache/apt":
		// buildah 1.28 whites out the target of a RUN --mount=type=cache
		// even when the base has it (BuildKit keeps it), and the cases mount
		// apt's caches there; /var/lib/apt holds only apt's lists and state.
		return true
	}
	base := path.Base(p)
	if strings.HasSuffix(base, ".pyc") || strings.Contains(p, "/__pycache__") {
		return true
	}
	if strings.HasPrefix(p, "/var/cache/debconf/") && strings.HasSuffix(base, "-old") {
		return true
	}
	return false
}

// compareFiles lists the paths whose type, mode, owner, size, content or
// link target differ, and those only one image has.
func compareFiles(ours, theirs map[string]node) []string {
	seen := map[string]bool{}
	var paths []string
	for _, m := range []map[string]node{ours, theirs} {
		for p := range m {
			if !seen[p] && !ignored(p) {
				seen[p] = true
				paths = append(paths, p)
			}
		}
	}
	sort.Strings(paths)
	var out []string
	for _, p := range paths {
		a, inA := ours[p]
		b, inB := theirs[p]
		switch {
		case !inA:
			out = append(out, fmt.Sprintf("%s: only in buildah's image (%s)", p, b))
		case !inB:
			out = append(out, fmt.Sprintf("%s: only in minibuild's image (%s)", p, a))
		case a != b:
			out = append(out, fmt.Sprintf("%s: minibuild %s | buildah %s", p, a, b))
		}
	}
	return out
}

func countCompared(files map[string]node) int {
	n := 0
	for p := range files {
		if !ignored(p) {
			n++
		}
	}
	return n
}

func formatDiffs(diffs []string, max int) string {
	var sb strings.Builder
	for i, d := range diffs {
		if i == max {
			fmt.Fprintf(&sb, "  … and %d more\n", len(diffs)-max)
			break
		}
		fmt.Fprintf(&sb, "  %s\n", d)
	}
	return sb.String()
}

func readBuildArgs(p string) ([]string, error) { return readLines(p) }

// readLines reads a file's non-empty, non-comment lines; none when it is absent.
func readLines(p string) ([]string, error) {
	data, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out, nil
}

// caseDirs lists testdata's case directories.
func caseDirs(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, en := range entries {
		if en.IsDir() && !strings.HasPrefix(en.Name(), "_") {
			if _, err := os.Stat(filepath.Join("testdata", en.Name(), "Dockerfile")); err == nil {
				abs, err := filepath.Abs(filepath.Join("testdata", en.Name()))
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, abs)
			}
		}
	}
	return out
}

// TestCases builds every testdata case with both builders and compares them.
func TestCases(t *testing.T) {
	requireSuite(t)
	start := time.Now()
	t.Run("case", func(t *testing.T) {
		for _, dir := range caseDirs(t) {
			t.Run(filepath.Base(dir), func(t *testing.T) {
				t.Parallel()
				runCase(t, dir)
			})
		}
	})
	t.Logf("distro: %d cases compared with buildah in %v", the.compared.Load(), time.Since(start).Round(time.Second))
}
