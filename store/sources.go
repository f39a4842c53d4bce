package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Blob sources remember which registry repositories are known to hold a
// blob ("127.0.0.1:5000/team/base"), so that a push to another repository
// of the same registry can ask for a cross-repo mount instead of uploading.
// They live in root/sources/sha256/<hex>, one repository per line, appended
// with O_APPEND (each line is one small write, so concurrent writers never
// interleave). Only repository names are kept: never credentials.

// maxSourcesPerBlob bounds a blob's list; the newest names are kept.
const maxSourcesPerBlob = 16

func (s *Store) sourcesPath(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("blob digest %q: %w", d, err)
	}
	return filepath.Join(s.root, "sources", d.Algorithm().String(), d.Encoded()), nil
}

// AddBlobSource records that repo (registry host and repository path, no
// tag) holds blob d. Recording a known pair again is a no-op.
func (s *Store) AddBlobSource(d digest.Digest, repo string) error {
	if repo == "" || strings.ContainsAny(repo, "\n@") || strings.Contains(repo, "://") {
		return fmt.Errorf("blob source %q: want HOST/REPOSITORY", repo)
	}
	if slices.Contains(s.BlobSources(d), repo) {
		return nil
	}
	p, err := s.sourcesPath(d)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("record blob source: %w", err)
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("record blob source: %w", err)
	}
	_, werr := f.WriteString(repo + "\n")
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("record blob source %s: %w", d, err)
	}
	return nil
}

// BlobSources lists the repositories known to hold blob d, newest first.
func (s *Store) BlobSources(d digest.Digest) []string {
	p, err := s.sourcesPath(d)
	if err != nil {
		return nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	var out []string
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0 && len(out) < maxSourcesPerBlob; i-- {
		if l := lines[i]; l != "" && !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return out
}

// removeBlobSources forgets the sources of a collected blob.
func (s *Store) removeBlobSources(d digest.Digest) {
	if p, err := s.sourcesPath(d); err == nil {
		os.Remove(p)
	}
}
