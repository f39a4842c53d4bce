package executor

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/buildctx"
	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/copier"
	"github.com/minibuild/minibuild/internal/diskspace"
)

// copySpec is what COPY and ADD have in common.
type copySpec struct {
	instructions.SourcesAndDest
	chown, chmod string
	from         string // COPY --from
	add          bool
	checksum     string // ADD --checksum
}

// copyOp is a COPY or ADD planned against its source (the context, or a
// stage's or image's view): the plan lists exactly what lands, so the key
// covers exactly those files, and executing writes that plan as a layer.
type copyOp struct {
	s    *step
	plan *copier.Planned
	from *buildctx.Context // a --from view, closed after the layer is written
}

func newCopyOp(ctx context.Context, s *step, spec copySpec) (*copyOp, error) {
	facts := s.run.b.rootfsFacts(ctx, s.run.state.layers)
	req, err := s.copyRequest(ctx, spec, facts)
	if err != nil {
		return nil, err
	}
	o := &copyOp{s: s}
	var src *buildctx.Context
	switch {
	case spec.from != "":
		if o.from, err = s.run.fromSource(ctx, spec.from); err != nil {
			return nil, err
		}
		src = o.from
		// A stage or an image keeps its owners; a directory is a context.
		named, _ := s.run.resolveFrom(spec.from)
		req.KeepOwner = named.dir == ""
	case len(spec.SourcePaths) > 0:
		if src, err = s.run.b.context(ctx); err != nil {
			return nil, err
		}
	}
	if o.plan, err = copier.Plan(ctx, src, req); err != nil {
		o.release()
		return nil, err
	}
	facts.save()
	return o, nil
}

// copyRequest turns the instruction into a copier request: the
// destination checked in the image, --chown resolved through its passwd
// and group files, --chmod and --checksum parsed.
// The image is asked through facts (facts.go): the snapshotter, or what
// is recorded about a chain whose layers are remote.
func (s *step) copyRequest(ctx context.Context, spec copySpec, facts *rootfsFacts) (copier.Request, error) {
	r := s.run
	req := copier.Request{
		Sources:  spec.SourcePaths,
		Dest:     spec.DestPath,
		Workdir:  r.state.config.Config.WorkingDir,
		Add:      spec.add,
		DestInfo: facts.stat,
		Resolve:  facts.resolve,
	}
	if n := r.b.opts.MinFreeSpace; n > 0 {
		req.Space = diskspace.Reserve{Dir: filepath.Join(r.b.opts.Store.Root(), "tmp"), Bytes: n}
	}
	if spec.checksum != "" {
		d, err := digest.Parse(spec.checksum)
		if err != nil {
			return req, fmt.Errorf("invalid checksum %q: %w", spec.checksum, err)
		}
		req.Checksum = d
	}
	if spec.chown != "" {
		uid, gid, err := resolveOwner(facts.readFile, spec.chown)
		if err != nil {
			return req, fmt.Errorf("--chown=%s: %w", spec.chown, err)
		}
		req.Chown = &copier.Owner{UID: uid, GID: gid}
	}
	if spec.chmod != "" {
		m, err := strconv.ParseUint(spec.chmod, 8, 32)
		if err != nil || m > 0o7777 {
			return req, fmt.Errorf("invalid --chmod=%s: only octal modes are supported", spec.chmod)
		}
		mode := fs.FileMode(m)
		req.Chmod = &mode
	}
	for _, h := range spec.SourceContents {
		req.Heredocs = append(req.Heredocs, copier.Heredoc{Name: h.Path, Data: h.Data})
	}
	return req, nil
}

func (o *copyOp) inputs(in *cache.Inputs) {
	in.Files = o.plan.Key()
	in.Why.FileNames = o.plan.Inputs
}

func (o *copyOp) execute(ctx context.Context) (*cache.Record, error) {
	l, err := o.s.writeLayer(ctx, o.plan.Write)
	if err != nil {
		return nil, err
	}
	return &cache.Record{Layer: l, Config: o.s.config(), History: o.s.history("", false)}, nil
}

func (o *copyOp) release() {
	if o.plan != nil {
		o.plan.Close()
	}
	if o.from != nil {
		o.from.Close()
	}
}
