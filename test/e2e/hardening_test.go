package e2e

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
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

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The attacks of issue 13, each of which must fail inside RUN with both
// snapshotters (DESIGN.md invariant 5).

var snapshotters = []string{"overlay", "copy"}

// probeSource is a static test program for what busybox cannot do:
// keyring syscalls and packet sockets.
const probeSource = `package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

func str(s string) uintptr { b := append([]byte(s), 0); return uintptr(unsafe.Pointer(&b[0])) }

func report(what string, err syscall.Errno) {
	if err != 0 {
		fmt.Printf("%s refused: %v\n", what, err)
	} else {
		fmt.Printf("%s allowed\n", what)
	}
}

func main() {
	switch os.Args[1] {
	case "keys":
		session := -3 // KEY_SPEC_SESSION_KEYRING
		_, _, e := syscall.Syscall(syscall.SYS_KEYCTL, 0, uintptr(session), 0) // KEYCTL_GET_KEYRING_ID
		report("keyctl", e)
		_, _, e = syscall.Syscall6(syscall.SYS_ADD_KEY, str("user"), str("mb"), str("x"), 1, uintptr(session), 0)
		report("add_key", e)
		_, _, e = syscall.Syscall6(syscall.SYS_REQUEST_KEY, str("user"), str("mb"), 0, uintptr(session), 0, 0)
		report("request_key", e)
	case "sniff": // sniff MARKER SECONDS: count packets carrying MARKER
		fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, 0x0300) // htons(ETH_P_ALL)
		if err != nil {
			fmt.Printf("packet socket refused: %v\n", err)
			return
		}
		secs, _ := strconv.Atoi(os.Args[3])
		tv := syscall.Timeval{Usec: 200000}
		syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
		n, buf, end := 0, make([]byte, 65536), time.Now().Add(time.Duration(secs)*time.Second)
		for time.Now().Before(end) {
			m, _, err := syscall.Recvfrom(fd, buf, 0)
			if err == nil && bytes.Contains(buf[:m], []byte(os.Args[2])) {
				n++
			}
		}
		fmt.Printf("captured %d\n", n)
	}
}
`

var probeOnce struct {
	sync.Once
	bin []byte
	err error
}

// probe returns the static test program, built once per test binary.
func probe(t *testing.T) string {
	t.Helper()
	probeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "minibuild-probe-")
		if err != nil {
			probeOnce.err = err
			return
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, "probe.go"), []byte(probeSource), 0o644); err != nil {
			probeOnce.err = err
			return
		}
		cmd := exec.Command("go", "build", "-o", "probe", "probe.go")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			probeOnce.err = fmt.Errorf("go build probe: %v\n%s", err, out)
			return
		}
		probeOnce.bin, probeOnce.err = os.ReadFile(filepath.Join(dir, "probe"))
	})
	if probeOnce.err != nil {
		t.Fatal(probeOnce.err)
	}
	return string(probeOnce.bin)
}

// An fd the caller left open (here 8, a host directory) does not reach
// RUN: nothing of the host dir can be read, written or listed through it.
func TestHardeningInheritedFd(t *testing.T) {
	e := newEnv(t)
	hostDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostDir, "secret.txt"), []byte("host-secret-13\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := project(t, `FROM busybox
RUN mkdir /r; ls /proc/self/fd | sort -n | tr '\n' ' ' > /r/fds; \
 cat /proc/self/fd/8/secret.txt > /r/secret 2>&1; \
 echo x > /proc/self/fd/8/escaped.txt 2>/dev/null; \
 ls /proc/self/fd/8/../../.. > /r/up 2>&1; true
`, nil)
	for _, kind := range snapshotters {
		t.Run(kind, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "rootfs")
			var files []*os.File
			for range 5 { // fds 3-7
				f, err := os.Open(os.DevNull)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				files = append(files, f)
			}
			dir, err := os.Open(hostDir) // fd 8
			if err != nil {
				t.Fatal(err)
			}
			defer dir.Close()
			cmd := exec.Command(the.bin, "build", "--root", e.root, "--no-cache", "--snapshotter="+kind, "-o", "type=local,dest="+out, ctx)
			cmd.Env = cleanEnv()
			cmd.ExtraFiles = append(files, dir)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("build: %v\n%s", err, b)
			}
			if s := readFile(t, filepath.Join(out, "r/fds")); s != "0 1 2 3 " {
				t.Errorf("RUN has descriptors %q, want 0 1 2 (and ls's own 3)", s)
			}
			if s := readFile(t, filepath.Join(out, "r/secret")); strings.Contains(s, "host-secret-13") {
				t.Errorf("RUN read the host file through fd 8: %q", s)
			}
			if _, err := os.Stat(filepath.Join(hostDir, "escaped.txt")); err == nil {
				t.Error("RUN wrote into the host directory through fd 8")
			}
			if s := readFile(t, filepath.Join(out, "r/up")); strings.Contains(s, "secret.txt") || strings.Contains(s, "proc\n") && strings.Contains(s, hostDirTop(hostDir)) {
				t.Errorf("RUN listed the host through fd 8: %q", s)
			}
		})
	}
}

// hostDirTop is the first component of a host path (e.g. "tmp").
func hostDirTop(p string) string {
	return strings.SplitN(strings.TrimPrefix(p, "/"), "/", 2)[0]
}

// loopDevice attaches a loop device to a new file filled with 0xAA and
// returns the device's major:minor and the file.
func loopDevice(t *testing.T) (major, minor uint32, backing string) {
	t.Helper()
	backing = filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(backing, bytes.Repeat([]byte{0xAA}, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", backing).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device here: %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	var st syscall.Stat_t
	if err := syscall.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	return uint32(st.Rdev >> 8 & 0xfff), uint32(st.Rdev&0xff | st.Rdev>>12&0xfff00), backing
}

// loadWithLayer saves busybox, appends a layer made of entries and loads
// the result as ref.
func loadWithLayer(t *testing.T, e *env, ref string, entries ...*tar.Header) {
	t.Helper()
	dir := t.TempDir()
	base := filepath.Join(dir, "busybox.tar")
	e.ok("save", "-o", base, "busybox:latest")
	img, err := tarball.ImageFromPath(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.AppendLayers(img, l)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "dev.tar")
	if err := tarball.WriteToFile(out, tag, img); err != nil {
		t.Fatal(err)
	}
	e.ok("load", "-i", out)
}

// A layer carrying a block node with a loop device's major:minor cannot
// write the device from RUN (the rootfs is nodev), and -o type=local puts
// no working node on the host.
func TestHardeningDeviceNode(t *testing.T) {
	e := newEnv(t)
	major, minor, backing := loopDevice(t)
	loadWithLayer(t, e, "devbox:latest",
		&tar.Header{Name: "node", Typeflag: tar.TypeBlock, Mode: 0o666, Devmajor: int64(major), Devminor: int64(minor)})
	ctx := project(t, `FROM devbox
RUN mkdir /r; (test -b /node && echo block || echo not-block) > /r/type; \
 (dd if=/dev/zero of=/node bs=512 count=4 conv=notrunc 2>/r/dd.err && echo wrote || echo refused) > /r/dd; \
 (head -c 16 /node > /dev/null 2>&1 && echo read || echo refused) > /r/read
`, nil)
	for _, kind := range snapshotters {
		t.Run(kind, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "rootfs")
			b := e.build(ctx, nil, "--no-cache", "--snapshotter="+kind, "-o", "type=local,dest="+out)
			if s := readFile(t, filepath.Join(out, "r/type")); s != "block\n" {
				t.Errorf("the layer's node is not in the rootfs as a block node (%q): the test proves nothing", s)
			}
			if s := readFile(t, filepath.Join(out, "r/dd")); s != "refused\n" {
				t.Errorf("RUN dd of=/node: %q (%s), want refused", s, readFile(t, filepath.Join(out, "r/dd.err")))
			}
			if s := readFile(t, filepath.Join(out, "r/read")); s != "refused\n" {
				t.Errorf("RUN read /node: %q, want refused", s)
			}
			data, err := os.ReadFile(backing)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, bytes.Repeat([]byte{0xAA}, 1<<20)) {
				t.Error("the loop device's backing file changed")
			}
			if _, err := os.Lstat(filepath.Join(out, "node")); err == nil {
				t.Error("-o type=local created the device node on the host")
			}
			if !strings.Contains(b.stderr, "device node") {
				t.Errorf("-o type=local left the node out without a warning:\n%s", tail(b.stderr, 20))
			}
		})
	}
}

// No keyring, no user namespace, no mount; RUN --security=insecure is
// refused unless the build allows it.
func TestHardeningSeccomp(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, `FROM busybox
COPY probe /probe
RUN mkdir /r; chmod +x /probe; /probe keys > /r/keys; \
 (unshare -U true 2>/dev/null && echo made || echo refused) > /r/userns; \
 (unshare -U -r -m sh -c 'mount -t tmpfs t /mnt' 2>/dev/null && echo mounted || echo refused) > /r/usermount; \
 (unshare -n true 2>/dev/null && echo made || echo refused) > /r/netns
`, map[string]string{"probe": probe(t)})
	for _, kind := range snapshotters {
		t.Run(kind, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "rootfs")
			e.build(ctx, nil, "--no-cache", "--snapshotter="+kind, "-o", "type=local,dest="+out)
			keys := readFile(t, filepath.Join(out, "r/keys"))
			for _, call := range []string{"keyctl", "add_key", "request_key"} {
				if !strings.Contains(keys, call+" refused: operation not permitted") {
					t.Errorf("%s inside RUN was not refused:\n%s", call, keys)
				}
			}
			for _, f := range []string{"userns", "usermount", "netns"} {
				if s := readFile(t, filepath.Join(out, "r", f)); s != "refused\n" {
					t.Errorf("%s inside RUN: %q, want refused", f, s)
				}
			}
		})
	}
	insecure := project(t, "FROM busybox\nRUN --security=insecure true\n", nil)
	if r := e.run(runOpts{}, "build", insecure); r.code == 0 || !strings.Contains(r.stderr, "--allow security.insecure") {
		t.Errorf("RUN --security=insecure was not refused naming the flag:\n%s", r)
	}
	// With the entitlement, the one way out: a user namespace is allowed.
	out := filepath.Join(t.TempDir(), "insecure")
	allowed := project(t, "FROM busybox\nRUN --security=insecure unshare -U true && echo made > /userns\n", nil)
	e.build(allowed, nil, "--allow", "security.insecure", "-o", "type=local,dest="+out)
	if s := readFile(t, filepath.Join(out, "userns")); s != "made\n" {
		t.Errorf("RUN --security=insecure with --allow security.insecure: %q", s)
	}
}

// serveLoopback serves hello on the host's 127.0.0.1 and returns its port.
func serveLoopback(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
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
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// outsideServer serves hello.txt over HTTP from a network namespace the
// test creates, reachable only over a veth pair from the host's namespace,
// and returns its URL.
func outsideServer(t *testing.T) string {
	t.Helper()
	n := os.Getpid() % 100000
	ns, hostIf, nsIf := fmt.Sprintf("mbsrv%d", n), fmt.Sprintf("mbh%d", n), fmt.Sprintf("mbn%d", n)
	sub := fmt.Sprintf("10.213.%d", n%250)
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	exec.Command("ip", "netns", "del", ns).Run()
	sh("ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	sh("ip", "link", "add", hostIf, "type", "veth", "peer", "name", nsIf)
	t.Cleanup(func() { exec.Command("ip", "link", "del", hostIf).Run() })
	sh("ip", "link", "set", nsIf, "netns", ns)
	sh("ip", "addr", "add", sub+".1/30", "dev", hostIf)
	sh("ip", "link", "set", hostIf, "up")
	sh("ip", "netns", "exec", ns, "ip", "addr", "add", sub+".2/30", "dev", nsIf)
	sh("ip", "netns", "exec", ns, "ip", "link", "set", nsIf, "up")
	sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	www := t.TempDir()
	if err := os.WriteFile(filepath.Join(www, "hello.txt"), []byte("hello-from-outside\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := exec.Command("ip", "netns", "exec", ns, "busybox", "httpd", "-f", "-p", sub+".2:8080", "-h", www)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	url := "http://" + sub + ".2:8080/hello.txt"
	for i := 0; ; i++ { // wait until the host reaches it
		if c, err := net.DialTimeout("tcp", sub+".2:8080", time.Second); err == nil {
			c.Close()
			break
		}
		if i == 50 {
			t.Fatalf("the server in %s never came up", ns)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return url
}

// (busybox 1.35's wget -T crashes, so timeout bounds the fetch.)
//
// The default network is private: RUN fetches from a server outside
// (through slirp4netns), cannot reach the host's 127.0.0.1, and its
// packet socket captures none of the host's traffic; with --network=host
// it cannot open a packet socket at all.
func TestHardeningNetwork(t *testing.T) {
	if _, err := exec.LookPath("slirp4netns"); err != nil {
		t.Fatalf("slirp4netns is not installed (make test installs it): %v", err)
	}
	e := newEnv(t)
	port := serveLoopback(t)
	url := outsideServer(t)
	marker := fmt.Sprintf("mb13-%d", time.Now().UnixNano())
	stop := make(chan struct{})
	defer close(stop)
	go func() { // host traffic a host-namespace sniffer would see
		c, err := net.Dial("udp4", "127.0.0.1:9")
		if err != nil {
			return
		}
		defer c.Close()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				c.Write([]byte(marker))
			}
		}
	}()
	ctx := project(t, `FROM busybox
COPY probe /probe
RUN mkdir /r; chmod +x /probe; \
 (nc -w 3 127.0.0.1 `+port+` </dev/null || echo unreachable) > /r/loopback; \
  (timeout 20 wget -q -O /r/fetched `+url+` 2>/r/wget.err || echo failed > /r/fetched); \
 tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ' ' > /r/ifaces; \
 /probe sniff `+marker+` 2 > /r/sniff
RUN --network=host /probe sniff `+marker+` 1 > /r/sniff-host
`, map[string]string{"probe": probe(t)})
	for _, kind := range snapshotters {
		t.Run(kind, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "rootfs")
			b := e.build(ctx, nil, "--no-cache", "--snapshotter="+kind, "-o", "type=local,dest="+out)
			if strings.Contains(b.stderr, "slirp4netns") {
				t.Errorf("the build warned about the network helper:\n%s", tail(b.stderr, 20))
			}
			for file, want := range map[string]string{
				"loopback":   "unreachable\n",
				"fetched":    "hello-from-outside\n",
				"ifaces":     "lo tap0 ",
				"sniff":      "captured 0\n",
				"sniff-host": "packet socket refused: operation not permitted\n",
			} {
				if got := readFile(t, filepath.Join(out, "r", file)); got != want {
					t.Errorf("/r/%s = %q, want %q", file, got, want)
				}
			}
		})
	}
}
