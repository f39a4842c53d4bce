package snapshot

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// The file pool: every regular file an extraction (extractLayer, Ingest)
// writes is an inode of root/snapshots/files/<aa>/<62 hex>, named by its
// key, and hard-linked into the layer dir. A layer that differs from an
// extracted one by one file writes that file and links the others; two
// images carrying the same files hold them once on disk.
//
// The key is the sha256 of everything the inode shows plus its path in
// the layer: content (sha256), mode, uid, gid, mtime and the xattrs
// applyMeta sets. The path is in the key so that one pooled inode never
// shows at two paths of one tree: a merged rootfs or view shows each path
// once (from its topmost layer), so two different paths are two different
// keys and two different inodes. Without it, identical files at two paths
// (two empty __init__.py, or one file copied to /a and /b by two steps)
// would be one inode with st_ino equal, and a RUN's tar, cp -a or du, the
// differ (diff.go: Nlink > 1, same inode → TypeLink) and the copier
// reading a COPY --from view (copier.linkHardLinks) would all take them
// for hard links: the layers minibuild writes would change because of the
// pool (test/e2e TestFilePoolNoFalseHardLinks fails so with a key
// without the path). ostree's hardlink checkouts key by content and
// metadata alone and accept exactly that: identical files become one
// inode. The price here: identical files at two paths are stored twice.
// Real hard links of a tar (TypeLink) are never pooled: the first name is
// unshared (copied to a private inode) before the second is linked to it,
// so the group stays one inode of its own, as before.
//
// What a RUN can still observe: a pooled file's st_nlink counts the pool's
// name and every layer dir and view holding it (without the pool it is 1,
// or 2 and more once a COPY --from view links it). Nothing else changes:
// st_ino differs between paths, content, owner, mode, times and xattrs are
// the tar's. containerd's overlay snapshotter shares no file between two
// snapshots; BuildKit's merge snapshotter does what the pool does, at the
// same path only: it hard-links a file of a source snapshot into the
// merged one at its own subpath, falling back to a copy on EXDEV or
// EMLINK (snapshot/diffapply_unix.go, applyHardlink), so where it merges
// by hard links a RUN sees the same raised nlink.
//
// Nothing ever writes through a pooled inode:
//   - overlay (Prepare): layer dirs are lower dirs. "When a file in the
//     lower filesystem is accessed in a way the requires write-access,
//     such as opening for write access, changing some metadata etc., the
//     file is first copied from the lower filesystem to the upper
//     filesystem (copy_up)" (Documentation/filesystems/overlayfs.rst,
//     "Non-directories"); metacopy=off makes that a whole copy, and with
//     index=off a lower hard link is broken on copy-up. A new layer
//     linking a pooled inode while an overlay shows it changes its nlink
//     and ctime only, as linking it into a view always did.
//     TestPoolOverlayCopiesUp runs every kind of write.
//   - the copying snapshotter (copy.go) gives every name of the rootfs its
//     own inode (copyNode: a copy or a reflink, never a link):
//     TestPoolCopySnapshotterCopies.
//   - views (view.go) are hard links, so they are pooled inodes too. They
//     are only ever read (COPY --from, through buildctx), or mounted in a
//     RUN by BindView: read-only binds (EROFS for every write, metadata
//     included), and with rw an overlay over them (copy-up, as above) or a
//     scratch copy (copying kind, a file source, a path overlay cannot
//     name): TestPoolBindViewsNeverWrite.
//   - extraction itself writes only a fresh file before it is pooled, and
//     sets no metadata on one it linked from the pool.
//
// Crash safety: a pool name appears only by link(2) of a complete file
// (content, owner, xattrs, mode and times set), which is atomic as a
// rename is: a half-written file is never in the pool, so it is never
// linked. Like the layer dirs it is not fsynced: it is a cache of the
// blobs, and a killed process leaves only unlinked garbage (see sweep).

// poolBufMax is the largest file read into memory to be keyed before
// anything is written: for those the usual case (the key is pooled) costs
// the hash and one link. A larger file is written while hashed, then
// replaced by the pooled inode if one exists.
const poolBufMax = 1 << 20

// poolDir is the pool under root/snapshots.
func (sn *Snapshotter) poolDir() string { return filepath.Join(filepath.Dir(sn.layersDir), "files") }

// filePool is one extraction's use of the pool. Small files are written
// by its workers (parallel.go); the rest of it runs in the extractor.
type filePool struct {
	dir      string
	scratch  string // a free name outside the tree, for swaps (workers add a suffix)
	nworkers int

	mu   sync.Mutex
	cond sync.Cond // L is &mu: a queued file was written
	// pooled maps the host paths this extraction linked to the pool to
	// their keys, so that a hard link to one unshares it first.
	pooled    map[string]string
	jobs      chan poolJob    // to the workers; nil while none run
	workers   sync.WaitGroup  // the running workers
	inflight  int             // files queued and not yet written
	queued    int             // their cost against poolQueueMax
	pending   map[string]bool // their targets
	err       error           // the first worker's error
	free      [bufClasses][][]byte
	freeBytes int
}

// newFilePool pools the files of an extraction into the tree root; the
// dir above root is the extraction's own temp dir.
func (sn *Snapshotter) newFilePool(root string) *filePool {
	p := &filePool{
		dir:      sn.poolDir(),
		scratch:  filepath.Join(filepath.Dir(root), "pool-swap"),
		nworkers: poolWorkers,
		pooled:   map[string]string{},
		pending:  map[string]bool{},
	}
	p.cond.L = &p.mu
	return p
}

func (p *filePool) setPooled(target, key string) {
	p.mu.Lock()
	p.pooled[target] = key
	p.mu.Unlock()
}

// poolKey is the hex key of the inode hdr describes at rel, with content
// digest sum.
func poolKey(rel string, sum []byte, hdr *tar.Header) string {
	h := sha256.New()
	fmt.Fprintf(h, "minibuild file pool v1\x00%s\x00%x\x00%o %d %d %d\x00", rel, sum, hdr.Mode&0o7777, hdr.Uid, hdr.Gid, hdr.ModTime.UnixNano())
	hashXattrs(h, hdr)
	return hex.EncodeToString(h.Sum(nil))
}

// hashXattrs writes the xattrs applyMeta sets from hdr to h, in order.
func hashXattrs(h io.Writer, hdr *tar.Header) {
	xattrs := appliedXattrs(hdr)
	slices.Sort(xattrs)
	for _, k := range xattrs {
		fmt.Fprintf(h, "%s\x00%d\x00%s", k, len(hdr.PAXRecords[k]), hdr.PAXRecords[k])
	}
}

// appliedXattrs are hdr's PAX records of the xattrs applyMeta sets.
func appliedXattrs(hdr *tar.Header) []string {
	var xattrs []string
	for k := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok && !strings.HasPrefix(name, "trusted.overlay.") {
			xattrs = append(xattrs, k)
		}
	}
	return xattrs
}

func (p *filePool) path(key string) string { return filepath.Join(p.dir, key[:2], key[2:]) }

// file extracts the regular file hdr describes at target (rel in the
// tree), with its metadata: a link to its pooled inode, else a new file
// that then joins the pool. A small file is read here and queued for the
// workers (parallel.go); a big one is written here, while it is hashed.
func (p *filePool) file(target, rel string, hdr *tar.Header, body io.Reader) error {
	if hdr.Size <= poolBufMax {
		b := p.getBuf(int(hdr.Size))
		if _, err := io.ReadFull(body, b); err != nil {
			p.mu.Lock()
			p.putBuf(b)
			p.mu.Unlock()
			return err
		}
		return p.submit(poolJob{target: target, rel: rel, hdr: hdr, body: b})
	}
	h := sha256.New()
	if err := writeNew(target, io.TeeReader(body, h)); err != nil {
		return err
	}
	key := poolKey(rel, h.Sum(nil), hdr)
	if err := applyMeta(target, hdr); err != nil {
		return err
	}
	if err := setTimes(target, hdr.ModTime); err != nil {
		return err
	}
	p.publish(target, key, p.scratch)
	return nil
}

// writeNew creates target (which must not exist) with r's content.
func writeNew(target string, r io.Reader) error {
	f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// publish links the finished file target into the pool under key. If
// the key is pooled already (a concurrent extraction, or a file too big
// to key first), target becomes that inode. Where the pool refuses (too
// many links, a filesystem without hard links) the file stays private:
// the pool is an optimization. scratch is the caller's own free name.
func (p *filePool) publish(target, key, scratch string) {
	pp := p.path(key)
	err := os.Link(target, pp)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.Mkdir(filepath.Dir(pp), 0o700); err == nil || errors.Is(err, fs.ErrExist) {
			err = os.Link(target, pp)
		}
	}
	switch {
	case err == nil:
		p.setPooled(target, key)
	case errors.Is(err, fs.ErrExist):
		if os.Link(pp, scratch) != nil {
			return
		}
		if os.Rename(scratch, target) != nil {
			os.Remove(scratch)
			return
		}
		p.setPooled(target, key)
	}
}

// unshare gives src, about to get a second name by a tar hard link, an
// inode of its own if it is a pooled one: a hard-link group must stay
// apart from every other file. It waits for the queued files first: src
// may be one of them.
func (p *filePool) unshare(src string) error {
	if err := p.wait(); err != nil {
		return err
	}
	p.mu.Lock()
	key, ok := p.pooled[src]
	delete(p.pooled, src)
	p.mu.Unlock()
	if !ok {
		return nil
	}
	fi, err := os.Lstat(src)
	if err != nil {
		return nil // gone (replaced by a later entry); the link fails on its own
	}
	if pfi, err := os.Lstat(p.path(key)); err != nil || !os.SameFile(fi, pfi) {
		return nil // replaced since by a private file
	}
	if err := copyFile(src, p.scratch); err != nil {
		os.Remove(p.scratch)
		return fmt.Errorf("unshare %s: %w", src, err)
	}
	if err := copyMeta(src, p.scratch, fi); err != nil {
		os.Remove(p.scratch)
		return fmt.Errorf("unshare %s: %w", src, err)
	}
	return os.Rename(p.scratch, src)
}
