package buildctx

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// mktree creates files (content = name) and dirs (names ending in "/").
func mktree(t testing.TB, root string, names ...string) {
	t.Helper()
	for _, n := range names {
		p := filepath.Join(root, filepath.FromSlash(n))
		if strings.HasSuffix(n, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func paths(c *Context) []string {
	var out []string
	for _, f := range c.Files() {
		out = append(out, f.Path)
	}
	return out
}

func TestIgnore(t *testing.T) {
	tree := []string{"Dockerfile", "app.py", "app.pyc", "lib/x.py", "lib/x.pyc", "lib/deep/y.pyc",
		"node_modules/a/index.js", "node_modules/keep/k.js", "docs/a.md", "docs/b.txt", "secret/key", "empty/"}
	tests := []struct {
		name   string
		ignore string
		want   []string
	}{
		{"none", "", []string{"Dockerfile", "app.py", "app.pyc", "docs", "docs/a.md", "docs/b.txt", "empty",
			"lib", "lib/deep", "lib/deep/y.pyc", "lib/x.py", "lib/x.pyc", "node_modules", "node_modules/a",
			"node_modules/a/index.js", "node_modules/keep", "node_modules/keep/k.js", "secret", "secret/key"}},
		{"top-level pyc only", "*.pyc\nnode_modules\ndocs\nsecret\nempty\nlib",
			[]string{".dockerignore", "Dockerfile", "app.py"}},
		{"doublestar pyc", "**/*.pyc\nnode_modules\ndocs\nsecret\nempty\n",
			[]string{".dockerignore", "Dockerfile", "app.py", "lib", "lib/deep", "lib/x.py"}},
		{"dir with exception inside", "node_modules\n!node_modules/keep\ndocs\nsecret\nempty\nlib\n*.pyc",
			[]string{".dockerignore", "Dockerfile", "app.py", "node_modules", "node_modules/keep", "node_modules/keep/k.js"}},
		{"wildcard exception", "docs\n!docs/*.md\nnode_modules\nsecret\nempty\nlib\n*.pyc",
			[]string{".dockerignore", "Dockerfile", "docs", "docs/a.md", "app.py"}},
		{"leading slash and cleaning", "/secret/\n./docs/../docs\nnode_modules\nempty\nlib\n*.pyc\n# comment\n",
			[]string{".dockerignore", "Dockerfile", "app.py"}},
		{"ignore everything but app", "*\n!app.py", []string{"app.py"}},
		{"dockerignore ignores itself and Dockerfile", ".dockerignore\nDockerfile\n*\n!app.*",
			[]string{"app.py", "app.pyc"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			mktree(t, dir, tree...)
			if tt.ignore != "" {
				if err := os.WriteFile(filepath.Join(dir, ".dockerignore"), []byte(tt.ignore), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			c, err := Open(context.Background(), dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Clone(tt.want)
			slices.Sort(want)
			if got := paths(c); !slices.Equal(got, want) {
				t.Errorf("files\n got %q\nwant %q", got, want)
			}
		})
	}
}

func TestWalkMetadata(t *testing.T) {
	dir := t.TempDir()
	mktree(t, dir, "a/b.txt", "a-c")
	if err := os.Symlink("a/b.txt", filepath.Join(dir, "ln")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "a-c"), filepath.Join(dir, "hard")); err != nil {
		t.Fatal(err)
	}
	c, err := Open(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := paths(c), []string{"a", "a-c", "a/b.txt", "hard", "ln"}; !slices.Equal(got, want) {
		t.Fatalf("order: got %q want %q", got, want)
	}
	ln, _ := c.Lookup("/ln")
	if ln.Mode&os.ModeSymlink == 0 || ln.Link != "a/b.txt" {
		t.Errorf("symlink: mode %v link %q", ln.Mode, ln.Link)
	}
	h, _ := c.Lookup("hard")
	ac, _ := c.Lookup("a-c")
	if h.Ino != ac.Ino || h.Nlink != 2 {
		t.Errorf("hard link: ino %d vs %d nlink %d", h.Ino, ac.Ino, h.Nlink)
	}
	if r, ok := c.Lookup("."); !ok || !r.Mode.IsDir() {
		t.Errorf("root lookup: %v %v", r, ok)
	}
	if _, err := c.Digest(ln); err == nil {
		t.Error("digest of a symlink should fail")
	}
	d, err := c.Digest(ac)
	if err != nil || d != digest.FromString("a-c") {
		t.Errorf("digest: %s %v", d, err)
	}
}

func write(t *testing.T, p, s string, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// open opens dir and digests f, reporting whether the content was read.
func digestOnce(t *testing.T, dir, state, name string) (digest.Digest, bool) {
	t.Helper()
	c, err := Open(context.Background(), dir, Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	f, ok := c.Lookup(name)
	if !ok {
		t.Fatalf("%s missing", name)
	}
	d, err := c.Digest(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	return d, f.state.computed != nil
}

func TestStatCachePersistence(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	old := time.Now().Add(-time.Hour)
	write(t, filepath.Join(dir, "f"), "hello", old)
	d1, read1 := digestOnce(t, dir, state, "f")
	d2, read2 := digestOnce(t, dir, state, "f")
	if d1 != digest.FromString("hello") || d2 != d1 {
		t.Fatalf("digests %s %s", d1, d2)
	}
	if !read1 || read2 {
		t.Errorf("read first=%v second=%v; want the second served by the cache", read1, read2)
	}
	// a content change with a new mtime is seen
	write(t, filepath.Join(dir, "f"), "world!", old.Add(time.Minute))
	if d, read := digestOnce(t, dir, state, "f"); d != digest.FromString("world!") || !read {
		t.Errorf("after edit: %s read=%v", d, read)
	}
	// a corrupt cache file is ignored
	files, _ := filepath.Glob(filepath.Join(state, "statcache-*"))
	if len(files) != 1 {
		t.Fatalf("cache files: %v", files)
	}
	if err := os.WriteFile(files[0], []byte("minibuild-statcache-v1\ngarbage-garbage-garbage-garbage-garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if d, read := digestOnce(t, dir, state, "f"); d != digest.FromString("world!") || !read {
		t.Errorf("corrupt cache: %s read=%v", d, read)
	}
	if _, read := digestOnce(t, dir, state, "f"); read {
		t.Error("cache not rewritten after corruption")
	}
}

// TestRacyRewrite: same size, mtime forced back, within the same second —
// only ctime (and the racy rule) can tell.
func TestRacyRewrite(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	p := filepath.Join(dir, "f")
	mtime := time.Now().Add(-time.Hour).Truncate(time.Second)
	write(t, p, "aaaa", mtime)
	if d, _ := digestOnce(t, dir, state, "f"); d != digest.FromString("aaaa") {
		t.Fatal(d)
	}
	write(t, p, "bbbb", mtime)
	d, read := digestOnce(t, dir, state, "f")
	if d != digest.FromString("bbbb") || !read {
		t.Fatalf("stale digest after same-size rewrite: %s read=%v", d, read)
	}
}

// TestRacyRule: an entry whose stat matches exactly is still not trusted
// when the file's mtime is not older than the recording time minus the
// margin.
func TestRacyRule(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	write(t, filepath.Join(dir, "f"), "fresh", time.Now())
	_, read1 := digestOnce(t, dir, state, "f")
	_, read2 := digestOnce(t, dir, state, "f")
	if !read1 || !read2 {
		t.Fatalf("fresh file must be re-read: %v %v", read1, read2)
	}
	e := cacheEntry{mtime: 100, recorded: 100 + int64(racyMargin)}
	f := &File{mtimeNs: 100}
	if e.trusted(f) {
		t.Error("mtime == recorded-margin must not be trusted")
	}
	e.recorded++
	if !e.trusted(f) {
		t.Error("mtime < recorded-margin should be trusted")
	}
	for _, mut := range []func(*File){
		func(f *File) { f.Size++ }, func(f *File) { f.ctimeNs++ }, func(f *File) { f.Ino++ },
		func(f *File) { f.Dev++ }, func(f *File) { f.rawMode ^= 1 }, func(f *File) { f.mtimeNs++ },
	} {
		g := *f
		mut(&g)
		if e.trusted(&g) {
			t.Errorf("changed stat trusted: %+v", g)
		}
	}
}

func TestDigestAll(t *testing.T) {
	dir := t.TempDir()
	var names []string
	for i := range 50 {
		names = append(names, fmt.Sprintf("d%d/f%d", i%5, i))
	}
	mktree(t, dir, names...)
	c, err := Open(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.DigestAll(context.Background(), c.Files()); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		f, _ := c.Lookup(n)
		d, _ := c.Digest(f)
		if d != digest.FromString(n) {
			t.Errorf("%s: %s", n, d)
		}
	}
}

func BenchmarkWarmRehash20k(b *testing.B) {
	dir, state := b.TempDir(), b.TempDir()
	old := time.Now().Add(-time.Hour)
	for i := range 20000 {
		p := filepath.Join(dir, fmt.Sprintf("d%02d/s%02d/f%05d.txt", i%40, (i/40)%25, i))
		if i%1000 == 0 {
			os.MkdirAll(filepath.Dir(p), 0o755)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		sum := sha256.Sum256([]byte(p))
		if err := os.WriteFile(p, sum[:], 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.Chtimes(p, old, old); err != nil {
			b.Fatal(err)
		}
	}
	run := func() {
		c, err := Open(context.Background(), dir, Options{StateDir: state})
		if err != nil {
			b.Fatal(err)
		}
		if n := len(c.Files()); n != 20000+40+40*25 {
			b.Fatalf("%d files", n)
		}
		if err := c.DigestAll(context.Background(), c.Files()); err != nil {
			b.Fatal(err)
		}
		if err := c.Close(); err != nil {
			b.Fatal(err)
		}
	}
	run() // cold: fills the cache
	b.ResetTimer()
	for b.Loop() {
		run()
	}
}

func TestTreeOrder(t *testing.T) {
	dir := t.TempDir()
	mktree(t, dir, "a/b", "a/c/d", "a-c", "a.txt", "ab", "a!", "b/", "z")
	c, err := Open(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var tree []string
	for _, f := range c.Tree() {
		tree = append(tree, f.Path)
	}
	want := []string{"a", "a/b", "a/c", "a/c/d", "a!", "a-c", "a.txt", "ab", "b", "z"}
	if !slices.Equal(tree, want) {
		t.Fatalf("tree order\n got %q\nwant %q", tree, want)
	}
	sorted := paths(c)
	if !slices.IsSorted(sorted) || len(sorted) != len(want) {
		t.Errorf("Files not sorted by path: %q", sorted)
	}
	under := func(d string) []string {
		var out []string
		for _, f := range c.Under(d) {
			out = append(out, f.Path)
		}
		return out
	}
	for _, tt := range []struct {
		dir  string
		want []string
	}{
		{"a", []string{"a/b", "a/c", "a/c/d"}},
		{"/a/c/", []string{"a/c/d"}},
		{"b", nil},
		{"missing", nil},
		{".", want},
	} {
		if got := under(tt.dir); !slices.Equal(got, tt.want) {
			t.Errorf("Under(%q) = %q, want %q", tt.dir, got, tt.want)
		}
	}
	for _, p := range want {
		if f, ok := c.Lookup("./" + p); !ok || f.Path != p {
			t.Errorf("Lookup(%q) = %v %v", p, f, ok)
		}
	}
	for _, p := range []string{"a/", "a/c/d/", "missing", "a/x", "a-"} {
		if f, ok := c.Lookup(p); ok != (p == "a/" || p == "a/c/d/") {
			t.Errorf("Lookup(%q) = %v %v", p, f, ok)
		}
	}
}

func TestComparePaths(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"a", "a", 0}, {"a", "a/b", -1}, {"a/b", "a-c", -1}, {"a/b", "a.txt", -1},
		{"a-c", "a/b", 1}, {"ab", "a/b", 1}, {"a/b/c", "a/bc", -1}, {"", "a", -1},
	} {
		if got := ComparePaths(tt.a, tt.b); (got > 0) != (tt.want > 0) || (got < 0) != (tt.want < 0) {
			t.Errorf("ComparePaths(%q, %q) = %d, want sign of %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestStatCacheFormat(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cache")
	es := []cacheEntry{
		{path: "a", size: 1, mtime: 2, ctime: 3, ino: 4, dev: 5, mode: 0o100644, recorded: 6, sum: sha256.Sum256([]byte("a"))},
		{path: "a/b", size: 7, mtime: -8, ctime: 9, ino: 10, dev: 11, mode: 0o100755, recorded: 12},
		{path: "a-c", recorded: 13},
	}
	if err := saveCache(file, es); err != nil {
		t.Fatal(err)
	}
	if got := loadCache(file); !slices.Equal(got, es) {
		t.Fatalf("round trip\n got %+v\nwant %+v", got, es)
	}
	// entries out of tree order are refused whole
	es[1], es[2] = es[2], es[1]
	if err := saveCache(file, es); err != nil {
		t.Fatal(err)
	}
	if got := loadCache(file); got != nil {
		t.Errorf("unsorted cache accepted: %+v", got)
	}
	// so is a truncated one
	data, _ := os.ReadFile(file)
	if _, err := decodeCache(data[:len(data)-1]); err == nil {
		t.Error("truncated cache accepted")
	}
}

// A .dockerignore that is a FIFO is an error at once, never a wait.
func TestDockerignoreFIFO(t *testing.T) {
	root := t.TempDir()
	mktree(t, root, "a")
	if err := unix.Mkfifo(filepath.Join(root, ".dockerignore"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		c, err := Open(context.Background(), root, Options{})
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), ".dockerignore") || !strings.Contains(err.Error(), "is a FIFO") {
			t.Errorf("a FIFO .dockerignore: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Open blocked on a FIFO .dockerignore")
	}
}
