package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The default-network RUNs of one build share one private network
// namespace (concurrent stages too), yet nothing of a RUN outlives it: a
// server RUN 1 leaves running is gone in RUN 2, with no listener,
// TIME_WAIT or conntrack entry left. An insecure RUN, which could reconfigure the
// namespace, gets its own; none and host keep theirs. After the build no
// process of it (its slirp4netns above all) is left, running or unreaped.
func TestRunSharedNetwork(t *testing.T) {
	if _, err := exec.LookPath("slirp4netns"); err != nil {
		t.Fatalf("slirp4netns is not installed (make test installs it): %v", err)
	}
	e := newEnv(t)
	const ns = "readlink /proc/self/ns/net"
	sockets := `busybox awk 'NR > 1 && ($4 == "0A" || $4 == "06") { n++ } END { print n + 0 }' /proc/net/tcp /proc/net/tcp6`
	ctx := project(t, `FROM busybox AS a
RUN `+ns+` > /a
FROM busybox AS b
RUN `+ns+` > /b
FROM busybox
COPY --from=a /a /r/stage-a
COPY --from=b /b /r/stage-b
RUN mkdir -p /www && echo hi > /www/x && `+ns+` > /r/run1 \
 && busybox httpd -p 8080 -h /www && busybox wget -q -O /r/fetched http://127.0.0.1:8080/x \
 && (busybox wget -q -T 1 -O- http://10.0.2.2:9/ 2>/dev/null; true)
RUN `+ns+` > /r/run2 && `+sockets+` > /r/sockets \
 && (cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo 0) > /r/conntrack \
 && (busybox wget -q -T 2 -O- http://127.0.0.1:8080/x > /r/again 2>/dev/null || echo refused > /r/again)
RUN --security=insecure `+ns+` > /r/insecure
RUN --network=none `+ns+` > /r/none
RUN --network=host `+ns+` > /r/host
`, nil)
	// Whatever the build leaves running (its helper, above all) is
	// orphaned to this process, where children finds it.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	before := children()
	out := filepath.Join(t.TempDir(), "rootfs")
	e.build(ctx, nil, "--no-cache", "--allow", "security.insecure", "--jobs", "2", "-o", "type=local,dest="+out)
	got := func(name string) string { return strings.TrimSpace(readFile(t, filepath.Join(out, "r", name))) }
	hostOut, err := exec.Command("readlink", "/proc/self/ns/net").Output()
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimSpace(string(hostOut))

	shared := got("run1")
	if shared == host || !strings.HasPrefix(shared, "net:[") {
		t.Fatalf("RUN 1 ran in %q, want a private namespace (the host's is %s)", shared, host)
	}
	for _, f := range []string{"run2", "stage-a", "stage-b"} {
		if got(f) != shared {
			t.Errorf("%s ran in %s, RUN 1 in %s: want the build's one namespace", f, got(f), shared)
		}
	}
	if got("fetched") != "hi" {
		t.Errorf("RUN 1 did not reach its own server: %q", got("fetched"))
	}
	if got("sockets") != "0" || got("again") != "refused" {
		t.Errorf("RUN 1's server outlived it: RUN 2 sees %s listening or TIME_WAIT sockets, its fetch got %q", got("sockets"), got("again"))
	}
	if got("conntrack") != "0" {
		t.Errorf("RUN 2 sees %s conntrack entries", got("conntrack"))
	}
	for f, not := range map[string][]string{"insecure": {shared, host}, "none": {shared, host}, "host": {shared}} {
		if v := got(f); v == "" || slices.Contains(not, v) {
			t.Errorf("the %s RUN ran in %s; want neither of %v", f, v, not)
		}
	}
	if got("host") != host {
		t.Errorf("the --network=host RUN ran in %s, want the host's %s", got("host"), host)
	}
	for pid, comm := range children() {
		if _, ok := before[pid]; !ok {
			t.Errorf("after the build, its process %d (%s) is left (running or unreaped)", pid, comm)
		}
	}
}

// children maps this process's children (pid → "comm state") to each.
func children() map[int]string {
	out := map[int]string{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parens.
		i := bytes.LastIndexByte(b, ')')
		j := bytes.IndexByte(b, '(')
		if i < 0 || j < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b[:j])))
		out[pid] = string(b[j+1:i]) + " " + f[0]
	}
	return out
}
