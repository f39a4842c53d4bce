package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/internal/flock"
)

// Patching: a step that made layer A last build and makes layer B now
// (one file of a 6,000-file COPY edited) would extract B whole, writing
// or linking every file again. Instead, NewPatchIngest takes A's
// extracted dir, if no process uses it, and turns it into B's in place:
// an entry whose fingerprint A's manifest lists unchanged costs no
// syscall, a changed one is made again as extraction makes it, and what
// A had and B has not is removed. The result is the dir extraction of B
// makes (the manifest's fingerprints cover everything extraction sets),
// so nothing downstream can tell; A's dir is gone, and is extracted from
// its blob again if a later build needs it. The shapes patching would get
// wrong are refused (errNoPatch) and then cost the optimization: the
// ingest fails, and B is extracted from its blob when first needed.
//
// A dir is taken only through a Claimer (store.Store.Unheld): under the
// store lock, with no live lease holding A, so no running RUN has it
// mounted and none can start to, and under A's extraction lock. Builds
// lease every layer they make as well as those they use.

// patchBufMax is the largest file read into memory to be compared with
// the base's; a bigger one is always written again.
const patchBufMax = 16 << 20

// patchMinEntries is the smallest base worth patching: a layer of a few
// entries (most RUNs) extracts faster than its base can be claimed. A
// variable for tests.
var patchMinEntries = 32

// errNoPatch says the layer has a shape the patcher does not handle.
var errNoPatch = errors.New("layer cannot be patched from the previous one")

// Claimer runs take only while no process holds the layer with this
// diffID; it reports whether take ran.
type Claimer func(diffID digest.Digest, take func() error) (bool, error)

// patchState is a patching extractor's view of the dir it starts from.
type patchState struct {
	base    *manifest
	dirTime map[string]time.Time // explicit dirs of the new layer
	touched map[string]bool      // dirs whose entries changed (their mtime must be set again)
	// hint, when set, is the content digest the layer writer had for an
	// entry (Ingest.HintSum), so an unchanged file is not hashed again.
	hint func(name string) ([sha256.Size]byte, bool)
}

// NewPatchIngest is NewIngest, starting from the extracted dir of the
// layer base (the one this step made before) when claim hands it over;
// otherwise it is NewIngest.
func (sn *Snapshotter) NewPatchIngest(ctx context.Context, base digest.Digest, claim Claimer) (*Ingest, error) {
	st, tmp, release, err := sn.claimBase(ctx, base, claim)
	if err != nil || st == nil {
		return sn.NewIngest(ctx)
	}
	return sn.startIngest(ctx, tmp, release, st), nil
}

// claimBase moves base's extracted dir into a fresh temp dir (as
// tmp/l) and returns its manifest; nil when there is nothing to take.
func (sn *Snapshotter) claimBase(ctx context.Context, base digest.Digest, claim Claimer) (*patchState, string, func() error, error) {
	if base == "" || claim == nil {
		return nil, "", nil, nil
	}
	id, err := layerID(Layer{DiffID: base})
	if err != nil {
		return nil, "", nil, err
	}
	dir := filepath.Join(sn.layersDir, id)
	if _, err := os.Lstat(manifestPath(dir)); err != nil {
		return nil, "", nil, nil // nothing to patch from: no lock taken
	}
	unlock, err := flock.Path(ctx, dir+".lock")
	if err != nil {
		return nil, "", nil, err
	}
	defer unlock()
	m, err := readManifest(dir) // under the lock: the dir it describes stays
	if err != nil || len(m.order) < patchMinEntries {
		return nil, "", nil, nil
	}
	tmp, release, err := sn.tempDir("p")
	if err != nil {
		return nil, "", nil, err
	}
	took, err := claim(base, func() error {
		removeManifest(dir) // first: a manifest never describes a dir that is not its own
		return os.Rename(dir, filepath.Join(tmp, "l"))
	})
	if err != nil || !took {
		release()
		return nil, "", nil, err
	}
	return &patchState{base: m, dirTime: map[string]time.Time{}, touched: map[string]bool{}}, tmp, release, nil
}

// takeHint is the writer's digest of the file name, if it gave one.
func (p *patchState) takeHint(name string) ([sha256.Size]byte, bool) {
	if p.hint == nil {
		return [sha256.Size]byte{}, false
	}
	return p.hint(name)
}

// patchEntry decides what to do with hdr when patching: skip (it is as
// the base has it), or make it again from body (which may be a buffered
// copy of the entry's content). Changed non-dirs are removed first, so
// that extraction makes them afresh.
func (x *extractor) patchEntry(root string, hdr *tar.Header, body io.Reader) (skip bool, _ io.Reader, _ error) {
	if hdr.Typeflag == tar.TypeXGlobalHeader || hdr.Typeflag == tar.TypeXHeader {
		return true, nil, nil
	}
	p := x.patch
	rel := manifestName(hdr)
	base := path.Base(rel)
	if _, dup := x.man.entries[rel]; dup || hdr.Typeflag == tar.TypeLink || strings.HasPrefix(base, whiteoutPrefix) {
		return false, nil, errNoPatch
	}
	kind := entryKind(hdr)
	if dirKind(kind) {
		p.dirTime[rel] = hdr.ModTime
	}
	fp := ""
	if !isRegular(hdr) {
		fp = headerPrint(hdr)
	} else {
		x.regs = append(x.regs, rel) // a big file's pool key is known at the end
		if sum, ok := p.takeHint(hdr.Name); ok {
			fp = poolKey(rel, sum[:], hdr) // the body is read only if it changed
		} else if hdr.Size <= patchBufMax {
			if int64(cap(x.patchBuf)) < hdr.Size {
				x.patchBuf = make([]byte, hdr.Size)
			}
			b := x.patchBuf[:hdr.Size]
			if _, err := io.ReadFull(body, b); err != nil {
				return false, nil, err
			}
			sum := sha256.Sum256(b)
			fp = poolKey(rel, sum[:], hdr)
			body = bytes.NewReader(b)
		}
	}
	x.man.add(rel, manifestEntry{kind: kind, fp: fp})
	old, had := p.base.entries[rel]
	if had && fp != "" && old.fp == fp {
		return true, nil, nil
	}
	p.touched[path.Dir(rel)] = true
	if !had {
		return false, body, nil
	}
	wasDir, isDir := dirKind(old.kind), dirKind(kind)
	switch {
	case wasDir && !isDir, old.kind == 'l', old.kind == 'D', kind == 'D':
		// A replaced dir or symlink moves what lies under it, and a
		// dir's xattrs would have to be unset: extraction does not do it.
		return false, nil, errNoPatch
	case isDir:
		// entry sets a dir's owner, mode and (at the end) time again, and
		// replaces a file by the dir (layer.Replaces).
		return false, body, nil
	}
	if err := x.removeFile(root, rel, old); err != nil {
		return false, nil, err
	}
	return false, body, nil
}

// removeFile removes the non-dir rel the base has, and its pooled inode
// with it when no other dir links it: the old version of an edited file
// is garbage at once, not at the next collection.
func (x *extractor) removeFile(root, rel string, old manifestEntry) error {
	parent, err := securejoin.SecureJoin(root, path.Dir(rel))
	if err != nil {
		return err
	}
	target := filepath.Join(parent, path.Base(rel))
	var pooled string
	if fi, err := os.Lstat(target); err == nil && old.kind == 'f' && old.fp != "" && x.pool != nil {
		if pfi, err := os.Lstat(x.pool.path(old.fp)); err == nil && os.SameFile(fi, pfi) && linkCount(fi) == 2 {
			pooled = x.pool.path(old.fp)
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if pooled != "" {
		// A concurrent extraction that linked it meanwhile keeps its own
		// name (the inode lives on); one that links after finds no name
		// and writes the file anew.
		os.Remove(pooled)
	}
	return nil
}

// finishPatch removes what the base had and the new layer has not, and
// queues the times of the dirs whose entries changed.
func (x *extractor) finishPatch(root string) error {
	p := x.patch
	var inUse map[string]bool // dirs the new layer has entries under
	for _, rel := range p.base.order {
		if _, kept := x.man.entries[rel]; kept {
			continue
		}
		switch p.base.entries[rel].kind {
		case 'l':
			return errNoPatch // a symlink gone: what lay under it moves
		case 'd', 'D':
			if rel == "." {
				return errNoPatch // the root's own entry gone: it would have to be made afresh
			}
			if inUse == nil {
				inUse = x.man.parents()
			}
			if inUse[rel] {
				return errNoPatch // the dir stays, made implicitly: extraction would make it afresh
			}
		}
		if e := p.base.entries[rel]; e.kind == 'f' {
			if err := x.removeFile(root, rel, e); err != nil {
				return fmt.Errorf("remove %s: %w", rel, err)
			}
		} else {
			parent, err := securejoin.SecureJoin(root, path.Dir(rel))
			if err != nil {
				return err
			}
			// RemoveAll never follows a symlink inside what it removes.
			if err := removeAllForce(filepath.Join(parent, path.Base(rel))); err != nil {
				return fmt.Errorf("remove %s: %w", rel, err)
			}
		}
		p.touched[path.Dir(rel)] = true
	}
	for rel := range p.touched {
		for a := rel; a != "."; a = path.Dir(a) {
			if e, ok := x.man.entries[a]; ok && !dirKind(e.kind) {
				return errNoPatch // under a symlink: the change landed elsewhere
			}
		}
		t, ok := p.dirTime[rel]
		if !ok {
			continue // an implicit dir: extraction leaves its time as it comes
		}
		dir := root
		if rel != "." {
			var err error
			if dir, err = securejoin.SecureJoin(root, rel); err != nil {
				return err
			}
		}
		x.dirs = append(x.dirs, dirTime{dir, t})
	}
	return nil
}

func isRegular(hdr *tar.Header) bool {
	return hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA //nolint:staticcheck // old tars still use '\x00'
}

func linkCount(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 0
}
