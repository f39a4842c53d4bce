package export

import (
	"encoding/json"
	"fmt"

	"github.com/minibuild/minibuild/executor"
	"github.com/minibuild/minibuild/internal/atomicfile"
	"github.com/minibuild/minibuild/store"
)

// descriptor is containerimage.descriptor: the manifest's OCI descriptor.
type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// metadata builds --metadata-file's content: buildx's keys
// (https://docs.docker.com/reference/cli/docker/buildx/build/#metadata-file)
// and minibuild's own (minibuild.*). names are the tags and pushed
// references; image.name joins them with commas, as buildx does.
func metadata(res *executor.Result, names []string) (map[string]any, error) {
	raw, err := res.Image.RawManifest()
	if err != nil {
		return nil, err
	}
	mt, err := res.Image.MediaType()
	if err != nil {
		return nil, err
	}
	m := map[string]any{
		"containerimage.digest":        res.Digest.String(),
		"containerimage.config.digest": res.ID.String(),
		"containerimage.descriptor":    descriptor{MediaType: string(mt), Digest: res.Digest.String(), Size: int64(len(raw))},
		"minibuild.steps.cached":       res.StepsCached,
		"minibuild.steps.built":        res.StepsBuilt,
		"minibuild.first_miss":         res.FirstMiss,
	}
	if len(names) > 0 {
		m["image.name"] = joinNames(names)
	}
	return m, nil
}

// joinNames normalizes each name as buildx prints it
// (docker.io/library/app:latest) and joins them with commas, each once.
func joinNames(names []string) string {
	var out []byte
	seen := map[string]bool{}
	for _, n := range names {
		if norm, err := store.NormalizeTag(n); err == nil {
			n = norm
		}
		if seen[n] {
			continue
		}
		seen[n] = true
		if len(out) > 0 {
			out = append(out, ',')
		}
		out = append(out, n...)
	}
	return string(out)
}

// writeMetadata writes the metadata file whole or not at all.
func writeMetadata(path string, res *executor.Result, names []string) error {
	m, err := metadata(res, names)
	if err != nil {
		return fmt.Errorf("--metadata-file: %w", err)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("--metadata-file: %w", err)
	}
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("--metadata-file: %w", err)
	}
	return nil
}
