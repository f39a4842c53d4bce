package snapshot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Extracted layers are a cache of the layer blobs, not the truth: the
// collector lists them with their sizes and removes those no chain needs
// (or, when disk is short, the least recently made); a later Prepare
// extracts a removed layer again from its blob.

// LayerDir is one extracted layer under root/snapshots/layers.
type LayerDir struct {
	ID string // LayerDirID of its diffID
	// Size is the bytes of its regular files, each inode once: its own,
	// and of the pooled ones those only it links (Pooled): what removing
	// it alone frees. PoolUsage counts the pool's other files, once.
	Size   int64
	Pooled int64
	// Changed is the later of the dir's mtime and ctime: when it was
	// extracted (rename into place sets the ctime).
	Changed time.Time
}

// LayerDirID names the extracted dir of the layer with this diffID (or,
// for a layer whose diffID is unknown, blob digest). It is "" for an
// invalid digest.
func LayerDirID(d digest.Digest) string {
	id, err := layerID(Layer{DiffID: d})
	if err != nil {
		return ""
	}
	return id
}

// LayerDirs lists the extracted layers.
func (sn *Snapshotter) LayerDirs() ([]LayerDir, error) {
	ents, err := os.ReadDir(sn.layersDir)
	if err != nil {
		return nil, fmt.Errorf("list extracted layers: %w", err)
	}
	var out []LayerDir
	var inos [][]uint64 // the pooled inodes of each dir of out
	pooled := sn.pooledInodes()
	dirsOf := map[uint64]int{} // pooled inode → the dirs linking it
	for _, e := range ents {
		if !e.IsDir() || e.Name() == emptyDir {
			continue
		}
		p := filepath.Join(sn.layersDir, e.Name())
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		size, in := treeScan(p, pooled)
		if mfi, err := os.Lstat(manifestPath(p)); err == nil {
			size += mfi.Size() // its manifest goes with it
		}
		for _, ino := range in {
			dirsOf[ino]++
		}
		out = append(out, LayerDir{ID: e.Name(), Size: size, Changed: changed(fi)})
		inos = append(inos, in)
	}
	for i := range out {
		for _, ino := range inos[i] {
			if f := pooled[ino]; dirsOf[ino] == 1 && f.nlink == 2 {
				out[i].Pooled += f.size
			}
		}
		out[i].Size += out[i].Pooled
	}
	return out, nil
}

// RemoveLayers takes the extracted layers out of use: each is renamed
// into a temp dir under its extraction lock (a layer being extracted is
// skipped), so no chain ever sees one half removed. purge deletes what
// was taken; call it when convenient — after a crash, Cleanup does.
func (sn *Snapshotter) RemoveLayers(ids []string) (removed []string, purge func() error, err error) {
	var trash []func() error
	purge = func() error {
		var errs []error
		for _, release := range trash {
			errs = append(errs, release())
		}
		return errors.Join(errs...)
	}
	for _, id := range ids {
		if id == "" || id == emptyDir || filepath.Base(id) != id || strings.HasPrefix(id, ".") {
			continue
		}
		ok, release, err := sn.detachLayer(id)
		if release != nil {
			trash = append(trash, release)
		}
		if err != nil {
			return removed, purge, err
		}
		if ok {
			removed = append(removed, id)
		}
	}
	return removed, purge, nil
}

// detachLayer moves layers/<id> into a fresh temp dir unless an extractor
// holds its lock.
func (sn *Snapshotter) detachLayer(id string) (bool, func() error, error) {
	dst := filepath.Join(sn.layersDir, id)
	lf, err := os.OpenFile(dst+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return false, nil, fmt.Errorf("remove extracted layer %s: %w", id, err)
	}
	defer lf.Close()
	if unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		return false, nil, nil // being extracted right now
	}
	tmp, release, err := sn.tempDir("g")
	if err != nil {
		return false, nil, err
	}
	removeManifest(dst) // first: a manifest never describes a dir that is not its own
	err = os.Rename(dst, filepath.Join(tmp, "l"))
	os.Remove(dst + ".lock")
	if errors.Is(err, fs.ErrNotExist) {
		return false, release, nil
	}
	if err != nil {
		return false, release, fmt.Errorf("remove extracted layer %s: %w", id, err)
	}
	return true, release, nil
}

// TempSize is what temporary dirs (snapshots/tmp: scratch dirs of
// running or killed builds) and COPY --from views hold, pooled files not
// counted (views link them).
func (sn *Snapshotter) TempSize() int64 {
	pooled := sn.pooledInodes()
	a, _ := treeScan(sn.tmpDir, pooled)
	b, _ := treeScan(filepath.Join(filepath.Dir(sn.layersDir), "views"), pooled)
	return a + b
}

// treeScan sums the sizes of the regular files under dir, counting a
// hard-linked inode once and a pooled one not at all, and lists the
// pooled ones, each once.
func treeScan(dir string, pooled map[uint64]poolFile) (int64, []uint64) {
	var n int64
	var in []uint64
	seen := map[uint64]bool{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
			if _, ok := pooled[st.Ino]; ok {
				in = append(in, st.Ino)
				return nil
			}
		}
		n += fi.Size()
		return nil
	})
	return n, in
}

func changed(fi fs.FileInfo) time.Time {
	t := fi.ModTime()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if c := time.Unix(st.Ctim.Sec, st.Ctim.Nsec); c.After(t) {
			t = c
		}
	}
	return t
}
