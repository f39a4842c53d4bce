package executor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/buildctx"
	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/parser"
	"github.com/minibuild/minibuild/registry"
	"github.com/minibuild/minibuild/store"
)

// stageResult is a finished stage: its image state, ARG/ENV scope and
// last key.
type stageResult struct {
	state *imageState
	scope *parser.Scope
	key   digest.Digest
}

// stageRun is one stage being built: its steps share the state, the scope
// and whether a step has missed yet.
type stageRun struct {
	b      *builder
	index  int
	name   string
	steps  int // FROM included
	state  *imageState
	scope  *parser.Scope
	missed bool
	base   string // the base as resolved, for explaining a changed one
}

// prefix names the stage in errors of a multi-stage build.
func (r *stageRun) prefix() string {
	if len(r.b.df.Stages) > 1 {
		return "stage " + r.name + ", "
	}
	return ""
}

func (r *stageRun) report(e Event) {
	e.Kind, e.Stage, e.Steps = KindStep, r.name, r.steps
	r.b.opts.Progress(e)
}

// buildStage builds stage i; the stages it reads are done.
func (b *builder) buildStage(ctx context.Context, i int) (*stageResult, error) {
	run := &stageRun{b: b, index: i, name: b.graph.stages[i].name}
	key, triggers, err := run.from(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range run.chain(triggers) {
		if key, err = s.exec(ctx, key); err != nil {
			return nil, err
		}
	}
	return &stageResult{state: run.state, scope: run.scope, key: key}, nil
}

// from starts the stage from its base — an earlier stage, scratch or an
// image — reports the FROM step and returns its key and the base image's
// ONBUILD triggers as steps.
func (r *stageRun) from(ctx context.Context) (digest.Digest, []parser.Step, error) {
	b, stage := r.b, r.b.df.Stages[r.index]
	node := &b.graph.stages[r.index]
	fromText := "FROM " + node.baseText
	start := time.Now()
	var key digest.Digest
	var triggers []string
	status := StatusCached
	switch base := node.base; {
	case base.isStage():
		sr := b.stage(base.stage)
		r.state, r.scope, key = sr.state.clone(), sr.scope.Clone(), sr.key
		// The base stage's own ONBUILD instructions run here first, and
		// this stage's config starts without them (BuildKit's
		// initOnBuildTriggers over d.base.commands).
		triggers = r.state.config.Config.OnBuild
		r.state.config.Config.OnBuild = nil
		r.base = "stage " + b.graph.stages[base.stage].name
	case base.image == "scratch":
		r.state, key = scratchState(), cache.FromKey("scratch")
		r.base = "scratch"
	default:
		// The key is the image id (config digest: diff_ids and config),
		// not the manifest: the same base pulled, loaded from a
		// docker-archive or an OCI layout keys the same.
		st, id, pulled, err := b.baseImage(ctx, base.image)
		r.state = st
		if err != nil {
			r.steps = len(stage.Steps) + 1
			r.report(Event{Step: 1, Instruction: fromText, Status: StatusError, Reason: err.Error()})
			return "", nil, parser.Errorf(b.opts.DockerfileName, stage.Line, "%sFROM %s: %v", r.prefix(), base.image, err)
		}
		key = cache.FromKey(id.String())
		r.base = base.image + " (id " + id.Hex[:12] + ")"
		if pulled {
			status = StatusDone
		}
		triggers = r.state.config.Config.OnBuild
		r.state.config.Config.OnBuild = nil // triggers run once, in the image that uses the base
	}
	r.state.cmdSet = false
	if r.scope == nil {
		r.scope = parser.NewScope(b.meta, b.opts.BuildArgs, b.df.Escape)
		r.scope.SetBaseEnv(r.state.config.Config.Env)
	}
	onbuild, err := onbuildSteps(b.opts.DockerfileName, stage.Line, triggers)
	if err != nil {
		return "", nil, err
	}
	r.steps = len(stage.Steps) + len(onbuild) + 1
	r.report(Event{Step: 1, Instruction: fromText, Status: status, Key: string(key), Duration: time.Since(start)})
	b.count(status == StatusCached)
	return key, onbuild, nil
}

// chain lists the stage's steps — the base's ONBUILD triggers first — and
// marks each whose layer a later step or stage reads as files (a RUN, a
// COPY's destination check, WORKDIR, a stage built on or copied from this
// one): only those layers are extracted as they are written.
func (r *stageRun) chain(onbuild []parser.Step) []*step {
	srcs := append(onbuild, r.b.df.Stages[r.index].Steps...)
	steps := make([]*step, len(srcs))
	later := r.b.graph.stages[r.index].dependents
	for k := len(srcs) - 1; k >= 0; k-- {
		steps[k] = &step{run: r, src: srcs[k], n: k + 2, feedsRootfs: later}
		switch srcs[k].Cmd.(type) {
		case *instructions.RunCommand, *instructions.CopyCommand, *instructions.AddCommand, *instructions.WorkdirCommand:
			later = true
		}
	}
	return steps
}

// onbuildSteps parses a base image's ONBUILD triggers into steps that run
// first in the stage, reported at the stage's FROM line.
func onbuildSteps(file string, line int, triggers []string) ([]parser.Step, error) {
	var steps []parser.Step
	for _, t := range triggers {
		df, err := parser.Parse(strings.NewReader("FROM scratch\n"+t+"\n"), file)
		if err != nil || len(df.Stages) != 1 || len(df.Stages[0].Steps) != 1 {
			return nil, parser.Errorf(file, line, "invalid ONBUILD trigger %q in the base image: %v", t, err)
		}
		st := df.Stages[0].Steps[0]
		switch strings.ToUpper(st.Cmd.Name()) {
		case "ONBUILD", "FROM", "MAINTAINER":
			return nil, parser.Errorf(file, line, "ONBUILD trigger %q is not allowed", t)
		}
		st.Line, st.EndLine = line, line
		st.Original = "ONBUILD " + strings.TrimSpace(st.Original)
		steps = append(steps, st)
	}
	return steps, nil
}

// baseImage finds a base image in the store, or pulls it, and returns
// its state and id, its blobs held in the build's lease against a
// concurrent garbage collector. pulled reports a registry fetch.
func (b *builder) baseImage(ctx context.Context, ref string) (*imageState, v1.Hash, bool, error) {
	img, pulled, err := b.findImage(ctx, ref)
	if err != nil {
		return nil, v1.Hash{}, false, err
	}
	st, err := stateFromImage(img)
	if err != nil {
		return nil, v1.Hash{}, false, err
	}
	md, err := img.Digest()
	if err != nil {
		return nil, v1.Hash{}, false, err
	}
	id, err := img.ConfigName()
	if err != nil {
		return nil, v1.Hash{}, false, err
	}
	ds := []digest.Digest{digest.Digest(md.String()), digest.Digest(id.String())}
	for _, l := range st.layers {
		ds = append(ds, l.Digest, l.DiffID) // the blobs and their extracted dirs
	}
	if err := b.lease.Add(ds...); err != nil {
		return nil, v1.Hash{}, false, err
	}
	// Held now: if a collection removed the image before the lease, its
	// manifest is gone, and that says so.
	if !b.opts.Store.HasBlob(digest.Digest(md.String())) {
		return nil, v1.Hash{}, false, fmt.Errorf("%s: removed while being opened: %w", ref, store.ErrNotFound)
	}
	return st, id, pulled, nil
}

// findImage opens a base image from the store, else pulls it.
func (b *builder) findImage(ctx context.Context, ref string) (v1.Image, bool, error) {
	if !b.opts.Pull {
		img, err := b.opts.Store.Image(ref)
		if err == nil || !errors.Is(err, store.ErrNotFound) {
			return img, false, err
		}
	}
	img, _, err := registry.Pull(ctx, b.opts.Store, ref, registry.Options{Insecure: b.opts.Insecure})
	if err != nil {
		return nil, false, fmt.Errorf("not found in the local store, and pulling it failed: %w", err)
	}
	return img, true, nil
}

// context opens the build context on first use: a Dockerfile without
// COPY or ADD never walks it.
func (b *builder) context(ctx context.Context) (*buildctx.Context, error) {
	b.ctxOnce.Do(func() {
		b.bctx, b.bctxErr = buildctx.Open(ctx, b.opts.ContextDir, buildctx.Options{StateDir: b.opts.StateDir})
	})
	return b.bctx, b.bctxErr
}

// fromSource opens what COPY --from or a bind mount's from= reads: an
// earlier stage's rootfs, or an image's (pulled when not in the store), as
// a read-only view hashed like a build context — so the step is keyed on
// the files' content and a rebuilt stage with identical output changes
// nothing downstream. The caller closes it.
func (r *stageRun) fromSource(ctx context.Context, from string) (*buildctx.Context, error) {
	src, err := r.resolveFrom(from)
	if err != nil {
		return nil, err
	}
	var st *imageState
	switch {
	case src.dir != "":
		// A named context is read like the build context: its
		// .dockerignore applies, and content keys the step.
		return buildctx.Open(ctx, src.dir, buildctx.Options{StateDir: r.b.opts.StateDir})
	case src.isStage():
		st = r.b.stage(src.stage).state
	default:
		var err error
		if st, _, _, err = r.b.baseImage(ctx, src.image); err != nil {
			return nil, fmt.Errorf("--from=%s: %w", from, err)
		}
	}
	dir, err := r.b.opts.Snapshots.View(ctx, st.layers)
	if err != nil {
		return nil, err
	}
	return buildctx.Open(ctx, dir, buildctx.Options{StateDir: r.b.opts.StateDir, NoIgnore: true})
}

// resolveFrom finds what a --from value names, as the graph resolved it.
// An ONBUILD trigger's reference was not in the Dockerfile the graph saw:
// it may name an image, or a stage this one already waited for.
func (r *stageRun) resolveFrom(from string) (source, error) {
	if src, ok := r.b.graph.stages[r.index].froms[from]; ok {
		return src, nil
	}
	src, err := r.b.graph.resolve(r.index, "--from", from)
	if err == nil && src.isStage() && r.b.stage(src.stage) == nil {
		err = fmt.Errorf("--from=%s: an ONBUILD trigger may not use a stage this stage does not depend on", from)
	}
	return src, err
}
