package export

import (
	"context"
	"fmt"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/cache/remote"
	"github.com/minibuild/minibuild/executor"
	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/snapshot"
	"github.com/minibuild/minibuild/store"
)

// parseCacheSpecs parses --cache-from (export false) or --cache-to specs.
func parseCacheSpecs(specs []string, export bool) ([]remote.Spec, error) {
	var out []remote.Spec
	for _, s := range specs {
		sp, err := remote.ParseSpec(s, export)
		if err != nil {
			return nil, err
		}
		out = append(out, sp)
	}
	return out, nil
}

// importCaches reads every --cache-from; one that cannot be read is a
// warning, and the build goes on without it.
func importCaches(ctx context.Context, st *store.Store, specs []remote.Spec, reg Registry, warn func(string)) []executor.CacheSource {
	var out []executor.CacheSource
	for _, sp := range specs {
		var src *remote.Source
		var err error
		if sp.Type == "local" {
			src, err = remote.ImportLocal(st, sp.Dir)
		} else {
			src, err = remote.ImportRegistry(ctx, st, sp.Ref, reg.options())
		}
		if err != nil {
			warn(fmt.Sprintf("--cache-from: %v; building without it", err))
			continue
		}
		out = append(out, src)
	}
	return out
}

// inlineSpec is the type=inline --cache-to, if any.
func inlineSpec(specs []remote.Spec) (remote.Spec, bool) {
	for _, sp := range specs {
		if sp.Type == "inline" {
			return sp, true
		}
	}
	return remote.Spec{}, false
}

// inlineRecords is the manifest annotation of --cache-to type=inline: the
// records of the image's own layers.
func inlineRecords(st *store.Store, idx *cache.Index, res *executor.Result) (map[string]string, error) {
	val, err := remote.Collect(st, idx, res.ImageKeys).Only(layerDigests(res.Image)).Encode()
	if err != nil {
		return nil, fmt.Errorf("inline cache: %w", err)
	}
	return map[string]string{remote.InlineAnnotation: val}, nil
}

// exportCaches writes the records of res (mode=min: the image's steps;
// mode=max: every step) to each registry or local --cache-to, and with
// cache-mounts=true the build's cache mounts (written once for every such
// cache). A failure names the cache; with ignore-error=true it is one
// warning line and the build goes on, as BuildKit's exporters.
func (p *Plan) exportCaches(ctx context.Context, st *store.Store, idx *cache.Index, res *executor.Result, warn func(string)) error {
	var mounts []remote.CacheMount
	var mountsErr error
	if slices.ContainsFunc(p.cacheTo, func(sp remote.Spec) bool { return sp.CacheMounts }) {
		mounts, mountsErr = p.cacheMountLayers(ctx, st, res.CacheMounts)
	}
	for _, sp := range p.cacheTo {
		if sp.Type != "registry" && sp.Type != "local" {
			continue
		}
		where := sp.Ref
		if sp.Type == "local" {
			where = sp.Dir
		}
		err := mountsErr
		if !sp.CacheMounts || err == nil {
			err = exportCache(ctx, st, remote.Collect(st, idx, keysFor(sp, res)), sp, mounts, p.registry)
		}
		if err == nil {
			continue
		}
		if !sp.IgnoreError {
			return fmt.Errorf("--cache-to %s: %w", where, err)
		}
		warn(fmt.Sprintf("--cache-to %s: %s; the build goes on (ignore-error=true)", where, strings.ReplaceAll(err.Error(), "\n", "; ")))
	}
	return nil
}

// keysFor is what a --cache-to exports: mode=min the image's steps,
// mode=max every step.
func keysFor(sp remote.Spec, res *executor.Result) []digest.Digest {
	if sp.Mode == "max" {
		return res.StepKeys
	}
	return res.ImageKeys
}

// exportCache writes c to one registry or local --cache-to, with the
// cache mounts when it asks for them.
func exportCache(ctx context.Context, st *store.Store, c *remote.Config, sp remote.Spec, mounts []remote.CacheMount, reg Registry) error {
	if sp.CacheMounts {
		for _, m := range mounts {
			c.AddCacheMount(m)
		}
	}
	if sp.Type == "local" {
		return remote.ExportLocal(st, c, sp.Dir)
	}
	_, err := remote.ExportRegistry(ctx, st, c, sp.Ref, reg.options())
	return err
}

func layerDigests(img v1.Image) []v1.Hash {
	m, err := img.Manifest()
	if err != nil {
		return nil
	}
	var out []v1.Hash
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out
}

// cacheMountLayers writes each cache mount the build named into the store
// as a layer tarball (snapshot.WriteCacheMount). One this root has no copy
// of (its steps were all reused) is carried on from the first imported
// cache that has it; else it is left out.
func (p *Plan) cacheMountLayers(ctx context.Context, st *store.Store, uses []executor.CacheMountUse) ([]remote.CacheMount, error) {
	var out []remote.CacheMount
	for _, u := range uses {
		m, ok, err := writeCacheMount(ctx, st, p.snapshots, u)
		if err != nil {
			return nil, err
		}
		if !ok {
			m, ok = p.importedCacheMount(ctx, u.ID)
		}
		if ok {
			out = append(out, m)
		}
	}
	return out, nil
}

// writeCacheMount stores the layer of the cache mount u, if this root has
// a copy.
func writeCacheMount(ctx context.Context, st *store.Store, sn *snapshot.Snapshotter, u executor.CacheMountUse) (remote.CacheMount, bool, error) {
	if sn == nil || !sn.HasCacheMount(u.ID) {
		return remote.CacheMount{}, false, nil
	}
	bw, err := st.NewBlobWriter()
	if err != nil {
		return remote.CacheMount{}, false, err
	}
	defer bw.Abort()
	w := layer.NewWriter(bw, layer.Options{})
	defer w.Abort()
	ok, err := sn.WriteCacheMount(ctx, u.ID, w)
	if err != nil || !ok {
		return remote.CacheMount{}, false, err
	}
	desc, err := w.Close()
	if err == nil {
		err = bw.Commit(desc.Digest)
	}
	if err != nil {
		return remote.CacheMount{}, false, fmt.Errorf("cache mount %s: %w", u.ID, err)
	}
	return remote.CacheMount{ID: u.ID, Sharing: u.Sharing, Layer: desc}, true, nil
}

// importedCacheMount is the cache mount id of an imported cache, its blob
// fetched into the store; a failed fetch leaves it out.
func (p *Plan) importedCacheMount(ctx context.Context, id string) (remote.CacheMount, bool) {
	for _, cs := range p.imported {
		src, ok := cs.(*remote.Source)
		if !ok {
			continue
		}
		if m, ok := src.CacheMountLayer(id); ok && src.FetchLayer(ctx, m.Layer) == nil {
			return m, true
		}
	}
	return remote.CacheMount{}, false
}
