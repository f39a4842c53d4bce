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
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/minibuild/minibuild/layer"
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
	if loopback(host) || slices.Contains(insecure, host) || host == name.DefaultRegistry && slices.Contains(insecure, "docker.io") {
		if r, err = name.ParseReference(ref, name.Insecure); err != nil {
			return nil, fmt.Errorf("invalid reference %q: %w", ref, err)
		}
	}
	return r, nil
}

// loopback reports whether host ("localhost", "127.0.0.1:5000", "[::1]")
// is this machine, with or without a port: go-containerregistry speaks
// plain http to "localhost:PORT" but https to a bare "localhost".
func loopback(host string) bool {
	h := host
	if sh, _, err := net.SplitHostPort(host); err == nil {
		h = sh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return h == "localhost" || h == "127.0.0.1" || h == "::1"
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
	layers, err := manifestLayers(img, m)
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	if err := fetchLayers(ctx, s, img, layers, ref, opts); err != nil {
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

// pulledLayer is a manifest's layer with the diff_id its config names.
type pulledLayer struct {
	desc v1.Descriptor
	want layer.Descriptor
}

// manifestLayers pairs m's layers with the config's diff_ids: as many of
// each, and a blob listed twice names one diff_id.
func manifestLayers(img v1.Image, m *v1.Manifest) ([]pulledLayer, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	pairs, err := layer.Pairs(m, cf)
	if err != nil {
		return nil, err
	}
	var out []pulledLayer
	seen := map[v1.Hash]v1.Hash{}
	for _, p := range pairs {
		d, id := p.Desc, p.DiffID
		if prev, ok := seen[d.Digest]; ok {
			if prev != id {
				return nil, fmt.Errorf("layer %s: the config names two diff_ids for it (%s, %s)", d.Digest, prev, id)
			}
			continue // a layer listed twice is fetched once
		}
		seen[d.Digest] = id
		out = append(out, pulledLayer{desc: d, want: p.Descriptor()})
	}
	return out, nil
}

// fetchLayers downloads the layers the store lacks, opts.Parallel at a
// time, each checked against its digest and diff_id before it is
// committed. Layers the store has are reported and not downloaded; unless
// the store holds this very manifest already (verified when it came in),
// they are read there to check that their content is the diff_id this
// config claims. Every layer is committed to the store on its own, so an
// interrupted pull keeps the layers it finished and the next pull fetches
// only the rest.
func fetchLayers(ctx context.Context, s *store.Store, img v1.Image, layers []pulledLayer, ref string, opts Options) error {
	known := false
	if md, err := img.Digest(); err == nil {
		_, err := s.Image(md.String())
		known = err == nil
	}
	var todo []pulledLayer
	for _, l := range layers {
		if s.HasBlob(l.want.Digest) {
			opts.report(ref, l.desc, StatusExists)
			if !known {
				if err := CheckStored(s, l.want); err != nil {
					return err
				}
			}
			continue
		}
		todo = append(todo, l)
	}
	return forEach(ctx, todo, opts.parallel(), func(ctx context.Context, l pulledLayer) error {
		opts.report(ref, l.desc, StatusDownloading)
		err := retry(ctx, func() error {
			return fetchBlob(s, l.want, func() (io.ReadCloser, error) {
				rl, err := img.LayerByDigest(l.desc.Digest)
				if err != nil {
					return nil, permanent(err)
				}
				return rl.Compressed()
			})
		})
		if err != nil {
			return fmt.Errorf("fetch layer %s: %w", l.desc.Digest, err)
		}
		opts.report(ref, l.desc, StatusDone)
		return nil
	})
}

// CheckStored checks a blob of the store against want's diff_id: the blob
// is whole by its digest, but that it is the layer a config or a cache
// record names is their claim.
func CheckStored(s *store.Store, want layer.Descriptor) error {
	rc, err := s.OpenBlob(want.Digest)
	if err != nil {
		return err
	}
	defer rc.Close()
	return layer.Verify(rc, layer.Descriptor{Digest: want.Digest, DiffID: want.DiffID})
}

// fetchBlob copies one blob into the store, checked against want (digest
// and size, and the diff_id when want names one) before it is committed.
// A mismatch is permanent: the registry serves what it has.
func fetchBlob(s *store.Store, want layer.Descriptor, open func() (io.ReadCloser, error)) error {
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	return PutLayer(s, rc, want)
}

// PutLayer stores the blob r streams, checked against want as it goes by
// (layer.Check: digest, size, and the diff_id when want names one) and
// committed only when it matched. A mismatch is permanent (no retry); an
// error reading r is returned as it is.
func PutLayer(s *store.Store, r io.Reader, want layer.Descriptor) error {
	bw, err := s.NewBlobWriter()
	if err != nil {
		return permanent(err)
	}
	defer bw.Abort()
	chk := layer.NewCheck(want)
	if _, err := io.Copy(io.MultiWriter(bw, chk), r); err != nil {
		chk.Close()
		return err
	}
	if err := chk.Close(); err != nil {
		return permanent(err)
	}
	return bw.Commit(want.Digest)
}

// FetchBlob copies blob d of repository repo ("host/path") into s, unless
// s has it already, and remembers repo as one of its sources.
func FetchBlob(ctx context.Context, s *store.Store, repo string, d v1.Descriptor, opts Options) error {
	return FetchLayer(ctx, s, repo, d, "", opts)
}

// FetchLayer is FetchBlob of a layer whose uncompressed content must be
// diffID ("" = unchecked): a blob that s has already is read there and
// checked, a fetched one is checked before it is committed. An imported
// cache record names its layer's diffID; this is how it is held to it.
func FetchLayer(ctx context.Context, s *store.Store, repo string, d v1.Descriptor, diffID digest.Digest, opts Options) error {
	dg := digest.Digest(d.Digest.String())
	want := layer.Descriptor{Digest: dg, DiffID: diffID, Size: d.Size}
	if s.HasBlob(dg) {
		if diffID == "" {
			return nil
		}
		return CheckStored(s, want)
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
		return fetchBlob(s, want, func() (io.ReadCloser, error) {
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
