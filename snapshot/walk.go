package snapshot

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// A Walk is how a chain resolved a path: every lookup the resolution made,
// in order, as a kind and a clean relative path ("d app", "M app/lib";
// kinds: d dir, l symlink, f anything else, M missing at the end of the
// path, m missing with components left, e an error). Recorded with an
// answer about a chain, it lets a host that holds only the layers put on
// top of that chain tell whether they change the answer (Over), without
// the chain's own layers.
type Walk []string

func (w *Walk) add(rel string, fi fs.FileInfo, err error, last bool) {
	var k string
	switch {
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		k = "e" // ENOTDIR and such: Over never derives through it
	case err != nil && last:
		k = "M"
	case err != nil:
		k = "m"
	case fi.IsDir():
		k = "d"
	case fi.Mode()&fs.ModeSymlink != 0:
		k = "l"
	default:
		k = "f"
	}
	*w = append(*w, k+" "+rel)
}

// Trace returns the Walk of resolving p in the rootfs of layers, every
// symlink followed, up to the first missing component: the lookups Stat,
// Resolve and ReadFile make for p.
func (sn *Snapshotter) Trace(ctx context.Context, layers []Layer, p string) (Walk, error) {
	ids, err := sn.ensure(ctx, layers)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		ids = []string{emptyDir}
	}
	var w Walk
	if _, err := sn.chainOf(ids).walkPath(p, true, true, &w); err != nil {
		return nil, &fs.PathError{Op: "trace", Path: p, Err: err}
	}
	return w, nil
}

// Over tells how putting top, when it is extracted here, on a chain
// changes an answer recorded about that chain with walk w. ok: the walk
// on the taller chain makes the same lookups to the same end, and the
// answer stands unless top's own entry at the end decides it (then it is
// fi, and the returned Walk records its kind). Not ok, a lookup must tell:
// top is not extracted, or it meets the walk other than by merging a dir
// into a dir on the way or by an entry at its end (a whiteout, an opaque
// or replaced dir on the way, a symlink at the end, an entry where the
// walk stopped short of the end). Overlay's rules are
// union.go's: the topmost entry wins, a dir merges with the dirs below.
func (sn *Snapshotter) Over(top Layer, w Walk) (Walk, fs.FileInfo, bool) {
	id, err := layerID(top)
	if err != nil || len(w) == 0 {
		return nil, nil, false
	}
	dir := filepath.Join(sn.layersDir, id)
	if _, err := os.Lstat(dir); err != nil {
		return nil, nil, false
	}
	out := append(Walk(nil), w...)
	var decided fs.FileInfo
	for i, step := range w {
		kind, rel, ok := strings.Cut(step, " ")
		if !ok || kind == "e" || rel == "" {
			return nil, nil, false
		}
		p := filepath.Join(dir, rel)
		fi, err := touched(p)
		if err == nil && fi == nil {
			continue // top did not touch it
		}
		if err != nil || isWhiteout(fi) {
			return nil, nil, false
		}
		if i < len(w)-1 {
			if kind == "d" && fi.IsDir() && !isOpaque(p) {
				continue // merged with the dir below: the walk goes on as before
			}
			return nil, nil, false
		}
		if kind == "m" || fi.Mode()&fs.ModeSymlink != 0 {
			return nil, nil, false
		}
		decided = namedInfo{fi, filepath.Base(rel)}
		var k Walk
		k.add(rel, fi, nil, true)
		out[i] = k[0]
	}
	return out, decided, true
}
