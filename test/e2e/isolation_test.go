package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A RUN cannot read a file that exists only on the host, cannot see host
// processes, has its own hostname and cannot write outside its root.
func TestRunIsolation(t *testing.T) {
	e := newEnv(t)
	hostFile := filepath.Join(t.TempDir(), "host-only.txt")
	if err := os.WriteFile(hostFile, []byte("host secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	escape := filepath.Join(os.TempDir(), fmt.Sprintf("minibuild-escape-%d", time.Now().UnixNano()))
	defer os.Remove(escape)
	// A host process with a name the RUN would see if it shared our pid namespace.
	marker := strconv.Itoa(4000 + int(time.Now().UnixNano()%900))
	sleeper := exec.Command("sleep", marker)
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	hostName, _ := os.Hostname()

	ctx := project(t, `FROM busybox
RUN mkdir /r && (cat `+hostFile+` > /r/hostfile 2>&1 || echo unreadable >> /r/hostfile) \
 && (ps -o args > /r/ps; ls /proc | grep -c '^[0-9]' > /r/nprocs) \
 && hostname > /r/hostname \
 && echo inside > `+escape+` && cp `+escape+` /r/escape \
 && (mount -t tmpfs t /mnt 2>/dev/null && echo mounted || echo refused) > /r/mount \
 && (mknod /r/sda b 8 0 2>/dev/null && echo made || echo refused) > /r/mknod
`, nil)
	out := filepath.Join(t.TempDir(), "rootfs")
	e.build(ctx, nil, "-o", "type=local,dest="+out)
	got := func(name string) string { return readFile(t, filepath.Join(out, "r", name)) }

	if s := got("hostfile"); strings.Contains(s, "host secret") || !strings.Contains(s, "unreadable") {
		t.Errorf("the RUN read the host-only file %s: %q", hostFile, s)
	}
	if s := got("ps"); strings.Contains(s, "sleep "+marker) {
		t.Errorf("the RUN sees the host process `sleep %s`:\n%s", marker, s)
	}
	if n, err := strconv.Atoi(strings.TrimSpace(got("nprocs"))); err != nil || n > 5 {
		t.Errorf("the RUN sees %q processes; in its own pid namespace it sees only its own few", got("nprocs"))
	}
	if s := strings.TrimSpace(got("hostname")); s != "minibuild" || s == hostName {
		t.Errorf("RUN hostname = %q, want its own (minibuild), not the host's %q", s, hostName)
	}
	if _, err := os.Stat(escape); err == nil {
		t.Errorf("the RUN wrote %s on the host", escape)
	}
	if s := got("escape"); s != "inside\n" {
		t.Errorf("the write to %s did not land inside the rootfs: %q", escape, s)
	}
	if s := got("mount"); s != "refused\n" {
		t.Errorf("mount inside RUN: %q, want refused", s)
	}
	if s := got("mknod"); s != "refused\n" {
		t.Errorf("mknod of a block device inside RUN: %q, want refused", s)
	}
	if _, err := os.Lstat(filepath.Join(out, strings.TrimPrefix(escape, "/"))); err != nil {
		t.Errorf("the file written at %s is not in the image: %v", escape, err)
	}
}

// With --network=none (on the RUN or for the whole build) and with the
// default (private) network a RUN cannot reach a server on the host's
// 127.0.0.1; with --network=host it can.
func TestRunNetworkModes(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello-from-host\n"))
			c.Close()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	connect := "(nc -w 3 127.0.0.1 " + port + " </dev/null || echo unreachable)"
	ctx := project(t, `FROM busybox
RUN `+connect+` > /default.txt
RUN --network=none `+connect+` > /none.txt && tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /ifaces.txt
RUN --network=host `+connect+` > /host.txt
`, nil)
	out := filepath.Join(t.TempDir(), "rootfs")
	e.build(ctx, nil, "-o", "type=local,dest="+out)
	for file, want := range map[string]string{
		"default.txt": "unreachable\n", "host.txt": "hello-from-host\n",
		"none.txt": "unreachable\n", "ifaces.txt": "lo\n",
	} {
		if got := readFile(t, filepath.Join(out, file)); got != want {
			t.Errorf("/%s = %q, want %q", file, got, want)
		}
	}

	// The build-wide flag applies to RUNs without their own --network.
	ctx2 := project(t, "FROM busybox\nRUN "+connect+" > /wide.txt\n", nil)
	out2 := filepath.Join(t.TempDir(), "rootfs")
	e.build(ctx2, nil, "--network=none", "-o", "type=local,dest="+out2)
	if got := readFile(t, filepath.Join(out2, "wide.txt")); got != "unreachable\n" {
		t.Errorf("with --network=none the RUN got %q", got)
	}
	if r := e.run(runOpts{}, "build", "--network=bridge", ctx2); r.code == 0 || !strings.Contains(r.stderr, "bridge") {
		t.Errorf("--network=bridge was not refused clearly:\n%s", r)
	}
}

// startBuild starts a build in its own process group and returns once the
// RUN prints ready (in its output, not its instruction text).
func startBuild(t *testing.T, e *env, ready string, args ...string) (*exec.Cmd, *syncLog) {
	t.Helper()
	return startBuildUntil(t, e, func(line string) bool { return strings.Contains(line, `"`+ready+`"`) }, args...)
}

// startBuildUntil starts a --progress=json build in its own process group
// (as a terminal's ^C would find it) and returns once a line of its
// stderr satisfies until.
func startBuildUntil(t *testing.T, e *env, until func(line string) bool, args ...string) (*exec.Cmd, *syncLog) {
	t.Helper()
	cmd := exec.Command(the.bin, append([]string{"build", "--root", e.root, "--progress=json"}, args...)...)
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	log := &syncLog{}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			log.add(sc.Text())
			if !once && until(sc.Text()) {
				once = true
				close(started)
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the RUN never started:\n%s", log.String())
	}
	return cmd, log
}

// syncLog collects a build's stderr while the test reads it.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(line + "\n")
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// leftovers lists what a stopped build must not leave: temp dirs of
// snapshots, and mounts (in any process's mount namespace) under the root.
func leftovers(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	entries, _ := os.ReadDir(filepath.Join(root, "snapshots", "tmp"))
	for _, e := range entries {
		out = append(out, "temp "+e.Name())
	}
	infos, _ := filepath.Glob("/proc/[0-9]*/mountinfo")
	for _, p := range infos {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, root) {
				out = append(out, p+": "+line)
			}
		}
	}
	return out
}

// After SIGINT (or SIGTERM) in the middle of a long RUN with mounts, no
// process, mount or temp dir of the step remains, and the cache mount is
// free again. After a SIGKILL of minibuild, the step's processes die with
// it and the next start removes the temp dirs it left.
func TestInterruptedRunLeavesNothing(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			e := newEnv(t)
			marker := strconv.Itoa(5000 + int(sig))
			secret := filepath.Join(t.TempDir(), "tok")
			if err := os.WriteFile(secret, []byte("interrupt-secret"), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx := project(t, `FROM busybox
RUN --mount=type=cache,target=/cache,sharing=locked --mount=type=secret,id=tok --mount=type=tmpfs,target=/scratch \
    --mount=type=bind,source=.,target=/ctx,rw \
    echo sleeping-$((1+1)); sleep `+marker+` & sleep `+marker+`
`, map[string]string{"f.txt": "x"})
			cmd, log := startBuild(t, e, "sleeping-2", "--secret", "id=tok,src="+secret, ctx)
			defer killSleepers(marker)
			time.Sleep(300 * time.Millisecond)
			if !sleeperRunning(marker) {
				t.Fatalf("the RUN is not running:\n%s", log)
			}
			if len(leftovers(t, e.root)) == 0 {
				t.Fatalf("no temp dir while the RUN runs: the check below would prove nothing")
			}
			target := -cmd.Process.Pid // the group, as a terminal's ^C does
			if sig != syscall.SIGINT {
				target = cmd.Process.Pid
			}
			interrupt(t, cmd, target, sig, 20*time.Second, marker, log.String)
			left := leftovers(t, e.root)
			for _, l := range left {
				if sig != syscall.SIGKILL || !strings.HasPrefix(l, "temp ") {
					t.Errorf("left after %v: %s", sig, l)
				}
			}
			if sig == syscall.SIGKILL {
				if len(left) == 0 {
					t.Errorf("SIGKILL left no temp dir: the cleanup check below would prove nothing")
				}
				// The next start cleans up; the locked cache mount is free.
				e.build(project(t, "FROM busybox\nRUN --mount=type=cache,target=/cache,sharing=locked true\n", nil), nil)
				if left := leftovers(t, e.root); len(left) > 0 {
					t.Errorf("left after the next build: %q", left)
				}
			}
			if r := e.ok("prune", "--list"); strings.Contains(r.stdout, "true") {
				t.Errorf("the cache mount is still held:\n%s", r.stdout)
			}
		})
	}
}
