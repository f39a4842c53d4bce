package export

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/minibuild/minibuild/archive"
	"github.com/minibuild/minibuild/internal/atomicfile"
	"github.com/minibuild/minibuild/snapshot"
)

// Output is one parsed -o/--output: where a built image is written
// besides the local store.
type Output struct {
	Type string // oci, docker, local or registry
	Dest string
	Name string // type=registry: where to push (comma-separated refs; default the -t tags)
}

// ParseOutputs parses buildx-style specs: "type=oci,dest=F.tar", or a bare
// path meaning type=local.
func ParseOutputs(specs []string) ([]Output, error) {
	var outs []Output
	for _, spec := range specs {
		o, err := ParseOutput(spec)
		if err != nil {
			return nil, err
		}
		outs = append(outs, o)
	}
	return outs, nil
}

// ParseOutput parses one --output spec.
func ParseOutput(spec string) (Output, error) {
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
		o.Type = "registry" // pushed by Finish, which has the store
		return o, nil
	default:
		return o, fmt.Errorf("--output %q: type must be oci, docker, local or registry", spec)
	}
	if o.Dest == "" {
		return o, fmt.Errorf("--output %q: dest is required", spec)
	}
	return o, nil
}

// Write writes imgs (one for a build) to the output. type=registry is a
// no-op here: Finish pushes it.
func (o Output) Write(ctx context.Context, imgs []archive.Named) error {
	return o.write(ctx, imgs, nil)
}

// write is Write; warn (when not nil) hears of device nodes type=local
// left out.
func (o Output) write(ctx context.Context, imgs []archive.Named, warn func(string)) error {
	switch o.Type {
	case "registry":
		return nil
	case "local":
		if len(imgs) != 1 {
			return fmt.Errorf("type=local writes exactly one image")
		}
		return writeRootfs(ctx, imgs[0], o.Dest, warn)
	}
	if err := os.MkdirAll(filepath.Dir(o.Dest), 0o755); err != nil {
		return err
	}
	write := archive.WriteDocker
	if o.Type == "oci" {
		write = archive.WriteOCI
	}
	if err := writeTar(o.Dest, write, imgs); err != nil {
		return fmt.Errorf("write %s output %s: %w", o.Type, o.Dest, err)
	}
	return nil
}

// Save writes imgs as one docker-archive tar at path (minibuild save),
// readable by docker load.
func Save(path string, imgs []archive.Named) error {
	return writeTar(path, archive.WriteDocker, imgs)
}

// writeTar writes an image tarball whole or not at all. The file gets the
// mode of any new file (0666 less the umask), as buildx's outputs do.
func writeTar(path string, write func(io.Writer, []archive.Named) error, imgs []archive.Named) error {
	f, err := atomicfile.Create(path, 0o666)
	if err != nil {
		return err
	}
	defer f.Abort()
	if err := write(f, imgs); err != nil {
		return err
	}
	return f.Commit()
}

// writeRootfs flattens the image's layers into dir, resolving every path
// inside it. Device nodes are left out (snapshot.ExtractTree says why);
// warn names them.
func writeRootfs(ctx context.Context, img archive.Named, dir string, warn func(string)) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rc := mutate.Extract(img.Image)
	defer rc.Close()
	devices, err := snapshot.ExtractTree(ctx, rc, dir)
	if err != nil {
		return fmt.Errorf("write rootfs to %s: %w", dir, err)
	}
	if len(devices) > 0 && warn != nil {
		names := devices[:min(len(devices), 5)]
		more := ""
		if len(devices) > len(names) {
			more = ", …"
		}
		warn(fmt.Sprintf("-o type=local: %d device node(s) left out of %s (a host directory gets no working device nodes): %s%s",
			len(devices), dir, strings.Join(names, ", "), more))
	}
	return nil
}
