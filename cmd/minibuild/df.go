package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/minibuild/minibuild/gc"
)

func newDfCommand(g *globalOptions) *cobra.Command {
	var verbose bool
	var format string
	cmd := &cobra.Command{
		Use:   "df [-v] [--format json]",
		Short: "Show the space the store uses, by kind, and what prune would free",
		Long: `df shows what --root holds by kind: image manifests and configs, layer blobs,
extracted layers, cache records, RUN cache mounts, context stat caches and temp,
each with its size and what a plain prune would reclaim. A layer shared by
several images is counted once in every total. With -v, per image its size,
the bytes it shares with other images and the bytes unique to it (what
removing it alone would free), and per layer the images that use it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "" && format != "json" && format != "table" {
				return fmt.Errorf("df: unknown --format %q (want json or table)", format)
			}
			s, err := gc.Open(g.root)
			if err != nil {
				return err
			}
			u, err := gc.DiskUsage(s, verbose)
			if err != nil {
				return err
			}
			if format == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(u)
			}
			return printUsage(cmd.OutOrStdout(), u, verbose)
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "per image: size, shared and unique bytes; per layer: the images using it")
	cmd.Flags().StringVar(&format, "format", "", `"json" for machine-readable output`)
	return cmd
}

func printUsage(out io.Writer, u *gc.Usage, verbose bool) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "KIND\tCOUNT\tSIZE\tRECLAIMABLE")
	for _, k := range append(u.Kinds, u.Total) {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", k.Kind, k.Count, humanSize(k.Size), humanSize(k.Reclaimable))
	}
	if !verbose {
		return w.Flush()
	}
	names := map[string]string{}
	fmt.Fprintln(w, "\nIMAGE ID\tTAGS\tSIZE\tSHARED\tUNIQUE")
	for _, im := range u.Images {
		id := im.ID.Encoded()[:12]
		tags := "<none>"
		if len(im.Tags) > 0 {
			tags = strings.Join(im.Tags, ",")
			names[im.ID.String()] = im.Tags[0]
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", id, tags, humanSize(im.Size), humanSize(im.Shared), humanSize(im.Unique))
	}
	fmt.Fprintln(w, "\nLAYER\tSIZE\tUSED BY")
	for _, l := range u.Layers {
		var by []string
		for _, id := range l.Images {
			if n, ok := names[id.String()]; ok {
				by = append(by, n)
			} else {
				by = append(by, id.Encoded()[:12])
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", l.Digest.Encoded()[:12], humanSize(l.Size), strings.Join(by, ", "))
	}
	return w.Flush()
}
