package sandbox_test

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/minibuild/minibuild/sandbox"
	"github.com/minibuild/minibuild/snapshot"
)

// capBnd is the bounding set /proc/self/status shows, as a number.
func capBnd(t *testing.T, status string) uint64 {
	t.Helper()
	for _, l := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no CapBnd in %q", status)
	return 0
}

// The command gets docker's capabilities (less CAP_MKNOD, and less
// CAP_NET_RAW on the host's network), the seccomp filter, only fds 0-2,
// masked kernel paths and a nodev rootfs; insecure lifts filter, caps and
// masks.
func TestHardening(t *testing.T) {
	f := newFixture(t)
	for _, kind := range []snapshot.Kind{snapshot.KindOverlay, snapshot.KindCopy} {
		t.Run(string(kind), func(t *testing.T) {
			s := f.prepareKind(t, kind, f.base)
			ctx := context.Background()
			// A descriptor without O_CLOEXEC, as a caller's shell leaves one.
			fd, err := syscall.Open("/", syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer syscall.Close(fd)
			out, err := run(ctx, s, sandbox.Spec{}, `ls /proc/self/fd | sort -n | tr '\n' ' '`)
			if err != nil || out != "0 1 2 3 " { // 3: ls's own directory
				t.Errorf("descriptors in RUN: %q, %v; want 0 1 2 (and ls's 3)", out, err)
			}
			for _, tc := range []struct{ name, script, want string }{
				{"unshare user ns", "unshare -U true 2>/dev/null && echo made || echo refused", "refused\n"},
				{"unshare net ns", "unshare -n true 2>/dev/null && echo made || echo refused", "refused\n"},
				{"mount", "mount -t tmpfs t /mnt 2>/dev/null && echo mounted || echo refused", "refused\n"},
				{"kcore masked", "cat /proc/kcore 2>/dev/null | wc -c", "0\n"},
				{"keys masked", "cat /proc/keys | wc -c", "0\n"},
				{"proc sys read-only", "echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo wrote || echo refused", "refused\n"},
				{"sysrq read-only", "echo h > /proc/sysrq-trigger 2>/dev/null && echo wrote || echo refused", "refused\n"},
				{"dev works", "echo x > /dev/null && head -c 3 /dev/urandom | wc -c && test -c /dev/ptmx -o -L /dev/ptmx && echo ok", "3\nok\n"},
				{"rootfs nodev", `awk '$5 == "/" {print $6}' /proc/self/mountinfo | grep -c nodev`, "1\n"},
			} {
				out, err := run(ctx, s, sandbox.Spec{}, tc.script)
				if err != nil || out != tc.want {
					t.Errorf("%s: %q, %v; want %q", tc.name, out, err, tc.want)
				}
			}
			const netRaw = 1 << unix.CAP_NET_RAW
			const mknod = 1 << unix.CAP_MKNOD
			for _, tc := range []struct {
				net     sandbox.Network
				wantRaw bool
			}{{sandbox.NetworkHost, false}, {sandbox.NetworkNone, true}} {
				out, err := run(ctx, s, sandbox.Spec{Network: tc.net}, "cat /proc/self/status")
				if err != nil {
					t.Fatal(err)
				}
				bnd := capBnd(t, out)
				if (bnd&netRaw != 0) != tc.wantRaw || bnd&mknod != 0 || bnd&(1<<unix.CAP_SYS_ADMIN) != 0 {
					t.Errorf("network %s: bounding set %#x", tc.net, bnd)
				}
			}
			out, err = run(ctx, s, sandbox.Spec{Insecure: true}, "unshare -U true && echo made; wc -c < /proc/keys | tr -d ' '")
			if err != nil || out == "made\n0\n" || !strings.HasPrefix(out, "made\n") {
				t.Errorf("insecure: %q, %v; want unshare allowed and /proc/keys unmasked", out, err)
			}
		})
	}
}
