package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/minibuild/minibuild/archive"
	"github.com/minibuild/minibuild/export"
)

func newSaveCommand(g *globalOptions) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "save [-o FILE.tar] IMAGE...",
		Short: "Write images as a docker-archive tar (readable by docker load); to standard output without -o",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			toStdout := out == "" || out == export.Stdout
			if toStdout && isTerminal(os.Stdout) {
				return errors.New("save: refusing to write a tar to the terminal: redirect standard output or give -o FILE")
			}
			st, err := openStore(g)
			if err != nil {
				return err
			}
			var named []archive.Named
			for _, ref := range args {
				img, err := st.Image(ref)
				if err != nil {
					return err
				}
				n := archive.Named{Image: img}
				if !looksLikeID(ref) {
					n.Tags = []string{ref}
				}
				named = append(named, n)
			}
			// Remote layers (lazy cache hits) are fetched as they are written.
			export.Registry{}.FetchRemote(cmd.Context(), st)
			if toStdout {
				err = export.SaveTo(cmd.OutOrStdout(), named)
			} else {
				err = export.Save(out, named)
			}
			if err != nil {
				return fmt.Errorf("save: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write (default: standard output)")
	return cmd
}

// looksLikeID tells an image id or digest from a name.
func looksLikeID(ref string) bool {
	if strings.HasPrefix(ref, "sha256:") {
		return true
	}
	if len(ref) < 4 {
		return false
	}
	for _, c := range ref {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

func newLoadCommand(g *globalOptions) *cobra.Command {
	var in string
	cmd := &cobra.Command{
		Use:   "load [-i FILE|DIR|-]",
		Short: "Load images from a docker-archive or an OCI layout (tar or directory); from standard input without -i",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (in == "" || in == export.Stdout) && isTerminal(os.Stdin) {
				return errors.New("load: standard input is a terminal: pipe an archive in or give -i FILE")
			}
			st, err := openStore(g)
			if err != nil {
				return err
			}
			loaded, err := export.Load(st, in, cmd.InOrStdin())
			for _, l := range loaded {
				for _, t := range l.Tags {
					fmt.Fprintf(cmd.OutOrStdout(), "Loaded image: %s\n", t)
				}
				if len(l.Tags) == 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "Loaded image ID: %s\n", l.ID)
				}
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&in, "input", "i", "", "archive file or OCI layout directory (default: standard input)")
	return cmd
}
