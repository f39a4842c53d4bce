package copier

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minibuild/minibuild/buildctx"
)

// linkedImage is a fake rootfs with symlinks: dirs (with modes), files,
// and links from a path to an absolute target, resolved as the kernel
// would inside the root.
type linkedImage struct {
	dirs  map[string]fs.FileMode
	files []string
	links map[string]string
}

func (im linkedImage) resolve(p string) (string, error) {
	cur := ""
	for _, c := range strings.Split(strings.Trim(p, "/"), "/") {
		if c == "" {
			continue
		}
		next := cur + "/" + c
		if t, ok := im.links[next]; ok {
			next = t
		}
		cur = next
	}
	if cur == "" {
		cur = "/"
	}
	return cur, nil
}

type statFI struct {
	mode fs.FileMode
}

func (f statFI) Name() string       { return "x" }
func (f statFI) Size() int64        { return 0 }
func (f statFI) Mode() fs.FileMode  { return f.mode }
func (f statFI) ModTime() time.Time { return time.Unix(1700000000, 0) }
func (f statFI) IsDir() bool        { return f.mode.IsDir() }
func (f statFI) Sys() any           { return &syscall.Stat_t{Uid: 7, Gid: 8} }

func (im linkedImage) stat(p string) (fs.FileInfo, error) {
	r, _ := im.resolve(p)
	if m, ok := im.dirs[r]; ok || r == "/" {
		return statFI{fs.ModeDir | m}, nil
	}
	if slices.Contains(im.files, r) {
		return statFI{0o644}, nil
	}
	return nil, fmt.Errorf("stat %s: %w", p, os.ErrNotExist)
}

// TestDestinationThroughImageSymlinks checks that entries land where
// docker puts them on an image with symlinks: through a symlinked parent
// (/bin → /usr/bin), into a dangling link's target, replacing a link to
// a file; and that existing parents keep the image's metadata (/tmp's
// 1777 and owner) instead of a default 0755 root-owned directory.
func TestDestinationThroughImageSymlinks(t *testing.T) {
	dir := t.TempDir()
	fixture(t, dir)
	c, err := buildctx.Open(context.Background(), dir, buildctx.Options{})
	must(t, err)
	im := linkedImage{
		dirs:  map[string]fs.FileMode{"/usr": 0o755, "/usr/bin": 0o755, "/tmp": 0o1777 | fs.ModeSticky, "/srv": 0o750, "/etc": 0o755},
		files: []string{"/etc/real.conf"},
		links: map[string]string{"/bin": "/usr/bin", "/app": "/srv/app", "/etc/conf": "/etc/real.conf", "/escape": "/usr"},
	}
	tests := []struct {
		name string
		req  Request
		want []string
	}{
		{"a file into a symlinked dir", Request{Sources: []string{"app.py"}, Dest: "/bin/tool"},
			[]string{`usr/ 5 755 7:8 "" ""`, `usr/bin/ 5 755 7:8 "" ""`, `usr/bin/tool 0 644 0:0 "" "print('hi')\n"`}},
		{"a directory into a symlinked dir", Request{Sources: []string{"src/sub"}, Dest: "/bin/"},
			[]string{`usr/ 5 755 7:8 "" ""`, `usr/bin/ 5 755 7:8 "" ""`, `usr/bin/b.go 0 644 0:0 "" "package b\n"`}},
		{"a parent keeps the image's metadata", Request{Sources: []string{"app.py"}, Dest: "/tmp/x/"},
			[]string{`tmp/ 5 1777 7:8 "" ""`, `tmp/x/ 5 755 0:0 "" ""`, `tmp/x/app.py 0 644 0:0 "" "print('hi')\n"`}},
		{"a dangling link's target is created", Request{Sources: []string{"app.py"}, Dest: "/app/"},
			[]string{`srv/ 5 750 7:8 "" ""`, `srv/app/ 5 755 0:0 "" ""`, `srv/app/app.py 0 644 0:0 "" "print('hi')\n"`}},
		{"a link to a file is replaced", Request{Sources: []string{"req.txt"}, Dest: "/etc/conf"},
			[]string{`etc/ 5 755 7:8 "" ""`, `etc/conf 0 644 0:0 "" "flask\n"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.DestInfo, tt.req.Resolve = im.stat, im.resolve
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
