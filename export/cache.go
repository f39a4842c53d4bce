package export

import (
	"context"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

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
// mode=max: every step) to each registry or local --cache-to. A failure
// names the cache; with ignore-error=true it is one warning line and the
// build goes on, as BuildKit's exporters.
func exportCaches(ctx context.Context, st *store.Store, idx *cache.Index, res *executor.Result, specs []remote.Spec, reg Registry, warn func(string)) error {
	for _, sp := range specs {
		keys := res.ImageKeys
		if sp.Mode == "max" {
			keys = res.StepKeys
		}
		c := remote.Collect(st, idx, keys)
		var err error
		where := sp.Ref
		switch sp.Type {
		case "registry":
			_, err = remote.ExportRegistry(ctx, st, c, sp.Ref, reg.options())
		case "local":
			where = sp.Dir
			err = remote.ExportLocal(st, c, sp.Dir)
		default:
			continue
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
