package export

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/minibuild/minibuild/archive"
	"github.com/minibuild/minibuild/internal/flock"
	"github.com/minibuild/minibuild/snapshot"
	"github.com/minibuild/minibuild/store"
)

// StdinContext is a build context read from standard input
// (`minibuild build -`): a tar (plain, gzip or zstd) extracted into Dir,
// or, as docker, a lone Dockerfile with an empty context.
type StdinContext struct {
	Dir        string // the extracted context (empty for a lone Dockerfile)
	Dockerfile []byte // set when the stream was a Dockerfile, not a tar
	release    func() error
}

// Release removes the extracted context.
func (c *StdinContext) Release() error { return c.release() }

// ContextFromTar reads a build context from r into a new directory under
// tmpDir. Every path resolves inside that directory (snapshot.Extract's
// checks); devices, fifos and whiteout names are refused, since a context
// holds only files, directories and links. A stream that is not an
// archive is a Dockerfile, as `docker build - < Dockerfile`.
func ContextFromTar(ctx context.Context, r io.Reader, tmpDir string) (*StdinContext, error) {
	if err := os.MkdirAll(tmpDir, 0o755); err != nil {
		return nil, err
	}
	dir, hold, err := heldTempDir(tmpDir, "context-")
	if err != nil {
		return nil, err
	}
	c := &StdinContext{Dir: dir, release: func() error {
		defer hold.Close()
		return os.RemoveAll(dir)
	}}
	br := bufio.NewReaderSize(r, 1<<16)
	head, _ := br.Peek(512)
	if !isArchive(head) {
		c.Dockerfile, err = io.ReadAll(br)
		if err != nil {
			c.Release()
			return nil, fmt.Errorf("read the Dockerfile from standard input: %w", err)
		}
		return c, nil
	}
	if err := extractContext(ctx, br, dir); err != nil {
		c.Release()
		return nil, fmt.Errorf("context from standard input: %w", err)
	}
	return c, nil
}

// heldTempDir makes a temp dir and holds its flock (on the dir itself)
// until hold is closed: the store's sweep (store.Open, prune) removes it
// only once this process is gone.
func heldTempDir(tmpDir, prefix string) (dir string, hold *os.File, err error) {
	for i := 0; i < 10; i++ {
		if dir, err = os.MkdirTemp(tmpDir, prefix); err != nil {
			return "", nil, err
		}
		if hold, err = os.Open(dir); err != nil {
			return "", nil, err
		}
		held, err := flock.HoldCreated(hold)
		if err != nil || held {
			if err != nil {
				hold.Close()
				os.RemoveAll(dir)
			}
			return dir, hold, err
		}
		hold.Close() // swept before the lock: make another
	}
	return "", nil, fmt.Errorf("create a temp dir in %s: swept as it was made", tmpDir)
}

// isArchive tells a tar (by its ustar magic) or a gzip or zstd stream from
// a text file.
func isArchive(head []byte) bool {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}), bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return true
	case len(head) >= 262 && bytes.HasPrefix(head[257:], []byte("ustar")):
		return true
	}
	return false
}

// extractContext checks every entry and hands the stream, rewritten, to
// snapshot.Extract.
func extractContext(ctx context.Context, r io.Reader, dir string) error {
	zr, err := snapshot.Decompress(r)
	if err != nil {
		return err
	}
	defer zr.Close()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(filterContext(tar.NewReader(zr), pw)) }()
	_, err = snapshot.Extract(ctx, pr, dir)
	pr.CloseWithError(errors.New("extraction stopped"))
	return err
}

// filterContext copies a context tar, refusing what a context cannot hold.
func filterContext(tr *tar.Reader, w io.Writer) error {
	tw := tar.NewWriter(w)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return tw.Close()
		}
		if err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
		case tar.TypeXGlobalHeader:
			continue
		default:
			return fmt.Errorf("%s: a build context holds only files, directories and links", hdr.Name)
		}
		if strings.HasPrefix(path.Base(hdr.Name), ".wh.") {
			return fmt.Errorf("%s: a whiteout name in a build context", hdr.Name)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}

// Loaded is one image minibuild load stored.
type Loaded struct {
	Tags   []string
	ID     v1.Hash // the config digest
	Digest v1.Hash // the manifest digest
}

// Load stores and tags the images of a docker-archive or an OCI layout
// (tar or directory) at path; "" or "-" reads the archive from stdin,
// spooled to a temp file under the store's tmp dir (the reader needs a
// file) and removed after. Every blob is verified before a tag names it.
func Load(st *store.Store, path string, stdin io.Reader) ([]Loaded, error) {
	if path == "" || path == Stdout {
		spooled, err := spool(stdin, st.Root())
		if err != nil {
			return nil, err
		}
		defer spooled.Close()
		defer os.Remove(spooled.Name())
		path = spooled.Name()
	}
	imgs, err := archive.Read(path)
	if err != nil {
		return nil, err
	}
	var out []Loaded
	for _, n := range imgs {
		dg, err := st.WriteImage(n.Image)
		if err != nil {
			return out, err
		}
		id, err := n.Image.ConfigName()
		if err != nil {
			return out, err
		}
		for _, t := range n.Tags {
			if err := st.Tag(t, dg); err != nil {
				return out, err
			}
		}
		out = append(out, Loaded{Tags: n.Tags, ID: id, Digest: dg})
	}
	return out, nil
}

// spool copies r to a new file under root/tmp, flock-held (a killed
// load's spool is swept by the next command, a live one never), and
// returns it open: the caller removes and then closes it.
func spool(r io.Reader, root string) (*os.File, error) {
	f, err := flock.CreateTemp(root+"/tmp", "load-*.tar")
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		os.Remove(f.Name())
		f.Close()
		return nil, fmt.Errorf("read the archive from standard input: %w", err)
	}
	return f, nil
}
