package snapshot

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/minibuild/minibuild/internal/compression"
	"github.com/minibuild/minibuild/internal/diskspace"
	"github.com/minibuild/minibuild/internal/flock"
	"github.com/minibuild/minibuild/layer"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
)

// ensure extracts every missing layer of the chain and returns their ids,
// bottom first.
func (sn *Snapshotter) ensure(ctx context.Context, layers []Layer) ([]string, error) {
	ids := make([]string, len(layers))
	for i, l := range layers {
		id, err := layerID(l)
		if err != nil {
			return nil, err
		}
		if err := sn.extractLayer(ctx, l, id); err != nil {
			return nil, err
		}
		ids[i] = id
	}
	return ids, nil
}

// extractLayer extracts one layer into layers/<id> unless it is there. The
// per-layer flock keeps concurrent extractors (goroutines or processes)
// from doing the work twice; the rename makes the result appear whole.
func (sn *Snapshotter) extractLayer(ctx context.Context, l Layer, id string) error {
	dst := filepath.Join(sn.layersDir, id)
	if _, err := os.Lstat(dst); err == nil {
		return nil
	}
	unlock, err := flock.Path(ctx, dst+".lock")
	if err != nil {
		return fmt.Errorf("extract layer %s: lock: %w", l.Digest, err)
	}
	defer unlock()
	if _, err := os.Lstat(dst); err == nil {
		return nil // another extractor finished while we waited
	}
	tmp, release, err := sn.tempDir("x")
	if err != nil {
		return fmt.Errorf("extract layer %s: %w", l.Digest, err)
	}
	defer release()
	rc, err := sn.blobs.OpenBlob(l.Digest)
	if err != nil {
		return fmt.Errorf("extract layer %s: %w", l.Digest, err)
	}
	defer rc.Close()
	root := filepath.Join(tmp, "l")
	if err := os.Mkdir(root, 0o755); err != nil {
		return fmt.Errorf("extract layer %s: %w", l.Digest, err)
	}
	what := fmt.Sprintf("extract layer %s", l.Digest)
	x := &extractor{meter: sn.reserve.NewMeter(what), pool: sn.newFilePool(root), man: newManifest()}
	diffID, err := extract(ctx, rc, root, x)
	if errors.Is(err, diskspace.ErrLow) {
		return err // the meter's error names the step
	}
	if err != nil {
		return fmt.Errorf("extract layer %s: %w", l.Digest, err)
	}
	if l.DiffID != "" && diffID != l.DiffID {
		return fmt.Errorf("extract layer %s: diffID is %s, expected %s", l.Digest, diffID, l.DiffID)
	}
	if err := os.Rename(root, dst); err != nil {
		if _, statErr := os.Lstat(dst); statErr == nil {
			return nil // someone without our lock (an older minibuild) won
		}
		return fmt.Errorf("extract layer %s: %w", l.Digest, err)
	}
	if m := x.finalManifest(root); m != nil {
		m.write(dst)
	}
	return nil
}

// Decompress returns the uncompressed stream of a layer blob: gzip, zstd or
// plain tar, detected by magic number.
func Decompress(r io.Reader) (io.ReadCloser, error) {
	return compression.Decompress(context.Background(), r, compression.Layer)
}

// Extract unpacks a (possibly compressed) layer into the existing dir root
// in overlay lowerdir form and returns the layer's diffID. Every path,
// symlink and hard link target is resolved inside root; ownership, modes,
// mtimes, xattrs, devices and hard links are kept.
func Extract(ctx context.Context, r io.Reader, root string) (digest.Digest, error) {
	return extract(ctx, r, root, &extractor{})
}

func extract(ctx context.Context, r io.Reader, root string, x *extractor) (digest.Digest, error) {
	zr, err := Decompress(r)
	if err != nil {
		return "", err
	}
	defer zr.Close()
	dg := digest.Canonical.Digester()
	tee := io.TeeReader(zr, dg.Hash())
	if err := x.run(ctx, tar.NewReader(tee), root); err != nil {
		return "", err
	}
	// The diffID covers the tar's trailing padding too.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return "", fmt.Errorf("read layer: %w", err)
	}
	return dg.Digest(), nil
}

type dirTime struct {
	path  string
	mtime time.Time
}

// extractor unpacks one tar into a dir. By default the dir is a layer
// dir (whiteouts kept in overlay's form); with apply it is a tree the tar
// is applied to (whiteouts and opaque markers remove what is below).
type extractor struct {
	devices *[]string               // non-nil: char and block nodes recorded, not made
	meter   *diskspace.Meter        // charged before each entry is written
	check   func(*tar.Header) error // when set, refuses an entry before anything of it is written
	apply   bool
	made    map[string]bool // apply: paths this tar made (opaque markers keep them)
	pool    *filePool       // when set, regular files are pooled (pool.go)
	dirs    []dirTime
	// man, when set, records what the dir holds (manifest.go), and patch
	// makes the extraction a patch of the dir it holds already (patch.go).
	man      *manifest
	regs     []string // man's regular files, their pool keys known at the end
	patch    *patchState
	patchBuf []byte
}

func extractTar(ctx context.Context, tr *tar.Reader, root string) error {
	return (&extractor{}).run(ctx, tr, root)
}

func (x *extractor) run(ctx context.Context, tr *tar.Reader, root string) error {
	defer x.pool.close() // its workers (parallel.go) end with the extraction
	for n := 0; ; n++ {
		if n%256 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if x.check != nil {
			if err := x.check(hdr); err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
		}
		var body io.Reader = tr
		if x.patch != nil {
			skip, b, err := x.patchEntry(root, hdr, tr)
			if err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
			if skip {
				continue
			}
			body = b
		}
		if err := x.meter.Entry(entrySize(hdr)); err != nil {
			return err
		}
		if err := x.entry(root, hdr, body); err != nil {
			return entryError(hdr, err)
		}
		if x.patch == nil {
			x.note(hdr)
		}
	}
	if err := x.pool.wait(); err != nil {
		return err
	}
	if x.patch != nil {
		if err := x.finishPatch(root); err != nil {
			return err
		}
	}
	return x.setDirTimes()
}

// setDirTimes sets directory mtimes last (and deepest first: creating
// children moved them). Of two entries for one dir the later's time
// stands; a dir a later entry replaced is skipped.
func (x *extractor) setDirTimes() error {
	done := make(map[string]bool, len(x.dirs))
	for i := len(x.dirs) - 1; i >= 0; i-- {
		d := x.dirs[i]
		if done[d.path] {
			continue
		}
		done[d.path] = true
		if fi, err := os.Lstat(d.path); err != nil || !fi.IsDir() {
			continue // replaced by a later entry (layer.Replaces)
		}
		if err := setTimes(d.path, d.mtime); err != nil {
			return fmt.Errorf("set times of %s: %w", d.path, err)
		}
	}
	return nil
}

// entrySize is what an entry writes: its body for a regular file.
func entrySize(hdr *tar.Header) int64 {
	if hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA { //nolint:staticcheck // old tars still use '\x00'
		return hdr.Size
	}
	return 0
}

// parentIn resolves the directory part of rel inside root (symlinks
// followed, but never out of root) and creates it if missing.
func parentIn(root, rel string) (string, error) {
	dir := path.Dir(rel)
	if dir == "." {
		return root, nil
	}
	p, err := securejoin.SecureJoin(root, dir)
	if err != nil {
		return "", err
	}
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Nothing along p is a symlink (SecureJoin resolved them all), so
		// MkdirAll cannot be led astray.
		return p, os.MkdirAll(p, 0o755)
	case err != nil:
		return "", err
	case !fi.IsDir():
		return "", fmt.Errorf("parent %s is not a directory", dir)
	}
	return p, nil
}

func (x *extractor) entry(root string, hdr *tar.Header, body io.Reader) error {
	rel := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/") // no ".." can survive
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, tar.TypeXHeader:
		return nil
	}
	if rel == "" {
		if hdr.Typeflag == tar.TypeDir {
			x.dirs = append(x.dirs, dirTime{root, hdr.ModTime})
			return applyMeta(root, hdr)
		}
		return nil
	}
	parent, err := parentIn(root, rel)
	if err != nil {
		return err
	}
	base := path.Base(rel)
	if strings.HasPrefix(base, whiteoutPrefix) {
		if err := x.pool.wait(); err != nil { // it removes what may be queued
			return err
		}
		if x.apply {
			return x.applyWhiteout(root, parent, base)
		}
		return extractWhiteout(parent, base)
	}
	x.mark(root, parent, base)
	target := filepath.Join(parent, base)
	if err := x.pool.settle(target); err != nil { // a queued file is at target
		return err
	}
	isDir := hdr.Typeflag == tar.TypeDir
	if fi, err := os.Lstat(target); err == nil && layer.Replaces(fi.IsDir(), isDir) {
		if err := x.pool.wait(); err != nil { // files may be queued under target
			return err
		}
		if err := removeAllForce(target); err != nil {
			return err
		}
	}
	if isDir {
		if err := os.Mkdir(target, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		x.dirs = append(x.dirs, dirTime{target, hdr.ModTime})
		return applyMeta(target, hdr) // its time is set once its content is in
	}
	if x.devices != nil && (hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock) {
		*x.devices = append(*x.devices, rel) // what was there is gone: later entries win
		return nil
	}
	if x.pool != nil {
		if done, err := x.poolEntry(root, target, hdr, body); err != nil || done {
			return err
		}
	}
	if done, err := createEntry(root, target, hdr, body); err != nil || done {
		return err
	}
	if err := applyMeta(target, hdr); err != nil {
		return err
	}
	return setTimes(target, hdr.ModTime)
}

// extractWhiteout turns the OCI whiteout base (.wh.NAME or the opaque
// marker) in the dir parent into overlay's form.
func extractWhiteout(parent, base string) error {
	switch {
	case base == whiteoutOpaque:
		return unix.Lsetxattr(parent, opaqueXattr, []byte("y"), 0)
	case strings.HasPrefix(base, whiteoutMeta):
		return nil // aufs metadata; meaningless here
	}
	name := strings.TrimPrefix(base, whiteoutPrefix)
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("invalid whiteout name")
	}
	target := filepath.Join(parent, name)
	if err := removeAllForce(target); err != nil {
		return err
	}
	return unix.Mknod(target, unix.S_IFCHR, 0)
}

// createEntry creates the non-dir hdr describes at target; done tells
// that it needs no metadata of its own (a hard link, or a type a rootfs
// does not hold).
func createEntry(root, target string, hdr *tar.Header, body io.Reader) (done bool, err error) {
	mode := uint32(hdr.Mode & 0o7777)
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old tars still use '\x00'
		f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return true, err
		}
		_, err = io.Copy(f, body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return false, err
	case tar.TypeSymlink:
		// The target text is kept verbatim; it is only ever resolved
		// inside a rootfs (by the kernel after pivot_root, or by resolve).
		return false, os.Symlink(hdr.Linkname, target)
	case tar.TypeLink:
		src, err := linkSource(root, hdr)
		if err != nil {
			return true, err
		}
		// link(2) does not follow a final symlink, so this stays in root.
		if err := os.Link(src, target); err != nil {
			return true, fmt.Errorf("hard link: %w", err)
		}
		return true, nil // the inode's metadata came with its first name
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		typ := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
		return false, unix.Mknod(target, typ|mode, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))))
	}
	return true, nil // e.g. GNU sparse or volume headers: not part of a rootfs
}

// linkSource is the host path a hard link entry names inside root (its
// parent resolved there).
func linkSource(root string, hdr *tar.Header) (string, error) {
	lrel := strings.TrimPrefix(path.Clean("/"+hdr.Linkname), "/")
	if lrel == "" {
		return "", fmt.Errorf("hard link to the root")
	}
	lparent, err := securejoin.SecureJoin(root, path.Dir(lrel))
	if err != nil {
		return "", err
	}
	return filepath.Join(lparent, path.Base(lrel)), nil
}

// poolEntry extracts a regular file through the pool (done), and before
// a hard link unshares the inode it names.
func (x *extractor) poolEntry(root, target string, hdr *tar.Header, body io.Reader) (done bool, err error) {
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old tars still use '\x00'
		return true, x.pool.file(target, strings.TrimPrefix(target, root+string(filepath.Separator)), hdr, body)
	case tar.TypeLink:
		src, err := linkSource(root, hdr)
		if err != nil {
			return true, err
		}
		return false, x.pool.unshare(src)
	}
	return false, nil
}

// applyMeta sets owner, xattrs and mode (in that order: chown clears the
// setuid bits).
func applyMeta(p string, hdr *tar.Header) error {
	if err := os.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || strings.HasPrefix(name, "trusted.overlay.") {
			continue // overlay's own attributes would change what lower dirs mean
		}
		if err := unix.Lsetxattr(p, name, []byte(v), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("xattr %s: %w", name, err)
		}
	}
	if hdr.Typeflag == tar.TypeSymlink {
		return nil
	}
	return unix.Fchmodat(unix.AT_FDCWD, p, uint32(hdr.Mode&0o7777), 0)
}

func setTimes(p string, mtime time.Time) error {
	ts := unix.NsecToTimespec(mtime.UnixNano())
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}
