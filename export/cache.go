package export

import (
	"context"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/cache/remote"
	"github.com/minibuild/minibuild/executor"
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

// hasInline tells whether a --cache-to is type=inline.
func hasInline(specs []remote.Spec) bool {
	for _, sp := range specs {
		if sp.Type == "inline" {
			return true
		}
	}
	return false
}

// embedInline stores a copy of the image whose manifest carries the
// records of its own layers (--cache-to type=inline), and makes res name
// it: the manifest, so res.Image and res.Digest, change; the config, so
// res.ID, does not.
func embedInline(st *store.Store, idx *cache.Index, res *executor.Result) error {
	val, err := remote.Collect(st, idx, res.ImageKeys).Only(layerDigests(res.Image)).Encode()
	if err != nil {
		return err
	}
	img := mutate.Annotations(res.Image, map[string]string{remote.InlineAnnotation: val}).(v1.Image)
	md, err := st.WriteImage(img)
	if err != nil {
		return fmt.Errorf("inline cache: %w", err)
	}
	if res.Image, err = st.Image(md.String()); err != nil {
		return fmt.Errorf("inline cache: %w", err)
	}
	res.Digest = md
	return nil
}

// exportCaches writes the records of res (mode=min: the image's steps;
// mode=max: every step) to each registry or local --cache-to.
func exportCaches(ctx context.Context, st *store.Store, idx *cache.Index, res *executor.Result, specs []remote.Spec, reg Registry) error {
	for _, sp := range specs {
		keys := res.ImageKeys
		if sp.Mode == "max" {
			keys = res.StepKeys
		}
		c := remote.Collect(st, idx, keys)
		switch sp.Type {
		case "registry":
			if _, err := remote.ExportRegistry(ctx, st, c, sp.Ref, reg.options()); err != nil {
				return err
			}
		case "local":
			if err := remote.ExportLocal(st, c, sp.Dir); err != nil {
				return err
			}
		}
	}
	return nil
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
