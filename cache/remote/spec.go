package remote

import (
	"fmt"

	"github.com/minibuild/minibuild/internal/layeropt"
)

// setOption applies one of BuildKit's cache options other than type, ref,
// src and dest (see https://docs.docker.com/build/cache/backends/registry/):
// mode, ignore-error and minibuild's cache-mounts are honoured; image-manifest=true and the layer
// options that name what minibuild does (layeropt) are accepted; the rest
// are refused by name. Options of --cache-to are refused on --cache-from.
func (sp *Spec) setOption(k, v string, export bool) error {
	if k == "cache-mounts" && !export {
		return fmt.Errorf("cache-mounts is a --cache-to option (--cache-from restores every cache mount a cache carries)")
	}
	switch k {
	case "mode", "ignore-error", "cache-mounts", "image-manifest", "compression", "compression-level", "force-compression", "oci-mediatypes":
		if !export {
			return fmt.Errorf("%s is a --cache-to option (an import failure is always a warning)", k)
		}
	}
	switch k {
	case "mode":
		if v != "min" && v != "max" {
			return fmt.Errorf("mode must be min or max")
		}
		sp.Mode = v
		return nil
	case "ignore-error":
		b, err := layeropt.Bool(k, v)
		sp.IgnoreError = b
		return err
	case "cache-mounts":
		b, err := layeropt.Bool(k, v)
		sp.CacheMounts = b
		return err
	case "image-manifest":
		// The artifact is always one OCI image manifest (BuildKit's default
		// since v0.21); false asks for a manifest list.
		b, err := layeropt.Bool(k, v)
		if err == nil && !b {
			err = fmt.Errorf("image-manifest=false is not supported: the cache is always an OCI image manifest")
		}
		return err
	}
	if known, err := layeropt.Check(k, v); known {
		return err
	}
	return fmt.Errorf("unknown key %q", k)
}
