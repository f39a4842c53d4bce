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
	"github.com/minibuild/minibuild/internal/layeropt"
	"github.com/minibuild/minibuild/snapshot"
)

// Stdout is the Dest that means standard output ("-o -", "dest=-").
const Stdout = "-"

// Output is one parsed -o/--output: where a built image is written
// besides the local store.
type Output struct {
	Type string // oci, docker, local, tar, registry or image
	Dest string // a file (oci, docker, tar), a directory (local) or Stdout
	Name string // registry and image: comma-separated refs (default the -t tags)
}

// ParseOutputs parses buildx-style specs: "type=oci,dest=F.tar", a bare
// path meaning type=local, or "-" meaning a tar of the rootfs on stdout.
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

// ParseOutput parses one --output spec, with BuildKit's exporters'
// semantics (https://docs.docker.com/build/exporters/): type=local,dest=DIR
// (the rootfs as files; dest=- is a tar on stdout, as buildx), type=tar
// (the rootfs as one tar), type=oci|docker (an image tarball), type=registry
// (pushed) and type=image (stored under name=, pushed with push=true).
// Options that would do nothing are refused by name.
func ParseOutput(spec string) (Output, error) {
	if spec == Stdout {
		return Output{Type: "tar", Dest: Stdout}, nil
	}
	if !strings.Contains(spec, "=") {
		return Output{Type: "local", Dest: spec}, nil
	}
	var o Output
	push := false
	for _, field := range strings.Split(spec, ",") {
		k, v, _ := strings.Cut(field, "=")
		var err error
		switch k = strings.TrimSpace(k); k {
		case "type":
			o.Type = v
		case "dest":
			o.Dest = v
		case "name":
			o.Name = v
		case "push":
			push, err = layeropt.Bool(k, v)
		default:
			err = outputOption(k, v)
		}
		if err != nil {
			return o, fmt.Errorf("--output %q: %w", spec, err)
		}
	}
	return o.check(spec, push)
}

// outputOption checks an -o option other than type, dest, name and push.
func outputOption(k, v string) error {
	if strings.HasPrefix(k, "annotation") {
		return fmt.Errorf("%s: give manifest annotations with --annotation KEY=VALUE", k)
	}
	if known, err := layeropt.Check(k, v); known {
		return err
	}
	return fmt.Errorf("unknown key %q", k)
}

// check validates a parsed spec's type and destination.
func (o Output) check(spec string, push bool) (Output, error) {
	switch o.Type {
	case "registry":
		return o, nil // pushed by Finish, which has the store
	case "image":
		if push {
			o.Type = "registry" // type=image,push=true is buildx's spelling of type=registry
		}
		return o, nil
	case "oci", "docker", "tar":
	case "local":
		if o.Dest == Stdout {
			o.Type = "tar" // as buildx: the local exporter to stdout is a tar
		}
	default:
		return o, fmt.Errorf("--output %q: type must be oci, docker, local, tar, registry or image", spec)
	}
	if o.Dest == "" {
		return o, fmt.Errorf("--output %q: dest is required (- for standard output)", spec)
	}
	if o.Name != "" {
		return o, fmt.Errorf("--output %q: name is for type=registry and type=image", spec)
	}
	return o, nil
}

// Write writes imgs (one for a build) to the output; dest=- goes to
// os.Stdout. type=registry and type=image are no-ops here: Finish pushes
// and tags them.
func (o Output) Write(ctx context.Context, imgs []archive.Named) error {
	return o.write(ctx, imgs, os.Stdout, nil)
}

// write is Write with stdout given; warn (when not nil) hears of device
// nodes type=local left out.
func (o Output) write(ctx context.Context, imgs []archive.Named, stdout io.Writer, warn func(string)) error {
	var write func(io.Writer, []archive.Named) error
	switch o.Type {
	case "registry", "image":
		return nil
	case "local":
		if len(imgs) != 1 {
			return fmt.Errorf("type=local writes exactly one image")
		}
		return writeRootfs(ctx, imgs[0], o.Dest, warn)
	case "tar":
		write = writeRootfsTar
	case "oci":
		write = archive.WriteOCI
	default:
		write = archive.WriteDocker
	}
	var err error
	if o.Dest == Stdout {
		err = write(stdout, imgs)
	} else if err = os.MkdirAll(filepath.Dir(o.Dest), 0o755); err == nil {
		err = writeTar(o.Dest, write, imgs)
	}
	if err != nil {
		return fmt.Errorf("write %s output %s: %w", o.Type, o.Dest, err)
	}
	return nil
}

// Save writes imgs as one docker-archive tar at path (minibuild save),
// readable by docker load.
func Save(path string, imgs []archive.Named) error {
	return writeTar(path, archive.WriteDocker, imgs)
}

// SaveTo writes imgs as one docker-archive tar to w (minibuild save
// without -o: standard output).
func SaveTo(w io.Writer, imgs []archive.Named) error {
	return archive.WriteDocker(w, imgs)
}

// writeTar writes an image tarball whole or not at all. The file gets the
// mode of any new file (0666 less the umask), as buildx's outputs do.
func writeTar(path string, write func(io.Writer, []archive.Named) error, imgs []archive.Named) error {
	_ = atomicfile.Sweep(path) // what a killed write of this output left
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

// writeRootfsTar writes the image's flattened rootfs as one tar, as
// `docker build -o -` and BuildKit's tar exporter do.
func writeRootfsTar(w io.Writer, imgs []archive.Named) error {
	if len(imgs) != 1 {
		return fmt.Errorf("type=tar writes exactly one image")
	}
	rc := mutate.Extract(imgs[0].Image)
	defer rc.Close()
	_, err := io.Copy(w, rc)
	return err
}

// writeRootfs flattens the image's layers into dir, resolving every path
// inside it. Device nodes are left out (snapshot.ExtractTree says why);
// warn names them.
func writeRootfs(ctx context.Context, img archive.Named, dir string, warn func(string)) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// Layer by layer, not through a flattened tar (mutate.Extract keeps
	// the first of two entries at a path; a layer's reader, the last):
	// the tree is what RUN sees.
	layers, err := img.Image.Layers()
	if err != nil {
		return fmt.Errorf("write rootfs to %s: %w", dir, err)
	}
	open := make([]func() (io.ReadCloser, error), len(layers))
	for i, l := range layers {
		open[i] = l.Compressed
	}
	devices, err := snapshot.ExtractLayers(ctx, open, dir)
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
