package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// containsDeep reports whether needle occurs in data or, when data is a
// gzip stream or a tar, in anything it holds (recursively).
func containsDeep(data, needle []byte) bool {
	if bytes.Contains(data, needle) {
		return true
	}
	if len(data) > 2 && data[0] == 0x1f && data[1] == 0x8b {
		if zr, err := gzip.NewReader(bytes.NewReader(data)); err == nil {
			if plain, err := io.ReadAll(zr); err == nil && containsDeep(plain, needle) {
				return true
			}
		}
	}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err != nil {
			return false
		}
		if strings.Contains(hdr.Name, string(needle)) || strings.Contains(hdr.Linkname, string(needle)) {
			return true
		}
		body, err := io.ReadAll(tr)
		if err == nil && containsDeep(body, needle) {
			return true
		}
	}
}

// filesContaining lists the files under dir whose bytes (decompressed when
// gzip, unpacked when tar) contain needle.
func filesContaining(t *testing.T, dir string, needle []byte) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(p, string(needle)) {
			hits = append(hits, p+" (name)")
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if containsDeep(data, needle) {
			hits = append(hits, p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("search %s: %v", dir, err)
	}
	return hits
}

// layerNames lists every entry name in the layers of an OCI archive.
func layerNames(t *testing.T, ociTar string) []string {
	t.Helper()
	data, err := os.ReadFile(ociTar)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		_, err := tr.Next()
		if err != nil {
			break
		}
		body, _ := io.ReadAll(tr)
		if len(body) < 2 || body[0] != 0x1f || body[1] != 0x8b {
			continue
		}
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			continue
		}
		lt := tar.NewReader(zr)
		for {
			h, err := lt.Next()
			if err != nil {
				break
			}
			names = append(names, h.Name)
		}
	}
	return names
}

// A secret is readable by the RUN that mounts it (as a file, or as an env
// var) and found nowhere afterwards: not under --root, not in the
// exported image, not in the build's output even when the RUN prints it.
func TestSecretLeavesNoTrace(t *testing.T) {
	e := newEnv(t)
	value := fmt.Sprintf("s3cr3t-%d-value", time.Now().UnixNano())
	secretFile := filepath.Join(t.TempDir(), "api.txt")
	if err := os.WriteFile(secretFile, []byte(value), 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(value))
	ctx := project(t, `FROM busybox
RUN --mount=type=secret,id=api sha256sum /run/secrets/api | cut -d' ' -f1 > /file.sum && stat -c '%a %u' /run/secrets/api > /file.mode
RUN --mount=type=secret,id=api,env=API_TOKEN,required printf %s "$API_TOKEN" | sha256sum | cut -d' ' -f1 > /env.sum && echo "token is $API_TOKEN"
RUN --mount=type=secret,id=other,target=/etc/other.key,mode=0440,uid=1000 cat /run/secrets/api 2>/dev/null; test ! -e /etc/other.key && echo absent > /optional.txt
RUN --mount=type=secret,id=api,target=/opt/key cp /opt/key /tmp/ 2>/dev/null; rm -f /tmp/key; test -s /opt/key
`, nil)
	ociTar := filepath.Join(t.TempDir(), "img.tar")
	out := filepath.Join(t.TempDir(), "rootfs")
	b := e.build(ctx, []string{"API_TOKEN_ENV=" + value}, "-t", "sec:1", "--secret", "id=api,src="+secretFile,
		"-o", "type=oci,dest="+ociTar, "-o", "type=local,dest="+out)
	want := hex.EncodeToString(sum[:]) + "\n"
	if got := readFile(t, filepath.Join(out, "file.sum")); got != want {
		t.Errorf("the RUN read a secret file with sha256 %q, want %q", got, want)
	}
	if got := readFile(t, filepath.Join(out, "file.mode")); got != "400 0\n" {
		t.Errorf("secret file mode/owner = %q, want 400 0", got)
	}
	if got := readFile(t, filepath.Join(out, "env.sum")); got != want {
		t.Errorf("the RUN read a secret env var with sha256 %q, want %q", got, want)
	}
	if got := readFile(t, filepath.Join(out, "optional.txt")); got != "absent\n" {
		t.Errorf("an optional secret that was not given: %q", got)
	}
	for _, p := range []string{"run/secrets/api", "run/secrets", "opt/key", "etc/other.key"} {
		if _, err := os.Lstat(filepath.Join(out, p)); err == nil {
			t.Errorf("/%s (a secret's mount point) is in the image", p)
		}
	}
	if !strings.Contains(b.stderr, "token is ****") {
		t.Errorf("the RUN's printed secret is not masked in the output:\n%s", tail(b.stderr, 20))
	}
	if strings.Contains(b.stderr, value) {
		t.Errorf("the secret value is in the build output")
	}
	if hits := filesContaining(t, e.root, []byte(value)); len(hits) > 0 {
		t.Errorf("the secret value is under --root: %q", hits)
	}
	if hits := filesContaining(t, filepath.Dir(ociTar), []byte(value)); len(hits) > 0 {
		t.Errorf("the secret value is in the exported image: %q", hits)
	}
	if r := e.ok("history", "sec:1"); strings.Contains(r.stdout, value) {
		t.Errorf("the secret value is in the history")
	}

	// A missing required secret is a clear error that names the id.
	ctx2 := project(t, "FROM busybox\nRUN --mount=type=secret,id=db,required true\n", nil)
	r := e.run(runOpts{}, "build", ctx2)
	if r.code == 0 || !strings.Contains(r.stderr, `secret "db" is required`) || !strings.Contains(r.stderr, "Dockerfile:2") {
		t.Errorf("missing required secret:\n%s", r)
	}
	// A secret from an environment variable works the same way.
	out3 := filepath.Join(t.TempDir(), "rootfs")
	e.build(ctx, []string{"API_TOKEN_ENV=" + value}, "--no-cache", "--secret", "id=api,env=API_TOKEN_ENV", "-o", "type=local,dest="+out3)
	if got := readFile(t, filepath.Join(out3, "env.sum")); got != want {
		t.Errorf("secret from env: sha256 %q, want %q", got, want)
	}
	if hits := filesContaining(t, e.root, []byte(value)); len(hits) > 0 {
		t.Errorf("the secret value is under --root after the env build: %q", hits)
	}
}

// A cache mount keeps its content for the next build that runs the step,
// never reaches a layer or the key, and prune clears it.
func TestCacheMountPersistsOutsideLayers(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, `FROM busybox
RUN --mount=type=cache,target=/var/cache/app,id=appcache,uid=1000,mode=0700 \
    n=$(cat /var/cache/app/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > /var/cache/app/count; \
    echo $n > /count; echo payload > /var/cache/app/blob; stat -c '%u %a' /var/cache/app > /cache.owner
RUN --mount=type=cache,target=/other,id=appcache,readonly cat /other/count > /seen-by-id && (touch /other/x 2>/dev/null && echo writable || echo readonly) > /ro.txt
`, nil)
	count := func(extra ...string) (string, []string, string) {
		dir := t.TempDir()
		out, oci := filepath.Join(dir, "rootfs"), filepath.Join(dir, "img.tar")
		e.build(ctx, nil, append(extra, "-o", "type=local,dest="+out, "-o", "type=oci,dest="+oci)...)
		if _, err := os.Lstat(filepath.Join(out, "var/cache/app")); err == nil {
			t.Errorf("the cache mount point /var/cache/app is in the image")
		}
		if got := readFile(t, filepath.Join(out, "ro.txt")); got != "readonly\n" {
			t.Errorf("readonly cache mount: %q", got)
		}
		return readFile(t, filepath.Join(out, "count")), layerNames(t, oci), readFile(t, filepath.Join(out, "seen-by-id"))
	}
	c1, names, seen := count()
	if c1 != "1\n" || seen != "1\n" {
		t.Errorf("first build: count %q, seen by id %q; want 1, 1", c1, seen)
	}
	for _, n := range names {
		if strings.HasPrefix(n, "var/cache") || strings.HasPrefix(n, "other") {
			t.Errorf("layer entry %q comes from a cache mount", n)
		}
	}
	c2, _, _ := count("--no-cache")
	if c2 != "2\n" {
		t.Errorf("rebuild with --no-cache: count %q, want 2 (the cache mount kept the first build's file)", c2)
	}
	// The key does not depend on the cache content: a plain rebuild reuses the step.
	b := e.build(ctx, nil)
	if b.res.StepsBuilt != 0 {
		t.Errorf("a cache mount's content changed the key: %s", b.describe())
	}
	r := e.ok("prune", "--list")
	if !strings.Contains(r.stdout, "appcache") {
		t.Errorf("prune --list does not show appcache:\n%s", r.stdout)
	}
	e.ok("prune", "--id", "appcache")
	c3, _, _ := count("--no-cache")
	if c3 != "1\n" {
		t.Errorf("after prune: count %q, want 1", c3)
	}
	if r := e.ok("prune", "--list"); !strings.Contains(r.stdout, "appcache") || strings.Contains(r.stdout, "true") {
		t.Errorf("prune --list after a build:\n%s", r.stdout)
	}
}

// Bind mounts read the context (content-keyed, .dockerignore respected),
// are read-only unless rw, and rw writes are thrown away; tmpfs and
// from=STAGE work; ssh is refused clearly.
func TestBindTmpfsAndSSHMounts(t *testing.T) {
	e := newEnv(t)
	df := `FROM busybox AS tools
RUN mkdir /out && echo from-stage > /out/tool
FROM busybox
RUN --mount=type=bind,source=src,target=/src cat /src/a.txt > /a.txt && ls -A /src > /listing && (touch /src/new 2>/dev/null && echo writable || echo readonly) > /ro.txt
RUN --mount=type=bind,source=src,target=/w,rw echo changed > /w/a.txt && cat /w/a.txt > /rw.txt
RUN --mount=type=bind,from=tools,source=/out,target=/tools cat /tools/tool > /tool.txt
RUN --mount=type=tmpfs,target=/scratch,size=1m sh -c 'echo t > /scratch/t && (dd if=/dev/zero of=/scratch/big bs=1k count=2048 2>/dev/null && echo fits || echo full) > /tmpfs.txt'
`
	ctx := project(t, df, map[string]string{"src/a.txt": "one\n", "src/ignored.txt": "hidden\n", ".dockerignore": "src/ignored.txt\n"})
	out := filepath.Join(t.TempDir(), "rootfs")
	e.build(ctx, nil, "-o", "type=local,dest="+out)
	for file, want := range map[string]string{"a.txt": "one\n", "listing": "a.txt\n", "ro.txt": "readonly\n", "rw.txt": "changed\n", "tool.txt": "from-stage\n", "tmpfs.txt": "full\n"} {
		if got := readFile(t, filepath.Join(out, file)); got != want {
			t.Errorf("/%s = %q, want %q", file, got, want)
		}
	}
	if got := readFile(t, filepath.Join(ctx, "src/a.txt")); got != "one\n" {
		t.Errorf("an rw bind wrote through to the context: %q", got)
	}
	for _, p := range []string{"src", "w", "tools", "scratch"} {
		if _, err := os.Lstat(filepath.Join(out, p)); err == nil {
			t.Errorf("mount point /%s is in the image", p)
		}
	}
	// Changing the bound file re-runs the step that binds it.
	if err := os.WriteFile(filepath.Join(ctx, "src/a.txt"), []byte("two\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out2 := filepath.Join(t.TempDir(), "rootfs")
	b := e.build(ctx, nil, "-o", "type=local,dest="+out2)
	if got := readFile(t, filepath.Join(out2, "a.txt")); got != "two\n" {
		t.Errorf("after changing src/a.txt the RUN saw %q", got)
	}
	if i := b.find(t, "RUN --mount=type=bind,source=src,target=/src"); b.steps[i].Status != "done" {
		t.Errorf("the bind step was not re-run after its source changed: %s", b.describe())
	}
	r := e.run(runOpts{}, "build", project(t, "FROM busybox\nRUN --mount=type=ssh true\n", nil))
	if r.code == 0 || !strings.Contains(r.stderr, "type=ssh is not supported") {
		t.Errorf("type=ssh:\n%s", r)
	}
}

// The overlay and copying snapshotters give the same image, digest for
// digest, with SOURCE_DATE_EPOCH: whiteouts, opaque dirs, hard links,
// modes and ownership included.
func TestSnapshottersGiveSameImage(t *testing.T) {
	df := `FROM busybox
RUN mkdir -p /data/keep /data/gone /app && echo a > /data/keep/a && echo b > /data/gone/b && echo x > /app/x \
 && ln /app/x /app/x2 && chmod 4755 /app/x && chown -R 1000:1000 /data && chmod 0750 /data/keep
RUN rm /etc/group && rm -rf /data/gone && rm -rf /usr && mkdir /usr && echo u > /usr/new \
 && ln /bin/busybox /bb && echo y >> /app/x && chown 0:1000 /app/x2 && ln -s ../app/x /data/keep/link \
 && chmod 0700 /home/app && touch /etc/passwd && mkfifo /fifo && rm /bin/ls && echo fake > /bin/ls
RUN --mount=type=cache,target=/var/cache/c --mount=type=tmpfs,target=/t rm -rf /data && mkdir /data && echo fresh > /data/fresh
`
	digests := map[string]string{}
	for _, kind := range []string{"overlay", "copy"} {
		e := newEnv(t)
		ctx := project(t, df, nil)
		b := e.build(ctx, []string{"SOURCE_DATE_EPOCH=1700000100"}, "--snapshotter="+kind)
		digests[kind] = b.res.Digest
	}
	if digests["overlay"] == "" || digests["overlay"] != digests["copy"] {
		t.Errorf("image digests differ: overlay %s, copy %s", digests["overlay"], digests["copy"])
	}
	e := newEmptyEnv(t)
	if r := e.run(runOpts{}, "build", "--snapshotter=zfs", project(t, "FROM scratch\n", nil)); r.code == 0 || !strings.Contains(r.stderr, "zfs") {
		t.Errorf("--snapshotter=zfs:\n%s", r)
	}
}
