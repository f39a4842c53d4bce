// Package export does what surrounds a build: before it, it imports the
// --cache-from caches; after it, it embeds inline cache records, pushes
// the image, tags it in the store, writes the -o outputs and the
// --iidfile, and exports the cache. It is also the commands' one way to
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
	"os"
	"slices"
	"strings"

	"github.com/minibuild/minibuild/archive"
	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/cache/remote"
	"github.com/minibuild/minibuild/executor"
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
}

// Plan is a checked Request.
type Plan struct {
	tags      []string
	outputs   []Output
	pushTo    []string
	cacheFrom []remote.Spec
	cacheTo   []remote.Spec
	iidfile   string
	registry  Registry
	// warn receives what an output left out (set by Build; may be nil).
	warn func(string)
}

// NewPlan checks r: it parses the output and cache specs, validates the
// tags and makes sure a push has somewhere to go.
func NewPlan(r Request) (*Plan, error) {
	p := &Plan{tags: r.Tags, iidfile: r.IIDFile, registry: r.Registry}
	var err error
	if p.outputs, err = ParseOutputs(r.Outputs); err != nil {
		return nil, err
	}
	p.pushTo = pushTargets(r.Push, r.Tags, p.outputs)
	if (r.Push || hasRegistryOutput(p.outputs)) && len(p.pushTo) == 0 {
		return nil, errors.New("nothing to push to: give a -t NAME:TAG or -o type=registry,name=REF")
	}
	for _, t := range r.Tags {
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
	if r.Push && len(r.Tags) == 0 {
		return nil, errors.New("--push needs at least one -t tag naming the registry")
	}
	return p, nil
}

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
	opts.CacheFrom = append(opts.CacheFrom, importCaches(ctx, opts.Store, p.cacheFrom, Registry{Insecure: p.registry.Insecure}, warn)...)
	res, err := executor.Build(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := p.Finish(ctx, opts.Store, opts.Cache, res); err != nil {
		return nil, err
	}
	return res, nil
}

// Finish runs after a successful build, in this order: inline records
// (which replace res.Image and res.Digest: they change the manifest),
// pushes, cache export, tags, outputs, the iidfile. The first error stops
// it; what was done stays done.
func (p *Plan) Finish(ctx context.Context, st *store.Store, idx *cache.Index, res *executor.Result) error {
	if hasInline(p.cacheTo) {
		if err := embedInline(st, idx, res); err != nil {
			return err
		}
	}
	for _, ref := range p.pushTo {
		if _, err := p.registry.Push(ctx, st, res.Image, ref); err != nil {
			return err
		}
	}
	if err := exportCaches(ctx, st, idx, res, p.cacheTo, p.registry); err != nil {
		return err
	}
	for _, t := range p.tags {
		if err := st.Tag(t, res.Digest); err != nil {
			return err
		}
	}
	for _, o := range p.outputs {
		if err := o.write(ctx, []archive.Named{{Image: res.Image, Tags: p.tags}}, p.warn); err != nil {
			return err
		}
	}
	if p.iidfile != "" {
		return os.WriteFile(p.iidfile, []byte(res.ID.String()), 0o644)
	}
	return nil
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
