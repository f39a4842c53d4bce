package executor

import (
	"archive/tar"
	"context"
	"errors"
	"io/fs"
	"path"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/layer"
)

// workdirOp sets the working dir and, when the image lacks it, creates it
// in a small layer (as BuildKit does). Its key names the resolved
// absolute path, so "WORKDIR b" after "WORKDIR /a" keys as "/a/b".
type workdirOp struct {
	s   *step
	dir string
}

func newWorkdirOp(s *step, c *instructions.WorkdirCommand) *workdirOp {
	dir := c.Path
	if !path.IsAbs(dir) {
		base := s.run.state.config.Config.WorkingDir
		if base == "" {
			base = "/"
		}
		dir = path.Join(base, dir)
	}
	return &workdirOp{s: s, dir: path.Clean(dir)}
}

func (o *workdirOp) inputs(in *cache.Inputs) { in.Instruction = "WORKDIR " + o.dir }
func (o *workdirOp) release()                {}

func (o *workdirOp) execute(ctx context.Context) (*cache.Record, error) {
	s := o.s
	next := s.config()
	next.WorkingDir = o.dir
	missing, err := o.missingDirs(ctx)
	if err != nil {
		return nil, err
	}
	if len(missing) == 0 {
		return &cache.Record{Config: next, History: s.history("", true)}, nil
	}
	// As BuildKit, the dirs belong to the USER in effect.
	var owner identity
	if user := s.run.state.config.Config.User; user != "" {
		if owner, err = resolveUser(s.run.imageFiles(ctx), user); err != nil {
			return nil, err
		}
	}
	parents, err := o.existingParents(ctx, missing[0])
	if err != nil {
		return nil, err
	}
	l, err := s.writeLayer(ctx, func(w *layer.Writer) error {
		for _, hdr := range parents {
			if err := w.Add(hdr, nil); err != nil {
				return err
			}
		}
		for _, d := range missing {
			hdr := &tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, ModTime: s.layerTime(),
				Uid: int(owner.UID), Gid: int(owner.GID)}
			if err := w.Add(hdr, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &cache.Record{Layer: l, Config: next, History: s.history("", false)}, nil
}

// existingParents are the headers of the dirs above the first missing
// one, as the image has them (mode, owner, mtime): the layer carries them
// so that extracting it does not make default 0755 root-owned dirs there,
// which overlay would show over the image's own (as BuildKit's layers
// carry a changed dir's parents).
func (o *workdirOp) existingParents(ctx context.Context, first string) ([]*tar.Header, error) {
	r := o.s.run
	var out []*tar.Header
	for d := path.Dir(first); d != "/"; d = path.Dir(d) {
		fi, err := r.b.opts.Snapshots.Stat(ctx, r.state.layers, d)
		if err != nil {
			return nil, err
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return nil, err
		}
		hdr.Name = strings.TrimPrefix(d, "/") + "/"
		out = append([]*tar.Header{hdr}, out...)
	}
	return out, nil
}

// missingDirs lists the dir and its parents that the image lacks, top
// first, where they really are: the path is resolved in the rootfs first,
// so a WORKDIR through a symlink (dangling or not) creates its target
// inside the rootfs, never a dir over the link (BuildKit's mkdir -p).
func (o *workdirOp) missingDirs(ctx context.Context) ([]string, error) {
	r := o.s.run
	dir, err := r.b.opts.Snapshots.Resolve(ctx, r.state.layers, o.dir)
	if err != nil {
		return nil, err
	}
	var missing []string
	for d := dir; d != "/"; d = path.Dir(d) {
		_, err := r.b.opts.Snapshots.Stat(ctx, r.state.layers, d)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		missing = append([]string{d}, missing...)
	}
	return missing, nil
}
