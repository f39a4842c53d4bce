package gc

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Automatic collection after a build keeps the store under a cap, as
// BuildKit's default GC policy keeps its cache under "Keep Bytes", which
// "defaults to 10% of the size of the disk" with a fallback when the size
// cannot be determined (https://docs.docker.com/build/cache/garbage-collection/;
// Docker Desktop's defaultKeepStorage is 20GB, same page). minibuild
// takes 10% of the filesystem holding --root, at most 20 GB.
const (
	defaultFraction = 10 // percent of the filesystem
	defaultMax      = 20 << 30
	defaultFallback = 2 << 30 // when statfs fails
)

// EnvKeepStorage overrides the default cap (as --gc-keep-storage does).
const EnvKeepStorage = "MINIBUILD_GC_KEEP_STORAGE"

// DefaultCap is the automatic cap for the store at root.
func DefaultCap(root string) int64 {
	total, err := fsSize(root)
	if err != nil || total <= 0 {
		return defaultFallback
	}
	return min(total*defaultFraction/100, defaultMax)
}

func fsSize(root string) (int64, error) {
	var st unix.Statfs_t
	p := root
	for {
		if err := unix.Statfs(p, &st); err == nil {
			return int64(st.Blocks) * int64(st.Bsize), nil
		} else if !os.IsNotExist(err) || p == "/" || p == "." {
			return 0, err
		}
		p = parentDir(p)
	}
}

func parentDir(p string) string {
	i := strings.LastIndex(strings.TrimRight(p, "/"), "/")
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// Cap resolves the automatic cap: flag, else $MINIBUILD_GC_KEEP_STORAGE,
// else DefaultCap. "0" or "off" disables automatic collection (0 returned).
func Cap(root, flag string) (int64, error) {
	v := flag
	if v == "" {
		v = os.Getenv(EnvKeepStorage)
	}
	if v == "" {
		return DefaultCap(root), nil
	}
	if v == "off" || v == "0" {
		return 0, nil
	}
	if pct, ok := strings.CutSuffix(v, "%"); ok {
		n, err := strconv.ParseFloat(pct, 64)
		total, ferr := fsSize(root)
		if err != nil || n <= 0 || n > 100 || ferr != nil {
			return 0, fmt.Errorf("gc keep storage %q: want a size (5GB) or a percentage of the disk (10%%)", v)
		}
		return int64(float64(total) * n / 100), nil
	}
	return ParseSize(v)
}

// ParseSize reads a size as docker's --keep-storage does: a number with an
// optional unit B, KB, MB, GB, TB (powers of 1024; KiB… accepted too).
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.Replace(t, "IB", "B", 1), "B")
	mult := int64(1)
	for i, u := range []string{"K", "M", "G", "T"} {
		if rest, ok := strings.CutSuffix(t, u); ok {
			t, mult = rest, int64(1)<<(10*(i+1))
			break
		}
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q (want e.g. 500MB, 5GB)", s)
	}
	return int64(n * float64(mult)), nil
}

// Auto collects when the store at root exceeds limit: least recently used
// cache records and untagged images first, then extracted layers, never a
// blob a tag or a live lease needs. ran tells whether it had to.
func Auto(root string, limit int64) (f Freed, ran bool, err error) {
	if limit <= 0 {
		return Freed{}, false, nil
	}
	if underCap(root, limit) {
		return Freed{}, false, nil // autostate.go: no walk while growth is provably small
	}
	s, err := Open(root)
	if err != nil {
		return Freed{}, false, err
	}
	dry, err := Collect(s, Policy{KeepStorage: limit}, true)
	if err != nil {
		return Freed{}, false, err
	}
	if dry.Before <= limit {
		remember(root, dry.Before)
		return Freed{}, false, nil
	}
	f, err = Collect(s, Policy{KeepStorage: limit}, false)
	if err == nil {
		remember(root, f.After)
	}
	return f, true, err
}
