package e2e

import (
	"crypto/md5"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// A rebuild after an edit turns the COPY layer's previous extracted dir
// into the new one in place (snapshot/patch.go). The RUN after it must see
// exactly the context — edited, added and removed files, on overlay and
// on the copying snapshotter — and the image must be the one a build from
// scratch on another root makes.
func TestPatchedLayerIsTheContext(t *testing.T) {
	epoch := []string{"SOURCE_DATE_EPOCH=1700000200"}
	for _, kind := range []string{"overlay", "copy"} {
		t.Run(kind, func(t *testing.T) {
			files := map[string]string{}
			for i := range 300 {
				files[fmt.Sprintf("d%d/f%03d.txt", i/50, i)] = strings.Repeat(fmt.Sprintf("%d ", i), 200)
			}
			df := "FROM busybox\nCOPY . /src\nRUN cd /src && find . -type f | sort | xargs md5sum > /sums\n"
			dir := project(t, df, files)
			e := newEnv(t)
			snap := "--snapshotter=" + kind
			e.build(dir, epoch, snap, "-t", "p")
			edits := []struct {
				what string
				do   func()
			}{
				{"edit", func() { files["d2/f117.txt"] += "edited\n" }},
				{"add", func() { files["d3/new.txt"] = "new file\n" }},
				{"remove", func() { delete(files, "d1/f060.txt") }},
				{"remove a dir", func() {
					for k := range files {
						if strings.HasPrefix(k, "d5/") {
							delete(files, k)
						}
					}
				}},
				{"edit again", func() { files["d2/f117.txt"] += "and again\n" }},
			}
			for _, ed := range edits {
				ed.do()
				writeProject(t, dir, df, files)
				before := layerDirs(t, e.root)
				b := e.build(dir, epoch, snap, "-t", "p")
				if b.res.StepsBuilt != 2 {
					t.Fatalf("%s: %d steps built, want COPY and RUN", ed.what, b.res.StepsBuilt)
				}
				if after := layerDirs(t, e.root); after > before {
					t.Errorf("%s: %d extracted layers, were %d: the COPY's old dir was not reused", ed.what, after, before)
				}
				out := t.TempDir()
				e.build(dir, epoch, snap, "-o", "type=local,dest="+out)
				if got, want := readFile(t, filepath.Join(out, "sums")), md5sums(df, files); got != want {
					t.Fatalf("%s: the RUN saw another tree:\n%s\nwant\n%s", ed.what, got, want)
				}
				fresh := newEnv(t)
				if d := fresh.build(dir, epoch, snap, "--no-cache").res.Digest; d != b.res.Digest {
					t.Errorf("%s: from scratch %s, patched %s", ed.what, d, b.res.Digest)
				}
			}
		})
	}
}

// writeProject makes dir hold exactly the Dockerfile and files.
func writeProject(t *testing.T, dir, dockerfile string, files map[string]string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		os.RemoveAll(filepath.Join(dir, e.Name()))
	}
	all := map[string]string{"Dockerfile": dockerfile}
	for k, v := range files {
		all[k] = v
	}
	writeFiles(t, dir, all)
}

// md5sums is what `find . -type f | sort | xargs md5sum` prints in /src.
func md5sums(dockerfile string, files map[string]string) string {
	all := map[string]string{"Dockerfile": dockerfile}
	for k, v := range files {
		all[k] = v
	}
	var names []string
	for k := range all {
		names = append(names, "./"+k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%x  %s\n", md5.Sum([]byte(all[strings.TrimPrefix(n, "./")])), n)
	}
	return b.String()
}

// layerDirs counts the extracted layers under root.
func layerDirs(t *testing.T, root string) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, "snapshots", "layers"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if e.IsDir() {
			n++
		}
	}
	return n
}
