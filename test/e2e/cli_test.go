package e2e

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// closedPort is a 127.0.0.1 address nothing listens on: a registry that is down.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// A cache registry that is down fails the build, naming it; with
// ignore-error=true the build succeeds with one warning.
func TestCacheExportIgnoreError(t *testing.T) {
	e := newEnv(t)
	dir := project(t, "FROM busybox\nRUN echo hi > /hi\n", nil)
	down := closedPort(t) + "/cache:1"

	failed := e.buildJSON(dir, nil, "--cache-to", "type=registry,ref="+down)
	if failed.code == 0 || !strings.Contains(failed.stderr, down) {
		t.Errorf("cache registry down: want a failure naming %s:\n%s", down, failed.result)
	}
	for _, line := range strings.Split(strings.TrimSpace(failed.stderr), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("--progress=json wrote a line that is not JSON: %q", line)
		}
	}
	if !strings.Contains(failed.stderr, `"event":"error"`) {
		t.Errorf("the error is not an event:\n%s", failed.stderr)
	}

	ok := e.build(dir, nil, "--cache-to", "type=registry,ref="+down+",ignore-error=true")
	if n := strings.Count(ok.stderr, `"event":"warning"`); n != 1 || !strings.Contains(ok.stderr, down) {
		t.Errorf("ignore-error=true: %d warnings, want 1 naming %s:\n%s", n, down, ok.stderr)
	}
	plain := e.run(runOpts{}, "build", "--progress=plain", "--cache-to", "type=registry,ref="+down+",ignore-error=true", dir)
	if plain.code != 0 || strings.Count(plain.stderr, "WARNING:") != 1 {
		t.Errorf("plain: want exit 0 and one WARNING line:\n%s", plain)
	}
	if r := e.run(runOpts{}, "build", "--cache-to", "type=registry,ref="+down+",compression=zstd", dir); r.code == 0 || !strings.Contains(r.stderr, "compression=zstd is not supported") {
		t.Errorf("compression=zstd:\n%s", r)
	}
}

// --metadata-file holds the digest skopeo sees in the registry.
func TestMetadataFileDigestIsThePushedOne(t *testing.T) {
	reg := startRegistry(t)
	e := newEnv(t)
	dir := project(t, "FROM busybox\nRUN echo meta > /m\n", nil)
	ref := reg.host + "/meta/app:1"
	meta := filepath.Join(t.TempDir(), "meta.json")
	e.build(dir, nil, "-t", ref, "--push", "--annotation", "org.opencontainers.image.title=meta", "--metadata-file", meta)

	var m struct {
		Digest     string `json:"containerimage.digest"`
		Config     string `json:"containerimage.config.digest"`
		Name       string `json:"image.name"`
		Descriptor struct {
			MediaType, Digest string
			Size              int64
		} `json:"containerimage.descriptor"`
		Built int `json:"minibuild.steps.built"`
	}
	if err := json.Unmarshal([]byte(readFile(t, meta)), &m); err != nil {
		t.Fatalf("metadata: %v\n%s", err, readFile(t, meta))
	}
	var sk struct{ Digest string }
	if err := json.Unmarshal([]byte(tool(t, "skopeo", "inspect", "--tls-verify=false", "docker://"+ref)), &sk); err != nil {
		t.Fatal(err)
	}
	if m.Digest == "" || m.Digest != sk.Digest || m.Descriptor.Digest != sk.Digest || m.Name != ref || m.Built != 1 {
		t.Errorf("metadata %+v; skopeo reports %s", m, sk.Digest)
	}
	raw := tool(t, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+ref)
	if !strings.Contains(raw, `"org.opencontainers.image.title":"meta"`) || int64(len(raw)) != m.Descriptor.Size {
		t.Errorf("pushed manifest (%d bytes, metadata says %d) lacks the annotation: %s", len(raw), m.Descriptor.Size, raw)
	}
}

// pipe runs a shell pipeline and returns its stdout.
func pipe(t *testing.T, script string) string {
	t.Helper()
	cmd := exec.Command("bash", "-o", "pipefail", "-c", script)
	cmd.Env = append(cleanEnv(), "MB="+the.bin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, errb.String())
	}
	return out.String()
}

// `minibuild -o - . | tar -t` lists the rootfs; `minibuild save IMG |
// minibuild --root R2 load` round-trips the image.
func TestStdoutOutputsAndSaveLoadPipes(t *testing.T) {
	e := newEnv(t)
	dir := project(t, "FROM busybox\nRUN echo piped > /piped.txt\n", nil)
	list := pipe(t, `"$MB" --root `+e.root+` --progress=plain -t piped:1 -o - `+dir+` | tar -t`)
	for _, want := range []string{"piped.txt", "bin/busybox"} {
		if !strings.Contains(list, want) {
			t.Errorf("-o - lists no %s:\n%s", want, tail(list, 20))
		}
	}
	oci := pipe(t, `"$MB" build --root `+e.root+` -o type=oci,dest=- `+dir+` | tar -t`)
	if !strings.Contains(oci, "oci-layout") || !strings.Contains(oci, "index.json") {
		t.Errorf("type=oci,dest=- is no OCI layout:\n%s", oci)
	}

	r2 := filepath.Join(t.TempDir(), "r2")
	out := pipe(t, `"$MB" --root `+e.root+` save piped:1 | "$MB" --root `+r2+` load`)
	if !strings.Contains(out, "Loaded image: piped:1") {
		t.Errorf("load says %q", out)
	}
	id := func(root string) string {
		return strings.TrimSpace(e.run(runOpts{noRoot: true}, "--root", root, "inspect", "--format", "{{.Id}}", "piped:1").stdout)
	}
	if a, b := id(e.root), id(r2); a == "" || a != b {
		t.Errorf("the loaded image is %q, the saved one %q", b, a)
	}
	if entries, _ := os.ReadDir(filepath.Join(r2, "tmp")); len(entries) != 0 {
		t.Errorf("load left its spool file: %v", entries)
	}
}

// version, a Containerfile, a context tar on stdin (and a lone
// Dockerfile), and a non-root build refused before any work.
func TestCLIHabits(t *testing.T) {
	e := newEnv(t)
	for _, args := range [][]string{{"version"}, {"--version"}} {
		r := e.run(runOpts{noRoot: true}, args...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "minibuild ") || !strings.Contains(r.stdout, "go: go1") {
			t.Errorf("%v:\n%s", args, r)
		}
	}

	cf := writeFiles(t, t.TempDir(), map[string]string{"Containerfile": "FROM busybox\nRUN echo podman > /p\n"})
	e.build(cf, nil, "-t", "cf:1")

	ctxDir := project(t, "FROM busybox\nCOPY a.txt /a.txt\n", map[string]string{"a.txt": "from a tar\n"})
	tarBytes, err := exec.Command("tar", "-C", ctxDir, "-c", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	fromTar := e.run(runOpts{stdin: string(tarBytes)}, "build", "--progress=json", "-t", "tarctx:1", "-")
	if b := parseBuild(t, fromTar); fromTar.code != 0 || b.res.ImageID == "" {
		t.Fatalf("context -:\n%s", fromTar)
	}
	lone := e.run(runOpts{stdin: "FROM busybox\nRUN echo lone > /l\n"}, "build", "--progress=json", "-")
	if lone.code != 0 {
		t.Errorf("a lone Dockerfile on stdin:\n%s", lone)
	}
	if entries, _ := os.ReadDir(filepath.Join(e.root, "tmp")); len(entries) != 0 {
		t.Errorf("the stdin context was left under --root: %v", entries)
	}

	// As nobody: the clear error, before any work (no store is made).
	// The binary is copied where nobody can reach it (test dirs are 0700).
	pub, err := os.MkdirTemp("", "minibuild-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(pub)
	os.Chmod(pub, 0o755)
	bin := filepath.Join(pub, "minibuild")
	data, err := os.ReadFile(the.bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	nobodyRoot := filepath.Join(pub, "nobody-root")
	cmd := exec.Command(bin, "build", "--root", nobodyRoot, cf)
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "minibuild build needs root: RUN uses namespaces and overlayfs") {
		t.Errorf("as nobody: %v\n%s", err, out)
	}
	if _, err := os.Stat(nobodyRoot); err == nil {
		t.Error("the non-root build created its store")
	}
}

// --build-context: a directory read by COPY --from=NAME, and
// docker-image://REF standing in for FROM NAME (pinning a base, as
// buildx users do).
func TestBuildContexts(t *testing.T) {
	e := newEnv(t)
	docs := writeFiles(t, t.TempDir(), map[string]string{"guide.md": "read me\n"})
	ctx := project(t, "FROM alpine\nCOPY --from=docs guide.md /guide.md\nRUN cat /guide.md > /seen\n", nil)
	out := filepath.Join(t.TempDir(), "rootfs")
	e.build(ctx, nil, "--build-context", "docs="+docs, "--build-context", "alpine=docker-image://busybox:latest", "-o", "type=local,dest="+out)
	if got := readFile(t, filepath.Join(out, "seen")); got != "read me\n" {
		t.Errorf("RUN saw %q from the docs context", got)
	}
	if r := e.run(runOpts{}, "build", "--build-context", "docs=git://example/x", ctx); r.code == 0 || !strings.Contains(r.stderr, "git:// sources are not supported") {
		t.Errorf("a git context: exit %d\n%s", r.code, r.stderr)
	}
}

// --add-host adds entries to RUN's /etc/hosts (not the image's), and
// enters the RUN's key: another mapping reruns the step, saying why.
func TestAddHost(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, "FROM busybox\nRUN grep db.internal /etc/hosts > /seen\n", nil)
	out := filepath.Join(t.TempDir(), "rootfs")
	e.build(ctx, nil, "--add-host", "db.internal:10.1.2.3", "-o", "type=local,dest="+out)
	if got := strings.Fields(readFile(t, filepath.Join(out, "seen"))); len(got) != 2 || got[0] != "10.1.2.3" || got[1] != "db.internal" {
		t.Errorf("RUN's /etc/hosts line: %q", got)
	}
	if _, err := os.Stat(filepath.Join(out, "etc", "hosts")); err == nil {
		t.Error("/etc/hosts leaked into the image")
	}
	b := e.build(ctx, nil, "--add-host", "db.internal:10.9.9.9")
	if i := b.find(t, "RUN grep"); b.steps[i].Status != "done" || !strings.Contains(b.reasons(i), "add-host changed") {
		t.Errorf("another --add-host: %s%s", b.reasons(i), b.describe())
	}
	if r := e.run(runOpts{}, "build", "--add-host", "db:not-an-ip", ctx); r.code == 0 || !strings.Contains(r.stderr, "--add-host") {
		t.Errorf("a bad --add-host: exit %d\n%s", r.code, r.stderr)
	}
}
