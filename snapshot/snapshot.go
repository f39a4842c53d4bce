// Package snapshot provides rootfs views over layer chains, and decides
// how they are made: callers receive mounts (package mount), not paths.
//
// Every layer blob is extracted once, safely (DESIGN.md invariant 5), into
// root/snapshots/layers/<id>/ in overlayfs "lowerdir" form: OCI whiteouts
// become overlay whiteouts (0/0 char devices) and opaque markers become the
// trusted.overlay.opaque xattr. Extracted layers are shared by every image
// that uses them. Prepare stacks a chain under a fresh upper dir, or, where
// overlayfs is refused (Probe), copies the merged chain; the caller (the
// sandbox) mounts the returned rootfs inside its own mount namespace, so a
// killed build leaves no mount behind. Diff turns the writes back into OCI
// layer entries, the same for both kinds. BindView makes the views of
// RUN --mount=type=bind. Overlay's union rules are applied in one place
// (union.go) by every reader of a chain.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/internal/diskspace"
	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/mount"
)

// BlobOpener reads layer blobs by digest; *store.Store satisfies it.
type BlobOpener interface {
	OpenBlob(d digest.Digest) (io.ReadCloser, error)
}

// Layer names one layer of a chain, by the one layer identity
// (layer.Descriptor): Digest is the blob to read, DiffID (optional but
// recommended) the digest of its uncompressed tar, which is verified
// during extraction and names the extracted dir.
type Layer = layer.Descriptor

// layerID is the short name of l's extracted dir. Short names keep the
// overlay option string under one page for chains of 200+ layers.
func layerID(l Layer) (string, error) {
	d := l.DiffID
	if d == "" {
		d = l.Digest
	}
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("layer %q: %w", d, err)
	}
	return d.Encoded()[:16], nil
}

// Snapshotter manages extracted layers and snapshots under one root.
type Snapshotter struct {
	blobs     BlobOpener
	layersDir string
	tmpDir    string
	cacheDir  string
	kind      Kind
	// reserve is the free space extraction keeps (SetMinFreeSpace).
	reserve diskspace.Reserve
	// mu guards the settled choice (see Probe): copying, and fallback,
	// why overlay was refused, reported once.
	mu           sync.Mutex
	settled      bool
	copying      bool
	fallback     error
	reported     atomic.Bool
	probeOverlay func() error // mountTestOverlay; tests replace it
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
	sn.probeOverlay = sn.mountTestOverlay
	for _, d := range []string{filepath.Join(sn.layersDir, emptyDir), sn.tmpDir, sn.cacheDir, sn.poolDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create snapshotter dir: %w", err)
		}
	}
	return sn, nil
}

// SetMinFreeSpace makes every layer extraction (from a blob, or Ingest)
// fail, wrapping diskspace.ErrLow, rather than leave less than n bytes
// free on the filesystem under root; the partial extraction is removed
// and nothing is recorded. 0 (the default) disables the guard. Call it
// before the snapshotter is used.
func (sn *Snapshotter) SetMinFreeSpace(n int64) {
	sn.reserve = diskspace.Reserve{Dir: sn.tmpDir, Bytes: n}
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

// Prepare extracts the missing layers of the chain (bottom layer first, as
// in an image manifest) and returns a snapshot with a fresh upper dir (or
// a fresh copy: see Probe). The mount points given (the sandbox's own, see
// sandbox.MountPoints, and a RUN's --mount targets) are created where the
// chain lacks them, and kept out of Diff.
func (sn *Snapshotter) Prepare(ctx context.Context, layers []Layer, points ...mount.Point) (*Snapshot, error) {
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
	if sn.copies() {
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
	for _, mp := range points {
		if err := s.addStub(mp); err != nil && !mp.Optional {
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
	return overlayOptions(s.lowers, rel+"/upper", rel+"/work")
}

// Mounts returns the mount of the rootfs: an overlay whose paths are
// relative to Mount.Dir (so that long chains fit in one page of mount
// options), or a bind of the copied rootfs.
func (s *Snapshot) Mounts() []mount.Mount {
	if s.copied {
		return []mount.Mount{{Type: "bind", Source: s.rootfs()}}
	}
	return []mount.Mount{{Type: "overlay", Source: "overlay", Options: s.mountOptions(), Dir: s.sn.layersDir}}
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

// BindView returns the mount that shows the host file or dir host (a path
// without symlinks) at target in a sandbox: a read-only bind, or with
// writable a throwaway writable layer over it, an overlay or a scratch
// copy as Probe settled. Writes never reach host; release removes them
// once the sandbox is gone.
func (sn *Snapshotter) BindView(ctx context.Context, host, target string, writable bool) (mount.Mount, func() error, error) {
	if !writable {
		return mount.Mount{Type: "bind", Source: host, Target: target, ReadOnly: true}, func() error { return nil }, nil
	}
	fi, err := os.Stat(host)
	if err != nil {
		return mount.Mount{}, nil, err
	}
	dir, release, err := sn.tempDir("tbind")
	if err != nil {
		return mount.Mount{}, nil, err
	}
	fail := func(err error) (mount.Mount, func() error, error) {
		release()
		return mount.Mount{}, nil, fmt.Errorf("writable view of %s: %w", host, err)
	}
	upper, work, cp := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "src")
	// Overlay options cannot name a path with a comma or colon in it.
	if fi.IsDir() && !sn.copies() && !strings.ContainsAny(host, ",:") {
		if err := errors.Join(os.Mkdir(upper, 0o755), os.Mkdir(work, 0o755)); err != nil {
			return fail(err)
		}
		return mount.Mount{Type: "overlay", Source: "overlay", Target: target,
			Options: overlayOptions([]string{host}, upper, work)}, release, nil
	}
	if fi.IsDir() {
		if err = os.Mkdir(cp, 0o700); err == nil {
			err = materialize(ctx, chain{host}, cp)
		}
	} else {
		err = copyNode(host, cp, fi)
	}
	if err != nil {
		return fail(err)
	}
	return mount.Mount{Type: "bind", Source: cp, Target: target}, release, nil
}
