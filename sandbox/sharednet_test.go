package sandbox_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/minibuild/minibuild/sandbox"
)

// netnsOf is the RUN's network namespace ("net:[inode]").
const netnsOf = "readlink /proc/self/ns/net"

// Default-network RUNs given one SharedNetwork share its namespace, an
// insecure one and one without it get their own; a listener or TIME_WAIT
// socket of one RUN is gone in the next, and Close reaps the helper.
func TestSharedNetwork(t *testing.T) {
	if _, err := exec.LookPath("slirp4netns"); err != nil {
		t.Skip("slirp4netns is not installed")
	}
	f := newFixture(t)
	s := f.prepare(t, f.base)
	ctx := context.Background()
	var net sandbox.SharedNetwork
	shared := sandbox.Spec{Net: &net}
	// RUN 1 serves one request on :8080 and leaves the server running;
	// the connection leaves a TIME_WAIT entry where TCP keeps them, as
	// in a namespace of the RUN's own.
	serve := `mkdir -p /www && echo hi > /www/x && busybox httpd -p 8080 -h /www && busybox wget -q -O- http://127.0.0.1:8080/x`
	sockets := `busybox awk 'NR > 1 && ($4 == "0A" || $4 == "06") { n++ } END { print n + 0 }' /proc/net/tcp /proc/net/tcp6`
	if out, err := run(ctx, s, sandbox.Spec{}, serve+" && sleep 0.1 && "+sockets); err != nil || out == "hi\n0\n" {
		t.Fatalf("a RUN of its own network shows no listener or TIME_WAIT: %q, %v", out, err)
	}
	first, err := run(ctx, s, shared, netnsOf+" && "+serve)
	if err != nil {
		t.Fatal(err)
	}
	ns, body, _ := strings.Cut(first, "\n")
	if body != "hi\n" {
		t.Fatalf("RUN 1 did not reach its own server: %q", first)
	}
	// A child's, not /proc/self's: the main thread may be one the
	// sandbox retired in a namespace it made.
	hostOut, _ := exec.Command("readlink", "/proc/self/ns/net").Output()
	host := strings.TrimSpace(string(hostOut))
	if ns == host {
		t.Fatalf("RUN 1 is in the host's network namespace %s", ns)
	}
	// RUN 2: same namespace, no socket of RUN 1 left.
	second, err := run(ctx, s, shared, netnsOf+" && "+sockets)
	if err != nil {
		t.Fatal(err)
	}
	if want := ns + "\n0\n"; second != want {
		t.Errorf("RUN 2 = %q, want %q (same namespace, no listener or TIME_WAIT left)", second, want)
	}
	for _, tc := range []struct {
		name string
		spec sandbox.Spec
	}{{"insecure", sandbox.Spec{Net: &net, Insecure: true}}, {"no SharedNetwork", sandbox.Spec{}}} {
		if out, err := run(ctx, s, tc.spec, netnsOf); err != nil || strings.TrimSpace(out) == ns || strings.TrimSpace(out) == host {
			t.Errorf("%s RUN: namespace %q, %v; want its own (not %s)", tc.name, out, err, ns)
		}
	}
	var helpers []string
	for _, h := range holders(t, ns) {
		if pid, comm, _ := strings.Cut(h, " "); comm == "slirp4netns" {
			helpers = append(helpers, pid)
		}
	}
	if len(helpers) != 1 {
		t.Errorf("want one slirp4netns serving the shared namespace %s between RUNs, got %v", ns, helpers)
	}
	net.Close()
	if left := holders(t, ns); len(left) > 0 {
		t.Errorf("after Close, processes still hold %s: %v", ns, left)
	}
	for _, pid := range helpers {
		if _, err := os.Stat("/proc/" + pid); err == nil {
			t.Errorf("after Close, slirp4netns %s is still there (running or unreaped)", pid)
		}
	}
	if _, err := run(ctx, s, shared, "true"); err == nil {
		t.Error("a RUN with a closed SharedNetwork ran")
	}
}

// Concurrent first RUNs make one namespace, not one each.
func TestSharedNetworkConcurrent(t *testing.T) {
	if _, err := exec.LookPath("slirp4netns"); err != nil {
		t.Skip("slirp4netns is not installed")
	}
	f := newFixture(t)
	var net sandbox.SharedNetwork
	defer net.Close()
	const n = 4
	snaps := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		s := f.prepare(t, f.base)
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := run(context.Background(), s, sandbox.Spec{Net: &net}, netnsOf)
			if err != nil {
				t.Error(err)
			}
			snaps[i] = out
		}()
	}
	wg.Wait()
	for _, o := range snaps[1:] {
		if o != snaps[0] {
			t.Errorf("concurrent RUNs got different namespaces: %q", snaps)
			break
		}
	}
}

// holders lists the processes in the network namespace ns or holding an
// fd on it.
func holders(t *testing.T, ns string) []string {
	t.Helper()
	var out []string
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range pids {
		links := []string{filepath.Join(p, "ns", "net")}
		fds, _ := filepath.Glob(filepath.Join(p, "fd", "*"))
		for _, l := range append(links, fds...) {
			if target, _ := os.Readlink(l); target == ns {
				comm, _ := os.ReadFile(filepath.Join(p, "comm"))
				out = append(out, filepath.Base(p)+" "+strings.TrimSpace(string(comm)))
				break
			}
		}
	}
	return out
}
