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
	"net/http"
	"slices"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
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
	// Parallel is how many layers download at once; 0 means 3, as docker.
	Parallel int
}

// Event reports a layer's progress.
type Event struct {
	Ref    string // the reference being pulled, as given
	Digest string // the layer digest
	Status string // StatusExists, StatusDownloading or StatusDone
	Size   int64  // compressed size from the manifest
}

// Layer statuses reported through Options.Progress.
const (
	StatusExists      = "exists"      // already in the store, not fetched
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
	ro := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
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
// time. Layers the store has are reported and never opened.
func fetchLayers(ctx context.Context, s *store.Store, img v1.Image, m *v1.Manifest, ref string, opts Options) error {
	report := func(d v1.Descriptor, status string) {
		if opts.Progress != nil {
			opts.Progress(Event{Ref: ref, Digest: d.Digest.String(), Status: status, Size: d.Size})
		}
	}
	parallel := opts.Parallel
	if parallel <= 0 {
		parallel = 3
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		sem      = make(chan struct{}, parallel)
		seen     = map[v1.Hash]bool{}
	)
	for _, d := range m.Layers {
		if seen[d.Digest] {
			continue // a layer listed twice is fetched once
		}
		seen[d.Digest] = true
		if s.HasBlob(digest.Digest(d.Digest.String())) {
			report(d, StatusExists)
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			report(d, StatusDownloading)
			err := fetchLayer(s, img, d)
			if err == nil {
				report(d, StatusDone)
				return
			}
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
			cancel()
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

func fetchLayer(s *store.Store, img v1.Image, d v1.Descriptor) error {
	l, err := img.LayerByDigest(d.Digest)
	if err != nil {
		return fmt.Errorf("layer %s: %w", d.Digest, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("fetch layer %s: %w", d.Digest, err)
	}
	defer rc.Close()
	if err := s.PutBlob(rc, digest.Digest(d.Digest.String())); err != nil {
		return fmt.Errorf("fetch layer %s: %w", d.Digest, err)
	}
	return nil
}

// Push uploads img (typically store-backed) to ref. Blobs the registry
// already has are not uploaded (remote.Write checks first). It returns the
// manifest digest.
func Push(ctx context.Context, img v1.Image, ref string, opts Options) (v1.Hash, error) {
	r, err := Reference(ref, opts.Insecure)
	if err != nil {
		return v1.Hash{}, err
	}
	ro := remoteOptions(ctx, opts)
	if err := remote.Write(r, img, ro...); err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	return d, nil
}
