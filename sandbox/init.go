package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// initMain is the container init. It returns the process exit code.
func initMain() int {
	// Capabilities are per thread and the command is forked from this one.
	runtime.LockOSThread()
	// Not dumpable: no process of the step may ptrace the init or read its
	// memory (which holds the spec, secrets included). The command's own
	// execve makes it dumpable again.
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	unix.CloseOnExec(4)
	status := os.NewFile(4, "status")
	fail := func(err error) int {
		var re rootfsError
		json.NewEncoder(status).Encode(initStatus{Error: err.Error(), RootfsMount: errors.As(err, &re)})
		return exitSetupFailed
	}
	specFile := os.NewFile(3, "spec")
	var spec initSpec
	err := json.NewDecoder(specFile).Decode(&spec)
	specFile.Close()
	if err != nil {
		return fail(fmt.Errorf("read spec: %w", err))
	}
	unix.Umask(0o022)
	if err := setupRoot(&spec); err != nil {
		return fail(err)
	}
	cwd, err := enterCwd(spec.Cwd)
	if err != nil {
		return fail(err)
	}
	argv0, err := lookPath(spec.Args[0], spec.Env)
	if err != nil {
		return fail(err)
	}
	devNull, err := os.Open("/dev/null")
	if err != nil {
		return fail(err)
	}
	if err := harden(&spec); err != nil {
		return fail(err)
	}
	groups := make([]uint32, len(spec.ExtraGIDs))
	copy(groups, spec.ExtraGIDs)
	pid, err := syscall.ForkExec(argv0, spec.Args, &syscall.ProcAttr{
		Dir:   cwd,
		Env:   spec.Env,
		Files: []uintptr{devNull.Fd(), 1, 2},
		Sys: &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: spec.UID, Gid: spec.GID, Groups: groups},
			Setsid:     true,
		},
	})
	if err != nil {
		return fail(fmt.Errorf("exec %s: %w", spec.Args[0], err))
	}
	devNull.Close()
	status.Close()
	// Reap every orphan that gets reparented to us; end with the command.
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return exitSetupFailed
		}
		if wpid != pid {
			continue
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}

// enterCwd makes the command's working dir (absolute, default "/") and
// changes into it.
func enterCwd(cwd string) (string, error) {
	if cwd == "" {
		cwd = "/"
	}
	if !filepath.IsAbs(cwd) {
		cwd = "/" + cwd
	}
	if err := os.MkdirAll(cwd, 0o755); err != nil {
		return "", fmt.Errorf("create working dir %s: %w", cwd, err)
	}
	if err := os.Chdir(cwd); err != nil {
		return "", fmt.Errorf("working dir %s: %w", cwd, err)
	}
	return cwd, nil
}

// setupRoot mounts the rootfs and its pseudo filesystems, then pivots into it.
func setupRoot(spec *initSpec) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if len(spec.Rootfs) != 1 {
		return fmt.Errorf("want exactly one rootfs mount, got %d", len(spec.Rootfs))
	}
	m := spec.Rootfs[0]
	// The mount point: Mount.Dir itself (shadowing it only in this
	// namespace; relative options resolve against the cwd underneath), a
	// bind's source itself, else /tmp, equally private here.
	root := "/tmp"
	switch {
	case m.Dir != "":
		if err := os.Chdir(m.Dir); err != nil {
			return fmt.Errorf("rootfs dir: %w", err)
		}
		root = m.Dir
	case m.Type == "bind":
		// Onto itself: shadowing /tmp would hide bind sources under it.
		root = m.Source
	}
	// nodev: a device node a layer carries is an inert entry here.
	flags := uintptr(unix.MS_NODEV)
	data := strings.Join(m.Options, ",")
	if m.Type == "bind" {
		flags, data = unix.MS_BIND|unix.MS_REC, ""
	}
	if err := unix.Mount(m.Source, root, m.Type, flags, data); err != nil {
		return rootfsError{fmt.Errorf("mount rootfs (%s %s): %w", m.Type, data, err)}
	}
	if m.Type == "bind" {
		if err := restrictBind(root, false); err != nil {
			return rootfsError{fmt.Errorf("mount rootfs nodev: %w", err)}
		}
	}
	if err := os.Chdir(root); err != nil { // now inside the new mount
		return err
	}
	if err := mountPseudo(root, spec); err != nil {
		return err
	}
	if err := mountExtra(root, spec.Mounts, spec.Files); err != nil {
		return err
	}
	if spec.Network != NetworkHost {
		if err := loopbackUp(); err != nil {
			return fmt.Errorf("bring up loopback: %w", err)
		}
	}
	hostname := spec.Hostname
	if hostname == "" {
		hostname = "minibuild"
	}
	if err := unix.Sethostname([]byte(hostname)); err != nil {
		return fmt.Errorf("set hostname: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	return os.Chdir("/")
}

// rootfsError marks a failure to mount the rootfs itself.
type rootfsError struct{ error }

func (e rootfsError) Unwrap() error { return e.error }

// target returns root/rel when every component of rel exists and none is a
// symlink (a symlink could point a mount anywhere), and the last is a dir
// or not as wanted.
func target(root, rel string, dir bool) (string, bool) {
	p := root
	for _, c := range strings.Split(rel, "/") {
		p = filepath.Join(p, c)
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&fs.ModeSymlink != 0 {
			return "", false
		}
	}
	fi, _ := os.Lstat(p)
	if fi.IsDir() != dir {
		return "", false
	}
	return p, true
}

// mountPseudo mounts /proc, /dev and /sys (read-only, docker's paths
// masked unless insecure) and the host files.
func mountPseudo(root string, spec *initSpec) error {
	const noSuidDevExec = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	proc, ok := target(root, "proc", true)
	if !ok {
		return errors.New("rootfs has no /proc directory")
	}
	if err := unix.Mount("proc", proc, "proc", noSuidDevExec, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	if err := mountDev(root); err != nil {
		return fmt.Errorf("set up /dev: %w", err)
	}
	if sys, ok := target(root, "sys", true); ok {
		// Best effort: some hosts refuse sysfs here, and builds rarely need it.
		unix.Mount("sysfs", sys, "sysfs", noSuidDevExec|unix.MS_RDONLY, "")
	}
	if !spec.Insecure {
		if err := maskKernelPaths(root); err != nil {
			return err
		}
	}
	for _, f := range hostFiles {
		dst, ok := target(root, f, false)
		if !ok {
			continue
		}
		if data := replaced(spec, f); data != nil {
			if err := mountFile(root, dst, File{Data: data, Mode: 0o644}, -1); err != nil {
				return fmt.Errorf("mount /%s: %w", f, err)
			}
			continue
		}
		if _, err := os.Stat("/" + f); err != nil {
			continue
		}
		if err := unix.Mount("/"+f, dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /%s: %w", f, err)
		}
		if err := restrictBind(dst, true); err != nil {
			return fmt.Errorf("bind /%s read-only: %w", f, err)
		}
	}
	return nil
}

// replaced is what the step sees instead of the host's file f, if any:
// the private network's resolv.conf, --add-host's hosts.
func replaced(spec *initSpec, f string) []byte {
	switch f {
	case "etc/resolv.conf":
		return spec.ResolvConf
	case "etc/hosts":
		return spec.Hosts
	}
	return nil
}

func mountDev(root string) error {
	dev, ok := target(root, "dev", true)
	if !ok {
		return errors.New("rootfs has no /dev directory")
	}
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_STRICTATIME, "mode=755,size=65536k"); err != nil {
		return err
	}
	nodes := []struct {
		name         string
		major, minor uint32
	}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}}
	for _, n := range nodes {
		p := filepath.Join(dev, n.name)
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(n.major, n.minor))); err != nil {
			return fmt.Errorf("mknod %s: %w", n.name, err)
		}
		if err := os.Chmod(p, 0o666); err != nil {
			return err
		}
	}
	links := [][2]string{{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}, {"pts/ptmx", "ptmx"}}
	for _, l := range links {
		if err := os.Symlink(l[0], filepath.Join(dev, l[1])); err != nil {
			return err
		}
	}
	for _, d := range []string{"pts", "shm", "mqueue"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return err
		}
	}
	// Optional extras: a private pty instance and POSIX shm/mqueue.
	unix.Mount("devpts", filepath.Join(dev, "pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
	unix.Mount("mqueue", filepath.Join(dev, "mqueue"), "mqueue", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	return unix.Mount("shm", filepath.Join(dev, "shm"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=65536k")
}

// lookPath finds file in the PATH of env (inside the new root), like a
// shell would for the command.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	pathVar := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathVar = v
		}
	}
	for _, dir := range filepath.SplitList(pathVar) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			if !filepath.IsAbs(p) {
				p = "./" + p
			}
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", file)
}
