package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/minibuild/minibuild/export"
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
			md, err := export.Registry{Insecure: insecure, Progress: bp.event}.Push(cmd.Context(), st, img, dest)
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
