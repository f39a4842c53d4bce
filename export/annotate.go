package export

import (
	"fmt"
	"maps"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/minibuild/minibuild/executor"
	"github.com/minibuild/minibuild/store"
)

// ParseAnnotations parses --annotation values as buildx does
// (https://docs.docker.com/build/metadata/annotations/): "KEY=VALUE" or
// "manifest:KEY=VALUE" annotate the image manifest. A build makes one
// single-platform manifest, so the index and descriptor levels (index:,
// manifest-descriptor:, index-descriptor:) and platform qualifiers
// (manifest[linux/arm64]:) are refused by name.
func ParseAnnotations(list []string) (map[string]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, a := range list {
		k, v, ok := strings.Cut(a, "=")
		if typ, key, found := strings.Cut(k, ":"); found && isAnnotationLevel(typ) {
			if typ != "manifest" && typ != "manifest[linux/amd64]" {
				return nil, fmt.Errorf("--annotation %q: only manifest annotations are supported (a build makes one linux/amd64 manifest, no index)", a)
			}
			k = key
		}
		if !ok || k == "" {
			return nil, fmt.Errorf("--annotation %q: want KEY=VALUE or manifest:KEY=VALUE", a)
		}
		out[k] = v
	}
	return out, nil
}

// isAnnotationLevel tells buildx's level prefixes ("manifest",
// "index[linux/amd64]", …) from a key that merely holds a colon.
func isAnnotationLevel(typ string) bool {
	base, _, _ := strings.Cut(typ, "[")
	switch base {
	case "manifest", "index", "manifest-descriptor", "index-descriptor":
		return true
	}
	return false
}

// annotate stores a copy of the image whose manifest also carries ann, and
// makes res name it: the manifest, so res.Image and res.Digest, change;
// the config, so res.ID, does not.
func annotate(st *store.Store, res *executor.Result, ann map[string]string) error {
	m, err := res.Image.Manifest()
	if err != nil {
		return err
	}
	all := maps.Clone(m.Annotations)
	if all == nil {
		all = map[string]string{}
	}
	maps.Copy(all, ann)
	img := mutate.Annotations(res.Image, all).(v1.Image)
	md, err := st.WriteImage(img)
	if err != nil {
		return fmt.Errorf("annotate the manifest: %w", err)
	}
	if res.Image, err = st.Image(md.String()); err != nil {
		return fmt.Errorf("annotate the manifest: %w", err)
	}
	res.Digest = md
	return nil
}
