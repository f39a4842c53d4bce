package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/minibuild/minibuild/gc"
)

// pruneOptions are the flags of `minibuild prune`.
type pruneOptions struct {
	all         bool
	filters     []string
	keepStorage string
	dryRun      bool
	cacheMounts bool
	ids         []string
	list        bool
}

func newPruneCommand(g *globalOptions) *cobra.Command {
	o := &pruneOptions{}
	cmd := &cobra.Command{
		Use:   "prune [flags]",
		Short: "Remove dangling images, unreachable blobs and layers, and cache records by policy",
		Long: `prune removes untagged images, the cache records no tagged image uses, and
then every blob and extracted layer nothing reaches any more. Tagged images and
whatever a running build holds always stay.

  --all                 every cache record and untagged image, the context stat caches
  --filter until=24h    only what was not used within that time
  --keep-storage 5GB    least recently used first, only until the store fits
  --dry-run             list what would go and how much it frees
  --cache-mounts        remove RUN --mount=type=cache dirs instead (--id, --list)

Temporary dirs of killed builds and COPY --from views older than an hour go
too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := gc.Open(g.root)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.cacheMounts || o.list || len(o.ids) > 0 {
				return pruneCacheMounts(out, s, o)
			}
			p, err := o.policy()
			if err != nil {
				return err
			}
			if !o.dryRun {
				if err := cleanupTemp(out, s); err != nil {
					return err
				}
			}
			f, err := gc.Collect(s, p, o.dryRun)
			if err != nil {
				return err
			}
			if o.all && !o.dryRun {
				os.RemoveAll(filepath.Join(g.root, "buildctx"))
			}
			printFreed(out, f, o.dryRun)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.all, "all", "a", false, "remove every cache record and untagged image, not just unused ones")
	f.StringArrayVar(&o.filters, "filter", nil, "until=DURATION: only what was not used within DURATION (e.g. 24h)")
	f.StringVar(&o.keepStorage, "keep-storage", "", "remove least recently used first, only until the store fits in this size (e.g. 5GB)")
	f.BoolVar(&o.dryRun, "dry-run", false, "show what would be removed and freed, remove nothing")
	f.BoolVar(&o.cacheMounts, "cache-mounts", false, "remove the RUN cache mounts no build holds (all, or those named with --id)")
	f.StringArrayVar(&o.ids, "id", nil, "with --cache-mounts: only the cache mount with this id; repeatable")
	f.BoolVar(&o.list, "list", false, "list the cache mounts instead of removing them")
	return cmd
}

func (o *pruneOptions) policy() (gc.Policy, error) {
	p := gc.Policy{All: o.all}
	for _, f := range o.filters {
		k, v, _ := strings.Cut(f, "=")
		if k != "until" {
			return p, fmt.Errorf("prune: unknown filter %q (want until=DURATION)", f)
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return p, fmt.Errorf("prune: filter %q: want a duration such as 24h", f)
		}
		p.Until = d
	}
	if o.keepStorage != "" {
		n, err := gc.ParseSize(o.keepStorage)
		if err != nil {
			return p, fmt.Errorf("prune: --keep-storage: %w", err)
		}
		p.KeepStorage = max(n, 1)
	}
	return p, nil
}

// cleanupTemp removes what killed builds left and stale COPY --from views.
func cleanupTemp(out io.Writer, s *gc.Stores) error {
	if err := s.Snapshots.Cleanup(); err != nil {
		return err
	}
	views, err := s.Snapshots.PruneViews(time.Hour)
	if err != nil {
		return err
	}
	if views > 0 {
		fmt.Fprintf(out, "removed %d COPY --from views (rebuilt when needed)\n", views)
	}
	return nil
}

func printFreed(out io.Writer, f gc.Freed, dry bool) {
	verb, would := "deleted", ""
	if dry {
		verb, would = "would delete", "would be "
	}
	for _, md := range f.Images {
		fmt.Fprintf(out, "%s image %s\n", verb, md)
	}
	fmt.Fprintf(out, "%d images, %d cache records, %d hints, %d blobs, %d extracted layers %sremoved\n",
		len(f.Images), f.Records, f.Hints, f.Blobs, f.Layers, would)
	fmt.Fprintf(out, "Total: %s %sfreed (blobs %s, extracted layers %s, cache %s); store %s → %s\n",
		humanSize(f.Total()), would, humanSize(f.ImageBytes+f.BlobBytes), humanSize(f.LayerBytes),
		humanSize(f.CacheBytes), humanSize(f.Before), humanSize(f.After))
}

// pruneCacheMounts is the RUN cache mount side of prune (its behaviour
// before the collector existed).
func pruneCacheMounts(out io.Writer, s *gc.Stores, o *pruneOptions) error {
	sn := s.Snapshots
	if o.list {
		mounts, err := sn.CacheMounts()
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%-40s %10s %s\n", "CACHE MOUNT ID", "SIZE", "IN USE")
		for _, m := range mounts {
			fmt.Fprintf(out, "%-40s %10s %v\n", m.ID, humanSize(m.Size), m.InUse)
		}
		return nil
	}
	if o.dryRun {
		return fmt.Errorf("prune: --dry-run with --cache-mounts: use --list")
	}
	if len(o.ids) == 0 {
		if err := cleanupTemp(out, s); err != nil {
			return err
		}
	} else if err := sn.Cleanup(); err != nil {
		return err
	}
	removed, err := sn.PruneCacheMounts(o.ids)
	var freed int64
	for _, m := range removed {
		fmt.Fprintf(out, "removed cache mount %s (%s)\n", m.ID, humanSize(m.Size))
		freed += m.Size
	}
	fmt.Fprintf(out, "%d cache mounts removed, %s freed\n", len(removed), humanSize(freed))
	return err
}
