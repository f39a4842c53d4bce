package gc

import (
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/minibuild/minibuild/internal/atomicfile"
)

// Measuring the store walks every blob, extracted layer and pooled file,
// so an automatic collection that measured after every build would cost
// each build time in proportion to the store, not to its change. Instead
// the last measurement is kept with the filesystem's used bytes at that
// moment: the store cannot have grown by more than the filesystem did, so
// while last size + growth of the filesystem stays under the cap nothing
// is measured. Space freed elsewhere meanwhile can hide some growth; the
// measurement is therefore renewed at least every autoRemeasure.
const autoRemeasure = time.Hour

// autoStateFile holds the last measurement, under --root.
const autoStateFile = "gc-auto.json"

type autoState struct {
	Size   int64     `json:"size"`   // the store's size when measured
	FSUsed int64     `json:"fsUsed"` // the filesystem's used bytes then
	At     time.Time `json:"at"`
}

// fsUsed is the used bytes of the filesystem holding root.
func fsUsed(root string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return 0, err
	}
	return int64(st.Blocks-st.Bfree) * int64(st.Bsize), nil
}

// underCap reports whether the last measurement proves the store still
// under limit, with no walk.
func underCap(root string, limit int64) bool {
	b, err := os.ReadFile(filepath.Join(root, autoStateFile))
	if err != nil {
		return false
	}
	var st autoState
	if json.Unmarshal(b, &st) != nil || time.Since(st.At) > autoRemeasure || time.Since(st.At) < 0 {
		return false
	}
	used, err := fsUsed(root)
	if err != nil {
		return false
	}
	return st.Size+max(0, used-st.FSUsed) <= limit
}

// remember records a measurement of the store (size) taken now. It is a
// hint only: a lost or torn write means the next build measures.
func remember(root string, size int64) {
	used, err := fsUsed(root)
	if err != nil {
		return
	}
	b, _ := json.Marshal(autoState{Size: size, FSUsed: used, At: time.Now()})
	atomicfile.WriteUnsynced(filepath.Join(root, autoStateFile), b, 0o644)
}
