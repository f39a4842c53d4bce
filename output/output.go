// Package output writes a built image where -o/--output asks: an OCI
// layout tar, a docker-archive tar, or the flattened rootfs in a
// directory. The local store is written by the build itself.
package output

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/minibuild/minibuild/archive"
	"github.com/minibuild/minibuild/snapshot"
)

// Output is one parsed --output.
type Output struct {
	Type string // oci, docker, local or registry
	Dest string
	Name string // type=registry: where to push (comma-separated refs; default the -t tags)
}

// ParseAll parses buildx-style specs: "type=oci,dest=F.tar", or a bare
// path meaning type=local.
func ParseAll(specs []string) ([]Output, error) {
	var outs []Output
	for _, spec := range specs {
		o, err := Parse(spec)
		if err != nil {
			return nil, err
		}
		outs = append(outs, o)
	}
	return outs, nil
}

// Parse parses one --output spec.
func Parse(spec string) (Output, error) {
	if !strings.Contains(spec, "=") {
		return Output{Type: "local", Dest: spec}, nil
	}
	var o Output
	for _, field := range strings.Split(spec, ",") {
		k, v, _ := strings.Cut(field, "=")
		switch strings.TrimSpace(k) {
		case "type":
			o.Type = v
		case "dest":
			o.Dest = v
		case "name":
			o.Name = v
		case "push":
			// type=image,push=true is buildx's spelling of type=registry.
		default:
			return o, fmt.Errorf("--output %q: unknown key %q", spec, k)
		}
	}
	switch o.Type {
	case "oci", "docker", "local":
	case "registry", "image":
		o.Type = "registry" // the build command pushes it
		return o, nil
	default:
		return o, fmt.Errorf("--output %q: type must be oci, docker, local or registry", spec)
	}
	if o.Dest == "" {
		return o, fmt.Errorf("--output %q: dest is required", spec)
	}
	return o, nil
}

// Write writes imgs (one for a build) to the output.
func (o Output) Write(ctx context.Context, imgs []archive.Named) error {
	if o.Type == "registry" {
		return nil // pushed by the build command, which has the store
	}
	if o.Type == "local" {
		if len(imgs) != 1 {
			return fmt.Errorf("type=local writes exactly one image")
		}
		return writeRootfs(ctx, imgs[0], o.Dest)
	}
	if err := os.MkdirAll(filepath.Dir(o.Dest), 0o755); err != nil {
		return err
	}
	tmp, err := createTemp(filepath.Dir(o.Dest))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if o.Type == "oci" {
		err = archive.WriteOCI(tmp, imgs)
	} else {
		err = archive.WriteDocker(tmp, imgs)
	}
	if err == nil {
		err = tmp.Close()
	} else {
		tmp.Close()
	}
	if err != nil {
		return fmt.Errorf("write %s output %s: %w", o.Type, o.Dest, err)
	}
	return os.Rename(tmp.Name(), o.Dest)
}

// createTemp is os.CreateTemp with the mode of a new file (0666 less the
// umask), not 0600: the temp file is renamed into dest, and docker's
// output files are readable as any file the user creates.
func createTemp(dir string) (*os.File, error) {
	for i := 0; ; i++ {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(filepath.Join(dir, ".minibuild-out-"+hex.EncodeToString(b[:])), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
		if errors.Is(err, fs.ErrExist) && i < 100 {
			continue
		}
		return f, err
	}
}

// writeRootfs flattens the image's layers into dir, resolving every path
// inside it.
func writeRootfs(ctx context.Context, img archive.Named, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rc := mutate.Extract(img.Image)
	defer rc.Close()
	if _, err := snapshot.Extract(ctx, rc, dir); err != nil {
		return fmt.Errorf("write rootfs to %s: %w", dir, err)
	}
	return nil
}
