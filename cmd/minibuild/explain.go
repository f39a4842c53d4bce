package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/minibuild/minibuild/store"
)

// explainJSON is what explain --format json prints: the two images and
// store.Comparison's fields.
type explainJSON struct {
	A string `json:"a"` // image ids
	B string `json:"b"`
	store.Comparison
}

func newExplainCommand(g *globalOptions) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "explain [--format json] IMAGE_A IMAGE_B",
		Short: "Say step by step where two images' chains diverge and why",
		Long: `explain compares two images' history entries (the base's included) and the
layers they made: the steps both share (same instruction, same layer), the
first step that differs and how (the instruction, or the same instruction
that read different content, or one image having more steps), then the rest
briefly. Images are named by tag, id or id prefix.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "" && format != "json" && format != "text" {
				return fmt.Errorf("explain: unknown --format %q (want json or text)", format)
			}
			st, err := openStore(g)
			if err != nil {
				return err
			}
			a, err := st.Image(args[0])
			if err != nil {
				return err
			}
			b, err := st.Image(args[1])
			if err != nil {
				return err
			}
			c, err := store.CompareHistory(a, b)
			if err != nil {
				return err
			}
			ida, err := a.ConfigName()
			if err != nil {
				return err
			}
			idb, err := b.ConfigName()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if format == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(explainJSON{A: ida.String(), B: idb.String(), Comparison: c})
			}
			fmt.Fprintf(out, "A: %s (%.12s)\nB: %s (%.12s)\n", args[0], ida.Hex, args[1], idb.Hex)
			for _, l := range c.Lines() {
				fmt.Fprintln(out, l)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "", `"json" for machine-readable output`)
	return cmd
}
