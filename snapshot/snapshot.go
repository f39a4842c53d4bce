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
}

// emptyDir is the lower dir of an empty chain (FROM scratch); it cannot
// collide with a layer id, which is hex.
const emptyDir = "empty"

// New returns a Snapshotter keeping its data under root/snapshots.
func New(root string, blobs BlobOpener) (*Snapshotter, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("snapshotter root: %w", err)
	}
	sn := &Snapshotter{
		blobs:     blobs,
		layersDir: filepath.Join(abs, "snapshots", "layers"),
		tmpDir:    filepath.Join(abs, "snapshots", "tmp"),
	}
	for _, d := range []string{filepath.Join(sn.layersDir, emptyDir), sn.tmpDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create snapshotter dir: %w", err)
		}
	}
	return sn, nil
}

// Snapshot is a writable view over a layer chain: extracted lower dirs plus
// a fresh upper and work dir.
type Snapshot struct {
	lowers  []string // layer ids, top first
	dir     string   // tmp dir holding upper/ and work/
	release func() error
	sn      *Snapshotter
	// stubs are mount points Prepare created for the sandbox (slash paths
	// relative to the root); they never reach a diff.
	stubs map[string]bool
	// stubParents are dirs Prepare created only to hold stubs; they reach a
	// diff only when something else inside them or their metadata changed.
	stubParents map[string]dirMeta
}

type dirMeta struct {
	mode     uint32
	uid, gid uint32
}

// Prepare extracts the missing layers of the chain (bottom layer first, as
// in an image manifest) and returns a snapshot with a fresh upper dir.
func (sn *Snapshotter) Prepare(ctx context.Context, layers []Layer) (*Snapshot, error) {
	ids, err := sn.ensure(ctx, layers)
	if err != nil {
		return nil, err
	}
	dir, release, err := sn.tempDir("s")
	if err != nil {
		return nil, err
	}
	s := &Snapshot{dir: dir, release: release, sn: sn, stubs: map[string]bool{}, stubParents: map[string]dirMeta{}}
	for i := len(ids) - 1; i >= 0; i-- {
		s.lowers = append(s.lowers, ids[i])
	}
	if len(s.lowers) == 0 {
		s.lowers = []string{emptyDir}
	}
	for _, d := range []string{"upper", "work"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			release()
			return nil, fmt.Errorf("prepare snapshot: %w", err)
		}
	}
	if n := len(strings.Join(s.mountOptions(), ",")); n >= os.Getpagesize() {
		release()
		return nil, fmt.Errorf("prepare snapshot: %d layers do not fit in one overlay mount", len(layers))
	}
	if err := s.createStubs(ids); err != nil {
		release()
		return nil, fmt.Errorf("prepare snapshot: %w", err)
	}
	return s, nil
}

func (s *Snapshot) upper() string { return filepath.Join(s.dir, "upper") }

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

// Mounts returns the overlay mount of the rootfs. Its paths are relative to
// Mount.Dir so that long chains fit in one page of mount options.
func (s *Snapshot) Mounts() []Mount {
	return []Mount{{Type: "overlay", Source: "overlay", Options: s.mountOptions(), Dir: s.sn.layersDir}}
}

// Release removes the upper and work dirs. The rootfs must be unmounted.
func (s *Snapshot) Release() error {
	if s.release == nil {
		return nil
	}
	err := s.release()
	s.release = nil
	return err
}

// stubFiles are the mount points the sandbox needs; dirs end in "/".
var stubFiles = [...]string{"dev/", "proc/", "sys/", "etc/hosts", "etc/resolv.conf"}

// createStubs creates the sandbox's mount points that the chain lacks, in
// the upper dir, and records them so Diff can leave them out.
func (s *Snapshot) createStubs(ids []string) error {
	c := s.sn.chainOf(ids)
	upper := s.upper()
	for _, stub := range stubFiles {
		p := strings.TrimSuffix(stub, "/")
		if _, _, err := c.resolve(p, false); err == nil {
			continue // the image has it; the sandbox mounts over it
		} else if !errors.Is(err, fs.ErrNotExist) {
			continue // e.g. a parent is a file or symlink: nothing to mount on
		}
		parts := strings.Split(p, "/")
		ok := true
		for i := 1; i < len(parts) && ok; i++ {
			parent := strings.Join(parts[:i], "/")
			if _, done := s.stubParents[parent]; done {
				continue
			}
			meta := dirMeta{mode: 0o755}
			var mtime time.Time
			_, fi, err := c.resolve(parent, false)
			switch {
			case err == nil && fi.IsDir():
				st := fi.Sys().(*syscall.Stat_t)
				meta = dirMeta{mode: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid}
				mtime = fi.ModTime()
			case err == nil || !errors.Is(err, fs.ErrNotExist):
				ok = false
				continue
			}
			dst := filepath.Join(upper, parent)
			if err := os.Mkdir(dst, 0o755); err != nil {
				return err
			}
			if err := applyDirMeta(dst, meta, mtime); err != nil {
				return err
			}
			s.stubParents[parent] = meta
		}
		if !ok {
			continue
		}
		dst := filepath.Join(upper, p)
		if strings.HasSuffix(stub, "/") {
			if err := os.Mkdir(dst, 0o755); err != nil {
				return err
			}
		} else if err := os.WriteFile(dst, nil, 0o644); err != nil {
			return err
		}
		s.stubs[p] = true
	}
	// Creating stubs changed the parents' mtimes; put them back.
	for parent, meta := range s.stubParents {
		_, fi, err := c.resolve(parent, false)
		if err == nil {
			if err := applyDirMeta(filepath.Join(upper, parent), meta, fi.ModTime()); err != nil {
				return err
			}
		}
	}
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
