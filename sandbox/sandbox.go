// Package sandbox runs RUN commands isolated from the host (DESIGN.md
// invariant 5).
//
// Run re-executes the current binary (/proc/self/exe) as a container init
// in new mount, pid, uts and ipc namespaces; Main, called first in main(),
// recognizes that process. The init mounts the rootfs privately, sets up
// /proc, /dev, /sys and read-only binds of the host's /etc/hosts and
// /etc/resolv.conf, pivots into the rootfs, drops dangerous capabilities
// and runs the command, reaping orphans until it exits. Because every
// mount lives in the init's namespace and every process in its pid
// namespace, killing the init (on cancel, or by the kernel when minibuild
// dies) removes all of them: nothing leaks.
package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"

	"github.com/minibuild/minibuild/mount"
	"golang.org/x/sys/unix"
)

// initEnv marks the re-executed process as the sandbox init.
const initEnv = "MINIBUILD_SANDBOX_INIT"

// initArg0 is the init's argv[0], for humans reading ps.
const initArg0 = "minibuild-sandbox-init"

// Spec describes one command to run.
type Spec struct {
	Rootfs    []mount.Mount // exactly one: the root filesystem (snapshot.Snapshot.Mounts)
	Args, Env []string      // Env is passed exactly; its PATH finds Args[0]
	Cwd       string        // created (owned by root) if missing; default "/"
	UID, GID  uint32
	ExtraGIDs []uint32
	Hostname  string // default "minibuild"
	// Mounts (RUN --mount: bind views, cache dirs, tmpfs) and Files are
	// mounted inside the rootfs, parents first. A missing target is
	// created; the snapshot keeps a target in the layer unless it was
	// given as a mount point to Prepare.
	Mounts []mount.Mount
	Files  []File
	// Network is NetworkDefault (or ""): a private network namespace
	// with outbound access through slirp4netns, or the host's network
	// without CAP_NET_RAW where the helper is missing (ProbeNetwork says
	// so once); NetworkHost: the host's network, without CAP_NET_RAW;
	// NetworkNone: a fresh network namespace with only loopback, up.
	Network Network
	// Insecure is RUN --security=insecure: no seccomp filter, every
	// capability, /proc and /sys unmasked. The caller decides whether it
	// is allowed; fds, namespaces and nodev stay.
	Insecure bool
	// ExtraHosts ("host:ip", --add-host) are added to the host's
	// /etc/hosts the step sees.
	ExtraHosts []string
	// Net, when set, is the build's network: a default-network RUN
	// joins it rather than getting a namespace and helper of its own
	// (an insecure one does not; see SharedNetwork).
	Net    *SharedNetwork
	Stdout io.Writer
	Stderr io.Writer
}

// Network is a RUN's network mode.
type Network string

// The network modes.
const (
	NetworkDefault Network = "default"
	NetworkHost    Network = "host"
	NetworkNone    Network = "none"
)

// File is content mounted read-only at Target (a secret, a heredoc
// script): it lives on a tmpfs private to the step, never on a disk, and
// vanishes with the sandbox.
type File struct {
	Target   string // absolute in the rootfs
	Data     []byte
	Mode     uint32
	UID, GID uint32
}

// ErrRootfsMount marks a sandbox that could not mount its root filesystem
// (e.g. an overlay the kernel refuses), as opposed to a failure of the
// command or of its other mounts. Whether to use overlay at all is the
// snapshotter's decision (snapshot.Snapshotter.Probe), made beforehand.
var ErrRootfsMount = errors.New("cannot mount the root filesystem")

// ExitError reports a command that exited non-zero (128+N when killed by
// signal N).
type ExitError struct {
	Code int
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("process did not complete successfully: exit code: %d", e.Code)
}

// initSpec is what the parent sends the init over a pipe (not argv, which
// any host user can read).
type initSpec struct {
	Rootfs    []mount.Mount
	Args, Env []string
	Cwd       string
	UID, GID  uint32
	ExtraGIDs []uint32
	Hostname  string
	Mounts    []mount.Mount
	Files     []File
	Network   Network
	// HostNet tells that the command shares the host's network namespace
	// (NetworkHost, or the default without its helper): no CAP_NET_RAW.
	HostNet bool
	// ResolvConf, when set, replaces the host's /etc/resolv.conf (the
	// private network's resolver is its helper's).
	ResolvConf []byte `json:",omitempty"`
	// Hosts, when set, replaces the host's /etc/hosts (--add-host).
	Hosts    []byte `json:",omitempty"`
	Insecure bool
}

// initStatus is what the init reports back when setup fails.
type initStatus struct {
	Error string
	// RootfsMount tells that mounting the rootfs itself failed.
	RootfsMount bool `json:",omitempty"`
}

// Exit codes of the init that are not the command's.
const exitSetupFailed = 125

// Main runs the sandbox init and exits when this process is one; otherwise
// it returns at once. Call it first in main() (and in TestMain).
func Main() {
	if os.Getenv(initEnv) != "1" {
		return
	}
	os.Exit(initMain())
}

// Run runs spec.Args in a fresh sandbox over spec.Rootfs and returns when
// every process of it is gone. A non-zero exit is an *ExitError; when ctx
// ends first, all processes are killed and ctx's error is returned.
func Run(ctx context.Context, spec Spec) error {
	if len(spec.Args) == 0 {
		return errors.New("sandbox: no command")
	}
	if len(spec.Rootfs) == 0 {
		return errors.New("sandbox: no rootfs")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Whatever minibuild's caller left open stays out of every child.
	if err := cloexecFrom(3); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	is := initSpec{
		Rootfs: spec.Rootfs, Args: spec.Args, Env: spec.Env, Cwd: spec.Cwd,
		UID: spec.UID, GID: spec.GID, ExtraGIDs: spec.ExtraGIDs, Hostname: spec.Hostname,
		Mounts: spec.Mounts, Files: spec.Files, Network: spec.Network, Insecure: spec.Insecure,
		Hosts: hostsWith(spec.ExtraHosts),
	}
	cloneflags := uintptr(syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC)
	helperPath := ""
	var shared *os.File // the build's namespace, joined
	switch spec.Network {
	case "", NetworkDefault:
		var err error
		if helperPath, err = findHelper(); err != nil {
			is.Network, is.HostNet = NetworkHost, true
			break
		}
		is.Network, is.ResolvConf = NetworkDefault, privateResolvConf()
		if spec.Net != nil && !spec.Insecure {
			if shared, err = spec.Net.join(helperPath); err != nil {
				return fmt.Errorf("sandbox: %w", err)
			}
			break
		}
		cloneflags |= syscall.CLONE_NEWNET
	case NetworkHost:
		is.HostNet = true
	case NetworkNone:
		cloneflags |= syscall.CLONE_NEWNET
	default:
		return fmt.Errorf("sandbox: unknown network mode %q", spec.Network)
	}
	payload, err := json.Marshal(is)
	if err != nil {
		return fmt.Errorf("sandbox: encode spec: %w", err)
	}
	p, err := startInit(spec, cloneflags, shared)
	if err != nil {
		return err
	}
	if is.Network == NetworkDefault && shared == nil {
		// The init waits for its spec, so the command starts only once
		// the namespace has its way out.
		net, err := startSlirp(helperPath, p.cmd.Process.Pid, nil)
		if err != nil {
			p.specW.Close()
			p.cmd.Process.Kill()
			<-p.waited
			<-p.status
			return fmt.Errorf("sandbox: %w", err)
		}
		defer net.stop()
	}
	go func() {
		p.specW.Write(payload) // an early death of the init shows up in Wait
		p.specW.Close()
	}()
	return p.wait(ctx)
}

// initProc is a started init: the spec pipe to write, its exit and the
// setup status it reports.
type initProc struct {
	cmd    *exec.Cmd
	specW  *os.File
	waited chan error
	status chan initStatus
}

// startInit starts the init in its new namespaces, and in the network
// namespace netns when set; fds 3 and 4 are the spec and status pipes.
func startInit(spec Spec, cloneflags uintptr, netns *os.File) (*initProc, error) {
	specR, specW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	statR, statW, err := os.Pipe()
	if err != nil {
		specR.Close()
		specW.Close()
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	p := &initProc{specW: specW, waited: make(chan error, 1), status: make(chan initStatus, 1)}
	p.cmd = &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{initArg0},
		Env:        []string{initEnv + "=1"},
		Stdout:     spec.Stdout,
		Stderr:     spec.Stderr,
		ExtraFiles: []*os.File{specR, statW}, // fds 3 and 4
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: cloneflags,
			Pdeathsig:  syscall.SIGKILL,
			Setpgid:    true, // the terminal's ^C goes to us; we decide
		},
	}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that forked exits: keep it
		// alive until the init is reaped.
		// The init forks from this thread, so it starts in netns when
		// the thread has joined it; the thread goes home afterwards.
		runtime.LockOSThread()
		if netns == nil {
			defer runtime.UnlockOSThread()
		} else if err := unix.Setns(int(netns.Fd()), unix.CLONE_NEWNET); err != nil {
			goHome()
			started <- fmt.Errorf("join the build's network: %w", err)
			return
		} else {
			defer goHome()
		}
		if err := p.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.waited <- p.cmd.Wait()
	}()
	err = <-started
	specR.Close()
	statW.Close()
	if err != nil {
		specW.Close()
		statR.Close()
		return nil, fmt.Errorf("sandbox: start init: %w", err)
	}
	go func() {
		defer statR.Close()
		var st initStatus
		b, _ := io.ReadAll(statR)
		if len(b) > 0 {
			if json.Unmarshal(b, &st) != nil {
				st.Error = strings.TrimSpace(string(b))
			}
		}
		p.status <- st
	}()
	return p, nil
}

// wait waits for the init to exit, or kills it when ctx ends, and turns
// its end into Run's error.
func (p *initProc) wait(ctx context.Context) error {
	var werr error
	select {
	case werr = <-p.waited:
	case <-ctx.Done():
		p.cmd.Process.Kill() // pid 1 dies, the kernel kills the namespace
		<-p.waited
		<-p.status
		return fmt.Errorf("sandbox: %w", ctx.Err())
	}
	st := <-p.status
	if st.RootfsMount {
		return fmt.Errorf("sandbox: %s: %w", st.Error, ErrRootfsMount)
	}
	if st.Error != "" {
		return fmt.Errorf("sandbox: %s", st.Error)
	}
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		code := ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		return &ExitError{Code: code}
	}
	if werr != nil {
		return fmt.Errorf("sandbox: %w", werr)
	}
	return nil
}

// hostsWith is the host's /etc/hosts with the extra "host:ip" entries
// after it, as docker's --add-host writes them; nil when there are none.
func hostsWith(extra []string) []byte {
	if len(extra) == 0 {
		return nil
	}
	b, _ := os.ReadFile("/etc/hosts")
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	for _, h := range extra {
		name, ip, _ := strings.Cut(h, ":")
		b = append(b, ip+"\t"+name+"\n"...)
	}
	return b
}
