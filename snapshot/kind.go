package snapshot

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Kind selects how a snapshot's rootfs is made.
type Kind string

// The snapshotter kinds.
const (
	// KindAuto uses overlay where an overlay mount works under the root
	// (probed once), else copy.
	KindAuto Kind = "auto"
	// KindOverlay stacks the extracted layers under a fresh upper dir.
	KindOverlay Kind = "overlay"
	// KindCopy copies the merged chain into a plain dir (for hosts that
	// refuse overlayfs) and diffs it against what it copied. The layers
	// are the same as overlay's.
	KindCopy Kind = "copy"
)

// ParseKind parses a --snapshotter value ("" is auto).
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case "":
		return KindAuto, nil
	case KindAuto, KindOverlay, KindCopy:
		return k, nil
	}
	return "", fmt.Errorf("unknown snapshotter %q (want auto, overlay or copy)", s)
}

// SetKind chooses the snapshotter kind, before snapshots are made (it
// settles again at the next Probe, Prepare or BindView).
func (sn *Snapshotter) SetKind(k Kind) {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	sn.kind, sn.settled, sn.copying, sn.fallback = k, false, false, nil
	sn.reported.Store(false)
}

// Probe settles how this Snapshotter makes snapshots: overlay or copy. In
// KindAuto it mounts a throwaway overlay under the root, once, and copies
// from then on if that fails. It returns the reason for falling back to
// its first caller after the fall-back (nil to every other, and whenever
// overlay is used), so that the user is told once. Prepare and BindView
// settle it too; call Probe first to hear the reason.
func (sn *Snapshotter) Probe() error {
	if _, fallback := sn.settle(); fallback != nil && sn.reported.CompareAndSwap(false, true) {
		return fallback
	}
	return nil
}

// copies settles the kind and tells whether snapshots are copies.
func (sn *Snapshotter) copies() bool {
	copying, _ := sn.settle()
	return copying
}

func (sn *Snapshotter) settle() (copying bool, fallback error) {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if !sn.settled {
		switch sn.kind {
		case KindCopy:
			sn.copying = true
		case KindOverlay:
		default:
			if err := sn.probeOverlay(); err != nil {
				sn.copying, sn.fallback = true, err
			}
		}
		sn.settled = true
	}
	return sn.copying, sn.fallback
}

// overlayOptions are the options of every overlay minibuild mounts. The
// upper dir stays a plain diff: no redirects or metadata-only copies that
// Diff would have to chase into lower layers.
func overlayOptions(lowers []string, upper, work string) []string {
	return []string{
		"lowerdir=" + strings.Join(lowers, ":"),
		"upperdir=" + upper,
		"workdir=" + work,
		"redirect_dir=off",
		"metacopy=off",
		"index=off",
	}
}

// mountTestOverlay mounts an overlay as Prepare's are (the same options,
// lower dir under layers, upper and work under tmp) and unmounts it, in a
// mount namespace private to one OS thread: the thread never returns to
// the Go scheduler, so the namespace, and any mount in it, dies with it.
func (sn *Snapshotter) mountTestOverlay() error {
	dir, release, err := sn.tempDir("o")
	if err != nil {
		return err
	}
	defer release()
	var paths []string
	for _, d := range []string{"upper", "work", "merged"} {
		p := filepath.Join(dir, d)
		if err := os.Mkdir(p, 0o755); err != nil {
			return err
		}
		paths = append(paths, p)
	}
	data := strings.Join(overlayOptions([]string{filepath.Join(sn.layersDir, emptyDir)}, paths[0], paths[1]), ",")
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with its namespace
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("new mount namespace: %w", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			errc <- fmt.Errorf("make mounts private: %w", err)
			return
		}
		if err := unix.Mount("overlay", paths[2], "overlay", 0, data); err != nil {
			errc <- fmt.Errorf("mount overlay (%s): %w", data, err)
			return
		}
		errc <- unix.Unmount(paths[2], 0)
	}()
	return <-errc
}
