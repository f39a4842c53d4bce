package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The default network is private: the build's RUNs share a network
// namespace of their own (SharedNetwork), and slirp4netns (Debian's
// slirp4netns package) gives it a way out as user-mode networking — a
// tap device whose packets become ordinary sockets of a host process.
// The host's 127.0.0.1 services, abstract unix sockets and traffic stay
// out of reach (--disable-host-loopback refuses the gateway's way to the
// host's loopback). slirp4netns rather than pasta: it is what rootless
// docker, podman and BuildKit use, and it has the two handshakes a
// helper we start needs (--ready-fd once the tap is configured,
// --exit-fd to stop with the build, even when minibuild is killed);
// Debian 12's passt is a 2023 snapshot whose pasta options have changed
// since.

// slirpHelper is the helper's name on PATH.
const slirpHelper = "slirp4netns"

// slirpDNS is the resolver slirp4netns forwards to the host's.
const slirpDNS = "10.0.2.3"

// slirpReady bounds the wait for the helper to configure the namespace.
const slirpReady = 30 * time.Second

var helper struct {
	once   sync.Once
	path   string
	err    error
	probed sync.Once
}

// findHelper returns the helper's path, or why the default network must
// fall back to the host's.
func findHelper() (string, error) {
	helper.once.Do(func() {
		helper.path, helper.err = exec.LookPath(slirpHelper)
		if helper.err != nil {
			helper.err = fmt.Errorf("%s is not installed", slirpHelper)
			return
		}
		if _, err := os.Stat("/dev/net/tun"); err != nil {
			helper.err = fmt.Errorf("%s needs /dev/net/tun: %w", slirpHelper, err)
		}
	})
	return helper.path, helper.err
}

// ProbeNetwork returns, on its first call only, why RUNs with the default
// network share the host's network (without CAP_NET_RAW): the user's one
// warning. It returns nil when the private network works, and on every
// later call.
func ProbeNetwork() error {
	var err error
	helper.probed.Do(func() {
		if _, why := findHelper(); why != nil {
			err = fmt.Errorf("%w; RUN uses the host's network (without CAP_NET_RAW)", why)
		}
	})
	return err
}

// privateResolvConf is the host's resolv.conf with its nameservers
// replaced by the helper's forwarder: a host resolver on 127.0.0.53 is
// out of reach from the private namespace, the forwarder is not.
func privateResolvConf() []byte {
	var b bytes.Buffer
	b.WriteString("nameserver " + slirpDNS + "\n")
	host, _ := os.ReadFile("/etc/resolv.conf")
	sc := bufio.NewScanner(bytes.NewReader(host))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 && (f[0] == "search" || f[0] == "domain" || f[0] == "options") {
			b.WriteString(sc.Text() + "\n")
		}
	}
	return b.Bytes()
}

// slirp is a running helper serving one namespace.
type slirp struct {
	cmd   *exec.Cmd
	exitW *os.File
	done  chan error
}

// startSlirp attaches the helper to the network namespace ns, or when
// ns is nil to that of pid, and returns once the namespace has its tap
// device, address and route.
func startSlirp(path string, pid int, ns *os.File) (*slirp, error) {
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer readyR.Close()
	exitR, exitW, err := os.Pipe()
	if err != nil {
		readyW.Close()
		return nil, err
	}
	var stderr bytes.Buffer
	args := []string{"--configure", "--mtu=65520", "--disable-host-loopback",
		"--enable-sandbox", "--enable-seccomp", "--ready-fd=3", "--exit-fd=4", strconv.Itoa(pid), "tap0"}
	files := []*os.File{readyW, exitR}
	if ns != nil { // fd 5 in the helper
		args = append(args[:len(args)-2], "--netns-type=path", "/proc/self/fd/5", "tap0")
		files = append(files, ns)
	}
	cmd := exec.Command(path, args...)
	cmd.ExtraFiles = files
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // ^C is minibuild's to handle
	err = cmd.Start()
	readyW.Close()
	exitR.Close()
	if err != nil {
		exitW.Close()
		return nil, fmt.Errorf("start %s: %w", slirpHelper, err)
	}
	s := &slirp{cmd: cmd, exitW: exitW, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	ready := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		_, err := io.ReadFull(readyR, b)
		ready <- err
	}()
	select {
	case err = <-ready:
	case <-time.After(slirpReady):
		err = errors.New("timed out")
	}
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("%s did not set up the network: %v: %s", slirpHelper, err, strings.TrimSpace(stderr.String()))
	}
	return s, nil
}

// stop ends the helper: closing the exit pipe asks it to go, a kill
// follows if it lingers.
func (s *slirp) stop() {
	s.exitW.Close()
	s.wait()
}

// wait reaps the helper once stop (or its exit pipe's closing) asked it
// to go.
func (s *slirp) wait() {
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}
