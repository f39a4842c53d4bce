package copier

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"github.com/minibuild/minibuild/buildctx"
	"github.com/minibuild/minibuild/internal/compression"
	"github.com/opencontainers/go-digest"
)

// archiveSrc is a local archive ADD extracts.
type archiveSrc struct {
	file *buildctx.File
}

// openTar opens a context file as a tar stream.
func (p *Planned) openTar(ctx context.Context, f *buildctx.File) (*tar.Reader, func(), error) {
	fh, err := p.c.Open(f)
	if err != nil {
		return nil, nil, err
	}
	rc, err := compression.Decompress(ctx, fh, compression.Any)
	if err != nil {
		fh.Close()
		return nil, nil, err
	}
	return tar.NewReader(rc), func() { rc.Close(); fh.Close() }, nil
}

// isArchive reports whether ADD should extract f: its content, once
// decompressed, starts with a valid tar header.
func (p *Planned) isArchive(ctx context.Context, f *buildctx.File) (bool, error) {
	if f.Size == 0 {
		return false, nil
	}
	tr, done, err := p.openTar(ctx, f)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "open context file") {
			return false, err
		}
		return false, nil // a corrupt compressed header: copy it as a file
	}
	defer done()
	_, err = tr.Next()
	return err == nil, nil
}

// memberName re-roots an archive member name: cleaned as if under "/",
// so "../../etc/x" and "/etc/x" both land under the destination.
func memberName(name string) string { return rel(name) }

// planArchive lists what extracting f into dest produces, hashing the
// content of every regular member.
func (p *Planned) planArchive(ctx context.Context, f *buildctx.File, dest string, chown *Owner) ([]*entry, error) {
	tr, done, err := p.openTar(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("extract %s: %w", f.Path, err)
	}
	defer done()
	src := &archiveSrc{file: f}
	var out []*entry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("extract %s: %w", f.Path, err)
		}
		m := memberName(hdr.Name)
		if m == "" {
			continue
		}
		e := &entry{path: rel(path.Join(dest, m)), mode: hdr.Mode & 0o7777, uid: hdr.Uid, gid: hdr.Gid,
			mtime: hdr.ModTime, arch: src, member: m}
		if chown != nil {
			e.uid, e.gid = chown.UID, chown.GID
		}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			h := sha256.New()
			n, err := io.Copy(h, tr)
			if err != nil {
				return nil, fmt.Errorf("extract %s: %s: %w", f.Path, hdr.Name, err)
			}
			e.typ, e.kind, e.size, e.sum = tar.TypeReg, srcArchive, n, digest.NewDigest(digest.SHA256, h)
		case tar.TypeDir:
			e.typ = tar.TypeDir
		case tar.TypeSymlink:
			e.typ, e.link = tar.TypeSymlink, hdr.Linkname
		case tar.TypeLink:
			e.typ, e.link = tar.TypeLink, rel(path.Join(dest, memberName(hdr.Linkname)))
		default:
			continue // devices and fifos are not extracted
		}
		out = append(out, e)
	}
	return out, nil
}

// spool holds the regular members of the archives being written, read
// back in entry order rather than archive order.
type spool struct {
	f    *os.File
	at   map[*archiveSrc]map[string][2]int64 // member → offset, size
	plan map[*archiveSrc]map[string]digest.Digest
}

func (s *spool) close() {
	if s.f != nil {
		s.f.Close()
	}
}

func (s *spool) open(e *entry) (io.Reader, error) {
	loc, ok := s.at[e.arch][e.member]
	if !ok {
		return nil, fmt.Errorf("extract %s: member %s vanished", e.arch.file.Path, e.member)
	}
	return io.NewSectionReader(s.f, loc[0], loc[1]), nil
}

// spool re-reads every archive, checking that members still have the
// content the key was computed from.
func (p *Planned) spool() (*spool, error) {
	s := &spool{at: map[*archiveSrc]map[string][2]int64{}, plan: map[*archiveSrc]map[string]digest.Digest{}}
	for _, e := range p.entries {
		if e.kind == srcArchive {
			if s.plan[e.arch] == nil {
				s.plan[e.arch] = map[string]digest.Digest{}
			}
			s.plan[e.arch][e.member] = e.sum
		}
	}
	if len(s.plan) == 0 {
		return s, nil
	}
	f, err := os.CreateTemp("", "minibuild-add-*")
	if err != nil {
		return nil, fmt.Errorf("extract: %w", err)
	}
	os.Remove(f.Name()) // unnamed: nothing is left behind
	s.f = f
	var off int64
	for a, want := range s.plan {
		if err := func() error {
			tr, done, err := p.openTar(context.Background(), a.file)
			if err != nil {
				return err
			}
			defer done()
			s.at[a] = map[string][2]int64{}
			for {
				hdr, err := tr.Next()
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
				m := memberName(hdr.Name)
				sum, ok := want[m]
				if !ok || (hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeRegA) {
					continue
				}
				h := sha256.New()
				n, err := io.Copy(io.MultiWriter(f, h), tr)
				if err != nil {
					return err
				}
				s.at[a][m] = [2]int64{off, n}
				off += n
				if digest.NewDigest(digest.SHA256, h) != sum {
					delete(s.at[a], m) // a later duplicate member may still match
				}
			}
		}(); err != nil {
			s.close()
			return nil, fmt.Errorf("extract %s: %w", a.file.Path, err)
		}
		for m := range want {
			if _, ok := s.at[a][m]; !ok {
				s.close()
				return nil, fmt.Errorf("extract %s: %s changed since the cache key was computed", a.file.Path, m)
			}
		}
	}
	return s, nil
}

// download fetches an ADD URL into an unnamed temp file and verifies the
// checksum. The mtime is the epoch (never Last-Modified) so the layer
// depends on content only.
func (p *Planned) download(ctx context.Context, req Request, src, dest string, destIsDir bool) (*entry, error) {
	u, err := url.Parse(src)
	if err != nil {
		return nil, fmt.Errorf("ADD %s: %w", src, err)
	}
	name := path.Base(u.Path)
	if name == "/" || name == "." || name == "" {
		name = "__unnamed__"
	}
	client := req.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return nil, fmt.Errorf("ADD %s: %w", src, err)
	}
	resp, err := client.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("ADD %s: %w", src, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("ADD %s: invalid response status %s", src, resp.Status)
	}
	f, err := os.CreateTemp("", "minibuild-download-*")
	if err != nil {
		return nil, fmt.Errorf("ADD %s: %w", src, err)
	}
	os.Remove(f.Name())
	p.temps = append(p.temps, f)
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), resp.Body)
	if err != nil {
		return nil, fmt.Errorf("ADD %s: %w", src, err)
	}
	sum := digest.NewDigest(digest.SHA256, h)
	if req.Checksum != "" {
		if err := req.Checksum.Validate(); err != nil {
			return nil, fmt.Errorf("ADD %s: invalid checksum: %w", src, err)
		}
		if req.Checksum.Algorithm() != digest.SHA256 {
			v := req.Checksum.Algorithm().FromReader
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return nil, err
			}
			got, err := v(f)
			if err != nil {
				return nil, fmt.Errorf("ADD %s: %w", src, err)
			}
			if got != req.Checksum {
				return nil, fmt.Errorf("ADD %s: digest mismatch: expected %s, got %s", src, req.Checksum, got)
			}
		} else if sum != req.Checksum {
			return nil, fmt.Errorf("ADD %s: digest mismatch: expected %s, got %s", src, req.Checksum, sum)
		}
	}
	dst := rel(dest)
	if destIsDir {
		dst = rel(path.Join(dest, name))
	}
	e := &entry{path: dst, typ: tar.TypeReg, mode: 0o600, size: n, sum: sum, kind: srcTemp, temp: f, mtime: time.Unix(0, 0)}
	if req.Chown != nil {
		e.uid, e.gid = req.Chown.UID, req.Chown.GID
	}
	if req.Chmod != nil {
		e.mode = tarMode(*req.Chmod)
	}
	return e, nil
}
