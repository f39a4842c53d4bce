// Package registry pulls images from and pushes them to OCI registries with
// go-containerregistry's remote client, through the local store.
//
// A pull fetches the manifest (choosing linux/amd64 from an index), then
// downloads only the layers the store does not already have — each one
// verified by the store's blob commit — and finally writes the config and
// manifest and tags the image. Credentials come from the docker config
// (authn.DefaultKeychain). localhost, 127.0.0.1 and the hosts in
// Options.Insecure are spoken to over plain http.
package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/minibuild/minibuild/store"
	"github.com/opencontainers/go-digest"
)

// Options configures a pull or push.
type Options struct {
	// Insecure lists registry hosts ("myreg:5000") spoken to over plain http.
	Insecure []string
	// Progress, when set, receives one event per layer state change. It is
	// called from several goroutines, never concurrently for one layer.
	Progress func(Event)
	// Transport replaces the default HTTP transport (proxies, tests).
	Transport http.RoundTripper
	// Parallel is how many blobs transfer at once; 0 means 3, as docker.
	Parallel int
	// Keychain replaces authn.DefaultKeychain (the docker config and its
	// credential helpers).
	Keychain authn.Keychain
}

func (o Options) parallel() int {
	if o.Parallel <= 0 {
		return 3
	}
	return o.Parallel
}

func (o Options) report(ref string, d v1.Descriptor, status string) {
	if o.Progress != nil {
		o.Progress(Event{Ref: ref, Digest: d.Digest.String(), Status: status, Size: d.Size})
	}
}

// Event reports a blob's progress.
type Event struct {
	Ref    string // the reference being pulled or pushed, as given
	Digest string // the blob digest
	Status string // StatusExists, StatusDownloading, StatusDone, StatusPushing, StatusPushed or StatusMounted
	Size   int64  // compressed size from the manifest
}

// Pull statuses reported through Options.Progress.
const (
	StatusExists      = "exists"      // already there (in the store, or in the registry for a push), not transferred
	StatusDownloading = "downloading" // fetch started
	StatusDone        = "done"        // fetched, verified and stored
)

// platform is the only one minibuild builds for.
var platform = v1.Platform{OS: "linux", Architecture: "amd64"}

// Reference parses ref with docker's defaults, marking it insecure (plain
// http) when its registry is listed in insecure. localhost and 127.0.0.1
// are plain http without being listed.
func Reference(ref string, insecure []string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("invalid reference %q: %w", ref, err)
	}
	host := r.Context().RegistryStr()
	if slices.Contains(insecure, host) || host == name.DefaultRegistry && slices.Contains(insecure, "docker.io") {
		if r, err = name.ParseReference(ref, name.Insecure); err != nil {
			return nil, fmt.Errorf("invalid reference %q: %w", ref, err)
		}
	}
	return r, nil
}

func remoteOptions(ctx context.Context, opts Options) []remote.Option {
	kc := opts.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	ro := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithPlatform(platform),
		remote.WithUserAgent("minibuild"),
	}
	if opts.Transport != nil {
		ro = append(ro, remote.WithTransport(opts.Transport))
	}
	return ro
}

// Pull fetches ref into s and returns the store-backed image and its
// manifest digest. Layers already in the store are not downloaded. A tag
// ref is tagged in the store under its normalized name; a digest ref is
// stored untagged.
func Pull(ctx context.Context, s *store.Store, ref string, opts Options) (v1.Image, v1.Hash, error) {
	r, err := Reference(ref, opts.Insecure)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	img, err := remote.Image(r, remoteOptions(ctx, opts)...)
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("pull %s: manifest: %w", ref, err)
	}
	if err := fetchLayers(ctx, s, img, m, ref, opts); err != nil {
		return nil, v1.Hash{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	// Every layer is present now, so this writes only config and manifest.
	md, err := s.WriteImage(img)
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	// Remember where every blob lives, for cross-repo mounts on later pushes.
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		_ = s.AddBlobSource(digest.Digest(d.Digest.String()), repoName(r.Context()))
	}
	if tag, ok := r.(name.Tag); ok {
		if err := s.Tag(tag.Name(), md); err != nil {
			return nil, v1.Hash{}, fmt.Errorf("pull %s: %w", ref, err)
		}
	}
	stored, err := s.Image(md.String())
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	return stored, md, nil
}

// fetchLayers downloads the layers of m that s lacks, opts.Parallel at a
// time. Layers the store has are reported and never opened. Every layer
// is committed to the store on its own, so an interrupted pull keeps the
// layers it finished and the next pull fetches only the rest.
func fetchLayers(ctx context.Context, s *store.Store, img v1.Image, m *v1.Manifest, ref string, opts Options) error {
	var todo []v1.Descriptor
	seen := map[v1.Hash]bool{}
	for _, d := range m.Layers {
		if seen[d.Digest] {
			continue // a layer listed twice is fetched once
		}
		seen[d.Digest] = true
		if s.HasBlob(digest.Digest(d.Digest.String())) {
			opts.report(ref, d, StatusExists)
			continue
		}
		todo = append(todo, d)
	}
	return forEach(ctx, todo, opts.parallel(), func(ctx context.Context, d v1.Descriptor) error {
		opts.report(ref, d, StatusDownloading)
		err := retry(ctx, func() error {
			return fetchBlob(s, d, func() (io.ReadCloser, error) {
				l, err := img.LayerByDigest(d.Digest)
				if err != nil {
					return nil, permanent(err)
				}
				return l.Compressed()
			})
		})
		if err != nil {
			return fmt.Errorf("fetch layer %s: %w", d.Digest, err)
		}
		opts.report(ref, d, StatusDone)
		return nil
	})
}

// fetchBlob copies one blob into the store, verified by its commit.
func fetchBlob(s *store.Store, d v1.Descriptor, open func() (io.ReadCloser, error)) error {
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	return s.PutBlob(rc, digest.Digest(d.Digest.String()))
}

// FetchBlob copies blob d of repository repo ("host/path") into s, unless
// s has it already, and remembers repo as one of its sources.
func FetchBlob(ctx context.Context, s *store.Store, repo string, d v1.Descriptor, opts Options) error {
	dg := digest.Digest(d.Digest.String())
	if s.HasBlob(dg) {
		return nil
	}
	r, err := Reference(repo+"@"+d.Digest.String(), opts.Insecure)
	if err != nil {
		return err
	}
	rd, ok := r.(name.Digest)
	if !ok {
		return fmt.Errorf("fetch blob %s from %s: not a digest reference", d.Digest, repo)
	}
	opts.report(repo, d, StatusDownloading)
	err = retry(ctx, func() error {
		return fetchBlob(s, d, func() (io.ReadCloser, error) {
			l, err := remote.Layer(rd, remoteOptions(ctx, opts)...)
			if err != nil {
				return nil, err
			}
			return l.Compressed()
		})
	})
	if err != nil {
		return fmt.Errorf("fetch blob %s from %s: %w", d.Digest, repo, err)
	}
	opts.report(repo, d, StatusDone)
	_ = s.AddBlobSource(dg, repoName(rd.Context()))
	return nil
}

// Manifest fetches the manifest (or index) ref names, as stored.
func Manifest(ctx context.Context, ref string, opts Options) ([]byte, types.MediaType, v1.Hash, error) {
	r, err := Reference(ref, opts.Insecure)
	if err != nil {
		return nil, "", v1.Hash{}, err
	}
	var desc *remote.Descriptor
	err = retry(ctx, func() error {
		desc, err = remote.Get(r, remoteOptions(ctx, opts)...)
		return err
	})
	if err != nil {
		return nil, "", v1.Hash{}, fmt.Errorf("get manifest %s: %w", ref, err)
	}
	return desc.Manifest, desc.MediaType, desc.Digest, nil
}

// ReadBlob reads a small blob (a config) of repository repo, at most limit bytes.
func ReadBlob(ctx context.Context, repo string, d v1.Descriptor, limit int64, opts Options) ([]byte, error) {
	if d.Size > limit {
		return nil, fmt.Errorf("blob %s of %s: %d bytes is more than %d", d.Digest, repo, d.Size, limit)
	}
	r, err := Reference(repo+"@"+d.Digest.String(), opts.Insecure)
	if err != nil {
		return nil, err
	}
	var b []byte
	err = retry(ctx, func() error {
		l, err := remote.Layer(r.(name.Digest), remoteOptions(ctx, opts)...)
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		defer rc.Close()
		b, err = io.ReadAll(io.LimitReader(rc, limit+1))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read blob %s of %s: %w", d.Digest, repo, err)
	}
	if got := digest.FromBytes(b); got.String() != d.Digest.String() {
		return nil, fmt.Errorf("read blob %s of %s: content has digest %s", d.Digest, repo, got)
	}
	return b, nil
}
