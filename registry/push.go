package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/minibuild/minibuild/store"
)

// Push statuses reported through Options.Progress.
const (
	StatusPushing = "pushing" // upload started
	StatusPushed  = "pushed"  // uploaded and acknowledged by the registry
	StatusMounted = "mounted" // cross-repo mounted from another repository of the registry
	// StatusExists (shared with pulls) means the registry already had it.
)

// Blob is one blob of a manifest to push: its descriptor and how to read it.
type Blob struct {
	Desc v1.Descriptor
	Open func() (io.ReadCloser, error)
}

// Push uploads img to ref and returns the manifest digest. Each blob the
// registry already has in ref's repository is skipped; one that s knows
// to be in another repository of the same registry is cross-repo mounted;
// the rest are uploaded, opts.Parallel at a time, each retried with backoff
// on transient failures. The manifest goes last, so a failed push never
// leaves a manifest naming missing blobs. s may be nil (no mounts, nothing
// recorded).
func Push(ctx context.Context, s *store.Store, img v1.Image, ref string, opts Options) (v1.Hash, error) {
	raw, err := img.RawManifest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: manifest: %w", ref, err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: manifest: %w", ref, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: manifest: %w", ref, err)
	}
	blobs := []Blob{{Desc: m.Config, Open: func() (io.ReadCloser, error) {
		b, err := img.RawConfigFile()
		if err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}}}
	for _, d := range m.Layers {
		blobs = append(blobs, Blob{Desc: d, Open: func() (io.ReadCloser, error) {
			l, err := img.LayerByDigest(d.Digest)
			if err != nil {
				return nil, err
			}
			return l.Compressed()
		}})
	}
	return PushManifest(ctx, s, ref, raw, mt, blobs, opts)
}

// StoreBlob is a Blob read from s.
func StoreBlob(s *store.Store, d v1.Descriptor) Blob {
	return Blob{Desc: d, Open: func() (io.ReadCloser, error) { return s.OpenBlob(digest.Digest(d.Digest.String())) }}
}

// PushManifest pushes blobs (as Push does) and then the manifest raw of
// media type mt to ref, a tag or a digest. It returns the manifest digest.
func PushManifest(ctx context.Context, s *store.Store, ref string, raw []byte, mt types.MediaType, blobs []Blob, opts Options) (v1.Hash, error) {
	r, err := Reference(ref, opts.Insecure)
	if err != nil {
		return v1.Hash{}, err
	}
	repo := r.Context()
	// Mount candidates: other repositories of the same registry.
	sources := map[v1.Hash][]name.Repository{}
	var mountScopes []string
	for _, b := range blobs {
		if s == nil {
			break
		}
		for _, src := range s.BlobSources(digest.Digest(b.Desc.Digest.String())) {
			sr, err := name.NewRepository(src, nameOpts(repo)...)
			if err != nil || sr.RegistryStr() != repo.RegistryStr() || sr.RepositoryStr() == repo.RepositoryStr() {
				continue
			}
			sources[b.Desc.Digest] = append(sources[b.Desc.Digest], sr)
			if sc := sr.Scope(transport.PullScope); !slices.Contains(mountScopes, sc) {
				mountScopes = append(mountScopes, sc)
			}
		}
	}
	sess, err := newSession(ctx, repo, append([]string{repo.Scope(transport.PushScope)}, mountScopes...), opts)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	err = forEach(ctx, dedupe(blobs), opts.parallel(), func(ctx context.Context, b Blob) error {
		status, err := sess.pushBlob(ctx, b, sources[b.Desc.Digest], func(st string) { opts.report(ref, b.Desc, st) })
		if err != nil {
			return fmt.Errorf("blob %s: %w", b.Desc.Digest, err)
		}
		opts.report(ref, b.Desc, status)
		return nil
	})
	if err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	md, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return v1.Hash{}, err
	}
	if err := sess.putManifest(ctx, r.Identifier(), raw, mt); err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	if s != nil {
		for _, b := range blobs {
			// A failure only loses a future mount: not worth failing the push.
			_ = s.AddBlobSource(digest.Digest(b.Desc.Digest.String()), repoName(repo))
		}
	}
	return md, nil
}

// repoName is how the store remembers a repository: "host/path".
func repoName(r name.Repository) string { return r.RegistryStr() + "/" + r.RepositoryStr() }

// nameOpts keeps a repository's insecure flag when parsing another
// repository of the same registry.
func nameOpts(r name.Repository) []name.Option {
	if r.Scheme() == "http" {
		return []name.Option{name.Insecure}
	}
	return nil
}

func dedupe(blobs []Blob) []Blob {
	seen := map[v1.Hash]bool{}
	var out []Blob
	for _, b := range blobs {
		if !seen[b.Desc.Digest] {
			seen[b.Desc.Digest] = true
			out = append(out, b)
		}
	}
	return out
}

// session is an authenticated HTTP client for one repository.
type session struct {
	client *http.Client
	repo   name.Repository
	base   string // scheme://host
}

func newSession(ctx context.Context, repo name.Repository, scopes []string, opts Options) (*session, error) {
	kc := opts.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	auth, err := kc.Resolve(repo.Registry)
	if err != nil {
		return nil, fmt.Errorf("resolve credentials for %s: %w", repo.RegistryStr(), err)
	}
	base := opts.Transport
	if base == nil {
		base = remote.DefaultTransport
	}
	var rt http.RoundTripper
	err = retry(ctx, func() error {
		rt, err = transport.NewWithContext(ctx, repo.Registry, auth, base, scopes)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("authenticate to %s: %w", repo.RegistryStr(), err)
	}
	return &session{client: &http.Client{Transport: rt}, repo: repo, base: repo.Scheme() + "://" + repo.RegistryStr()}, nil
}

func (s *session) url(path string) string {
	return s.base + "/v2/" + s.repo.RepositoryStr() + path
}

func (s *session) do(ctx context.Context, method, u string, body io.Reader, size int64, hdr map[string]string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return s.client.Do(req)
}

// pushBlob makes b present in the repository: exists, mounted or pushed.
// Each attempt starts over from the existence check, so a retry after a
// failed upload never uploads a blob that made it after all.
func (s *session) pushBlob(ctx context.Context, b Blob, from []name.Repository, report func(string)) (string, error) {
	var status string
	started := false
	err := retry(ctx, func() error {
		var err error
		status, err = s.pushBlobOnce(ctx, b, from, func() {
			if !started {
				started = true
				report(StatusPushing)
			}
		})
		return err
	})
	return status, err
}

func (s *session) pushBlobOnce(ctx context.Context, b Blob, from []name.Repository, uploading func()) (string, error) {
	d := b.Desc.Digest.String()
	resp, err := s.do(ctx, http.MethodHead, s.url("/blobs/"+d), nil, 0, nil)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return StatusExists, nil
	}
	var location string
	for _, src := range from {
		q := url.Values{"mount": {d}, "from": {src.RepositoryStr()}}
		resp, err := s.do(ctx, http.MethodPost, s.url("/blobs/uploads/?"+q.Encode()), nil, 0, nil)
		if err != nil {
			return "", err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusCreated:
			return StatusMounted, nil
		case http.StatusAccepted:
			// The registry could not mount and opened an upload instead.
			location, err = resolveLocation(resp)
			if err != nil {
				return "", err
			}
		}
		if location != "" {
			break
		}
	}
	if location == "" {
		resp, err := s.do(ctx, http.MethodPost, s.url("/blobs/uploads/"), nil, 0, nil)
		if err != nil {
			return "", err
		}
		if err := transport.CheckError(resp, http.StatusAccepted); err != nil {
			resp.Body.Close()
			return "", fmt.Errorf("start upload: %w", err)
		}
		resp.Body.Close()
		if location, err = resolveLocation(resp); err != nil {
			return "", err
		}
	}
	uploading()
	rc, err := b.Open()
	if err != nil {
		return "", fmt.Errorf("open: %w", permanent(err))
	}
	defer rc.Close()
	u, err := url.Parse(location)
	if err != nil {
		return "", fmt.Errorf("upload location %q: %w", location, permanent(err))
	}
	q := u.Query()
	q.Set("digest", d)
	u.RawQuery = q.Encode()
	resp, err = s.do(ctx, http.MethodPut, u.String(), rc, b.Desc.Size, map[string]string{"Content-Type": "application/octet-stream"})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusCreated); err != nil {
		return "", fmt.Errorf("upload: %w", err)
	}
	return StatusPushed, nil
}

func resolveLocation(resp *http.Response) (string, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", errors.New("registry sent no upload location")
	}
	u, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("upload location %q: %w", loc, err)
	}
	return u.String(), nil
}

func (s *session) putManifest(ctx context.Context, ident string, raw []byte, mt types.MediaType) error {
	return retry(ctx, func() error {
		resp, err := s.do(ctx, http.MethodPut, s.url("/manifests/"+ident), bytes.NewReader(raw), int64(len(raw)),
			map[string]string{"Content-Type": string(mt)})
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if err := transport.CheckError(resp, http.StatusOK, http.StatusCreated, http.StatusAccepted); err != nil {
			return fmt.Errorf("put manifest: %w", err)
		}
		return nil
	})
}

// permanentError marks an error no retry can fix.
type permanentError struct{ error }

func (p permanentError) Unwrap() error { return p.error }

func permanent(err error) error { return permanentError{err} }

// retryDelays are the waits between attempts of one registry operation.
var retryDelays = [...]time.Duration{200 * time.Millisecond, time.Second, 3 * time.Second, 8 * time.Second}

// retry runs op until it succeeds, fails permanently, or the attempts run out.
func retry(ctx context.Context, op func() error) error {
	for i := 0; ; i++ {
		err := op()
		if err == nil || ctx.Err() != nil || !temporary(err) || i == len(retryDelays) {
			return err
		}
		select {
		case <-time.After(retryDelays[i]):
		case <-ctx.Done():
			return err
		}
	}
}

// temporary reports whether err is worth another attempt: 5xx and 429
// answers, connection resets, truncated bodies and timeouts.
func temporary(err error) bool {
	var pe permanentError
	if errors.As(err, &pe) || errors.Is(err, context.Canceled) {
		return false
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return te.Temporary() || te.StatusCode >= 500 || te.StatusCode == http.StatusTooManyRequests || te.StatusCode == http.StatusRequestTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || strings.Contains(err.Error(), "connection reset")
}

// forEach runs fn over items, n at a time, and returns the first error;
// the first error cancels the others.
func forEach[T any](ctx context.Context, items []T, n int, fn func(context.Context, T) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(n)
	for _, it := range items {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error { return fn(gctx, it) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}
