package store

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// dockerHub is the registry name docker uses in normalized refs;
// go-containerregistry calls it index.docker.io.
const dockerHub = "docker.io"

// NormalizeTag turns a tag ref into docker's normalized form:
// "busybox" → "docker.io/library/busybox:latest",
// "myapp:1.1" → "docker.io/library/myapp:1.1",
// "localhost:5000/app" → "localhost:5000/app:latest". Digest refs are an error.
func NormalizeTag(ref string) (string, error) {
	t, err := name.NewTag(ref)
	if err != nil {
		return "", fmt.Errorf("invalid tag %q: %w", ref, err)
	}
	return normalizedRepo(t.Repository) + ":" + t.TagStr(), nil
}

// NormalizeRef is NormalizeTag for tags and "repo@sha256:…" for digest refs.
func NormalizeRef(ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("invalid reference %q: %w", ref, err)
	}
	switch r := r.(type) {
	case name.Tag:
		return normalizedRepo(r.Repository) + ":" + r.TagStr(), nil
	case name.Digest:
		return normalizedRepo(r.Repository) + "@" + r.DigestStr(), nil
	}
	return "", fmt.Errorf("invalid reference %q", ref)
}

func normalizedRepo(r name.Repository) string {
	reg := r.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = dockerHub
	}
	return reg + "/" + r.RepositoryStr()
}

// DisplayRef shortens a normalized ref the way docker prints it:
// "docker.io/library/myapp:1.1" → "myapp:1.1", "docker.io/me/app:1" → "me/app:1".
func DisplayRef(ref string) string {
	if rest, ok := strings.CutPrefix(ref, dockerHub+"/library/"); ok {
		return rest
	}
	if rest, ok := strings.CutPrefix(ref, dockerHub+"/"); ok {
		return rest
	}
	return ref
}
