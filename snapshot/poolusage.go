package snapshot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// The pool's share of the disk (pool.go). A pooled file is counted once,
// here, and never in a layer dir's Size or TempSize (views): the bytes
// are on disk once however many layers link them. A pooled file whose
// only name is the pool's is garbage (nothing shows it any more) and
// SweepPool removes it.

// PoolUsage is what the file pool holds.
type PoolUsage struct {
	Files       int   // pooled files
	Size        int64 // their bytes, each once
	Garbage     int   // of those, files no layer dir or view links
	GarbageSize int64
}

// poolFile is one pooled file.
type poolFile struct {
	path  string
	ino   uint64
	nlink uint64
	size  int64
}

// poolFiles lists the pool.
func (sn *Snapshotter) poolFiles() ([]poolFile, error) {
	var out []poolFile
	err := filepath.WalkDir(sn.poolDir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // a file swept meanwhile
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		out = append(out, poolFile{path: p, ino: st.Ino, nlink: uint64(st.Nlink), size: fi.Size()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the file pool: %w", err)
	}
	return out, nil
}

// pooledInodes are the inodes of the pool, for sizes that must not count
// them again; nil when it cannot be listed (sizes then count them).
func (sn *Snapshotter) pooledInodes() map[uint64]poolFile {
	files, err := sn.poolFiles()
	if err != nil {
		return nil
	}
	m := make(map[uint64]poolFile, len(files))
	for _, f := range files {
		m[f.ino] = f
	}
	return m
}

// PoolUsage measures the pool.
func (sn *Snapshotter) PoolUsage() (PoolUsage, error) {
	files, err := sn.poolFiles()
	var u PoolUsage
	for _, f := range files {
		u.Files++
		u.Size += f.size
		if f.nlink <= 1 {
			u.Garbage++
			u.GarbageSize += f.size
		}
	}
	return u, err
}

// PoolFreed is what removing the extracted layers ids (and sweeping the
// pool) would free of the pool: the pooled files those dirs hold every
// name of but the pool's, and the garbage already there. A view's link
// keeps a file until the view is pruned.
func (sn *Snapshotter) PoolFreed(ids []string) int64 {
	pooled := sn.pooledInodes()
	if pooled == nil {
		return 0
	}
	links := map[uint64]uint64{}
	for _, id := range ids {
		if id == "" || filepath.Base(id) != id {
			continue
		}
		filepath.WalkDir(filepath.Join(sn.layersDir, id), func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			if fi, err := d.Info(); err == nil {
				if ino := fi.Sys().(*syscall.Stat_t).Ino; pooled[ino].path != "" {
					links[ino]++
				}
			}
			return nil
		})
	}
	var n int64
	for ino, f := range pooled {
		if f.nlink <= 1+links[ino] {
			n += f.size
		}
	}
	return n
}

// SweepPool removes the pooled files nothing links any more and tells
// what it removed. It is safe while builds run: an extraction that links
// a file the sweep then unlinks keeps the inode under its own name (the
// file is private from then on, never lost), and a file joins the pool
// already linked from its layer, so a new one is never garbage.
func (sn *Snapshotter) SweepPool() (PoolUsage, error) {
	files, err := sn.poolFiles()
	var u PoolUsage
	for _, f := range files {
		var st unix.Stat_t
		if unix.Lstat(f.path, &st) != nil || st.Nlink > 1 {
			continue
		}
		if rerr := os.Remove(f.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = errors.Join(err, fmt.Errorf("sweep the file pool: %w", rerr))
			continue
		}
		u.Files++
		u.Size += f.size
	}
	return u, err
}
