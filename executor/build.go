// Package executor walks a Dockerfile's instruction chain: it derives each
// step's cache key, reuses recorded results up to the first miss, and
// executes from there on — RUN in the sandbox over a snapshot, COPY and
// ADD straight into a layer, metadata instructions into the config.
//
// A build is a graph of stages (graph.go) run concurrently (this file);
// each stage is a chain of steps (stage.go); each step is keyed, looked up
// and on a miss executed (step.go) by one small op per instruction family
// (metadata.go, workdir.go, copy.go, run.go).
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
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/minibuild/minibuild/buildctx"
	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/parser"
	"github.com/minibuild/minibuild/sandbox"
	"github.com/minibuild/minibuild/snapshot"
	"github.com/minibuild/minibuild/store"
)

// Options is everything one build needs: the services it uses, what to
// build, and how.
type Options struct {
	Services
	Input
	Policy
}

// Services are what a build reads and writes; they outlive it.
type Services struct {
	Store     *store.Store
	Snapshots *snapshot.Snapshotter
	Cache     *cache.Index
	// CacheFrom are imported caches, consulted after the local index.
	CacheFrom []CacheSource
	// StateDir is where build contexts' stat caches live.
	StateDir string
	// Progress receives the build's events (nil: none).
	Progress func(Event)
}

// Input is what to build.
type Input struct {
	ContextDir string
	Dockerfile []byte
	// DockerfileName is how errors name the Dockerfile ("Dockerfile").
	DockerfileName string
	BuildArgs      map[string]string
	Target         string
	Labels         map[string]string
	// Secrets are the values RUN --mount=type=secret reads, by id. They
	// never reach a layer, key, record or log line.
	Secrets map[string][]byte
	// Contexts are the named build contexts (--build-context NAME=VALUE):
	// a directory, read by COPY --from=NAME and RUN --mount from=NAME, or
	// "docker-image://REF", an image FROM NAME and --from=NAME use. A name
	// overrides a stage of the same name.
	Contexts map[string]string
}

// Policy is how to build.
type Policy struct {
	NoCache bool
	Pull    bool
	// Epoch is SOURCE_DATE_EPOCH: the image's creation time and the
	// latest mtime any layer entry may have.
	Epoch *time.Time
	// Insecure lists registries reached over plain http.
	Insecure []string
	// Jobs bounds how many stages build at once (default: the CPUs).
	Jobs int
	// Network is the RUN network mode when a RUN has no --network:
	// "default" (or ""), "host" or "none".
	Network string
	// ExtraHosts ("host:ip", --add-host) are added to RUN's /etc/hosts,
	// and to its key.
	ExtraHosts []string
	// AllowInsecure lets RUN --security=insecure run without the seccomp
	// filter and with every capability (buildx: --allow security.insecure);
	// without it such a RUN is an error.
	AllowInsecure bool
	// MinFreeSpace is the free space (bytes) ADD keeps under the store's
	// root when it expands a local archive (--min-free-space; layer
	// extraction keeps it through Snapshotter.SetMinFreeSpace). 0: no guard.
	MinFreeSpace int64
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
	// CacheMounts are the RUN cache mounts the build's steps name (run or
	// reused), each id once, sorted: what --cache-to cache-mounts=true
	// exports.
	CacheMounts []CacheMountUse
}

// CacheMountUse is one RUN --mount=type=cache id and the sharing= of its
// first use.
type CacheMountUse struct {
	ID      string
	Sharing string // "shared", "private" or "locked"
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

	// lease holds what the build uses (its bases, the layers of the
	// records it reuses) against a concurrent garbage collector.
	lease *store.Lease

	mu     sync.Mutex
	stages map[int]*stageResult
	res    Result
	keys   map[int][]digest.Digest // step keys by stage, for --cache-to
	mounts map[string]string       // cache mount id → sharing, for --cache-to

	imports importWrites // imported hits being written to the local index (remote.go)

	// net is the private network every default-network RUN of the
	// build joins, made at the first; closed when the build ends.
	net sandbox.SharedNetwork
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
	b, target, err := plan(opts)
	if err != nil {
		return nil, err
	}
	if b.lease, err = opts.Store.Lease(ctx); err != nil {
		return nil, err
	}
	defer b.lease.Release()
	defer b.imports.wait()
	defer b.net.Close()
	defer func() {
		if b.bctx != nil {
			b.bctx.Close()
		}
	}()
	if err := b.runStages(ctx, b.graph.needed(target)); err != nil {
		return nil, err
	}
	b.net.Shutdown() // no RUN is left: the network goes while the image is committed
	return b.finish(target)
}

// plan parses the Dockerfile and resolves its stage graph: everything
// that can be checked before a step runs.
func plan(opts Options) (*builder, int, error) {
	df, err := parser.Parse(bytes.NewReader(opts.Dockerfile), opts.DockerfileName)
	if err != nil {
		return nil, 0, err
	}
	b := &builder{opts: opts, df: df, stages: map[int]*stageResult{}, keys: map[int][]digest.Digest{}}
	for _, w := range df.Warnings {
		b.warn(w)
	}
	if unused := parser.UnusedBuildArgs(df, opts.BuildArgs); len(unused) > 0 {
		b.warn(fmt.Sprintf("one or more build args were not consumed: [%s]", strings.Join(unused, " ")))
	}
	target, err := b.targetStage()
	if err != nil {
		return nil, 0, err
	}
	if b.meta, err = parser.ResolveMetaArgsForTarget(df, opts.BuildArgs, df.Stages[target].Name); err != nil {
		return nil, 0, err
	}
	if b.graph, err = analyze(df, b.meta, opts.Contexts); err != nil {
		return nil, 0, err
	}
	return b, target, nil
}

// finish applies --label, commits the target stage's image and fills in
// the result.
func (b *builder) finish(target int) (*Result, error) {
	st := b.stages[target].state
	if len(b.opts.Labels) > 0 {
		if st.config.Config.Labels == nil {
			st.config.Config.Labels = map[string]string{}
		}
		for k, v := range b.opts.Labels {
			st.config.Config.Labels[k] = v
		}
	}
	img, h, err := commit(b.opts.Store, st, b.created(st))
	if err != nil {
		return nil, err
	}
	id, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	b.res.Image, b.res.Digest, b.res.ID = img, h, id
	b.res.StepKeys, b.res.ImageKeys = b.cacheKeys(target)
	b.res.CacheMounts = b.cacheMounts()
	return &b.res, nil
}

// runStages builds the given stages, each as soon as the stages it reads
// are done, at most opts.Jobs at a time. The first failure cancels the
// others and is the error returned (an interruption only when nothing
// else failed).
func (b *builder) runStages(ctx context.Context, stages []int) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := map[int]chan struct{}{}
	for _, i := range stages {
		done[i] = make(chan struct{})
	}
	slots := make(chan struct{}, b.opts.Jobs)
	var errs errgroup.Group
	for _, i := range stages {
		errs.Go(func() error {
			err := b.runStage(ctx, i, done, slots)
			if err != nil {
				cancel(err)
			}
			return err
		})
	}
	return firstFailure(errs.Wait(), context.Cause(ctx))
}

// runStage waits for the stages stage i reads and for a free slot, then
// builds it.
func (b *builder) runStage(ctx context.Context, i int, done map[int]chan struct{}, slots chan struct{}) error {
	for _, d := range b.graph.stages[i].deps {
		select {
		case <-done[d]:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	sr, err := b.buildStage(ctx, i)
	<-slots
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.stages[i] = sr
	b.mu.Unlock()
	close(done[i])
	return nil
}

// firstFailure prefers a real failure over the cancellation it caused.
func firstFailure(waited, cause error) error {
	if cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if waited != nil {
		return waited
	}
	return cause
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

func (b *builder) warn(line string) {
	b.opts.Progress(Event{Kind: KindWarning, Line: line})
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
func (b *builder) noteMiss(stage, why string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.res.FirstMiss != "" {
		return
	}
	if len(b.df.Stages) > 1 {
		why = stage + " " + why
	}
	b.res.FirstMiss = why
}

// noteKey remembers that stage used key, for --cache-to.
func (b *builder) noteKey(stage int, key digest.Digest) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.keys[stage] = append(b.keys[stage], key)
}

// cacheKeys returns the keys of every step of every stage that ran (for
// mode=max) and of the steps that make up the target image: the target
// stage and the stages it is built FROM (mode=min).
func (b *builder) cacheKeys(target int) (all, image []digest.Digest) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.df.Stages {
		all = append(all, b.keys[i]...)
	}
	for _, i := range b.graph.imageChain(target) {
		image = append(image, b.keys[i]...)
	}
	return all, image
}
