// Package snapshottest builds small real root filesystems for tests: a
// layer made of the host's static busybox (Debian's busybox-static) and an
// in-memory blob source.
package snapshottest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
)

// BusyboxPath is where Debian's busybox-static installs the binary.
const BusyboxPath = "/bin/busybox"

// Applets get a symlink in /bin pointing at busybox.
var Applets = []string{
	"sh", "echo", "cat", "ls", "ps", "hostname", "touch", "rm", "mkdir", "id",
	"sleep", "ln", "stat", "test", "true", "false", "env", "pwd", "cp", "mv",
	"chmod", "chown", "mknod", "find", "grep", "wc", "head", "mount", "umount",
	"printf", "readlink", "sync", "kill", "whoami", "tar", "uname",
}

// Epoch is the mtime of every entry of the busybox layer.
var Epoch = time.Unix(1700000000, 0)

// BusyboxLayer returns a gzip-compressed layer blob with /bin/busybox, its
// applet symlinks, /etc/passwd, /etc/group and the usual empty dirs. It
// installs busybox-static with apt-get when the host lacks it, and skips the
// test when that fails.
func BusyboxLayer(t testing.TB) []byte {
	t.Helper()
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		if out, err := exec.Command("apt-get", "install", "-y", "busybox-static").CombinedOutput(); err != nil {
			t.Skipf("busybox-static unavailable: %v\n%s", err, out)
		}
		if bin, err = os.ReadFile(BusyboxPath); err != nil {
			t.Skipf("busybox-static unavailable: %v", err)
		}
	}
	entries := []Entry{
		{Name: "bin/", Mode: 0o755},
		{Name: "bin/busybox", Mode: 0o755, Body: string(bin)},
	}
	for _, a := range Applets {
		entries = append(entries, Entry{Name: "bin/" + a, Link: "busybox", Symlink: true})
	}
	entries = append(entries,
		Entry{Name: "etc/", Mode: 0o755},
		Entry{Name: "etc/group", Mode: 0o644, Body: "root:x:0:\nusers:x:100:\nnogroup:x:65534:\n"},
		Entry{Name: "etc/passwd", Mode: 0o644, Body: "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"},
		Entry{Name: "root/", Mode: 0o700},
		Entry{Name: "tmp/", Mode: 0o1777},
		Entry{Name: "usr/", Mode: 0o755},
		Entry{Name: "usr/bin/", Mode: 0o755},
		Entry{Name: "var/", Mode: 0o755},
	)
	return Layer(t, entries...)
}

// Entry is one tar entry for Layer. Symlink selects a symlink, otherwise a
// non-empty Link makes a hard link.
type Entry struct {
	Name     string
	Mode     int64
	UID, GID int
	Body     string
	Link     string
	Symlink  bool
	Typeflag byte // overrides the type derived from the fields above
}

// Layer returns a gzip-compressed tar of entries, in the given order.
func Layer(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.Name, Mode: e.Mode, Uid: e.UID, Gid: e.GID, ModTime: Epoch, Format: tar.FormatPAX}
		switch {
		case e.Typeflag != 0:
			hdr.Typeflag, hdr.Linkname = e.Typeflag, e.Link
		case e.Symlink:
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, e.Link, 0o777
		case e.Link != "":
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, e.Link
		case len(e.Name) > 0 && e.Name[len(e.Name)-1] == '/':
			hdr.Typeflag = tar.TypeDir
		default:
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("layer entry %s: %v", e.Name, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, e.Body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarBuf.Bytes())
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return gz.Bytes()
}

// Blobs is an in-memory blob source (a snapshot.BlobOpener).
type Blobs struct {
	mu sync.Mutex
	m  map[digest.Digest][]byte
}

// Add stores a layer blob and returns its digest and diffID.
func (b *Blobs) Add(blob []byte) (dgst, diffID digest.Digest, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[digest.Digest][]byte{}
	}
	dgst = digest.FromBytes(blob)
	b.m[dgst] = blob
	diffID = dgst
	if len(blob) > 2 && blob[0] == 0x1f && blob[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(blob))
		if err != nil {
			return "", "", fmt.Errorf("add blob: %w", err)
		}
		if diffID, err = digest.FromReader(zr); err != nil {
			return "", "", fmt.Errorf("add blob: %w", err)
		}
	}
	return dgst, diffID, nil
}

// OpenBlob returns the blob stored under d.
func (b *Blobs) OpenBlob(d digest.Digest) (io.ReadCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	blob, ok := b.m[d]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", d, os.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(blob)), nil
}
