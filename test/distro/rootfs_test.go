package distro

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// mirror is where debootstrap and the cases' apt-get fetch packages (plain
// http: the base has no CA certificates).
const mirror = "http://deb.debian.org/debian"

// errNoMirror makes the suite skip rather than fail.
var errNoMirror = errors.New("distro: the Debian mirror " + mirror + " cannot be reached; skipping the real-distribution tests")

// cacheDir is where the debootstrap rootfs is kept between runs: its rootfs/
// holds the tree, and exists only once complete.
func cacheDir() string {
	if d := os.Getenv("MINIBUILD_DISTRO_CACHE"); d != "" {
		return d
	}
	return "/var/cache/minibuild-test/debian-bookworm"
}

// debianRootfs returns DIR/rootfs, building it with debootstrap when absent.
// It is built in a temporary sibling directory and renamed into place when
// complete, so that a killed run never leaves a half tree that looks done; a
// lock file serialises concurrent runs on the same machine.
func debianRootfs(dir string) (string, error) {
	if err := probeMirror(); err != nil {
		return "", err
	}
	rootfs := filepath.Join(dir, "rootfs")
	if _, err := os.Stat(filepath.Join(rootfs, "etc", "debian_version")); err == nil {
		return rootfs, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(rootfs, "etc", "debian_version")); err == nil {
		return rootfs, nil // another run finished it while we waited
	}
	stale, _ := filepath.Glob(filepath.Join(dir, ".rootfs.tmp-*")) // left by killed runs
	for _, d := range stale {
		os.RemoveAll(d)
	}
	tmp, err := os.MkdirTemp(dir, ".rootfs.tmp-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	fmt.Fprintf(os.Stderr, "distro: debootstrap --variant=minbase bookworm into %s (a few minutes, once per machine)\n", rootfs)
	cmd := exec.Command("debootstrap", "--variant=minbase", "bookworm", filepath.Join(tmp, "rootfs"), mirror)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("debootstrap: %v\n%s", err, tailBytes(out, 40))
	}
	if err := trimRootfs(filepath.Join(tmp, "rootfs")); err != nil {
		return "", err
	}
	os.RemoveAll(rootfs) // a tree without etc/debian_version is not ours to keep
	if err := os.Rename(filepath.Join(tmp, "rootfs"), rootfs); err != nil {
		return "", err
	}
	fmt.Fprintf(os.Stderr, "distro: debootstrap took %v\n", time.Since(start).Round(time.Second))
	return rootfs, nil
}

// trimRootfs removes what an image of the distribution does not ship: the
// downloaded .debs and package lists, device nodes (a runtime mounts /dev),
// the host's hostname and resolv.conf that debootstrap copied, and its log.
func trimRootfs(root string) error {
	for _, glob := range []string{"var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
		"dev/*", "etc/hostname", "etc/resolv.conf", "var/log/bootstrap.log"} {
		matches, err := filepath.Glob(filepath.Join(root, glob))
		if err != nil {
			return err
		}
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				return err
			}
		}
	}
	return os.MkdirAll(filepath.Join(root, "var/lib/apt/lists/partial"), 0o755)
}

// probeMirror checks that the mirror answers over http.
func probeMirror() error {
	c := http.Client{Timeout: 20 * time.Second}
	resp, err := c.Head(mirror + "/dists/bookworm/Release")
	if err != nil {
		return fmt.Errorf("%w (%v)", errNoMirror, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w (HTTP %s)", errNoMirror, resp.Status)
	}
	return nil
}

func tailBytes(b []byte, n int) string { return tail(string(b), n) }
