// Package remote exports instruction cache records to, and imports them
// from, places other hosts can reach: a registry (an OCI artifact), a
// directory (an OCI layout, for CI caches) or the pushed image itself
// (inline, a manifest annotation).
//
// The artifact is an OCI image manifest whose config blob (media type
// ConfigMediaType) maps cache keys to records, and whose layers are the
// very layer blobs the records name. Since those are the image's own
// layers, a registry that has the image already has them: exporting the
// cache uploads only the small config and the manifest. Keys are content
// (DESIGN.md invariant 1), so a record made on one host is valid on any.
//
// Importing never fails a build: a missing, corrupt or foreign ref is an
// error the caller reports as a warning before building without it.
package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/registry"
	"github.com/minibuild/minibuild/store"
)

// Media types and annotations of the cache artifact.
const (
	// ConfigMediaType is the artifact's config blob: the records.
	ConfigMediaType = "application/vnd.minibuild.cache.config.v1+json"
	// InlineAnnotation holds the records in an image manifest (type=inline).
	InlineAnnotation = "dev.minibuild.cache.v1"
	// LayoutRefName names the cache manifest in a type=local OCI layout.
	LayoutRefName = "minibuild-cache"
	// CacheMountIDAnnotation and CacheMountSharingAnnotation mark a layer
	// of the artifact that holds a RUN cache mount's content (CacheMount).
	CacheMountIDAnnotation      = "dev.minibuild.cache-mount.id"
	CacheMountSharingAnnotation = "dev.minibuild.cache-mount.sharing"
)

// configVersion is the version of Config; another version is foreign.
const configVersion = 1

// maxConfigSize bounds what an import reads before parsing.
const maxConfigSize = 64 << 20

// Config is the artifact's config blob: cache key → record, and the
// cache mounts it carries (--cache-to …,cache-mounts=true; older readers
// ignore them).
type Config struct {
	Version     int                             `json:"version"`
	Records     map[digest.Digest]*cache.Record `json:"records"`
	CacheMounts []CacheMount                    `json:"cacheMounts,omitempty"`
	// Facts are what the exporting host's COPY keys learned from the
	// records' rootfs chains (store.ChainFacts): a host whose layers stay
	// remote keys the same COPYs from them, fetching nothing. Older
	// readers ignore them.
	Facts []store.ChainFacts `json:"facts,omitempty"`
}

// CacheMount is the content of a RUN --mount=type=cache, by id: a layer
// tarball of its dir (snapshot.WriteCacheMount) that the artifact carries
// as one more layer. It restores a missing local copy; it is never an
// image's layer, and no key names it (DESIGN.md invariant 1).
type CacheMount struct {
	ID      string           `json:"id"`
	Sharing string           `json:"sharing,omitempty"` // the sharing= of the build that exported it
	Layer   layer.Descriptor `json:"layer"`
}

// Spec is one parsed --cache-to or --cache-from.
type Spec struct {
	Type string // "registry", "local" or "inline"
	Ref  string // type=registry: the artifact's (or, for --cache-from, an image's) reference
	Dir  string // type=local: dest (export) or src (import)
	Mode string // "min" (the exported image's steps) or "max" (every step of every stage)
	// IgnoreError (--cache-to ignore-error=true): an export failure is a
	// warning, not a failed build, as BuildKit's cache exporters.
	IgnoreError bool
	// CacheMounts (--cache-to cache-mounts=true, registry and local): the
	// artifact also carries the build's RUN cache mounts.
	CacheMounts bool
}

// ParseSpec parses buildx-style cache options: "type=registry,ref=R[,mode=max]",
// "type=local,dest=DIR" (export) or "type=local,src=DIR" (import),
// "type=inline", or a bare reference meaning type=registry. Every other
// BuildKit option is either honoured or refused by name (setOption): an
// option that would do nothing is never accepted silently.
func ParseSpec(s string, export bool) (Spec, error) {
	flag := "--cache-from"
	if export {
		flag = "--cache-to"
	}
	if !strings.Contains(s, "=") {
		if s == "" {
			return Spec{}, fmt.Errorf("%s: empty value", flag)
		}
		return Spec{Type: "registry", Ref: s, Mode: "min"}, nil
	}
	sp := Spec{Mode: "min"}
	for _, field := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(field, "=")
		switch k = strings.TrimSpace(k); k {
		case "type":
			sp.Type = v
		case "ref":
			sp.Ref = v
		case "dest":
			if !export {
				return sp, fmt.Errorf("%s %q: dest is for --cache-to; use src", flag, s)
			}
			sp.Dir = v
		case "src":
			if export {
				return sp, fmt.Errorf("%s %q: src is for --cache-from; use dest", flag, s)
			}
			sp.Dir = v
		default:
			if err := sp.setOption(k, v, export); err != nil {
				return sp, fmt.Errorf("%s %q: %w", flag, s, err)
			}
		}
	}
	switch sp.Type {
	case "registry":
		if sp.Ref == "" {
			return sp, fmt.Errorf("%s %q: type=registry needs ref=", flag, s)
		}
	case "local":
		if sp.Dir == "" {
			return sp, fmt.Errorf("%s %q: type=local needs %s=", flag, s, map[bool]string{true: "dest", false: "src"}[export])
		}
	case "inline":
		if !export {
			return sp, fmt.Errorf("%s %q: to use inline records, give the image's reference", flag, s)
		}
		if sp.Mode == "max" {
			return sp, fmt.Errorf("%s %q: type=inline holds only the image's steps (mode=min)", flag, s)
		}
		if sp.CacheMounts {
			return sp, fmt.Errorf("%s %q: cache-mounts needs type=registry or type=local (an image's layers are its own)", flag, s)
		}
	default:
		return sp, fmt.Errorf("%s %q: type must be registry, local or inline", flag, s)
	}
	return sp, nil
}

// Collect reads the records of keys from idx. A record that misses, or
// whose layer the store can neither open nor fetch (HasContent: a remote
// layer is fetched when the export reads it, or mounted), is left out: an
// export never names a blob it cannot provide.
func Collect(s *store.Store, idx *cache.Index, keys []digest.Digest) *Config {
	c := &Config{Version: configVersion, Records: map[digest.Digest]*cache.Record{}}
	for _, k := range keys {
		rec, err := idx.Get(k)
		if err != nil || rec.Layer != nil && !s.HasContent(rec.Layer.Digest) {
			continue
		}
		c.Records[k] = rec
	}
	c.collectFacts(s)
	return c
}

// layers lists the distinct layer descriptors the records name, sorted.
func (c *Config) layers() []v1.Descriptor {
	byDigest := map[digest.Digest]v1.Descriptor{}
	for _, r := range c.Records {
		if r.Layer == nil {
			continue
		}
		h, err := v1.NewHash(r.Layer.Digest.String())
		if err != nil {
			continue
		}
		mt := types.MediaType(r.Layer.MediaType)
		if mt == "" {
			mt = types.OCILayer
		}
		byDigest[r.Layer.Digest] = v1.Descriptor{MediaType: mt, Size: r.Layer.Size, Digest: h}
	}
	var out []v1.Descriptor
	for _, k := range slices.Sorted(maps.Keys(byDigest)) {
		out = append(out, byDigest[k])
	}
	for _, m := range c.CacheMounts {
		d, _, err := m.Layer.V1()
		if err != nil {
			continue
		}
		d.Annotations = map[string]string{CacheMountIDAnnotation: m.ID}
		if m.Sharing != "" {
			d.Annotations[CacheMountSharingAnnotation] = m.Sharing
		}
		out = append(out, d)
	}
	return out
}

// AddCacheMount makes c carry m (replacing one of the same id); the
// cache mounts stay sorted by id, so the artifact is deterministic.
func (c *Config) AddCacheMount(m CacheMount) {
	c.CacheMounts = slices.DeleteFunc(c.CacheMounts, func(o CacheMount) bool { return o.ID == m.ID })
	c.CacheMounts = append(c.CacheMounts, m)
	slices.SortFunc(c.CacheMounts, func(a, b CacheMount) int { return strings.Compare(a.ID, b.ID) })
}

// Only keeps the records whose layer is one of layers (and those without
// a layer): for inline records, which can only name the image's layers.
func (c *Config) Only(layers []v1.Hash) *Config {
	out := &Config{Version: c.Version, Records: map[digest.Digest]*cache.Record{}, Facts: c.Facts}
	for k, r := range c.Records {
		if r.Layer == nil || slices.ContainsFunc(layers, func(h v1.Hash) bool { return h.String() == r.Layer.Digest.String() }) {
			out.Records[k] = r
		}
	}
	return out
}

// artifact builds the cache manifest and its config blob.
func (c *Config) artifact() (manifest, config []byte, err error) {
	config, err = json.Marshal(c)
	if err != nil {
		return nil, nil, fmt.Errorf("encode cache records: %w", err)
	}
	ch, size, err := v1.SHA256(bytes.NewReader(config))
	if err != nil {
		return nil, nil, err
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: ConfigMediaType, Size: size, Digest: ch},
		Layers:        c.layers(),
		Annotations:   map[string]string{"org.opencontainers.image.title": "minibuild instruction cache"},
	}
	if m.Layers == nil {
		m.Layers = []v1.Descriptor{}
	}
	manifest, err = json.Marshal(m)
	if err != nil {
		return nil, nil, fmt.Errorf("encode cache manifest: %w", err)
	}
	return manifest, config, nil
}

// Encode is the records as the inline annotation's value.
func (c *Config) Encode() (string, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("encode cache records: %w", err)
	}
	return string(b), nil
}

// decodeConfig parses and validates records; anything else is foreign.
func decodeConfig(b []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("not minibuild cache records: %w", err)
	}
	if c.Version != configVersion {
		return nil, fmt.Errorf("cache records of version %d; this minibuild reads version %d", c.Version, configVersion)
	}
	for k, r := range c.Records {
		if k.Validate() != nil || r == nil || r.Layer != nil && r.Layer.Digest.Validate() != nil {
			delete(c.Records, k)
		}
	}
	c.CacheMounts = slices.DeleteFunc(c.CacheMounts, func(m CacheMount) bool {
		return m.ID == "" || m.Layer.Digest.Validate() != nil
	})
	c.Facts = slices.DeleteFunc(c.Facts, func(cf store.ChainFacts) bool {
		return slices.ContainsFunc(cf.DiffIDs, func(d digest.Digest) bool { return d.Validate() != nil })
	})
	return &c, nil
}

// ExportRegistry pushes c to ref as an artifact. Its layers come from s
// and, being the image's layers, are usually already there (exists) or
// mountable.
func ExportRegistry(ctx context.Context, s *store.Store, c *Config, ref string, opts registry.Options) (v1.Hash, error) {
	raw, config, err := c.artifact()
	if err != nil {
		return v1.Hash{}, err
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return v1.Hash{}, err
	}
	blobs := []registry.Blob{{Desc: m.Config, Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(config)), nil }}}
	for _, l := range m.Layers {
		blobs = append(blobs, registry.StoreBlob(s, l))
	}
	h, err := registry.PushManifest(ctx, s, ref, raw, types.OCIManifestSchema1, blobs, opts)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("export cache: %w", err)
	}
	return h, nil
}

// Source is an imported cache: records and where to fetch their layers.
// It satisfies executor.CacheSource.
type Source struct {
	Name    string // the ref or directory, for messages
	records map[digest.Digest]*cache.Record
	mounts  []CacheMount
	store   *store.Store
	// repo is the registry repository ("host/path") that holds the
	// layers, for lazy hits (LazyLayer); "" for a directory.
	repo string
	// fetch brings a missing blob into the store, checked against l
	// (digest, size, diffID) before it is committed.
	fetch func(ctx context.Context, d v1.Descriptor, l layer.Descriptor) error
}

// Len is the number of records.
func (src *Source) Len() int { return len(src.records) }

// Record returns the record of key, if the source has one.
func (src *Source) Record(key digest.Digest) (*cache.Record, bool) {
	r, ok := src.records[key]
	if !ok {
		return nil, false
	}
	c := *r
	return &c, true
}

// FetchLayer brings l's blob into the store unless it is there, and
// holds it to the record: the blob's digest and size, and its
// uncompressed content to l.DiffID (a blob the store has already is read
// there). A record another host wrote is only a claim; a layer that is
// not what it says makes the record unusable (the executor warns and
// misses) before anything is keyed on it.
func (src *Source) FetchLayer(ctx context.Context, l layer.Descriptor) error {
	if l.DiffID == "" {
		return fmt.Errorf("cached layer %s from %s: the record names no diffID", l.Digest, src.Name)
	}
	var err error
	if src.store.HasBlob(l.Digest) {
		err = registry.CheckStored(src.store, l)
	} else {
		var h v1.Hash
		if h, err = v1.NewHash(l.Digest.String()); err != nil {
			return err
		}
		err = src.fetch(ctx, v1.Descriptor{Digest: h, Size: l.Size, MediaType: types.MediaType(l.MediaType)}, l)
	}
	if err != nil {
		return fmt.Errorf("fetch cached layer %s from %s: %w", l.Digest, src.Name, err)
	}
	return nil
}

// LazyLayer makes l usable without downloading it when the source is a
// registry: the store records it as a remote blob of the source's
// repository (store.AddRemoteBlob), fetched and verified only when
// something reads it, and mountable by a push to that registry. A blob
// the store has, or a directory's, is FetchLayer's. It satisfies
// executor.LazySource.
func (src *Source) LazyLayer(ctx context.Context, l layer.Descriptor) error {
	if src.repo == "" || src.store.HasBlob(l.Digest) {
		return src.FetchLayer(ctx, l)
	}
	if l.DiffID == "" || l.Size <= 0 {
		return fmt.Errorf("cached layer %s from %s: the record names no diffID or size", l.Digest, src.Name)
	}
	rb := store.RemoteBlob{Digest: l.Digest, Size: l.Size, MediaType: l.MediaType, DiffID: l.DiffID, Repo: src.repo}
	if err := src.store.AddRemoteBlob(rb); err != nil {
		return fmt.Errorf("cached layer %s from %s: %w", l.Digest, src.Name, err)
	}
	return nil
}

// ImportRegistry reads the cache at ref: a cache artifact, or an image
// pushed with inline records. Layers are fetched later, only those a hit
// needs, from ref's repository.
func ImportRegistry(ctx context.Context, s *store.Store, ref string, opts registry.Options) (*Source, error) {
	raw, mt, _, err := registry.Manifest(ctx, ref, opts)
	if err != nil {
		return nil, err
	}
	r, err := registry.Reference(ref, opts.Insecure)
	if err != nil {
		return nil, err
	}
	repo := r.Context().RegistryStr() + "/" + r.Context().RepositoryStr()
	c, err := configFromManifest(raw, mt, func(d v1.Descriptor) ([]byte, error) {
		return registry.ReadBlob(ctx, repo, d, maxConfigSize, opts)
	})
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", ref, err)
	}
	opts.Progress = nil
	c.importFacts(s)
	return &Source{Name: ref, records: c.Records, mounts: c.CacheMounts, store: s, repo: repo, fetch: func(ctx context.Context, d v1.Descriptor, l layer.Descriptor) error {
		return registry.FetchLayer(ctx, s, repo, d, l.DiffID, opts)
	}}, nil
}

// configFromManifest finds the records of an artifact manifest or of an
// image manifest's inline annotation.
func configFromManifest(raw []byte, mt types.MediaType, readBlob func(v1.Descriptor) ([]byte, error)) (*Config, error) {
	if mt != types.OCIManifestSchema1 && mt != types.DockerManifestSchema2 {
		return nil, fmt.Errorf("holds a %s, not a minibuild cache", mt)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	if m.Config.MediaType == ConfigMediaType {
		b, err := readBlob(m.Config)
		if err != nil {
			return nil, err
		}
		return decodeConfig(b)
	}
	if v, ok := m.Annotations[InlineAnnotation]; ok {
		c, err := decodeConfig([]byte(v))
		if err != nil {
			return nil, err
		}
		var layers []v1.Hash
		for _, l := range m.Layers {
			layers = append(layers, l.Digest)
		}
		return c.Only(layers), nil
	}
	return nil, errors.New("holds neither a minibuild cache nor an image with inline cache records")
}

// CacheMount opens the content of the cache mount id (a layer tarball, as
// snapshot.RestoreCacheMount reads it) if the source carries one: its blob
// is fetched into the store first, verified. It satisfies
// executor.CacheMountSource.
func (src *Source) CacheMount(ctx context.Context, id string) (io.ReadCloser, bool, error) {
	m, ok := src.CacheMountLayer(id)
	if !ok {
		return nil, false, nil
	}
	l := m.Layer
	if err := src.FetchLayer(ctx, l); err != nil {
		return nil, true, fmt.Errorf("cache mount %s: %w", id, err)
	}
	rc, err := src.store.OpenBlob(l.Digest)
	if err != nil {
		return nil, true, fmt.Errorf("cache mount %s from %s: %w", id, src.Name, err)
	}
	return rc, true, nil
}

// CacheMountLayer is the cache mount id the source carries, if any: an
// export can carry it on when the build had no local copy to write.
func (src *Source) CacheMountLayer(id string) (CacheMount, bool) {
	i := slices.IndexFunc(src.mounts, func(m CacheMount) bool { return m.ID == id })
	if i < 0 {
		return CacheMount{}, false
	}
	return src.mounts[i], true
}
