package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/minibuild/minibuild/export"
	"github.com/minibuild/minibuild/store"
)

func newPullCommand(g *globalOptions) *cobra.Command {
	var insecure []string
	var progress string
	cmd := &cobra.Command{
		Use:   "pull [flags] IMAGE",
		Short: "Pull an image from a registry into the store",
		Long: `Pull fetches IMAGE (linux/amd64 from a multi-platform index). Layers the
store already has are not downloaded ("already exists"); each downloaded layer
is verified and kept on its own, so pulling again after an interruption
fetches only what is still missing.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := store.Open(g.root)
			if err != nil {
				return err
			}
			bp, err := newBlobProgress(progress, os.Stderr)
			if err != nil {
				return err
			}
			img, md, err := export.Registry{Insecure: insecure, Progress: bp.event}.Pull(cmd.Context(), st, args[0])
			if err != nil {
				return err
			}
			id, err := img.ConfigName()
			if err != nil {
				return err
			}
			fmt.Printf("Digest: %s\nImage ID: %s\n", md, id)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&insecure, "insecure-registry", nil, "registry host reached over plain http")
	cmd.Flags().StringVar(&progress, "progress", "plain", "progress output: plain, json or quiet")
	return cmd
}
