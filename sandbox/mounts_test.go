package sandbox_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/mount"
	"github.com/minibuild/minibuild/sandbox"
	"github.com/minibuild/minibuild/snapshot"
)

// prepareKind prepares a snapshot of the chain with the given kind and
// extra mount points.
func (f *fixture) prepareKind(t *testing.T, kind snapshot.Kind, layers []snapshot.Layer, points ...mount.Point) *snapshot.Snapshot {
	t.Helper()
	f.sn.SetKind(kind)
	s, err := f.sn.Prepare(context.Background(), layers, append(sandbox.MountPoints(), points...)...)
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

func TestMounts(t *testing.T) {
	f := newFixture(t)
	for _, kind := range []snapshot.Kind{snapshot.KindOverlay, snapshot.KindCopy} {
		t.Run(string(kind), func(t *testing.T) {
			hostDir := t.TempDir()
			if err := os.WriteFile(filepath.Join(hostDir, "in.txt"), []byte("from host\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			cacheDir := t.TempDir()
			points := []mount.Point{{Path: "/src", Dir: true}, {Path: "/var/cache/x", Dir: true},
				{Path: "/scratch", Dir: true}, {Path: "/run/secrets/tok", Dir: false}, {Path: "/tmp", Dir: true}}
			s := f.prepareKind(t, kind, f.base, points...)
			spec := sandbox.Spec{Mounts: []mount.Mount{
				{Target: "/src", Type: "bind", Source: hostDir, ReadOnly: true},
				{Target: "/var/cache/x", Type: "bind", Source: cacheDir},
				{Target: "/scratch", Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m"}},
			}, Files: []sandbox.File{
				{Target: "/run/secrets/tok", Data: []byte("s3cr3t"), Mode: 0o400, UID: 1000, GID: 1000},
			}}
			out, err := run(context.Background(), s, spec, `set -e
cat /src/in.txt
echo x > /src/new 2>/dev/null && echo src-writable || echo src-readonly
echo cached > /var/cache/x/c
echo tmp > /scratch/t; dd if=/dev/zero of=/scratch/big bs=1k count=2048 2>/dev/null && echo big-fits || echo size-limited
cat /run/secrets/tok; echo
stat -c '%a %u %g' /run/secrets/tok
echo x > /run/secrets/tok 2>/dev/null && echo secret-writable || echo secret-readonly
ls -a /dev | grep -c minibuild || true
echo made > /made`)
			if err != nil {
				t.Fatalf("run: %v\n%s", err, out)
			}
			want := "from host\nsrc-readonly\nsize-limited\ns3cr3t\n400 1000 1000\nsecret-readonly\n0\n"
			if out != want {
				t.Errorf("got:\n%s\nwant:\n%s", out, want)
			}
			if b, _ := os.ReadFile(filepath.Join(cacheDir, "c")); string(b) != "cached\n" {
				t.Errorf("rw bind did not write through: %q", b)
			}
			names, _ := f.diff(t, s)
			if len(names) != 1 || names[0] != "made" {
				t.Errorf("diff = %q, want only the file the command made: no mount point, no mounted content", names)
			}
		})
	}
}

// A mount point behind a symlink resolves inside the rootfs, and a file
// the command creates next to a stub makes its parent appear in the diff.
func TestMountPointThroughSymlink(t *testing.T) {
	f := newFixture(t)
	for _, kind := range []snapshot.Kind{snapshot.KindOverlay, snapshot.KindCopy} {
		t.Run(string(kind), func(t *testing.T) {
			s := f.prepareKind(t, kind, f.base, mount.Point{Path: "/run", Dir: true})
			spec := sandbox.Spec{Mounts: []mount.Mount{{Target: "/run", Type: "tmpfs", Source: "tmpfs"}}}
			if out, err := run(context.Background(), s, spec, `ln -s /run /var/run && touch /run/a`); err != nil {
				t.Fatalf("run: %v\n%s", err, out)
			}
			names, l := f.diff(t, s)
			if strings.Join(names, ",") != "var/,var/run" {
				t.Errorf("diff = %q", names)
			}
			chain := append(append([]snapshot.Layer{}, f.base...), l)
			s2 := f.prepareKind(t, kind, chain, mount.Point{Path: "/var/run/secrets/a", Dir: false})
			spec = sandbox.Spec{Files: []sandbox.File{{Target: "/var/run/secrets/a", Data: []byte("v"), Mode: 0o444}}}
			out, err := run(context.Background(), s2, spec, `cat /run/secrets/a; touch /run/b`)
			if err != nil || out != "v" {
				t.Fatalf("run: %q, %v", out, err)
			}
			names, _ = f.diff(t, s2)
			if strings.Join(names, ",") != "run/,run/b" {
				t.Errorf("diff = %q, want run/ and run/b only (no secrets dir, no stub)", names)
			}
		})
	}
}

func TestNetwork(t *testing.T) {
	f := newFixture(t)
	s := f.prepare(t, f.base)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello from host\n"))
			c.Close()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	connect := "nc -w 2 127.0.0.1 " + port + " </dev/null || echo unreachable"
	for _, tc := range []struct {
		net  sandbox.Network
		want string
	}{
		{"", "unreachable\n"}, // private: its 127.0.0.1 is its own
		{sandbox.NetworkDefault, "unreachable\n"},
		{sandbox.NetworkHost, "hello from host\n"},
		{sandbox.NetworkNone, "unreachable\n"},
	} {
		out, err := run(context.Background(), s, sandbox.Spec{Network: tc.net}, connect)
		if err != nil || out != tc.want {
			t.Errorf("network %q: %q, %v; want %q", tc.net, out, err, tc.want)
		}
	}
	// Only loopback, and it is up: a server inside the step is reachable.
	out, err := run(context.Background(), s, sandbox.Spec{Network: sandbox.NetworkNone}, `set -e
tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '
(echo inside | nc -l -p 7777 127.0.0.1 &) ; sleep 0.3
nc -w 2 127.0.0.1 7777 </dev/null`)
	if err != nil || out != "lo\ninside\n" {
		t.Errorf("network none: %q, %v; want only lo, up", out, err)
	}
	if err := sandbox.Run(context.Background(), sandbox.Spec{Rootfs: s.Mounts(), Args: []string{"true"}, Network: "bridge"}); err == nil {
		t.Error("unknown network mode accepted")
	}
}

// The copying snapshotter makes byte-identical layers to overlay's for the
// same command: whiteouts, opaque dirs, hard links, modes, ownership.
func TestCopyMatchesOverlay(t *testing.T) {
	f := newFixture(t)
	epoch := time.Unix(1700000000, 0) // before now: every new mtime is clamped
	script := `set -e
mkdir -p /app/sub && echo hi > /app/x && ln /app/x /app/y && ln -s x /app/link
chmod 4755 /app/x; chown 1000:1000 /app/sub; chmod 0750 /app/sub
rm /etc/group
rm -rf /usr && mkdir /usr && touch /usr/new
rm -rf /var/log
ln /bin/busybox /bb
chmod 0700 /home/app; chown 0:0 /home/app
touch /etc/passwd; echo more >> /sbin/s
echo new > /tmp/new; rm /tmp/new
rm /bin/ls && echo replaced > /bin/ls
rm -rf /var/tmp && echo file > /var/tmp
mkfifo /fifo
mkdir /opt && echo o > /opt/o && rm -rf /opt && mkdir /opt
echo p >> /root/.profile; test "$(ls -A /root)" = .profile; test ! -e /bin/cat`
	base := append([]snapshot.Layer{}, f.base...)
	// A second layer with a whiteout, an opaque dir and a hard link, so
	// that the copy merges a real chain.
	s0 := f.prepareKind(t, snapshot.KindOverlay, base)
	if out, err := run(context.Background(), s0, sandbox.Spec{}, `set -e; rm /bin/cat; mkdir -p /var/log/a /var/tmp /home/app /sbin; echo l > /var/log/a/l; echo s > /sbin/s; ln /sbin/s /sbin/t; rm -rf /root && mkdir -m 700 /root && touch /root/.profile`); err != nil {
		t.Fatalf("base step: %v\n%s", err, out)
	}
	_, l0 := f.diff(t, s0)
	base = append(base, l0)

	digests := map[snapshot.Kind]string{}
	listing := map[snapshot.Kind][]string{}
	for _, kind := range []snapshot.Kind{snapshot.KindOverlay, snapshot.KindCopy} {
		s := f.prepareKind(t, kind, base, mount.Point{Path: "/run/secrets/x"}, mount.Point{Path: "/cache", Dir: true})
		spec := sandbox.Spec{
			Mounts: []mount.Mount{{Target: "/cache", Type: "tmpfs", Source: "tmpfs"}},
			Files:  []sandbox.File{{Target: "/run/secrets/x", Data: []byte("x"), Mode: 0o400}},
		}
		if out, err := run(context.Background(), s, spec, script); err != nil {
			t.Fatalf("%s: %v\n%s", kind, err, out)
		}
		var buf bytes.Buffer
		w := layer.NewWriter(&buf, layer.Options{Epoch: &epoch})
		if err := s.Diff(w); err != nil {
			t.Fatal(err)
		}
		desc, err := w.Close()
		if err != nil {
			t.Fatal(err)
		}
		digests[kind] = desc.Digest.String()
		listing[kind], _ = f.diff(t, s)
	}
	if digests[snapshot.KindOverlay] != digests[snapshot.KindCopy] {
		t.Errorf("layers differ:\noverlay %s\n  %q\ncopy    %s\n  %q", digests[snapshot.KindOverlay], listing[snapshot.KindOverlay],
			digests[snapshot.KindCopy], listing[snapshot.KindCopy])
	}
	for _, want := range []string{"etc/.wh.group", "usr/.wh..wh..opq", "root/.profile", "var/.wh.log", "app/y link app/x", "bb", "bin/busybox link bb"} {
		if !has(listing[snapshot.KindCopy], want) && !has(listing[snapshot.KindCopy], strings.Replace(want, "bin/busybox link bb", "bb link bin/busybox", 1)) {
			t.Errorf("copy diff lacks %q: %q", want, listing[snapshot.KindCopy])
		}
	}
}

// The snapshotter's bind views: read-only, or with rw a throwaway layer
// (an overlay, or a scratch copy when copying) that never writes through.
func TestBindViews(t *testing.T) {
	f := newFixture(t)
	for _, kind := range []snapshot.Kind{snapshot.KindOverlay, snapshot.KindCopy} {
		t.Run(string(kind), func(t *testing.T) {
			host := t.TempDir()
			if err := os.WriteFile(filepath.Join(host, "in.txt"), []byte("in\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			s := f.prepareKind(t, kind, f.base, mount.Point{Path: "/ro", Dir: true}, mount.Point{Path: "/rw", Dir: true}, mount.Point{Path: "/f"})
			var spec sandbox.Spec
			for _, v := range []struct {
				host, target string
				writable     bool
			}{{host, "/ro", false}, {host, "/rw", true}, {filepath.Join(host, "in.txt"), "/f", true}} {
				m, release, err := f.sn.BindView(context.Background(), v.host, v.target, v.writable)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { release() })
				spec.Mounts = append(spec.Mounts, m)
			}
			if want := map[snapshot.Kind]string{snapshot.KindOverlay: "overlay", snapshot.KindCopy: "bind"}[kind]; spec.Mounts[1].Type != want {
				t.Errorf("writable dir view is %s, want %s", spec.Mounts[1].Type, want)
			}
			out, err := run(context.Background(), s, spec, `cat /ro/in.txt
echo x > /ro/new 2>/dev/null && echo ro-writable || echo ro-readonly
echo more >> /rw/in.txt && echo new > /rw/new && cat /rw/in.txt /rw/new
echo f >> /f && cat /f`)
			if err != nil {
				t.Fatalf("run: %v\n%s", err, out)
			}
			if want := "in\nro-readonly\nin\nmore\nnew\nin\nf\n"; out != want {
				t.Errorf("got:\n%s\nwant:\n%s", out, want)
			}
			if b, _ := os.ReadFile(filepath.Join(host, "in.txt")); string(b) != "in\n" {
				t.Errorf("a writable view wrote through: %q", b)
			}
			if _, err := os.Stat(filepath.Join(host, "new")); err == nil {
				t.Error("a writable view created a host file")
			}
		})
	}
}
