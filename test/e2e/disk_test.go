package e2e

import (
	"archive/tar"
	"compress/gzip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// smallRoot mounts a fresh 64 MB ext4 filesystem and makes the env's
// --root a dir on it, with busybox:latest built in; it is unmounted in
// cleanup. Skips when mkfs.ext4 or loop devices are missing.
func smallRoot(t *testing.T) *env {
	t.Helper()
	e := newEmptyEnv(t)
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("needs mkfs.ext4 (e2fsprogs) for a small loop-mounted --root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("needs loop devices (/dev/loop-control) for a small loop-mounted --root")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "disk.img"), filepath.Join(dir, "mnt")
	tool(t, "truncate", "-s", "64M", img)
	tool(t, "mkfs.ext4", "-q", "-F", img)
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount a small --root: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	e.root = filepath.Join(mnt, "root")
	b := e.build(the.baseCtx, []string{"SOURCE_DATE_EPOCH=" + baseEpoch}, "-t", "busybox:latest")
	e.baseID = b.res.ImageID
	return e
}

// writeBomb writes a gzipped tar of one file of size zero bytes: a few
// hundred KB that expand to size.
func writeBomb(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw, _ := gzip.NewWriterLevel(f, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: size}); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for n := int64(0); n < size; n += int64(len(chunk)) {
		if _, err := tw.Write(chunk[:min(int64(len(chunk)), size-n)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}

// An ADDed gzip bomb on a small --root fails with an error naming the
// step and the space, before it fills the disk; the store stays usable.
// 1 GiB is refused before the archive is spooled; 30 MiB spools (47 MiB
// are free) and is refused when its layer is extracted.
func TestDiskGzipBomb(t *testing.T) {
	e := smallRoot(t)
	for _, c := range []struct {
		size int64
		want []string
	}{
		{1 << 30, []string{"expand archive bomb.tar.gz", "1.0GiB"}},
		{30 << 20, []string{"extract the new layer", "30.0MiB"}},
	} {
		dir := project(t, "FROM busybox\nADD bomb.tar.gz /bomb/\nRUN ls -l /bomb\n", nil)
		writeBomb(t, filepath.Join(dir, "bomb.tar.gz"), c.size)
		if fi, err := os.Stat(filepath.Join(dir, "bomb.tar.gz")); err != nil || fi.Size() > 5<<20 {
			t.Fatalf("bomb: %v, %v", fi, err)
		}
		r := e.run(runOpts{}, "build", "--progress=plain", dir)
		if r.code == 0 {
			t.Fatalf("the bomb was expanded:\n%s", r)
		}
		for _, want := range append(c.want, "Dockerfile:2", "not enough free disk space", "--min-free-space") {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("error does not say %q:\n%s", want, r)
			}
		}
		t.Logf("the error: %s", tail(r.stderr, 1))
		checkNoTemps(t, e)
	}

	// The store still works: images, and a small build after the bombs.
	if out := e.ok("images").stdout; !strings.Contains(out, "busybox") {
		t.Errorf("images after the bomb:\n%s", out)
	}
	small := project(t, "FROM busybox\nCOPY a.txt /a.txt\nRUN cat /a.txt\n", map[string]string{"a.txt": "hello\n"})
	e.build(small, nil, "-t", "small:1")
	checkNoTemps(t, e)
}

// checkNoTemps fails when root/tmp or root/snapshots/tmp holds anything:
// what a failed step wrote must be gone.
func checkNoTemps(t *testing.T, e *env) {
	t.Helper()
	for _, d := range []string{"tmp", "snapshots/tmp"} {
		ents, _ := os.ReadDir(filepath.Join(e.root, d))
		var names []string
		for _, de := range ents {
			names = append(names, de.Name())
		}
		if len(names) > 0 {
			t.Errorf("%s holds %v", d, names)
		}
	}
}
