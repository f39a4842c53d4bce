package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/minibuild/minibuild/snapshot"
	"github.com/minibuild/minibuild/store"
)

// pruneOptions are the flags of `minibuild prune`.
type pruneOptions struct {
	ids  []string
	list bool
}

func newPruneCommand(g *globalOptions) *cobra.Command {
	o := &pruneOptions{}
	cmd := &cobra.Command{
		Use:   "prune [flags]",
		Short: "Remove RUN cache mounts and what killed builds left behind",
		Long: `prune removes the RUN --mount=type=cache directories that no running build
holds (all of them, or those named with --id), and the temporary snapshot
dirs of builds that were killed, and the read-only views COPY --from made
more than an hour ago. Images, layers and the build cache stay.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := store.Open(g.root)
			if err != nil {
				return err
			}
			sn, err := snapshot.New(g.root, st)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
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
			if err := sn.Cleanup(); err != nil {
				return err
			}
			if len(o.ids) == 0 {
				views, err := sn.PruneViews(time.Hour)
				if err != nil {
					return err
				}
				if views > 0 {
					fmt.Fprintf(out, "removed %d COPY --from views (rebuilt when needed)\n", views)
				}
			}
			removed, err := sn.PruneCacheMounts(o.ids)
			var freed int64
			for _, m := range removed {
				fmt.Fprintf(out, "removed cache mount %s (%s)\n", m.ID, humanSize(m.Size))
				freed += m.Size
			}
			fmt.Fprintf(out, "%d cache mounts removed, %s freed\n", len(removed), humanSize(freed))
			return err
		},
	}
	cmd.Flags().StringArrayVar(&o.ids, "id", nil, "remove only the cache mount with this id; repeatable")
	cmd.Flags().BoolVar(&o.list, "list", false, "list the cache mounts instead of removing them")
	return cmd
}
