package main

import (
	"errors"
	"fmt"
	"slices"
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
			remote := remoteNotes(st, infos)
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			header := "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE"
			if remote != nil {
				header += "\tREMOTE"
			}
			fmt.Fprintln(w, header)
			for _, in := range infos {
				tags := in.Tags
				if len(tags) == 0 {
					tags = []string{"<none>:<none>"}
				}
				for _, t := range tags {
					repo, tag := splitTag(t)
					line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s", repo, tag, shortKey(in.ID.String()), in.Created.Format(time.RFC3339), humanSize(in.Size))
					if remote != nil {
						line += "\t" + remote[in.Digest]
					}
					fmt.Fprintln(w, line)
				}
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if remote != nil {
				fmt.Fprintln(cmd.OutOrStdout(), "REMOTE: layers a cache hit left in their registry; fetched (and verified) when something reads them")
			}
			return nil
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

// remoteNotes says, per image, how many of its layers are remote ("2 of 5
// layers, in HOST/REPO"), or "-"; nil when no image has one (the table
// then has no REMOTE column).
func remoteNotes(st *store.Store, infos []store.ImageInfo) map[v1.Hash]string {
	notes := map[v1.Hash]string{}
	found := false
	for _, in := range infos {
		notes[in.Digest] = "-"
		img, err := st.Image(in.Digest.String())
		if err != nil {
			continue
		}
		rs, err := st.RemoteLayers(img)
		m, merr := img.Manifest()
		if err != nil || merr != nil || len(rs) == 0 {
			continue
		}
		found = true
		var repos []string
		for _, r := range rs {
			if !slices.Contains(repos, r.Repo) {
				repos = append(repos, r.Repo)
			}
		}
		notes[in.Digest] = fmt.Sprintf("%d of %d layers, in %s", len(rs), len(m.Layers), strings.Join(repos, ", "))
	}
	if !found {
		return nil
	}
	return notes
}
