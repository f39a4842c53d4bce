// Package diskspace keeps extraction from filling the disk under --root
// (issue 13): a Reserve is how much free space must stay on the
// filesystem holding a directory, and a Meter charges what an extraction
// is about to write against it.
//
// A Meter does not statfs per file: it calls statfs when the bytes
// declared since the last call exceed a budget, and the budget is at most
// Every and at most half of what was left above the reserve at the last
// call, so the checks come closer together as the disk fills and the
// reserve is never crossed by the writer itself. Sizes are charged before
// the bytes are written (a tar header declares its body's size), which is
// the guard against decompression bombs: a 5 MB gzip whose one member
// says 5 GB is refused at that header, however well it compresses, and
// never written up to the reserve first.
package diskspace

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrLow is wrapped by every error a Meter returns because the filesystem
// would fall under its reserve.
var ErrLow = errors.New("not enough free disk space")

const (
	// DefaultMax and DefaultPercent make the default reserve: 1 GiB, or
	// 5% of the filesystem when that is smaller (a small disk is not
	// refused outright; 5% is also ext4's default root reserve).
	DefaultMax     = 1 << 30
	DefaultPercent = 5
	// Every is the most a Meter lets be written between two statfs calls.
	Every = 16 << 20
	// block is what every entry costs at least (a directory's block, an
	// inode's share); file sizes are rounded up to it.
	block = 4096
)

// Reserve is the free space to keep on the filesystem holding Dir.
// Bytes 0 disables the guard.
type Reserve struct {
	Dir   string
	Bytes int64
}

// Default is the default reserve for the filesystem holding dir (or its
// nearest existing parent): min(DefaultMax, DefaultPercent% of it).
func Default(dir string) int64 {
	st, err := statfs(dir)
	if err != nil {
		return DefaultMax
	}
	return min(int64(st.Blocks)*int64(st.Bsize)*DefaultPercent/100, DefaultMax)
}

// Percent is pct percent of the filesystem holding dir.
func Percent(dir string, pct float64) (int64, error) {
	st, err := statfs(dir)
	if err != nil {
		return 0, err
	}
	return int64(float64(st.Blocks) * float64(st.Bsize) * pct / 100), nil
}

// statfs stats the filesystem of p, or of its nearest existing parent
// (--root may not exist yet).
func statfs(p string) (*unix.Statfs_t, error) {
	p = filepath.Clean(p)
	for {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		if err == nil {
			return &st, nil
		}
		if !errors.Is(err, os.ErrNotExist) || p == "/" || p == "." {
			return nil, fmt.Errorf("statfs %s: %w", p, err)
		}
		p = filepath.Dir(p)
	}
}

// Free is the space unprivileged writers still have on dir's filesystem.
func Free(dir string) (int64, error) {
	st, err := statfs(dir)
	if err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// Meter charges one extraction's writes against a Reserve. What names the
// step in errors ("extract layer sha256:…", "ADD app.tar.gz"). A nil
// *Meter charges nothing.
type Meter struct {
	r       Reserve
	what    string
	budget  int64 // bytes that may still be charged before the next statfs
	written int64
}

// NewMeter starts a meter for what; nil when r disables the guard.
func (r Reserve) NewMeter(what string) *Meter {
	if r.Bytes <= 0 || r.Dir == "" {
		return nil
	}
	return &Meter{r: r, what: what}
}

// Entry charges one entry of size bytes (0 for all but regular files)
// before it is written.
func (m *Meter) Entry(size int64) error {
	if m == nil {
		return nil
	}
	return m.Need((size+block-1)/block*block + block)
}

// Need charges n bytes about to be written: it fails, wrapping ErrLow,
// when writing them would leave less than the reserve free.
func (m *Meter) Need(n int64) error {
	if m == nil {
		return nil
	}
	m.written += n
	if n <= m.budget {
		m.budget -= n
		return nil
	}
	free, err := Free(m.r.Dir)
	if err != nil {
		return fmt.Errorf("%s: %w", m.what, err)
	}
	left := free - m.r.Bytes
	if n > left {
		return &LowError{What: m.what, Dir: m.r.Dir, Free: free, Reserve: m.r.Bytes, Need: n, Written: m.written - n}
	}
	m.budget = min(Every, (left-n)/2)
	return nil
}

// LowError says which step stopped, where, and the space involved.
type LowError struct {
	What          string
	Dir           string
	Free, Reserve int64
	Need, Written int64
}

func (e *LowError) Error() string {
	after := ""
	if e.Written > 0 {
		after = fmt.Sprintf(" (after %s)", Human(e.Written))
	}
	return fmt.Sprintf("%s: %v on %s: %s free, writing %s more%s would leave less than the reserve of %s (--min-free-space)",
		e.What, ErrLow, e.Dir, Human(e.Free), Human(e.Need), after, Human(e.Reserve))
}

// Unwrap makes errors.Is(err, ErrLow) hold.
func (e *LowError) Unwrap() error { return ErrLow }

// Human renders n bytes with a binary unit ("3.2MiB").
func Human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for q := n / unit; q >= unit && exp < 4; q /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTP"[exp])
}
