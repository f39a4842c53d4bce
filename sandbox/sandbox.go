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

	"github.com/minibuild/minibuild/snapshot"
)

// initEnv marks the re-executed process as the sandbox init.
const initEnv = "MINIBUILD_SANDBOX_INIT"

// initArg0 is the init's argv[0], for humans reading ps.
const initArg0 = "minibuild-sandbox-init"

// Spec describes one command to run.
type Spec struct {
	Rootfs    []snapshot.Mount // the first mount is the root filesystem
	Args, Env []string         // Env is passed exactly; its PATH finds Args[0]
	Cwd       string           // created (owned by root) if missing; default "/"
	UID, GID  uint32
	ExtraGIDs []uint32
	Hostname  string // default "minibuild"
	// Mounts are mounted inside the rootfs (RUN --mount), parents first.
	Mounts []Mount
	// Network is NetworkHost (the default: the host's network, so that
	// package installs work) or NetworkNone (a fresh network namespace
	// with only loopback, up).
	Network Network
	Stdout  io.Writer
	Stderr  io.Writer
}

// Network is a RUN's network mode.
type Network string

// The network modes.
const (
	NetworkHost Network = "host"
	NetworkNone Network = "none"
)

// Mount is one filesystem mounted inside the rootfs, in the sandbox's own
// mount namespace: it disappears with the sandbox.
type Mount struct {
	// Target is an absolute path in the rootfs. Symlinks along it resolve
	// inside the rootfs; a missing target is created (the snapshot's
	// AddMountPoints keeps such stubs out of the layer).
	Target string
	// Type is "bind" (Source is a host file or dir), "file" (Data on a
	// tmpfs private to the step, bound read-only at Target: secrets), or
	// any mount(2) filesystem type ("tmpfs", "overlay") with Source and
	// Options as its source and data.
	Type     string
	Source   string
	Options  []string
	ReadOnly bool
	// Data, Mode, UID and GID describe a "file" mount's content and owner.
	Data     []byte
	Mode     uint32
	UID, GID uint32
}

// ErrRootfsMount marks a sandbox that could not mount its root filesystem,
// e.g. where overlayfs is refused; callers may retry with a copied rootfs.
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
	Rootfs    []snapshot.Mount
	Args, Env []string
	Cwd       string
	UID, GID  uint32
	ExtraGIDs []uint32
	Hostname  string
	Mounts    []Mount
	Network   Network
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
	cloneflags := uintptr(syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC)
	switch spec.Network {
	case "", NetworkHost:
	case NetworkNone:
		cloneflags |= syscall.CLONE_NEWNET
	default:
		return fmt.Errorf("sandbox: unknown network mode %q", spec.Network)
	}
	payload, err := json.Marshal(initSpec{
		Rootfs: spec.Rootfs, Args: spec.Args, Env: spec.Env, Cwd: spec.Cwd,
		UID: spec.UID, GID: spec.GID, ExtraGIDs: spec.ExtraGIDs, Hostname: spec.Hostname,
		Mounts: spec.Mounts, Network: spec.Network,
	})
	if err != nil {
		return fmt.Errorf("sandbox: encode spec: %w", err)
	}
	specR, specW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	defer specW.Close()
	statR, statW, err := os.Pipe()
	if err != nil {
		specR.Close()
		return fmt.Errorf("sandbox: %w", err)
	}
	defer statR.Close()

	cmd := &exec.Cmd{
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
	waited := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that forked exits: keep it
		// alive until the init is reaped.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		waited <- cmd.Wait()
	}()
	err = <-started
	specR.Close()
	statW.Close()
	if err != nil {
		return fmt.Errorf("sandbox: start init: %w", err)
	}
	status := make(chan initStatus, 1)
	go func() {
		var st initStatus
		b, _ := io.ReadAll(statR)
		if len(b) > 0 {
			if json.Unmarshal(b, &st) != nil {
				st.Error = strings.TrimSpace(string(b))
			}
		}
		status <- st
	}()
	go func() {
		specW.Write(payload) // an early death of the init shows up in Wait
		specW.Close()
	}()

	var werr error
	select {
	case werr = <-waited:
	case <-ctx.Done():
		cmd.Process.Kill() // pid 1 dies, the kernel kills the namespace
		<-waited
		<-status
		return fmt.Errorf("sandbox: %w", ctx.Err())
	}
	st := <-status
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
