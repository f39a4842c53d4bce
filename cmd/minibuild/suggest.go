package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// suggestionDistance is how far (in edits) a mistyped name may be from a
// real one to be suggested: cobra's SuggestionsMinimumDistance.
const suggestionDistance = 2

// flagError adds "did you mean" to pflag's unknown-flag errors, which
// cobra leaves without suggestions.
func flagError(cmd *cobra.Command, err error) error {
	msg := err.Error()
	typed, ok := strings.CutPrefix(msg, "unknown flag: --")
	if !ok {
		return err
	}
	var names []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	if s := closest(typed, names); len(s) > 0 {
		return fmt.Errorf("%s\n\nDid you mean this?\n\t--%s", msg, strings.Join(s, "\n\t--"))
	}
	return err
}

// closest are the names within suggestionDistance of typed (or that it
// is a prefix of), nearest first.
func closest(typed string, names []string) []string {
	type cand struct {
		name string
		d    int
	}
	var cs []cand
	for _, n := range names {
		d := levenshtein(strings.ToLower(typed), strings.ToLower(n))
		if d <= suggestionDistance || (len(typed) > 2 && strings.HasPrefix(n, typed)) {
			cs = append(cs, cand{n, d})
		}
	}
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].d < cs[j].d })
	var out []string
	for _, c := range cs {
		out = append(out, c.name)
	}
	return out
}

// levenshtein is the edit distance between a and b.
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// unknownCommand is the error for `minibuild WORD` when WORD is neither a
// command nor a directory, with cobra's suggestions of commands.
func unknownCommand(root *cobra.Command, word string) error {
	if word == "-" {
		return nil
	}
	if _, err := os.Stat(word); err == nil {
		return nil
	}
	s := root.SuggestionsFor(word)
	if len(s) == 0 {
		return nil
	}
	return fmt.Errorf("unknown command %q (and no directory of that name to build)\n\nDid you mean this?\n\t%s", word, strings.Join(s, "\n\t"))
}
