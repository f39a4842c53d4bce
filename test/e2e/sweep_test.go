package e2e

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// heldFile creates path and holds a flock on it for the rest of the test,
// as a live minibuild holds its temp files.
func heldFile(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
}

// A load killed with -9 while it spools its archive from stdin leaves
// the spool (and temp blobs) in root/tmp; the next command removes them,
// but never a temp file a live process holds.
func TestSweepKilledLoad(t *testing.T) {
	e := newEnv(t)
	archive := filepath.Join(t.TempDir(), "busybox.tar")
	e.ok("save", "-o", archive, "busybox:latest")
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(the.bin, "load", "--root", e.root)
	cmd.Env = cleanEnv()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := stdin.Write(data[:len(data)/2]); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(e.root, "tmp")
	spools := func() []string {
		m, _ := filepath.Glob(filepath.Join(tmp, "load-*.tar"))
		return m
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if s := spools(); len(s) == 1 {
			if fi, err := os.Stat(s[0]); err == nil && fi.Size() >= int64(len(data)/2) {
				break
			}
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no spool of half the archive in %s", tmp)
		}
	}
	cmd.Process.Signal(unix.SIGKILL)
	cmd.Wait()
	stdin.Close()
	if len(spools()) != 1 {
		t.Fatalf("the killed load left no spool to sweep")
	}

	live := filepath.Join(tmp, "blob-live")
	heldFile(t, live)
	e.ok("images")
	if s := spools(); len(s) != 0 {
		t.Errorf("the next command left the killed load's spool: %v", s)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the sweep removed a temp file a live process holds: %v", err)
	}

	// And the store loads the archive whole afterwards.
	r := e.run(runOpts{stdin: string(data)}, "load")
	if r.code != 0 {
		t.Fatalf("load after the killed one:\n%s", r)
	}
}

// A killed write of an output leaves ".NAME.tmp-*" beside it; the next
// write of that output removes it, but not one a live writer holds.
func TestSweepOutputLeftovers(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out.tar")
	stale := filepath.Join(dir, ".out.tar.tmp-0123456789abcdef")
	if err := os.WriteFile(stale, []byte("half an archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(dir, ".out.tar.tmp-fedcba9876543210")
	heldFile(t, live)
	e.ok("save", "-o", out, "busybox:latest")
	if _, err := os.Stat(stale); err == nil {
		t.Errorf("the killed write's %s is still there", stale)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a live writer's temp file was removed: %v", err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if b, _ := io.ReadAll(io.LimitReader(f, 1024)); len(b) == 0 || strings.Contains(string(b), "half") {
		t.Errorf("out.tar is not the saved archive")
	}
}
