package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The file pool (snapshot/pool.go) hard-links the identical files of
// extracted layers into one inode. A RUN that writes such a file must
// change only its own layer: the other image that links the inode keeps
// its files and digest, and rebuilds fully cached. On both snapshotters.
func TestFilePoolRunChangesOnlyItsLayer(t *testing.T) {
	epoch := []string{"SOURCE_DATE_EPOCH=1700000100"}
	files := map[string]string{}
	for i := range 20 {
		files[fmt.Sprintf("f%02d", i)] = strings.Repeat(fmt.Sprintf("file %d\n", i), 50)
	}
	for _, kind := range []string{"overlay", "copy"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t)
			// Two contexts that differ by their Dockerfile: two COPY layers
			// carrying the same 20 files.
			a := project(t, "FROM busybox\nCOPY . /data\nRUN cat /data/f01 > /seen\n", files)
			b := project(t, "FROM busybox\nCOPY . /data\nRUN echo appended >> /data/f01 && chmod 600 /data/f02 && touch /data/f03\n", files)
			snap := "--snapshotter=" + kind
			first := e.build(a, epoch, snap, "-t", "a")
			e.build(b, epoch, snap, "-t", "b")
			if n := sharedInodes(t, e.root, "data/f01"); n != 2 {
				t.Fatalf("data/f01 of the two COPY layers: %d names of one pooled inode, want 2", n)
			}
			// Build b again over a's layer too: its RUN writes through the
			// rootfs again; then a is unchanged and fully cached.
			e.build(b, epoch, snap, "--no-cache", "-t", "b")
			again := e.build(a, epoch, snap, "-t", "a")
			if again.res.Digest != first.res.Digest || again.res.StepsBuilt != 0 {
				t.Errorf("a after b's RUN: digest %s (was %s), %d steps built", again.res.Digest, first.res.Digest, again.res.StepsBuilt)
			}
			outA, outB := t.TempDir(), t.TempDir()
			e.build(a, epoch, snap, "-o", "type=local,dest="+outA)
			e.build(b, epoch, snap, "-o", "type=local,dest="+outB)
			if got := readFile(t, filepath.Join(outA, "data/f01")); got != files["f01"] {
				t.Errorf("a's /data/f01 changed: %q", tail(got, 3))
			}
			if got := readFile(t, filepath.Join(outA, "seen")); got != files["f01"] {
				t.Errorf("a's RUN saw %q", tail(got, 3))
			}
			if got := readFile(t, filepath.Join(outB, "data/f01")); got != files["f01"]+"appended\n" {
				t.Errorf("b's /data/f01: %q", tail(got, 3))
			}
			for name, mode := range map[string]os.FileMode{"data/f02": 0o644, "data/f03": 0o644} {
				if fi, err := os.Stat(filepath.Join(outA, name)); err != nil || fi.Mode().Perm() != mode {
					t.Errorf("a's /%s: %v %v", name, fi.Mode(), err)
				}
			}
			// From scratch on another root a is the same image: the pool
			// changed none of its layers.
			fresh := newEnv(t)
			if d := fresh.build(a, epoch, snap, "--no-cache").res.Digest; d != first.res.Digest {
				t.Errorf("a rebuilt on a fresh root: %s, want %s", d, first.res.Digest)
			}
		})
	}
}

// sharedInodes counts the extracted layers whose file rel is one inode
// with the most common one.
func sharedInodes(t *testing.T, root, rel string) int {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(root, "snapshots/layers/*", rel))
	count := map[uint64]int{}
	best := 0
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		ino := fi.Sys().(*syscall.Stat_t).Ino
		count[ino]++
		best = max(best, count[ino])
	}
	return best
}

// Two images with the same 1,000 files take their space once under
// ROOT/snapshots (du counts an inode once); prune sweeps what only the
// removed image linked. The RUN makes the build extract the COPY layer.
func TestFilePoolStoresOnce(t *testing.T) {
	epoch := []string{"SOURCE_DATE_EPOCH=1700000100"}
	files := map[string]string{}
	for i := range 1000 {
		files[fmt.Sprintf("d%d/f%03d", i/100, i)] = strings.Repeat(fmt.Sprintf("%06d ", i), 1170) // 8 KiB
	}
	e := newEnv(t)
	e.build(project(t, "FROM busybox\nRUN true\n", nil), nil, "-t", "base") // extracts busybox's layer
	a := project(t, "FROM busybox\nCOPY . /data\nRUN true\n", files)
	b := project(t, "FROM busybox\nCOPY . /data\nRUN true\n# b\n", files)
	before, dfBefore, manBefore := duKB(t, filepath.Join(e.root, "snapshots")), dfExtracted(t, e), manifestBytes(t, e.root)
	e.build(a, epoch, "-t", "a")
	one := duKB(t, filepath.Join(e.root, "snapshots")) - before
	e.build(b, epoch, "-t", "b")
	two := duKB(t, filepath.Join(e.root, "snapshots")) - before
	if one < 8000 || two > one+one/20 {
		t.Errorf("du of snapshots: %d KiB for one image, %d KiB for two; want the second to add under 5%%", one, two)
	}
	// df counts the pooled bytes once: the 1,000 files and two Dockerfiles.
	// ...and each layer dir's manifest (snapshot/manifest.go).
	if got, want := dfExtracted(t, e)-dfBefore, int64(1000*8190)+manifestBytes(t, e.root)-manBefore; got < want || got > want+1024 {
		t.Errorf("df: extracted layers grew by %d bytes for two images of %d bytes of files and manifests", got, want)
	}
	e.ok("rmi", "b")
	e.ok("prune", "--all")
	if after := duKB(t, filepath.Join(e.root, "snapshots")) - before; after > one+one/20 {
		t.Errorf("after rmi b and prune: %d KiB, want about %d", after, one)
	}
	e.ok("rmi", "a")
	e.ok("prune", "--all")
	// The pool's 256 fan-out dirs (4 KiB each) stay.
	if after := duKB(t, filepath.Join(e.root, "snapshots")) - before; after > one/10+1024 {
		t.Errorf("after rmi a and prune: %d KiB of %d left", after, one)
	}
}

// manifestBytes sums the layer dirs' manifests under root.
func manifestBytes(t *testing.T, root string) int64 {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(root, "snapshots/layers/*.manifest"))
	var n int64
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// dfExtracted is the size df reports for extracted layers.
func dfExtracted(t *testing.T, e *env) int64 {
	t.Helper()
	var u struct {
		Kinds []struct {
			Kind string `json:"kind"`
			Size int64  `json:"size"`
		} `json:"kinds"`
	}
	if err := json.Unmarshal([]byte(e.ok("df", "--format", "json").stdout), &u); err != nil {
		t.Fatal(err)
	}
	for _, k := range u.Kinds {
		if k.Kind == "extracted layers" {
			return k.Size
		}
	}
	t.Fatal("df shows no extracted layers")
	return 0
}

func duKB(t *testing.T, dir string) int64 {
	t.Helper()
	out, err := exec.Command("du", "-sk", dir).Output()
	if err != nil {
		t.Fatalf("du %s: %v", dir, err)
	}
	n, err := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Identical files at two paths (one layer, and two layers) stay two
// inodes: a RUN sees no hard link, a COPY --from of them writes no
// TypeLink. A rw bind of a stage's view takes writes that never reach the
// stage's files.
func TestFilePoolNoFalseHardLinks(t *testing.T) {
	epoch := []string{"SOURCE_DATE_EPOCH=1700000100"}
	df := `FROM busybox AS s
COPY same1 same2 /d/
COPY same1 /e/same3
RUN [ "$(stat -c %i /d/same1)" != "$(stat -c %i /d/same2)" ] && [ "$(stat -c %i /d/same1)" != "$(stat -c %i /e/same3)" ] \
 && stat -c '%h %n' /d/same1 > /nlink
FROM busybox
RUN --mount=type=bind,from=s,target=/m,rw echo written >> /m/d/same1 && echo written >> /m/e/same3 && cat /m/d/same1 > /saw
COPY --from=s /d /out/
COPY --from=s /e/same3 /nlink /out/
`
	body := strings.Repeat("identical\n", 100)
	for _, kind := range []string{"overlay", "copy"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t)
			ctx := project(t, df, map[string]string{"same1": body, "same2": body})
			out := t.TempDir()
			e.build(ctx, epoch, "--snapshotter="+kind, "-o", "type=local,dest="+out)
			inodes := map[uint64]string{}
			for _, name := range []string{"out/same1", "out/same2", "out/same3"} {
				p := filepath.Join(out, name)
				if got := readFile(t, p); got != body {
					t.Errorf("/%s: %q", name, tail(got, 2))
				}
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				st := fi.Sys().(*syscall.Stat_t)
				if other, ok := inodes[st.Ino]; ok || st.Nlink != 1 {
					t.Errorf("/%s is a hard link (nlink %d, same inode as %q): the layer has a TypeLink", name, st.Nlink, other)
				}
				inodes[st.Ino] = name
			}
			if got := readFile(t, filepath.Join(out, "saw")); got != body+"written\n" {
				t.Errorf("the rw bind showed %q", tail(got, 2))
			}
			t.Logf("a RUN saw: %s", readFile(t, filepath.Join(out, "out/nlink")))
		})
	}
}
