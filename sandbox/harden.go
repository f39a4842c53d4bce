package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// What a RUN may do, as docker's default container (moby's
// oci.DefaultLinuxSpec and daemon/oci_linux.go, runc's libcontainer) with
// two differences that are stricter: CAP_MKNOD is not kept, since without
// a device cgroup a node made on the sandbox's own /dev (a tmpfs that is
// not nodev) would open the host's disk; and CAP_NET_RAW is not kept when
// the step shares the host's network namespace, where a raw or packet
// socket sees the host's traffic. no_new_privs stays off as in docker:
// setuid binaries (su, sudo) work, within the bounding set.

// keptCap reports the capabilities a command may keep.
func keptCap(c int, hostNet bool) bool {
	switch c {
	case unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_FSETID,
		unix.CAP_KILL, unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_SETPCAP,
		unix.CAP_NET_BIND_SERVICE, unix.CAP_SYS_CHROOT, unix.CAP_AUDIT_WRITE, unix.CAP_SETFCAP:
		return true
	case unix.CAP_NET_RAW:
		return !hostNet
	}
	return false
}

// dropCaps limits what the command (forked from this thread) can gain:
// the bounding set shrinks to keptCap (all of it when insecure),
// inheritable and ambient sets empty.
func dropCaps(hostNet, insecure bool) error {
	last := 40
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		fmt.Sscan(string(b), &last)
	}
	for c := 0; c <= last && !insecure; c++ {
		if keptCap(c, hostNet) {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}

// cloexecFrom marks every descriptor from low up close-on-exec, so that a
// descriptor minibuild's caller left open (`exec 8<dir; minibuild build`)
// never reaches a RUN. It marks rather than closes: the Go runtime owns
// some descriptors (its poller's) and must keep them until exec.
// close_range(2) does it in one call (Linux 5.11); older kernels get a
// loop over /proc/self/fd.
func cloexecFrom(low int) error {
	err := unix.CloseRange(uint(low), ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil || !(errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL)) {
		return err
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list descriptors: %w", err)
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < low {
			continue
		}
		// The directory's own fd is closed by now: EBADF is fine.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && !errors.Is(err, unix.EBADF) {
			return fmt.Errorf("descriptor %d: %w", fd, err)
		}
	}
	return nil
}

// maskedPaths and readonlyPaths are docker's default spec's (moby
// oci/defaults.go): host-wide knobs and leaks a build has no business
// with. A masked dir gets an empty read-only tmpfs, a masked file
// /dev/null; paths the kernel lacks are skipped.
var (
	maskedPaths = []string{"proc/acpi", "proc/asound", "proc/interrupts", "proc/kcore", "proc/keys",
		"proc/latency_stats", "proc/timer_list", "proc/timer_stats", "proc/sched_debug", "proc/scsi",
		"sys/firmware", "sys/devices/virtual/powercap"}
	readonlyPaths = []string{"proc/bus", "proc/fs", "proc/irq", "proc/sys", "proc/sysrq-trigger"}
)

// maskKernelPaths applies maskedPaths and readonlyPaths under root (the
// rootfs before pivot_root, its /proc and /sys mounted).
func maskKernelPaths(root string) error {
	for _, p := range readonlyPaths {
		p = filepath.Join(root, p)
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", p, err)
		}
		if err := restrictBind(p, true); err != nil {
			return fmt.Errorf("%s read-only: %w", p, err)
		}
	}
	for _, p := range maskedPaths {
		p = filepath.Join(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		if fi.IsDir() {
			err = unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		} else {
			err = unix.Mount("/dev/null", p, "", unix.MS_BIND, "")
		}
		if err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
	}
	return nil
}

// restrictBind makes the bind mount at p, and every mount under it,
// nodev (no device node on it opens a device) and read-only with ro,
// keeping its other flags. mount_setattr(2) does it recursively (Linux
// 5.12); older kernels get a remount of the top mount.
func restrictBind(p string, ro bool) error {
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NODEV}
	if ro {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	err := unix.MountSetattr(unix.AT_FDCWD, p, unix.AT_RECURSIVE, &attr)
	if !errors.Is(err, unix.ENOSYS) {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return err
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_NODEV)
	for _, f := range [][2]uintptr{{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NOEXEC, unix.MS_NOEXEC}, {unix.ST_RDONLY, unix.MS_RDONLY}} {
		if uintptr(st.Flags)&f[0] != 0 {
			flags |= f[1]
		}
	}
	if ro {
		flags |= unix.MS_RDONLY
	}
	return unix.Mount("", p, "", flags, "")
}

// harden is the init's last step before the fork, on the thread that
// forks: capabilities, descriptors, then (unless insecure) the seccomp
// filter, which from here on applies to the init's thread too.
func harden(spec *initSpec) error {
	if err := dropCaps(spec.HostNet, spec.Insecure); err != nil {
		return err
	}
	if err := cloexecFrom(3); err != nil {
		return err
	}
	if spec.Insecure {
		return nil
	}
	return loadSeccomp()
}
