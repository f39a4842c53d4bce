// Package export does what surrounds a build: before it, it imports the
// --cache-from caches; after it, it embeds inline cache records, pushes
// the image, exports the cache, tags it in the store, writes the -o
// outputs, the --iidfile and the --metadata-file. It also reads a build
// context from a tar stream (ContextFromTar). It is also the commands' one way to
// registries (Registry: push, pull, login, logout) and to image tarballs
// (Save), so that cmd/minibuild only turns flags into options.
//
// The lifecycle: NewPlan checks a Request before anything is built (every
// spec parsed, every tag valid, something to push to); Build runs the
// build under the plan. Finish is the part after executor.Build, for a
// caller that runs the build itself.
package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/minibuild/minibuild/archive"
	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/cache/remote"
	"github.com/minibuild/minibuild/executor"
	"github.com/minibuild/minibuild/snapshot"
	"github.com/minibuild/minibuild/store"
)

// Request is what a build asks for around it, spelled as its flags are.
type Request struct {
	Tags      []string // -t: tagged in the store; pushed with Push or a nameless -o type=registry
	Outputs   []string // -o specs (ParseOutput)
	Push      bool     // --push: push to every tag's registry
	CacheFrom []string // --cache-from specs
	CacheTo   []string // --cache-to specs
	IIDFile   string   // --iidfile: where the image id is written
	Registry  Registry // how pushes and cache transfers reach registries
	// Annotations are --annotation values (ParseAnnotations): the manifest's.
	Annotations []string
	// MetadataFile is --metadata-file: buildx's keys and minibuild's own.
	MetadataFile string
	// Stdout receives the one output whose dest is "-" (nil: os.Stdout).
	Stdout io.Writer
	// Warn reports what does not fail the build (an ignore-error cache
	// export); nil drops it. Build reports through opts.Progress instead.
	Warn func(string)
	// Snapshots holds the cache mounts a --cache-to cache-mounts=true
	// exports, for Finish; Build uses opts.Snapshots.
	Snapshots *snapshot.Snapshotter
}

// Plan is a checked Request.
type Plan struct {
	tags        []string // -t and type=image names: tagged in the store
	outputs     []Output
	pushTo      []string
	cacheFrom   []remote.Spec
	cacheTo     []remote.Spec
	iidfile     string
	registry    Registry
	annotations map[string]string
	metadata    string
	stdout      io.Writer
	warn        func(string)
	snapshots   *snapshot.Snapshotter
	// imported are the --cache-from caches Build read: a cache mount this
	// root has no copy of is carried on from them.
	imported []executor.CacheSource
}

// NewPlan checks r: it parses the output and cache specs, validates the
// tags and makes sure a push has somewhere to go.
func NewPlan(r Request) (*Plan, error) {
	p := &Plan{iidfile: r.IIDFile, registry: r.Registry, metadata: r.MetadataFile, stdout: r.Stdout, warn: r.Warn, snapshots: r.Snapshots}
	var err error
	if p.outputs, err = ParseOutputs(r.Outputs); err != nil {
		return nil, err
	}
	if n := stdoutOutputs(p.outputs); n > 1 {
		return nil, fmt.Errorf("%d outputs write to standard output; at most one may", n)
	}
	p.tags = storeTags(r.Tags, p.outputs)
	p.pushTo = pushTargets(r.Push, r.Tags, p.outputs)
	if (r.Push || hasRegistryOutput(p.outputs)) && len(p.pushTo) == 0 {
		return nil, errors.New("nothing to push to: give a -t NAME:TAG or -o type=registry,name=REF")
	}
	for _, t := range p.tags {
		if _, err := store.NormalizeTag(t); err != nil {
			return nil, err
		}
	}
	if p.cacheFrom, err = parseCacheSpecs(r.CacheFrom, false); err != nil {
		return nil, err
	}
	if p.cacheTo, err = parseCacheSpecs(r.CacheTo, true); err != nil {
		return nil, err
	}
	if p.annotations, err = ParseAnnotations(r.Annotations); err != nil {
		return nil, err
	}
	if r.Push && len(r.Tags) == 0 {
		return nil, errors.New("--push needs at least one -t tag naming the registry")
	}
	return p, nil
}

// UsesStdout tells whether an output writes to standard output, which then
// carries nothing else.
func (p *Plan) UsesStdout() bool { return stdoutOutputs(p.outputs) > 0 }

// Build imports the plan's caches into opts.CacheFrom (one that cannot be
// read is a warning through opts.Progress), runs executor.Build and then
// Finish. opts.Store and opts.Cache are where Finish writes.
func Build(ctx context.Context, opts executor.Options, p *Plan) (*executor.Result, error) {
	warn := func(line string) {
		if opts.Progress != nil {
			opts.Progress(executor.Event{Kind: executor.KindWarning, Line: line})
		}
	}
	p.warn = warn
	if opts.Snapshots != nil {
		p.snapshots = opts.Snapshots
	}
	p.registry.FetchRemote(ctx, opts.Store)
	p.imported = importCaches(ctx, opts.Store, p.cacheFrom, Registry{Insecure: p.registry.Insecure}, warn)
	opts.CacheFrom = append(opts.CacheFrom, p.imported...)
	res, err := executor.Build(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := p.finish(ctx, opts.Store, opts.Cache, res, warn); err != nil {
		return nil, err
	}
	return res, nil
}

// Finish runs after a successful build, in this order: manifest
// annotations and inline records (which replace res.Image and res.Digest:
// they change the manifest), pushes, cache export, tags, outputs, the
// iidfile, the metadata file. The first error stops it; what was done
// stays done. A cache export with ignore-error=true that fails is a
// warning through Request.Warn.
func (p *Plan) Finish(ctx context.Context, st *store.Store, idx *cache.Index, res *executor.Result) error {
	warn := p.warn
	if warn == nil {
		warn = func(string) {}
	}
	return p.finish(ctx, st, idx, res, warn)
}

func (p *Plan) finish(ctx context.Context, st *store.Store, idx *cache.Index, res *executor.Result, warn func(string)) error {
	if err := p.annotate(st, idx, res, warn); err != nil {
		return err
	}
	for _, ref := range p.pushTo {
		if _, err := p.registry.Push(ctx, st, res.Image, ref); err != nil {
			return err
		}
	}
	if err := p.exportCaches(ctx, st, idx, res, warn); err != nil {
		return err
	}
	for _, t := range p.tags {
		if err := st.Tag(t, res.Digest); err != nil {
			return err
		}
	}
	stdout := p.stdout
	if stdout == nil {
		stdout = os.Stdout
	}
	for _, o := range p.outputs {
		if err := o.write(ctx, []archive.Named{{Image: res.Image, Tags: p.tags}}, stdout, p.warn); err != nil {
			return err
		}
	}
	if p.iidfile != "" {
		if err := os.WriteFile(p.iidfile, []byte(res.ID.String()), 0o644); err != nil {
			return err
		}
	}
	if p.metadata != "" {
		return writeMetadata(p.metadata, res, append(slices.Clone(p.tags), p.pushTo...))
	}
	return nil
}

// annotate gives the manifest the --annotation values and the inline
// cache records, in one new manifest.
func (p *Plan) annotate(st *store.Store, idx *cache.Index, res *executor.Result, warn func(string)) error {
	ann := maps.Clone(p.annotations)
	if sp, ok := inlineSpec(p.cacheTo); ok {
		rec, err := inlineRecords(st, idx, res)
		switch {
		case err != nil && sp.IgnoreError:
			warn(fmt.Sprintf("--cache-to type=inline: %v; the build goes on (ignore-error=true)", err))
		case err != nil:
			return err
		}
		if ann == nil {
			ann = map[string]string{}
		}
		maps.Copy(ann, rec)
	}
	if len(ann) == 0 {
		return nil
	}
	return annotate(st, res, ann)
}

// stdoutOutputs counts the outputs whose dest is standard output.
func stdoutOutputs(outs []Output) int {
	n := 0
	for _, o := range outs {
		if o.Dest == Stdout {
			n++
		}
	}
	return n
}

// storeTags are the -t tags and the names of each -o type=image (without
// push=true), each once: what the store tags the image as.
func storeTags(tags []string, outs []Output) []string {
	out := slices.Clone(tags)
	for _, o := range outs {
		if o.Type != "image" || o.Name == "" {
			continue
		}
		for _, n := range strings.Split(o.Name, ",") {
			if n != "" && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}

// hasRegistryOutput tells whether an -o asks for a push.
func hasRegistryOutput(outs []Output) bool {
	for _, o := range outs {
		if o.Type == "registry" {
			return true
		}
	}
	return false
}

// pushTargets are where the image goes, each once, in order: every tag
// with --push, and each -o type=registry name (or, without a name, every
// tag).
func pushTargets(push bool, tags []string, outs []Output) []string {
	var refs []string
	add := func(rs ...string) {
		for _, r := range rs {
			if r != "" && !slices.Contains(refs, r) {
				refs = append(refs, r)
			}
		}
	}
	if push {
		add(tags...)
	}
	for _, o := range outs {
		if o.Type != "registry" {
			continue
		}
		if o.Name == "" {
			add(tags...)
		}
		add(strings.Split(o.Name, ",")...)
	}
	return refs
}
