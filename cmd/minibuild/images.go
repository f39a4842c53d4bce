package main

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/minibuild/minibuild/gc"
	"github.com/minibuild/minibuild/store"
)

func openStore(g *globalOptions) (*store.Store, error) { return store.Open(g.root) }

// openImage opens the store and finds ref in it.
func openImage(g *globalOptions, ref string) (*store.Store, v1.Image, error) {
	st, err := openStore(g)
	if err != nil {
		return nil, nil, err
	}
	img, err := st.Image(ref)
	if err != nil {
		return nil, nil, err
	}
	return st, img, nil
}

func newImagesCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "images",
		Short: "List the images in the local store",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := openStore(g)
			if err != nil {
				return err
			}
			infos, err := st.Images()
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(w, "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE")
			for _, in := range infos {
				tags := in.Tags
				if len(tags) == 0 {
					tags = []string{"<none>:<none>"}
				}
				for _, t := range tags {
					repo, tag := splitTag(t)
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", repo, tag, shortKey(in.ID.String()), in.Created.Format(time.RFC3339), humanSize(in.Size))
				}
			}
			return w.Flush()
		},
	}
}

// splitTag splits "repo:tag" at the tag's colon (not a registry port's).
func splitTag(t string) (string, string) {
	i := strings.LastIndex(t, ":")
	if i < 0 || strings.Contains(t[i:], "/") {
		return t, "<none>"
	}
	return t[:i], t[i+1:]
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2fGB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2fMB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.2fkB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

func newHistoryCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "history IMAGE",
		Short: "Show an image's history, newest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, img, err := openImage(g, args[0])
			if err != nil {
				return err
			}
			cf, err := img.ConfigFile()
			if err != nil {
				return err
			}
			m, err := img.Manifest()
			if err != nil {
				return err
			}
			// Pair history entries with layers: every non-empty entry owns
			// the next layer.
			sizes := make([]string, len(cf.History))
			li := 0
			for i, h := range cf.History {
				sizes[i] = "0B"
				if !h.EmptyLayer && li < len(m.Layers) {
					sizes[i] = humanSize(m.Layers[li].Size)
					li++
				}
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(w, "CREATED\tCREATED BY\tSIZE\tCOMMENT")
			for i := len(cf.History) - 1; i >= 0; i-- {
				h := cf.History[i]
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", h.Created.Format(time.RFC3339), oneLine(h.CreatedBy), sizes[i], h.Comment)
			}
			return w.Flush()
		},
	}
}

func newTagCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "tag SOURCE TARGET",
		Short: "Give an image another name",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, img, err := openImage(g, args[0])
			if err != nil {
				return err
			}
			dg, err := img.Digest()
			if err != nil {
				return err
			}
			return st.Tag(args[1], dg)
		},
	}
}

func newRmiCommand(g *globalOptions) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rmi [-f] IMAGE...",
		Short: "Remove images by name, id or id prefix, and free what no longer is needed",
		Long: `rmi NAME untags; the image goes when that was its last tag. rmi ID (or a
unique id prefix, or a digest) removes the image, refusing one that is still
tagged or that a child image was built on unless -f. Then blobs and extracted
layers nothing reaches are freed (cache records stay until prune).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := gc.Open(g.root)
			if err != nil {
				return err
			}
			removals, freed, err := gc.RemoveImages(s, args, force)
			out := cmd.OutOrStdout()
			var errs []error
			for _, r := range removals {
				for _, t := range r.Untagged {
					fmt.Fprintf(out, "Untagged: %s\n", t)
				}
				for _, id := range r.Deleted {
					fmt.Fprintf(out, "Deleted: %s\n", id)
				}
				if r.Err != nil {
					errs = append(errs, fmt.Errorf("rmi %s: %w", r.Ref, r.Err))
				}
			}
			if t := freed.Total(); t > 0 {
				fmt.Fprintf(out, "freed %s\n", humanSize(t))
			}
			return errors.Join(append(errs, err)...)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove an image that is still tagged or has a child image")
	return cmd
}
