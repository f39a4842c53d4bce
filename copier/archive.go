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
	"github.com/minibuild/minibuild/layer"
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
// content of every regular member. Members are taken in archive order by
// the one tar rule (layer.Replaces): a later member replaces an earlier
// one at its path, with everything under it, unless both are
// directories; a member under a path an earlier member made a file is an
// error, as when the layer is extracted.
func (p *Planned) planArchive(ctx context.Context, f *buildctx.File, dest string, chown *Owner) ([]*entry, error) {
	tr, done, err := p.openTar(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("extract %s: %w", f.Path, err)
	}
	defer done()
	src := &archiveSrc{file: f}
	var out archiveEntries
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
		if err := out.add(m, e); err != nil {
			return nil, fmt.Errorf("extract %s: %s: %w", f.Path, hdr.Name, err)
		}
	}
	return out.list(), nil
}

// archiveEntries applies layer.Replaces to an archive's members in order.
type archiveEntries struct {
	all    []*entry
	byName map[string]int // member name → index in all of the live entry
	gone   map[int]bool
}

func (a *archiveEntries) add(m string, e *entry) error {
	if a.byName == nil {
		a.byName, a.gone = map[string]int{}, map[int]bool{}
	}
	for d := path.Dir(m); d != "."; d = path.Dir(d) {
		if i, ok := a.byName[d]; ok && a.all[i].typ != tar.TypeDir && a.all[i].typ != tar.TypeSymlink {
			return fmt.Errorf("parent %s is not a directory", d)
		}
	}
	if i, ok := a.byName[m]; ok {
		old := a.all[i]
		if layer.Replaces(old.typ == tar.TypeDir, e.typ == tar.TypeDir) {
			a.gone[i] = true
			if old.typ == tar.TypeDir {
				a.removeUnder(m)
			}
		}
	}
	a.byName[m] = len(a.all)
	a.all = append(a.all, e)
	return nil
}

// removeUnder drops the live entries strictly under the member name m.
func (a *archiveEntries) removeUnder(m string) {
	for name, i := range a.byName {
		if strings.HasPrefix(name, m+"/") {
			a.gone[i] = true
			delete(a.byName, name)
		}
	}
}

// list is the live entries in archive order; of two directories at one
// path the later stays (its metadata wins when the list is sorted).
func (a *archiveEntries) list() []*entry {
	out := make([]*entry, 0, len(a.all))
	for i, e := range a.all {
		if !a.gone[i] {
			out = append(out, e)
		}
	}
	return out
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
	if err := p.reserveSpool(); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(p.space.Dir, "minibuild-add-*")
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

// reserveSpool checks, with one statfs, that the archive members the
// spool is about to hold fit above the reserve: the sizes come from the
// tar headers, so a small archive that expands enormously fails here,
// before anything is written.
func (p *Planned) reserveSpool() error {
	var size int64
	var names []string
	seen := map[*archiveSrc]bool{}
	for _, e := range p.entries {
		if e.kind == srcArchive {
			size += e.size
			if !seen[e.arch] {
				seen[e.arch] = true
				names = append(names, e.arch.file.Path)
			}
		}
	}
	m := p.space.NewMeter("expand archive " + strings.Join(names, ", "))
	return m.Need(size)
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
