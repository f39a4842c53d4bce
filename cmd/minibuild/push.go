package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/spf13/cobra"

	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/cache/remote"
	"github.com/minibuild/minibuild/executor"
	"github.com/minibuild/minibuild/output"
	"github.com/minibuild/minibuild/registry"
	"github.com/minibuild/minibuild/store"
)

func newPushCommand(g *globalOptions) *cobra.Command {
	var insecure []string
	var progress string
	cmd := &cobra.Command{
		Use:   "push [flags] IMAGE [DESTINATION]",
		Short: "Push an image from the store to a registry",
		Long: `Push uploads IMAGE to its registry, or to DESTINATION. A layer the registry
already has is skipped (exists), one that another repository of the same
registry holds is cross-repo mounted (mounted), the rest are uploaded (pushed).`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := store.Open(g.root)
			if err != nil {
				return err
			}
			img, err := st.Image(args[0])
			if err != nil {
				return fmt.Errorf("push %s: %w", args[0], err)
			}
			dest := args[0]
			if len(args) == 2 {
				dest = args[1]
			}
			bp, err := newBlobProgress(progress, os.Stderr)
			if err != nil {
				return err
			}
			md, err := registry.Push(cmd.Context(), st, img, dest, registry.Options{Insecure: insecure, Progress: bp.event})
			if err != nil {
				return err
			}
			fmt.Printf("%s: digest: %s\n", dest, md)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&insecure, "insecure-registry", nil, "registry host reached over plain http")
	cmd.Flags().StringVar(&progress, "progress", "plain", "progress output: plain, json or quiet")
	return cmd
}

// blobProgress prints registry blob events: "a1b2c3d4e5f6: pushed", or one
// {"event":"blob",…} object per line.
type blobProgress struct {
	mu   sync.Mutex
	w    io.Writer
	json bool
}

func newBlobProgress(mode string, w io.Writer) (*blobProgress, error) {
	switch mode {
	case "", "auto", "plain", "tty":
		return &blobProgress{w: w}, nil
	case "json", "rawjson":
		return &blobProgress{w: w, json: true}, nil
	case "quiet":
		return &blobProgress{w: io.Discard}, nil
	}
	return nil, fmt.Errorf("--progress=%s: want plain, json or quiet", mode)
}

// blobWords are docker's words for the registry statuses.
var blobWords = map[string]string{
	registry.StatusExists:      "already exists",
	registry.StatusDownloading: "pulling",
	registry.StatusDone:        "pull complete",
	registry.StatusPushing:     "pushing",
	registry.StatusPushed:      "pushed",
	registry.StatusMounted:     "mounted",
}

func (p *blobProgress) event(e registry.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.json {
		json.NewEncoder(p.w).Encode(map[string]any{"event": "blob", "ref": e.Ref, "digest": e.Digest, "status": e.Status, "size": e.Size})
		return
	}
	fmt.Fprintf(p.w, "%s: %s\n", shortKey(e.Digest), blobWords[e.Status])
}

// remoteOptions are the build's registry flags.
type remoteOptions struct {
	push      bool
	cacheFrom []string
	cacheTo   []string
}

func addRemoteFlags(cmd *cobra.Command, r *remoteOptions) {
	f := cmd.Flags()
	f.BoolVar(&r.push, "push", false, "push the image to the registry of each -t tag")
	f.StringArrayVar(&r.cacheFrom, "cache-from", nil, "import cache: type=registry,ref=REF | type=local,src=DIR | REF (an image with inline records); repeatable")
	f.StringArrayVar(&r.cacheTo, "cache-to", nil, "export cache: type=registry,ref=REF[,mode=min|max] | type=local,dest=DIR[,mode=…] | type=inline")
}

// parsed checks the remote flags before anything is built.
func (r *remoteOptions) parsed(tags []string, outs []output.Output) (from, to []remote.Spec, err error) {
	for _, s := range r.cacheFrom {
		sp, err := remote.ParseSpec(s, false)
		if err != nil {
			return nil, nil, err
		}
		from = append(from, sp)
	}
	for _, s := range r.cacheTo {
		sp, err := remote.ParseSpec(s, true)
		if err != nil {
			return nil, nil, err
		}
		to = append(to, sp)
	}
	if r.push && len(tags) == 0 {
		return nil, nil, fmt.Errorf("--push needs at least one -t tag naming the registry")
	}
	return from, to, nil
}

// importCaches reads every --cache-from; one that cannot be read is a
// warning, and the build goes on without it.
func importCaches(ctx context.Context, st *store.Store, specs []remote.Spec, opts registry.Options, warn func(string)) []executor.CacheSource {
	var out []executor.CacheSource
	for _, sp := range specs {
		var src *remote.Source
		var err error
		if sp.Type == "local" {
			src, err = remote.ImportLocal(st, sp.Dir)
		} else {
			src, err = remote.ImportRegistry(ctx, st, sp.Ref, opts)
		}
		if err != nil {
			warn(fmt.Sprintf("--cache-from: %v; building without it", err))
			continue
		}
		out = append(out, src)
	}
	return out
}

// hasRegistryOutput tells whether an -o asks for a push.
func hasRegistryOutput(outs []output.Output) bool {
	for _, o := range outs {
		if o.Type == "registry" {
			return true
		}
	}
	return false
}

// pushTargets are where the image goes: every tag with --push, and each
// -o type=registry name (or, without a name, every tag).
func pushTargets(push bool, tags []string, outs []output.Output) []string {
	var refs []string
	add := func(r string) {
		for _, x := range refs {
			if x == r {
				return
			}
		}
		refs = append(refs, r)
	}
	if push {
		for _, t := range tags {
			add(t)
		}
	}
	for _, o := range outs {
		if o.Type != "registry" {
			continue
		}
		if o.Name == "" {
			for _, t := range tags {
				add(t)
			}
		}
		for _, n := range strings.Split(o.Name, ",") {
			if n != "" {
				add(n)
			}
		}
	}
	return refs
}

// finishRemote runs after a successful build: it embeds inline records,
// pushes the image and exports the cache. It may replace res.Image and
// res.Digest (inline records change the manifest).
func finishRemote(ctx context.Context, st *store.Store, idx *cache.Index, res *executor.Result, refs []string, to []remote.Spec, opts registry.Options) error {
	for _, sp := range to {
		if sp.Type != "inline" {
			continue
		}
		val, err := remote.Collect(st, idx, res.ImageKeys).Only(layerDigests(res.Image)).Encode()
		if err != nil {
			return err
		}
		img := mutate.Annotations(res.Image, map[string]string{remote.InlineAnnotation: val}).(v1.Image)
		md, err := st.WriteImage(img)
		if err != nil {
			return fmt.Errorf("inline cache: %w", err)
		}
		if res.Image, err = st.Image(md.String()); err != nil {
			return fmt.Errorf("inline cache: %w", err)
		}
		res.Digest = md
	}
	for _, ref := range refs {
		if _, err := registry.Push(ctx, st, res.Image, ref, opts); err != nil {
			return err
		}
	}
	for _, sp := range to {
		keys := res.ImageKeys
		if sp.Mode == "max" {
			keys = res.StepKeys
		}
		c := remote.Collect(st, idx, keys)
		switch sp.Type {
		case "registry":
			if _, err := remote.ExportRegistry(ctx, st, c, sp.Ref, opts); err != nil {
				return err
			}
		case "local":
			if err := remote.ExportLocal(st, c, sp.Dir); err != nil {
				return err
			}
		}
	}
	return nil
}

func layerDigests(img v1.Image) []v1.Hash {
	m, err := img.Manifest()
	if err != nil {
		return nil
	}
	var out []v1.Hash
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out
}
