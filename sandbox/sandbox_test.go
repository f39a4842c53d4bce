package sandbox_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/sandbox"
	"github.com/minibuild/minibuild/snapshot"
	"github.com/minibuild/minibuild/snapshot/snapshottest"
)

func TestMain(m *testing.M) {
	sandbox.Main()
	os.Exit(m.Run())
}

var env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}

type fixture struct {
	sn    *snapshot.Snapshotter
	blobs *snapshottest.Blobs
	base  []snapshot.Layer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	blobs := &snapshottest.Blobs{}
	d, diffID, err := blobs.Add(snapshottest.BusyboxLayer(t))
	if err != nil {
		t.Fatal(err)
	}
	sn, err := snapshot.New(t.TempDir(), blobs)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{sn: sn, blobs: blobs, base: []snapshot.Layer{{Digest: d, DiffID: diffID}}}
}

func (f *fixture) prepare(t *testing.T, layers []snapshot.Layer) *snapshot.Snapshot {
	t.Helper()
	s, err := f.sn.Prepare(context.Background(), layers, sandbox.MountPoints()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Release(); err != nil {
			t.Errorf("release: %v", err)
		}
	})
	return s
}

// run runs a shell script in s and returns its stdout.
func run(ctx context.Context, s *snapshot.Snapshot, spec sandbox.Spec, script string) (string, error) {
	var out, errOut bytes.Buffer
	spec.Rootfs = s.Mounts()
	spec.Args = []string{"sh", "-c", script}
	if spec.Env == nil {
		spec.Env = env
	}
	spec.Stdout, spec.Stderr = &out, &errOut
	err := sandbox.Run(ctx, spec)
	if err != nil {
		return out.String(), fmt.Errorf("%w (stderr: %s)", err, errOut.String())
	}
	return out.String(), nil
}

// diff returns the entries of s's diff ("name", "name link target") and
// the layer added to the fixture's blobs.
func (f *fixture) diff(t *testing.T, s *snapshot.Snapshot) ([]string, snapshot.Layer) {
	t.Helper()
	var buf bytes.Buffer
	w := layer.NewWriter(&buf, layer.Options{})
	if err := s.Diff(w); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	d, diffID, err := f.blobs.Add(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	zr, err := snapshot.Decompress(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n := hdr.Name
		if hdr.Typeflag == tar.TypeLink {
			n += " link " + hdr.Linkname
		}
		names = append(names, n)
	}
	return names, snapshot.Layer{Digest: d, DiffID: diffID}
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestRunDiff(t *testing.T) {
	f := newFixture(t)
	s := f.prepare(t, f.base)
	script := `set -e
mkdir /app && echo hi > /app/x && ln /app/x /app/y
rm /etc/group
rm -rf /usr && mkdir /usr && touch /usr/new
cat /etc/hosts > /dev/null`
	if out, err := run(context.Background(), s, sandbox.Spec{}, script); err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	names, l := f.diff(t, s)
	t.Logf("diff: %q", names)
	for _, want := range []string{"app/", "app/x", "app/y link app/x", "etc/", "etc/.wh.group", "usr/", "usr/new"} {
		if !has(names, want) {
			t.Errorf("diff lacks %q: %q", want, names)
		}
	}
	for _, n := range names {
		switch {
		case strings.HasPrefix(n, "proc"), strings.HasPrefix(n, "dev"), strings.HasPrefix(n, "sys"),
			n == "etc/hosts", n == "etc/resolv.conf", n == "etc/hostname":
			t.Errorf("mount stub %q reached the diff", n)
		}
	}
	// Whatever form the replaced /usr took (opaque dir or whiteouts), the
	// extracted result must be the right tree.
	chain := append(append([]snapshot.Layer{}, f.base...), l)
	ctx := context.Background()
	if _, err := f.sn.Stat(ctx, chain, "/usr/bin"); err == nil {
		t.Error("/usr/bin survived rm -rf /usr")
	}
	if _, err := f.sn.Stat(ctx, chain, "/usr/new"); err != nil {
		t.Errorf("/usr/new: %v", err)
	}
	if _, err := f.sn.Stat(ctx, chain, "/etc/group"); err == nil {
		t.Error("/etc/group survived rm")
	}
	if b, err := f.sn.ReadFile(ctx, chain, "/app/y"); err != nil || string(b) != "hi\n" {
		t.Errorf("/app/y = %q, %v", b, err)
	}
	// A step on top sees the result, and hard links survived the layer.
	s2 := f.prepare(t, chain)
	out, err := run(ctx, s2, sandbox.Spec{}, `stat -c %h /app/x; ls /usr; test -e /etc/group || echo nogroup`)
	if err != nil || out != "2\nnew\nnogroup\n" {
		t.Errorf("second step: %q, %v", out, err)
	}
	if names, _ := f.diff(t, s2); len(names) != 0 {
		t.Errorf("read-only step has a diff: %q", names)
	}
}

func TestIsolation(t *testing.T) {
	f := newFixture(t)
	s := f.prepare(t, f.base)
	ctx := context.Background()
	host, err := os.CreateTemp("", "host-only-*")
	if err != nil {
		t.Fatal(err)
	}
	host.Close()
	defer os.Remove(host.Name())
	escape := filepath.Join(os.TempDir(), fmt.Sprintf("minibuild-escape-%d", time.Now().UnixNano()))
	defer os.Remove(escape)
	hostHosts, err := os.ReadFile("/etc/hosts")
	if err != nil {
		t.Fatal(err)
	}
	hostName, _ := os.Hostname()

	for _, tc := range []struct {
		name, script string
		check        func(out string) bool
	}{
		{"host file invisible", "test -e " + host.Name() + " && echo visible || echo hidden", func(o string) bool { return o == "hidden\n" }},
		{"own pid namespace", "ls /proc | grep -c '^[0-9]'", func(o string) bool { n, _ := strconv.Atoi(strings.TrimSpace(o)); return n > 0 && n <= 4 }},
		{"ps shows no host processes", "ps -o pid,comm", func(o string) bool { return !strings.Contains(o, "go") && strings.Count(o, "\n") <= 5 }},
		{"hostname", "hostname", func(o string) bool { return o == "minibuild\n" && o != hostName+"\n" }},
		{"hosts readable", "cat /etc/hosts", func(o string) bool { return o == string(hostHosts) }},
		{"hosts read-only", "echo x >> /etc/hosts 2>/dev/null && echo wrote || echo refused", func(o string) bool { return o == "refused\n" }},
		{"writes stay inside", "echo x > " + escape + " && echo ok", func(o string) bool { return o == "ok\n" }},
		{"cannot mount", "mkdir -p /m && mount -t tmpfs t /m 2>/dev/null && echo mounted || echo refused", func(o string) bool { return o == "refused\n" }},
		{"cannot mknod", "mknod /sda b 8 0 2>/dev/null && echo made || echo refused", func(o string) bool { return o == "refused\n" }},
		{"dev nodes", "echo x > /dev/null && head -c 4 /dev/zero | wc -c && ls /dev/fd/ >/dev/null && echo ok", func(o string) bool { return o == "4\nok\n" }},
	} {
		out, err := run(ctx, s, sandbox.Spec{}, tc.script)
		if err != nil || !tc.check(out) {
			t.Errorf("%s: %q, %v", tc.name, out, err)
		}
	}
	if _, err := os.Stat(escape); err == nil {
		t.Errorf("the command wrote %s on the host", escape)
	}
	names, _ := f.diff(t, s)
	if has(names, "etc/hosts") || has(names, "etc/") {
		t.Errorf("/etc reached the diff: %q", names)
	}
}

func TestUserCwdEnv(t *testing.T) {
	f := newFixture(t)
	s := f.prepare(t, f.base)
	spec := sandbox.Spec{UID: 65534, GID: 65534, ExtraGIDs: []uint32{100}, Cwd: "/work/dir", Hostname: "builder",
		Env: []string{"PATH=/bin", "FOO=bar"}}
	out, err := run(context.Background(), s, spec, `id -u; id -g; id -G; pwd; hostname; env | grep -v '^PWD=' | grep -v '^SHLVL=' | sort`)
	want := "65534\n65534\n65534 100\n/work/dir\nbuilder\nFOO=bar\nPATH=/bin\n"
	if err != nil || out != want {
		t.Errorf("got %q, %v; want %q", out, err, want)
	}
	// Command not found is an error, not an exit code.
	err = sandbox.Run(context.Background(), sandbox.Spec{Rootfs: s.Mounts(), Args: []string{"no-such-cmd"}, Env: env})
	if err == nil || errors.As(err, new(*sandbox.ExitError)) || !strings.Contains(err.Error(), "not found") {
		t.Errorf("missing command: %v", err)
	}
}

func TestExitCode(t *testing.T) {
	f := newFixture(t)
	s := f.prepare(t, f.base)
	_, err := run(context.Background(), s, sandbox.Spec{}, "exit 3")
	var ee *sandbox.ExitError
	if !errors.As(err, &ee) || ee.Code != 3 {
		t.Fatalf("err = %v, want ExitError{3}", err)
	}
}

func TestCancelKillsEverything(t *testing.T) {
	f := newFixture(t)
	s := f.prepare(t, f.base)
	marker := fmt.Sprintf("marker%d", time.Now().UnixNano())
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(500*time.Millisecond, cancel)
	start := time.Now()
	// A background child too: orphans must die with the step.
	_, err := run(ctx, s, sandbox.Spec{}, "sleep 100 & sleep 100; echo "+marker)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancel took %v", d)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		// Only this process's inits: other builds may share the machine.
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(marker)) || (bytes.Contains(b, []byte("minibuild-sandbox-init")) && parentOf(p) == os.Getpid()) {
			t.Errorf("process left behind: %s %q", p, b)
		}
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if upper := s.Mounts()[0].Options[1]; bytes.Contains(mi, []byte("overlay")) && bytes.Contains(mi, []byte(strings.TrimPrefix(upper, "upperdir=../"))) {
		t.Errorf("overlay mount left behind:\n%s", mi)
	}
}

func TestManyLayers(t *testing.T) {
	f := newFixture(t)
	chain := append([]snapshot.Layer{}, f.base...)
	for i := range 110 {
		d, diffID, err := f.blobs.Add(snapshottest.Layer(t, snapshottest.Entry{Name: fmt.Sprintf("f%03d", i), Mode: 0o644, Body: strconv.Itoa(i)}))
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, snapshot.Layer{Digest: d, DiffID: diffID})
	}
	s := f.prepare(t, chain)
	out, err := run(context.Background(), s, sandbox.Spec{}, "cat /f000 /f109")
	if err != nil || out != "0109" {
		t.Errorf("got %q, %v", out, err)
	}
}

func TestScratch(t *testing.T) {
	f := newFixture(t)
	s := f.prepare(t, nil)
	err := sandbox.Run(context.Background(), sandbox.Spec{Rootfs: s.Mounts(), Args: []string{"/bin/sh"}, Env: env})
	if err == nil {
		t.Error("running in an empty rootfs succeeded")
	}
}

// parentOf returns the parent pid of the process whose /proc/PID/cmdline
// is cmdline, or -1.
func parentOf(cmdline string) int {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(cmdline), "stat"))
	if err != nil {
		return -1
	}
	// pid (comm) state ppid …; comm may hold spaces, so cut at the last ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 2 {
		return -1
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return -1
	}
	return ppid
}
