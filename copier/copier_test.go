package copier

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/minibuild/minibuild/buildctx"
	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/layer"
	"github.com/opencontainers/go-digest"
)

// fixture builds the standard context.
func fixture(t *testing.T, dir string) {
	t.Helper()
	files := map[string]string{
		"app.py": "print('hi')\n", "req.txt": "flask\n", "src/a.go": "package a\n", "src/sub/b.go": "package b\n",
		"a1.txt": "1", "a2.txt": "2", "secret.env": "X=1", ".dockerignore": "secret.env\n",
	}
	for n, d := range files {
		p := filepath.Join(dir, n)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(d), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	must(t, os.Symlink("app.py", filepath.Join(dir, "link.py")))
	must(t, os.Symlink("../../../../etc/passwd", filepath.Join(dir, "escape")))
	must(t, os.Symlink("a.go", filepath.Join(dir, "src/rel-link")))
	must(t, os.Link(filepath.Join(dir, "src/a.go"), filepath.Join(dir, "src/hard.go")))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type tent struct {
	name     string
	typ      byte
	mode     int64
	uid, gid int
	link     string
	body     string
}

func (e tent) String() string {
	return fmt.Sprintf("%s %c %o %d:%d %q %q", e.name, e.typ, e.mode, e.uid, e.gid, e.link, e.body)
}

// run plans and writes, returning the layer's entries.
func run(t *testing.T, c *buildctx.Context, req Request) ([]tent, *Planned) {
	t.Helper()
	p, err := Plan(context.Background(), c, req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	var buf bytes.Buffer
	w := layer.NewWriter(&buf, layer.Options{})
	must(t, p.Write(w))
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&buf)
	must(t, err)
	tr := tar.NewReader(zr)
	var out []tent
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		b, _ := io.ReadAll(tr)
		out = append(out, tent{h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Linkname, string(b)})
	}
	if len(out) != p.Files() {
		t.Errorf("Files() = %d, wrote %d", p.Files(), len(out))
	}
	return out, p
}

type fakeFI struct{ dir bool }

func (f fakeFI) Name() string { return "x" }
func (f fakeFI) Size() int64  { return 0 }
func (f fakeFI) Mode() fs.FileMode {
	return map[bool]fs.FileMode{true: fs.ModeDir | 0o755, false: 0o644}[f.dir]
}
func (f fakeFI) ModTime() time.Time { return time.Time{} }
func (f fakeFI) IsDir() bool        { return f.dir }
func (f fakeFI) Sys() any           { return nil }

// image is a fake image: dirs and files that exist.
func image(dirs ...string) func(string) (fs.FileInfo, error) {
	return func(p string) (fs.FileInfo, error) {
		if p == "/" || slices.Contains(dirs, p) {
			return fakeFI{dir: true}, nil
		}
		if slices.Contains(dirs, p+"!file") {
			return fakeFI{}, nil
		}
		return nil, fmt.Errorf("stat %s: %w", p, os.ErrNotExist)
	}
}

func ptr[T any](v T) *T { return &v }

func TestCopy(t *testing.T) {
	dir := t.TempDir()
	fixture(t, dir)
	c, err := buildctx.Open(context.Background(), dir, buildctx.Options{})
	must(t, err)
	app := "print('hi')\n"
	tests := []struct {
		name string
		req  Request
		want []string // tent.String() lines
	}{
		{"file to file", Request{Sources: []string{"app.py"}, Dest: "/srv/main.py", DestInfo: image()},
			[]string{`srv/ 5 755 0:0 "" ""`, `srv/main.py 0 644 0:0 "" "print('hi')\n"`}},
		{"file to dir slash, relative to workdir", Request{Sources: []string{"/app.py"}, Dest: "app/", Workdir: "/srv", DestInfo: image("/srv")},
			[]string{`srv/ 5 755 0:0 "" ""`, `srv/app/ 5 755 0:0 "" ""`, `srv/app/app.py 0 644 0:0 "" "print('hi')\n"`}},
		{"file into existing image dir", Request{Sources: []string{"app.py"}, Dest: "/usr/bin", DestInfo: image("/usr", "/usr/bin")},
			[]string{`usr/ 5 755 0:0 "" ""`, `usr/bin/ 5 755 0:0 "" ""`, `usr/bin/app.py 0 644 0:0 "" "print('hi')\n"`}},
		{"dir contents", Request{Sources: []string{"src"}, Dest: "/code", DestInfo: image()},
			[]string{`code/ 5 755 0:0 "" ""`, `code/a.go 0 644 0:0 "" "package a\n"`, `code/hard.go 1 644 0:0 "code/a.go" ""`,
				`code/rel-link 2 777 0:0 "a.go" ""`, `code/sub/ 5 755 0:0 "" ""`, `code/sub/b.go 0 644 0:0 "" "package b\n"`}},
		{"several sources into a dir", Request{Sources: []string{"app.py", "req.txt"}, Dest: "/app", DestInfo: image("/app")},
			[]string{`app/ 5 755 0:0 "" ""`, `app/app.py 0 644 0:0 "" "print('hi')\n"`, `app/req.txt 0 644 0:0 "" "flask\n"`}},
		{"glob", Request{Sources: []string{"a?.txt"}, Dest: "/d", DestInfo: image()},
			[]string{`d/ 5 755 0:0 "" ""`, `d/a1.txt 0 644 0:0 "" "1"`, `d/a2.txt 0 644 0:0 "" "2"`}},
		{"a source named twice lands once", Request{Sources: []string{"a1.txt", "a?.txt", "src/sub/b.go"}, Dest: "/d/", DestInfo: image()},
			[]string{`d/ 5 755 0:0 "" ""`, `d/a1.txt 0 644 0:0 "" "1"`, `d/a2.txt 0 644 0:0 "" "2"`, `d/b.go 0 644 0:0 "" "package b\n"`}},
		{"glob in a subdir", Request{Sources: []string{"src/*.go"}, Dest: "/", DestInfo: image()},
			[]string{`a.go 0 644 0:0 "" "package a\n"`, `hard.go 1 644 0:0 "a.go" ""`}},
		{"chown and chmod", Request{Sources: []string{"src/sub"}, Dest: "/x/y/", Chown: &Owner{1000, 1001}, Chmod: ptr(fs.FileMode(0o700)), DestInfo: image()},
			[]string{`x/ 5 755 1000:1001 "" ""`, `x/y/ 5 755 1000:1001 "" ""`, `x/y/b.go 0 700 1000:1001 "" "package b\n"`}},
		{"symlink source is followed", Request{Sources: []string{"link.py"}, Dest: "/", DestInfo: image()},
			[]string{`link.py 0 644 0:0 "" "` + strings.TrimSuffix(app, "\n") + `\n"`}},
		{"heredoc", Request{Heredocs: []Heredoc{{Name: "EOF", Data: "hello\n"}}, Dest: "/etc/motd", DestInfo: image("/etc")},
			[]string{`etc/ 5 755 0:0 "" ""`, `etc/motd 0 644 0:0 "" "hello\n"`}},
		{"heredoc chmod", Request{Heredocs: []Heredoc{{Name: "run.sh", Data: "#!/bin/sh\n", Chmod: ptr(fs.FileMode(0o755))}}, Dest: "/bin/", DestInfo: image("/bin")},
			[]string{`bin/ 5 755 0:0 "" ""`, `bin/run.sh 0 755 0:0 "" "#!/bin/sh\n"`}},
		{"dest is an image file path", Request{Sources: []string{"req.txt"}, Dest: "/etc/x", DestInfo: image("/etc", "/etc/x!file")},
			[]string{`etc/ 5 755 0:0 "" ""`, `etc/x 0 644 0:0 "" "flask\n"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := run(t, c, tt.req)
			var lines []string
			for _, e := range got {
				lines = append(lines, e.String())
			}
			if !slices.Equal(lines, tt.want) {
				t.Errorf("entries\n got %s\nwant %s", strings.Join(lines, "\n     "), strings.Join(tt.want, "\n     "))
			}
		})
	}
}

func TestCopyErrors(t *testing.T) {
	dir := t.TempDir()
	fixture(t, dir)
	c, err := buildctx.Open(context.Background(), dir, buildctx.Options{})
	must(t, err)
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{"missing", Request{Sources: []string{"missing.txt"}, Dest: "/"}, `failed to compute cache key: "/missing.txt": not found`},
		{"outside", Request{Sources: []string{"../x"}, Dest: "/"}, "forbidden path outside the build context: ../x"},
		{"outside nested", Request{Sources: []string{"src/../../x"}, Dest: "/"}, "forbidden path outside the build context: src/../../x"},
		{"ignored file is absent", Request{Sources: []string{"secret.env"}, Dest: "/"}, `"/secret.env": not found`},
		{"escaping symlink", Request{Sources: []string{"escape"}, Dest: "/"}, `"/escape": not found`},
		{"glob matches nothing", Request{Sources: []string{"*.rs"}, Dest: "/"}, `"/*.rs": not found`},
		{"url in COPY", Request{Sources: []string{"http://x/y"}, Dest: "/"}, "source can't be a URL for COPY"},
		{"checksum on local", Request{Sources: []string{"app.py"}, Dest: "/", Add: true, Checksum: digest.FromString("x")}, "checksum can't be specified"},
		{"parent is a file", Request{Sources: []string{"app.py"}, Dest: "/etc/x/y", DestInfo: image("/etc", "/etc/x!file")}, "is not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Plan(context.Background(), c, tt.req)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func planKey(t *testing.T, dir string, req Request) digest.Digest {
	t.Helper()
	c, err := buildctx.Open(context.Background(), dir, buildctx.Options{})
	must(t, err)
	p, err := Plan(context.Background(), c, req)
	must(t, err)
	defer p.Close()
	return p.Key()
}

func TestKeyStability(t *testing.T) {
	d1, d2 := t.TempDir(), t.TempDir()
	fixture(t, d1)
	fixture(t, d2)
	req := Request{Sources: []string{"."}, Dest: "/app/"}
	k1, k2 := planKey(t, d1, req), planKey(t, d2, req)
	if k1 != k2 {
		t.Fatalf("same content in two dirs: %s != %s", k1, k2)
	}
	future := time.Now().Add(time.Hour)
	must(t, os.Chtimes(filepath.Join(d1, "app.py"), future, future))
	must(t, os.Chtimes(filepath.Join(d1, "src"), future, future))
	if k := planKey(t, d1, req); k != k1 {
		t.Fatalf("touch changed the key")
	}
	must(t, os.WriteFile(filepath.Join(d1, "src/sub/b.go"), []byte("package c\n"), 0o644))
	if k := planKey(t, d1, req); k == k1 {
		t.Fatalf("content edit kept the key")
	}
	must(t, os.Chmod(filepath.Join(d2, "req.txt"), 0o600))
	if k := planKey(t, d2, req); k == k1 {
		t.Fatalf("mode change kept the key")
	}
	if k := planKey(t, d2, Request{Sources: []string{"."}, Dest: "/app/", Chown: &Owner{1, 1}}); k == planKey(t, d2, req) {
		t.Fatalf("chown kept the key")
	}
}

// tarball builds a tar with a dir, a file, a symlink, a hard link and an
// escaping name.
func tarball(t *testing.T) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	add := func(h *tar.Header, body string) {
		h.Size = int64(len(body))
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		must(t, tw.WriteHeader(h))
		io.WriteString(tw, body)
	}
	add(&tar.Header{Name: "pkg/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 5, Gid: 6}, "")
	add(&tar.Header{Name: "pkg/z.txt", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 5, Gid: 6}, "zzz")
	add(&tar.Header{Name: "pkg/a-link", Typeflag: tar.TypeLink, Linkname: "pkg/z.txt", Mode: 0o640}, "")
	add(&tar.Header{Name: "pkg/sym", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd", Mode: 0o777}, "")
	add(&tar.Header{Name: "../../evil", Typeflag: tar.TypeReg, Mode: 0o644}, "e")
	must(t, tw.Close())
	return b.Bytes()
}

func compress(t *testing.T, kind string, data []byte) []byte {
	var b bytes.Buffer
	switch kind {
	case "plain":
		return data
	case "gzip":
		w := gzip.NewWriter(&b)
		w.Write(data)
		w.Close()
	case "zstd":
		w, _ := zstd.NewWriter(&b)
		w.Write(data)
		w.Close()
	case "bzip2", "xz":
		cmd := exec.Command(kind, "-c")
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.Output()
		if err != nil {
			t.Skipf("%s: %v", kind, err)
		}
		return out
	}
	return b.Bytes()
}

func TestAddArchive(t *testing.T) {
	want := []string{
		`opt/ 5 755 0:0 "" ""`, `opt/evil 0 644 0:0 "" "e"`, `opt/pkg/ 5 750 5:6 "" ""`,
		`opt/pkg/a-link 0 640 5:6 "" "zzz"`, `opt/pkg/sym 2 777 0:0 "/etc/passwd" ""`, `opt/pkg/z.txt 1 640 5:6 "opt/pkg/a-link" ""`,
	}
	for _, kind := range []string{"plain", "gzip", "bzip2", "xz", "zstd"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			must(t, os.WriteFile(filepath.Join(dir, "bundle.bin"), compress(t, kind, tarball(t)), 0o644))
			c, err := buildctx.Open(context.Background(), dir, buildctx.Options{})
			must(t, err)
			got, _ := run(t, c, Request{Sources: []string{"bundle.bin"}, Dest: "/opt", Add: true, DestInfo: image()})
			var lines []string
			for _, e := range got {
				lines = append(lines, e.String())
			}
			if !slices.Equal(lines, want) {
				t.Errorf("entries\n got %s\nwant %s", strings.Join(lines, "\n     "), strings.Join(want, "\n     "))
			}
			// COPY never extracts
			got, _ = run(t, c, Request{Sources: []string{"bundle.bin"}, Dest: "/opt/", DestInfo: image("/opt")})
			if len(got) != 2 || got[1].name != "opt/bundle.bin" { // opt/ as the image has it, then the file
				t.Errorf("COPY of an archive: %v", got)
			}
		})
	}
	// a gzip that is not a tar is copied as a file by ADD
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "notes.gz"), compress(t, "gzip", []byte("just text")), 0o644))
	c, err := buildctx.Open(context.Background(), dir, buildctx.Options{})
	must(t, err)
	got, _ := run(t, c, Request{Sources: []string{"notes.gz"}, Dest: "/", Add: true})
	if len(got) != 1 || got[0].name != "notes.gz" {
		t.Errorf("ADD of a non-tar gzip: %v", got)
	}
}

func TestAddURL(t *testing.T) {
	body := "downloaded content"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
		io.WriteString(w, body)
	}))
	defer srv.Close()
	c, err := buildctx.Open(context.Background(), t.TempDir(), buildctx.Options{})
	must(t, err)
	base := Request{Add: true, HTTPClient: srv.Client(), DestInfo: image("/dl")}

	req := base
	req.Sources, req.Dest, req.Checksum = []string{srv.URL + "/files/tool.bin"}, "/dl/", digest.FromString(body)
	got, p := run(t, c, req)
	if len(got) != 2 || got[1].String() != `dl/tool.bin 0 600 0:0 "" "downloaded content"` {
		t.Errorf("download: %v", got)
	}
	req.Dest = "/dl/renamed"
	got, p2 := run(t, c, req)
	if len(got) != 2 || got[1].name != "dl/renamed" { // /dl exists: carried as it is, nothing created
		t.Errorf("download to a file name: %v", got)
	}
	if p.Key() == p2.Key() {
		t.Error("different destinations, same key")
	}

	req.Dest = "/dl/"
	req.Checksum = digest.FromString("something else")
	if _, err := Plan(context.Background(), c, req); err == nil || !strings.Contains(err.Error(), "digest mismatch") {
		t.Errorf("checksum mismatch: %v", err)
	}
	req.Checksum, req.Sources = "", []string{srv.URL + "/missing"}
	if _, err := Plan(context.Background(), c, req); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("404: %v", err)
	}
}

// TestKeyEncoding checks that computeKey hands every entry to the tree
// encoding as it lands: a context file's raw sum is its digest string.
func TestKeyEncoding(t *testing.T) {
	es := []*entry{
		{path: "app", typ: tar.TypeDir, mode: 0o755},
		{path: "app/ctx", typ: tar.TypeReg, mode: 0o644, uid: 1, gid: 2, kind: srcContext, raw: sha256.Sum256([]byte("ctx"))},
		{path: "app/doc", typ: tar.TypeReg, mode: 0o600, kind: srcData, sum: digest.FromString("doc")},
		{path: "app/hard", typ: tar.TypeLink, link: "app/ctx"},
		{path: "app/sym", typ: tar.TypeSymlink, mode: 0o777, link: "../x"},
	}
	for n := range len(es) + 1 {
		h := cache.NewTreeHasher()
		for _, e := range es[:n] {
			h.Add(&cache.TreeEntry{Path: e.path, Type: e.typ, Mode: e.mode, UID: e.uid, GID: e.gid, Sum: e.digest(), Link: e.link})
		}
		if got, want := computeKey(es[:n]), h.Digest(); got != want {
			t.Errorf("%d entries: key %s, tree digest %s", n, got, want)
		}
	}
}

// BenchmarkPlan20k plans COPY . /src over 20,000 files whose digests the
// stat cache already holds: the copier's share of a no-op rebuild.
func BenchmarkPlan20k(b *testing.B) {
	dir, state := b.TempDir(), b.TempDir()
	old := time.Now().Add(-time.Hour)
	for d := range 200 {
		sub := filepath.Join(dir, fmt.Sprintf("d%d", d))
		if err := os.Mkdir(sub, 0o755); err != nil {
			b.Fatal(err)
		}
		for f := range 100 {
			p := filepath.Join(sub, fmt.Sprintf("f%d.txt", f))
			if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
				b.Fatal(err)
			}
			if err := os.Chtimes(p, old, old); err != nil {
				b.Fatal(err)
			}
		}
	}
	open := func() *buildctx.Context {
		c, err := buildctx.Open(context.Background(), dir, buildctx.Options{StateDir: state})
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	c := open()
	if err := c.DigestAll(context.Background(), c.Tree()); err != nil {
		b.Fatal(err)
	}
	must(b, c.Close())
	c = open() // every digest now comes from the stat cache
	req := Request{Sources: []string{"."}, Dest: "/src", DestInfo: image()}
	for b.Loop() {
		p, err := Plan(context.Background(), c, req)
		if err != nil {
			b.Fatal(err)
		}
		if p.Files() != 20201 {
			b.Fatalf("%d entries", p.Files())
		}
		p.Close()
	}
}

// A FIFO in the context lands as a FIFO, as BuildKit copies one (fsutil
// copyDevice); a socket, which a tar cannot hold, is left out.
func TestCopyFIFO(t *testing.T) {
	dir := t.TempDir()
	must(t, syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o640))
	must(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
	must(t, syscall.Mkfifo(filepath.Join(dir, "d", "p2"), 0o600))
	c, err := buildctx.Open(context.Background(), dir, buildctx.Options{})
	must(t, err)
	for _, tt := range []struct {
		req  Request
		want []string
	}{
		{Request{Sources: []string{"pipe"}, Dest: "/x", DestInfo: image()}, []string{`x 6 640 0:0 "" ""`}},
		{Request{Sources: []string{"d"}, Dest: "/d/", Chmod: ptr(fs.FileMode(0o644)), DestInfo: image()}, []string{`d/ 5 755 0:0 "" ""`, `d/p2 6 644 0:0 "" ""`}},
	} {
		got, _ := run(t, c, tt.req)
		var lines []string
		for _, e := range got {
			lines = append(lines, e.String())
		}
		if !slices.Equal(lines, tt.want) {
			t.Errorf("COPY %v: entries\n got %s\nwant %s", tt.req.Sources, strings.Join(lines, "\n     "), strings.Join(tt.want, "\n     "))
		}
	}
}
