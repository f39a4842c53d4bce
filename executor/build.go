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
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
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
}

// builder holds one build's state.
type builder struct {
	opts   Options
	df     *parser.Dockerfile
	meta   map[string]string
	bctx   *buildctx.Context
	stages map[int]*stageResult
	res    Result
	missed bool
}

// stageResult is a finished stage: its image state and last key.
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
	if b.meta, err = parser.ResolveMetaArgs(df, opts.BuildArgs); err != nil {
		return nil, err
	}
	target, err := b.targetStage()
	if err != nil {
		return nil, err
	}
	defer func() {
		if b.bctx != nil {
			b.bctx.Close()
		}
	}()
	sr, err := b.buildStage(ctx, target)
	if err != nil {
		return nil, err
	}
	st := sr.state
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
	return &b.res, nil
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
		if strings.EqualFold(s.Name, b.opts.Target) {
			return i, nil
		}
	}
	return 0, fmt.Errorf("target stage %q could not be found", b.opts.Target)
}

// stageRef finds the earlier stage a FROM names, by name or index.
func (b *builder) stageRef(name string, before int) (int, bool) {
	for i := 0; i < before; i++ {
		if b.df.Stages[i].Name != "" && strings.EqualFold(b.df.Stages[i].Name, name) {
			return i, true
		}
	}
	if n, err := strconv.Atoi(name); err == nil && n >= 0 && n < before {
		return n, true
	}
	return 0, false
}

// buildStage builds stage i, after the stages its FROM depends on.
func (b *builder) buildStage(ctx context.Context, i int) (*stageResult, error) {
	if sr, ok := b.stages[i]; ok {
		return sr, nil
	}
	stage := b.df.Stages[i]
	file := b.opts.DockerfileName
	steps := len(stage.Steps) + 1
	stageName := stage.Name
	if stageName == "" {
		stageName = fmt.Sprintf("stage-%d", i)
	}
	base, err := parser.ExpandWord(stage.BaseName, parser.EnvList(b.meta), b.df.Escape)
	if err != nil {
		return nil, parser.Errorf(file, stage.Line, "FROM %s: %v", stage.BaseName, err)
	}
	fromText := "FROM " + base
	report := func(e Event) {
		e.Kind, e.Stage, e.Steps = KindStep, stageName, steps
		b.opts.Progress(e)
	}

	start := time.Now()
	var st *imageState
	var sc *parser.Scope
	var key digest.Digest
	fromStatus := StatusCached
	switch dep, isStage := b.stageRef(base, i); {
	case isStage:
		sr, err := b.buildStage(ctx, dep)
		if err != nil {
			return nil, err
		}
		st, sc, key = sr.state.clone(), sr.scope.Clone(), sr.key
	case base == "scratch":
		st, key = scratchState(), cache.BaseKey("scratch")
	default:
		img, h, pulled, err := b.baseImage(ctx, base)
		if err != nil {
			report(Event{Step: 1, Instruction: fromText, Status: StatusError, Reason: err.Error()})
			return nil, parser.Errorf(file, stage.Line, "FROM %s: %v", base, err)
		}
		if st, err = stateFromImage(img); err != nil {
			return nil, parser.Errorf(file, stage.Line, "FROM %s: %v", base, err)
		}
		key = cache.BaseKey(h.String())
		if pulled {
			fromStatus = StatusDone
		}
	}
	st.cmdSet = false
	if sc == nil {
		sc = parser.NewScope(b.meta, b.opts.BuildArgs, b.df.Escape)
		sc.SetBaseEnv(st.config.Config.Env)
	}
	report(Event{Step: 1, Instruction: fromText, Status: fromStatus, Key: string(key), Duration: time.Since(start)})

	for n, step := range stage.Steps {
		sx := &stepExec{b: b, stage: stageName, step: step, n: n + 2, steps: steps, state: st, args: sc, file: file}
		next, err := sx.run(ctx, key, report)
		if err != nil {
			return nil, err
		}
		key = next
	}
	sr := &stageResult{state: st, scope: sc, key: key}
	b.stages[i] = sr
	return sr, nil
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
	if b.bctx == nil {
		c, err := buildctx.Open(ctx, b.opts.ContextDir, buildctx.Options{StateDir: b.opts.StateDir})
		if err != nil {
			return nil, err
		}
		b.bctx = c
	}
	return b.bctx, nil
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
