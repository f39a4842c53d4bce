// Package snapshot provides rootfs views over layer chains.
//
// Every layer blob is extracted once, safely (DESIGN.md invariant 5), into
// root/snapshots/layers/<id>/ in overlayfs "lowerdir" form: OCI whiteouts
// become overlay whiteouts (0/0 char devices) and opaque markers become the
// trusted.overlay.opaque xattr. Extracted layers are shared by every image
// that uses them. Prepare stacks a chain under a fresh upper dir; the caller
// (the sandbox) mounts the returned overlay inside its own mount namespace,
// so a killed build leaves no mount behind. Diff turns the upper dir back
// into OCI layer entries. Temporary dirs live under root/snapshots/tmp/ and
// are guarded by a flock held by the live process, so Cleanup can remove
// what killed runs left while other minibuild processes keep working.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"syscall"

	"golang.org/x/sys/unix"
)

// BlobOpener reads layer blobs by digest; *store.Store satisfies it.
type BlobOpener interface {
	OpenBlob(d digest.Digest) (io.ReadCloser, error)
}

// Layer names one layer of a chain: Digest is the blob to read, DiffID
// (optional but recommended) the digest of its uncompressed tar, which is
// verified during extraction and names the extracted dir.
type Layer struct {
	Digest, DiffID digest.Digest
}

// id is the short name of the extracted dir. Short names keep the overlay
// option string under one page for chains of 200+ layers.
func (l Layer) id() (string, error) {
	d := l.DiffID
	if d == "" {
		d = l.Digest
	}
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("layer %q: %w", d, err)
	}
	return d.Encoded()[:16], nil
}

// Mount describes a filesystem to mount as the rootfs.
type Mount struct {
	Type, Source string
	Options      []string
	// Dir, when set, is the directory the mounter must chdir into before
	// mounting: relative paths in Options are relative to it.
	Dir string
}

// Snapshotter manages extracted layers and snapshots under one root.
type Snapshotter struct {
	blobs     BlobOpener
	layersDir string
	tmpDir    string
	cacheDir  string
	kind      Kind
	// overlayFailed is set once an overlay mount failed in KindAuto: the
	// rest of this process copies.
	overlayFailed atomic.Bool
}

// Kind selects how a snapshot's rootfs is made.
type Kind string

// The snapshotter kinds.
const (
	// KindAuto uses overlay until an overlay mount fails once, then copy.
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

// emptyDir is the lower dir of an empty chain (FROM scratch); it cannot
// collide with a layer id, which is hex.
const emptyDir = "empty"

// New returns a Snapshotter keeping its data under root/snapshots. Its
// kind is KindAuto until SetKind.
func New(root string, blobs BlobOpener) (*Snapshotter, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("snapshotter root: %w", err)
	}
	sn := &Snapshotter{
		blobs:     blobs,
		layersDir: filepath.Join(abs, "snapshots", "layers"),
		tmpDir:    filepath.Join(abs, "snapshots", "tmp"),
		cacheDir:  filepath.Join(abs, "snapshots", "cachemounts"),
		kind:      KindAuto,
	}
	for _, d := range []string{filepath.Join(sn.layersDir, emptyDir), sn.tmpDir, sn.cacheDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create snapshotter dir: %w", err)
		}
	}
	return sn, nil
}

// SetKind chooses the snapshotter kind; call it before the first Prepare.
func (sn *Snapshotter) SetKind(k Kind) { sn.kind = k }

// Kind is the kind the next Prepare uses: overlay or copy.
func (sn *Snapshotter) Kind() Kind {
	if sn.kind == KindCopy || (sn.kind == KindAuto && sn.overlayFailed.Load()) {
		return KindCopy
	}
	return KindOverlay
}

// OverlayFailed tells the snapshotter that mounting an overlay snapshot
// failed. In KindAuto it switches to copying for the rest of the process
// and reports true: the caller should prepare again and retry.
func (sn *Snapshotter) OverlayFailed() bool {
	if sn.kind != KindAuto {
		return false
	}
	return sn.overlayFailed.CompareAndSwap(false, true)
}

// Snapshot is a writable view over a layer chain: extracted lower dirs plus
// a fresh upper and work dir (overlay), or a copy of the merged chain.
type Snapshot struct {
	lowers  []string // layer ids, top first
	chain   chain
	dir     string // tmp dir holding upper/ and work/, or rootfs/
	release func() error
	sn      *Snapshotter
	// copied is set for a KindCopy snapshot; base then records what was
	// copied, for Diff.
	copied bool
	base   map[string]baseEntry
	// stubs are mount points created for the sandbox (slash paths
	// relative to the root); they never reach a diff.
	stubs map[string]bool
	// stubParents are dirs created only to hold stubs; they reach a diff
	// only when something else inside them or their metadata changed.
	stubParents map[string]dirMeta
}

type dirMeta struct {
	mode     uint32
	uid, gid uint32
}

// MountPoint is a path (absolute, in the rootfs) where the sandbox will
// mount something; Dir tells whether it must be a directory.
type MountPoint struct {
	Path string
	Dir  bool
}

// sandboxStubs are the mount points every sandbox needs.
var sandboxStubs = [...]MountPoint{{"/dev", true}, {"/proc", true}, {"/sys", true}, {"/etc/hosts", false}, {"/etc/resolv.conf", false}}

// Prepare extracts the missing layers of the chain (bottom layer first, as
// in an image manifest) and returns a snapshot with a fresh upper dir (or
// a fresh copy, per Kind). The sandbox's own mount points and the extra
// ones given are created when the chain lacks them, and kept out of Diff.
func (sn *Snapshotter) Prepare(ctx context.Context, layers []Layer, extra ...MountPoint) (*Snapshot, error) {
	ids, err := sn.ensure(ctx, layers)
	if err != nil {
		return nil, err
	}
	dir, release, err := sn.tempDir("s")
	if err != nil {
		return nil, err
	}
	s := &Snapshot{dir: dir, release: release, sn: sn, stubs: map[string]bool{}, stubParents: map[string]dirMeta{}}
	// A layer can occur twice in a chain (two steps with identical diffs);
	// overlayfs refuses a repeated lowerdir. Keeping only the topmost
	// occurrence shows the same tree: it re-applies all the lower one did.
	seen := map[string]bool{}
	for i := len(ids) - 1; i >= 0; i-- {
		if !seen[ids[i]] {
			seen[ids[i]] = true
			s.lowers = append(s.lowers, ids[i])
		}
	}
	if len(s.lowers) == 0 {
		s.lowers = []string{emptyDir}
	}
	s.chain = sn.chainOf(ids)
	fail := func(err error) (*Snapshot, error) {
		release()
		return nil, fmt.Errorf("prepare snapshot: %w", err)
	}
	if sn.Kind() == KindCopy {
		s.copied = true
		if err := os.Mkdir(s.rootfs(), 0o755); err != nil {
			return fail(err)
		}
		if err := materialize(ctx, s.chain, s.rootfs()); err != nil {
			return fail(err)
		}
	} else {
		for _, d := range []string{"upper", "work"} {
			if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
				return fail(err)
			}
		}
		if n := len(strings.Join(s.mountOptions(), ",")); n >= os.Getpagesize() {
			return fail(fmt.Errorf("%d layers do not fit in one overlay mount", len(layers)))
		}
	}
	points := append(sandboxStubs[:len(sandboxStubs):len(sandboxStubs)], extra...)
	for i, mp := range points {
		// The sandbox's own stubs are best effort (a rootfs whose /etc is a
		// file gets no /etc/hosts); a RUN --mount target must work.
		if err := s.addStub(mp); err != nil && i >= len(sandboxStubs) {
			return fail(fmt.Errorf("mount point %s: %w", mp.Path, err))
		}
	}
	if s.copied {
		// Recorded last: the stubs' parents have new ctimes by now.
		if s.base, err = recordBase(s.rootfs()); err != nil {
			return fail(err)
		}
	}
	return s, nil
}

func (s *Snapshot) upper() string  { return filepath.Join(s.dir, "upper") }
func (s *Snapshot) rootfs() string { return filepath.Join(s.dir, "rootfs") }

// writable is the dir the sandbox's writes land in: the upper dir or the
// copied rootfs.
func (s *Snapshot) writable() string {
	if s.copied {
		return s.rootfs()
	}
	return s.upper()
}

func (s *Snapshot) mountOptions() []string {
	rel := "../tmp/" + filepath.Base(s.dir)
	return []string{
		"lowerdir=" + strings.Join(s.lowers, ":"),
		"upperdir=" + rel + "/upper",
		"workdir=" + rel + "/work",
		// Keep the upper dir a plain diff: no redirects or metadata-only
		// copies that Diff would have to chase into lower layers.
		"redirect_dir=off",
		"metacopy=off",
		"index=off",
	}
}

// Mounts returns the mount of the rootfs: an overlay whose paths are
// relative to Mount.Dir (so that long chains fit in one page of mount
// options), or a bind of the copied rootfs.
func (s *Snapshot) Mounts() []Mount {
	if s.copied {
		return []Mount{{Type: "bind", Source: s.rootfs()}}
	}
	return []Mount{{Type: "overlay", Source: "overlay", Options: s.mountOptions(), Dir: s.sn.layersDir}}
}

// Release removes the upper and work dirs (or the copy). The rootfs must
// be unmounted.
func (s *Snapshot) Release() error {
	if s.release == nil {
		return nil
	}
	err := s.release()
	s.release = nil
	return err
}

// addStub creates the mount point mp where the rootfs lacks it, with any
// missing parents, in the writable dir, and records them so that Diff
// leaves them out. Symlinks along the path resolve inside the rootfs.
func (s *Snapshot) addStub(mp MountPoint) error {
	rel, err := s.chain.canonical(mp.Path)
	if err != nil {
		return err
	}
	if rel == "" {
		return errors.New("cannot mount over the root")
	}
	w := s.writable()
	parts := strings.Split(rel, "/")
	var restore []string // existing dirs whose mtime a stub changed
	defer func() {
		for _, p := range restore {
			if _, fi, err := s.chain.lookup(p); err == nil {
				os.Chtimes(filepath.Join(w, p), fi.ModTime(), fi.ModTime())
			}
		}
	}()
	for i := 1; i < len(parts); i++ {
		parent := strings.Join(parts[:i], "/")
		if _, ok := s.stubParents[parent]; ok {
			continue
		}
		_, fi, err := s.chain.lookup(parent)
		switch {
		case err == nil && fi.IsDir():
			if s.copied {
				continue // already in the copy
			}
			// Overlay: give the dir an upper twin to hold the stub.
			if _, err := os.Lstat(filepath.Join(w, parent)); err == nil {
				continue
			}
			st := fi.Sys().(*syscall.Stat_t)
			meta := dirMeta{mode: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid}
			if err := os.Mkdir(filepath.Join(w, parent), 0o755); err != nil {
				return err
			}
			if err := applyDirMeta(filepath.Join(w, parent), meta, fi.ModTime()); err != nil {
				return err
			}
			s.stubParents[parent] = meta
		case err == nil:
			return fmt.Errorf("/%s is not a directory", parent)
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Mkdir(filepath.Join(w, parent), 0o755); err != nil {
				return err
			}
			if err := applyDirMeta(filepath.Join(w, parent), dirMeta{mode: 0o755}, time.Time{}); err != nil {
				return err
			}
			s.stubParents[parent] = dirMeta{mode: 0o755}
		default:
			return err
		}
		if i > 1 {
			restore = append(restore, strings.Join(parts[:i-1], "/"))
		}
	}
	if s.stubs[rel] {
		return nil
	}
	if _, fi, err := s.chain.lookup(rel); err == nil {
		if fi.IsDir() != mp.Dir {
			return fmt.Errorf("/%s exists and is not a %s", rel, map[bool]string{true: "directory", false: "file"}[mp.Dir])
		}
		return nil // the image has it; the sandbox mounts over it
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if _, ok := s.stubParents[rel]; ok {
		return nil // already made as a parent of another stub
	}
	dst := filepath.Join(w, rel)
	if mp.Dir {
		err = os.Mkdir(dst, 0o755)
	} else {
		err = os.WriteFile(dst, nil, 0o644)
	}
	if err != nil {
		return err
	}
	if len(parts) > 1 {
		restore = append(restore, strings.Join(parts[:len(parts)-1], "/"))
	}
	s.stubs[rel] = true
	return nil
}

func applyDirMeta(p string, m dirMeta, mtime time.Time) error {
	if err := os.Lchown(p, int(m.uid), int(m.gid)); err != nil {
		return err
	}
	if err := unix.Chmod(p, m.mode); err != nil {
		return err
	}
	if !mtime.IsZero() {
		return os.Chtimes(p, mtime, mtime)
	}
	return nil
}

// Cleanup removes temporary dirs whose owning process is gone.
func (sn *Snapshotter) Cleanup() error {
	entries, err := os.ReadDir(sn.tmpDir)
	if err != nil {
		return fmt.Errorf("cleanup snapshots: %w", err)
	}
	var errs []error
	locks := map[string]bool{}
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".lock"); ok {
			locks[name] = true
		}
	}
	for _, e := range entries {
		name := e.Name()
		p := filepath.Join(sn.tmpDir, name)
		switch {
		case strings.HasSuffix(name, ".lock"):
			errs = append(errs, removeIfUnlocked(p, strings.TrimSuffix(p, ".lock")))
		case strings.HasSuffix(name, ".locking"):
			// A lock file being born; stale only if old.
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Minute {
				errs = append(errs, os.Remove(p))
			}
		case !locks[name]:
			// The lock is created before and removed after its dir, so a
			// dir without one belongs to nobody.
			errs = append(errs, os.RemoveAll(p))
		}
	}
	errs = append(errs, sn.cleanupCacheMounts())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleanup snapshots: %w", err)
	}
	return nil
}

func removeIfUnlocked(lockPath, dir string) error {
	f, err := os.Open(lockPath)
	if err != nil {
		return ignoreNotExist(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return nil // held by a live process
	}
	if err := removeAllForce(dir); err != nil {
		return err
	}
	return ignoreNotExist(os.Remove(lockPath))
}

func ignoreNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// tempDir creates tmp/<prefix>NNN guarded by tmp/<prefix>NNN.lock, locked
// for as long as the returned release function has not run.
func (sn *Snapshotter) tempDir(prefix string) (string, func() error, error) {
	f, err := os.CreateTemp(sn.tmpDir, prefix+"*.locking")
	if err != nil {
		return "", nil, fmt.Errorf("create temp dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", nil, fmt.Errorf("lock temp dir: %w", err)
	}
	dir := strings.TrimSuffix(f.Name(), ".locking")
	lock := dir + ".lock"
	if err := os.Rename(f.Name(), lock); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", nil, fmt.Errorf("lock temp dir: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		f.Close()
		os.Remove(lock)
		return "", nil, fmt.Errorf("create temp dir: %w", err)
	}
	release := func() error {
		defer f.Close()
		if err := removeAllForce(dir); err != nil {
			return fmt.Errorf("remove %s: %w", dir, err)
		}
		return ignoreNotExist(os.Remove(lock))
	}
	return dir, release, nil
}

// removeAllForce is os.RemoveAll that also copes with overlay work dirs,
// whose "work" subdir is left with mode 0 by the kernel.
func removeAllForce(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil {
		return nil
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// lockPath blocks until it holds an exclusive flock on p (created if
// missing) or ctx ends.
func lockPath(ctx context.Context, p string) (func(), error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TempDir creates a private temporary dir (for a step's scratch data, e.g.
// the upper dir of a writable bind) that Cleanup removes if the process
// dies before calling release.
func (sn *Snapshotter) TempDir(prefix string) (dir string, release func() error, err error) {
	return sn.tempDir("t" + prefix)
}
