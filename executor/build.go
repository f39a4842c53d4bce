// Package executor walks a Dockerfile's instruction chain: it derives each
// step's cache key, reuses recorded results up to the first miss, and
// executes from there on — RUN in the sandbox over a snapshot, COPY and
// ADD straight into a layer, metadata instructions into the config.
package executor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/buildctx"
	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/parser"
	"github.com/minibuild/minibuild/registry"
	"github.com/minibuild/minibuild/snapshot"
	"github.com/minibuild/minibuild/store"
)

// Options is everything one build needs.
type Options struct {
	Store     *store.Store
	Snapshots *snapshot.Snapshotter
	Cache     *cache.Index

	ContextDir string
	StateDir   string // where the context's stat cache lives
	Dockerfile []byte
	// DockerfileName is how errors name the Dockerfile ("Dockerfile").
	DockerfileName string

	BuildArgs map[string]string
	Target    string
	NoCache   bool
	Pull      bool
	Labels    map[string]string
	// Epoch is SOURCE_DATE_EPOCH: the image's creation time and the
	// latest mtime any layer entry may have.
	Epoch *time.Time
	// Insecure lists registries reached over plain http.
	Insecure []string
	Progress func(Event)
	// Jobs bounds how many stages build at once (default: the CPUs).
	Jobs int
	// CacheFrom are imported caches, consulted after the local index.
	CacheFrom []CacheSource
	// Secrets are the values RUN --mount=type=secret reads, by id (see
	// LoadSecrets). They never reach a layer, key, record or log line.
	Secrets map[string][]byte
	// Network is the RUN network mode when a RUN has no --network:
	// "default" (or ""), "host" or "none".
	Network string
}

// Result describes a finished build.
type Result struct {
	Image       v1.Image
	Digest      v1.Hash // manifest digest
	ID          v1.Hash // config digest, docker's image id
	StepsCached int
	StepsBuilt  int
	// FirstMiss explains the first step that missed the cache, e.g.
	// "step 5/7 COPY app.py ./ — app.py changed"; empty when all hit.
	FirstMiss string
	// StepKeys are the keys of every step of every stage that ran, and
	// ImageKeys those of the steps the image is made of: what
	// --cache-to mode=max and mode=min export.
	StepKeys, ImageKeys []digest.Digest
}

// builder holds one build's state. Stages run concurrently, so what they
// share is guarded by mu.
type builder struct {
	opts  Options
	df    *parser.Dockerfile
	meta  map[string]string
	graph *graph

	ctxOnce sync.Once
	bctx    *buildctx.Context
	bctxErr error

	mu     sync.Mutex
	stages map[int]*stageResult
	res    Result
	keys   map[int][]digest.Digest // step keys by stage, for --cache-to
}

// stageResult is a finished stage: its image state, ARG/ENV scope and
// last key.
type stageResult struct {
	state *imageState
	scope *parser.Scope
	key   digest.Digest
}

// Build runs the build described by opts.
func Build(ctx context.Context, opts Options) (*Result, error) {
	if opts.DockerfileName == "" {
		opts.DockerfileName = "Dockerfile"
	}
	if opts.Progress == nil {
		opts.Progress = func(Event) {}
	}
	if opts.Jobs <= 0 {
		opts.Jobs = runtime.NumCPU()
	}
	df, err := parser.Parse(bytes.NewReader(opts.Dockerfile), opts.DockerfileName)
	if err != nil {
		return nil, err
	}
	b := &builder{opts: opts, df: df, stages: map[int]*stageResult{}}
	for _, w := range df.Warnings {
		opts.Progress(Event{Kind: KindWarning, Line: w})
	}
	if unused := parser.UnusedBuildArgs(df, opts.BuildArgs); len(unused) > 0 {
		opts.Progress(Event{Kind: KindWarning, Line: fmt.Sprintf("one or more build args were not consumed: [%s]", strings.Join(unused, " "))})
	}
	target, err := b.targetStage()
	if err != nil {
		return nil, err
	}
	if b.meta, err = parser.ResolveMetaArgsForTarget(df, opts.BuildArgs, df.Stages[target].Name); err != nil {
		return nil, err
	}
	if b.graph, err = analyze(df, b.meta); err != nil {
		return nil, err
	}
	defer func() {
		if b.bctx != nil {
			b.bctx.Close()
		}
	}()
	if err := b.runStages(ctx, b.graph.needed(target)); err != nil {
		return nil, err
	}
	st := b.stages[target].state
	if len(opts.Labels) > 0 {
		if st.config.Config.Labels == nil {
			st.config.Config.Labels = map[string]string{}
		}
		for k, v := range opts.Labels {
			st.config.Config.Labels[k] = v
		}
	}
	img, h, err := commit(opts.Store, st, b.created(st))
	if err != nil {
		return nil, err
	}
	id, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	b.res.Image, b.res.Digest, b.res.ID = img, h, id
	b.res.StepKeys, b.res.ImageKeys = b.cacheKeys(target)
	return &b.res, nil
}

// runStages builds the given stages, each as soon as the stages it reads
// are done, at most opts.Jobs at a time. The first failure cancels the
// others and is the error returned.
func (b *builder) runStages(ctx context.Context, stages []int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := map[int]chan struct{}{}
	for _, i := range stages {
		done[i] = make(chan struct{})
	}
	slots := make(chan struct{}, b.opts.Jobs)
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		errMu.Lock()
		defer errMu.Unlock()
		if firstErr == nil || (errors.Is(firstErr, context.Canceled) && !errors.Is(err, context.Canceled)) {
			firstErr = err
		}
		cancel()
	}
	for _, i := range stages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, d := range b.graph.deps[i] {
				select {
				case <-done[d]:
				case <-ctx.Done():
					fail(ctx.Err())
					return
				}
			}
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				fail(ctx.Err())
				return
			}
			sr, err := b.buildStage(ctx, i)
			<-slots
			if err != nil {
				fail(err)
				return
			}
			b.mu.Lock()
			b.stages[i] = sr
			b.mu.Unlock()
			close(done[i])
		}()
	}
	wg.Wait()
	if firstErr == nil {
		return ctx.Err()
	}
	return firstErr
}

// created is the image's creation time: SOURCE_DATE_EPOCH when set, else
// the time of its newest history entry, so that a rebuild that reuses
// every step yields the very same image.
func (b *builder) created(st *imageState) time.Time {
	if b.opts.Epoch != nil {
		return *b.opts.Epoch
	}
	var t time.Time
	for _, h := range st.config.History {
		if h.Created.After(t) {
			t = h.Created.Time
		}
	}
	if t.IsZero() {
		t = time.Unix(0, 0)
	}
	return t
}

// targetStage picks --target, or the last stage.
func (b *builder) targetStage() (int, error) {
	if b.opts.Target == "" {
		return len(b.df.Stages) - 1, nil
	}
	for i, s := range b.df.Stages {
		if s.Name == strings.ToLower(b.opts.Target) {
			return i, nil
		}
	}
	return 0, fmt.Errorf("target stage %q could not be found", b.opts.Target)
}

// stage returns a finished stage's result.
func (b *builder) stage(i int) *stageResult {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stages[i]
}

// stageRun is one stage being built: its steps share the state, the scope
// and whether a step has missed yet.
type stageRun struct {
	b      *builder
	index  int
	name   string
	steps  int
	state  *imageState
	scope  *parser.Scope
	missed bool
	// needsRootfs[k] tells whether anything after step k+2 reads the
	// rootfs as files (a RUN, a COPY's destination check, a stage built
	// on or copied from this one): only then is a new layer extracted as
	// it is written.
	needsRootfs []bool
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
	stage := b.df.Stages[i]
	file := b.opts.DockerfileName
	base := b.graph.bases[i]
	run := &stageRun{b: b, index: i, name: b.graph.names[i]}
	fromText := "FROM " + base
	start := time.Now()

	var key digest.Digest
	fromStatus := StatusCached
	var triggers []string
	if dep, isStage := b.graph.stageRef(b.df, i, base); isStage {
		sr := b.stage(dep)
		run.state, run.scope, key = sr.state.clone(), sr.scope.Clone(), sr.key
		run.state.config.Config.OnBuild = nil // a stage's triggers do not carry over (BuildKit)
	} else if base == "scratch" {
		run.state, key = scratchState(), cache.BaseKey("scratch")
	} else {
		img, h, pulled, err := b.baseImage(ctx, base)
		if err == nil {
			run.state, err = stateFromImage(img)
		}
		if err != nil {
			run.steps = len(stage.Steps) + 1
			run.report(Event{Step: 1, Instruction: fromText, Status: StatusError, Reason: err.Error()})
			return nil, parser.Errorf(file, stage.Line, "%sFROM %s: %v", run.prefix(), base, err)
		}
		key = cache.BaseKey(h.String())
		if pulled {
			fromStatus = StatusDone
		}
		triggers = run.state.config.Config.OnBuild
		run.state.config.Config.OnBuild = nil // triggers run once, in the image that uses the base
	}
	run.state.cmdSet = false
	if run.scope == nil {
		run.scope = parser.NewScope(b.meta, b.opts.BuildArgs, b.df.Escape)
		run.scope.SetBaseEnv(run.state.config.Config.Env)
	}
	steps, err := onbuildSteps(file, stage.Line, triggers)
	if err != nil {
		return nil, err
	}
	steps = append(steps, stage.Steps...)
	run.steps = len(steps) + 1
	run.report(Event{Step: 1, Instruction: fromText, Status: fromStatus, Key: string(key), Duration: time.Since(start)})
	b.count(fromStatus == StatusCached)

	run.needsRootfs = make([]bool, len(steps))
	later := b.graph.hasDependents(i)
	for k := len(steps) - 1; k >= 0; k-- {
		run.needsRootfs[k] = later
		switch steps[k].Cmd.(type) {
		case *instructions.RunCommand, *instructions.CopyCommand, *instructions.AddCommand, *instructions.WorkdirCommand:
			later = true
		}
	}
	for n, step := range steps {
		sx := &stepExec{b: b, run: run, step: step, n: n + 2, file: file}
		next, err := sx.exec(ctx, key)
		if err != nil {
			return nil, err
		}
		key = next
	}
	return &stageResult{state: run.state, scope: run.scope, key: key}, nil
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

// baseImage finds a base image in the store, or pulls it. pulled reports
// a registry fetch.
func (b *builder) baseImage(ctx context.Context, ref string) (v1.Image, v1.Hash, bool, error) {
	if !b.opts.Pull {
		img, err := b.opts.Store.Image(ref)
		if err == nil {
			h, err := img.Digest()
			return img, h, false, err
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, v1.Hash{}, false, err
		}
	}
	img, h, err := registry.Pull(ctx, b.opts.Store, ref, registry.Options{Insecure: b.opts.Insecure})
	if err != nil {
		return nil, v1.Hash{}, false, fmt.Errorf("not found in the local store, and pulling it failed: %w", err)
	}
	return img, h, true, nil
}

// context opens the build context on first use: a Dockerfile without
// COPY or ADD never walks it.
func (b *builder) context(ctx context.Context) (*buildctx.Context, error) {
	b.ctxOnce.Do(func() {
		b.bctx, b.bctxErr = buildctx.Open(ctx, b.opts.ContextDir, buildctx.Options{StateDir: b.opts.StateDir})
	})
	return b.bctx, b.bctxErr
}

func (s *imageState) clone() *imageState {
	c := &imageState{layers: append([]cache.Layer(nil), s.layers...), config: *s.config.DeepCopy(), cmdSet: s.cmdSet}
	return c
}

// lookupEnv finds the last value of k in a K=V list.
func lookupEnv(env []string, k string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if name, v, _ := strings.Cut(env[i], "="); name == k {
			return v, true
		}
	}
	return "", false
}

// setEnv replaces k's value in place, or appends it, as docker keeps ENV order.
func setEnv(env []string, k, v string) []string {
	for i, kv := range env {
		if name, _, _ := strings.Cut(kv, "="); name == k {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}

// count tallies a reused (cached) or executed step.
func (b *builder) count(cached bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cached {
		b.res.StepsCached++
	} else {
		b.res.StepsBuilt++
	}
}

// noteMiss keeps the explanation of the first miss; with several stages,
// prefixed by the stage name.
func (b *builder) noteMiss(r *stageRun, why string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.res.FirstMiss != "" {
		return
	}
	if len(b.df.Stages) > 1 {
		why = r.name + " " + why
	}
	b.res.FirstMiss = why
}

// fromSource opens what COPY --from reads: an earlier stage's rootfs, or
// an image's (pulled when not in the store), as a read-only view that is
// hashed like a build context — so the copy is keyed on the files' content
// and a rebuilt stage with identical output changes nothing downstream.
func (b *builder) fromSource(ctx context.Context, stage int, from string) (*buildctx.Context, error) {
	var layers []snapshot.Layer
	if dep, ok := b.graph.stageRef(b.df, stage, from); ok {
		layers = b.stage(dep).state.snapshotLayers()
	} else {
		img, _, _, err := b.baseImage(ctx, from)
		if err != nil {
			return nil, fmt.Errorf("--from=%s: %w", from, err)
		}
		st, err := stateFromImage(img)
		if err != nil {
			return nil, fmt.Errorf("--from=%s: %w", from, err)
		}
		layers = st.snapshotLayers()
	}
	dir, err := b.opts.Snapshots.View(ctx, layers)
	if err != nil {
		return nil, err
	}
	return buildctx.Open(ctx, dir, buildctx.Options{StateDir: b.opts.StateDir, NoIgnore: true})
}
