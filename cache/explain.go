package cache

import (
	"fmt"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
)

// hint is what the last step recorded at a place had: its instruction,
// inputs and circumstances, kept beside the records (never in one) to say
// in words why a later key missed.
type hint struct {
	Instruction string            `json:"instruction"`
	Display     string            `json:"display,omitempty"` // as the user wrote it
	Inputs      map[string]string `json:"inputs,omitempty"`
	Vars        map[string]string `json:"vars,omitempty"`
	Parent      digest.Digest     `json:"parent,omitempty"`
	Base        string            `json:"base,omitempty"`
}

// Explain says in one line why the step with inputs in missed at place
// where (its Dockerfile, stage and step), comparing with the last step
// recorded there — never with another project's step that happened to
// share a parent:
//
//   - the same instruction on the same parent: which inputs changed, were
//     added or removed ("app.py changed", "build arg V changed: 1 → 2");
//   - another instruction on the same parent: the variable whose value
//     changed it ("build arg VERSION changed: 1.0 → 1.1"), else the text
//     it had;
//   - another parent at the stage's first miss: the base that changed;
//   - nothing there before: "not built before".
func (x *Index) Explain(where string, in *Inputs) string {
	return oneLine(x.explain(where, in))
}

func (x *Index) explain(where string, in *Inputs) string {
	var prev hint
	if readJSON(x.hintPath(hintKey(in.Parent, where, in.Instruction)), &prev) == nil {
		if d := diffInputs(prev.Inputs, in.Names()); d != "" {
			return d
		}
		return "record missing from the cache"
	}
	if readJSON(x.hintPath(hintKey(in.Parent, where)), &prev) == nil {
		if d := diffVars(prev.Vars, in.Why.Vars); d != "" && prev.Display == in.Why.Display {
			return d
		}
		was := prev.Display
		if was == "" {
			was = prev.Instruction
		}
		return "instruction changed (was: " + was + ")"
	}
	if readJSON(x.hintPath(hintKey("", where)), &prev) == nil && prev.Parent != in.Parent {
		switch {
		case prev.Base != "" && in.Why.Base != "" && prev.Base != in.Why.Base:
			return "base changed: " + prev.Base + " → " + in.Why.Base
		case strings.HasPrefix(in.Why.Base, "stage "):
			return "its base, " + in.Why.Base + ", changed"
		}
		return "an earlier step changed"
	}
	return "not built before"
}

// diffInputs names the inputs that changed, were added or removed: values
// a person can read (build args, the network) as old → new, content by
// name alone.
func diffInputs(old, cur map[string]string) string {
	var changed, added, removed []string
	for k, v := range cur {
		switch ov, ok := old[k]; {
		case !ok:
			added = append(added, k)
		case ov != v && readable(k):
			changed = append(changed, k+" changed: "+ov+" → "+v)
		case ov != v:
			changed = append(changed, k)
		}
	}
	for k := range old {
		if _, ok := cur[k]; !ok {
			removed = append(removed, k)
		}
	}
	var parts []string
	for _, g := range []struct {
		names []string
		verb  string
	}{{changed, "changed"}, {added, "added"}, {removed, "removed"}} {
		if len(g.names) == 0 {
			continue
		}
		sort.Strings(g.names)
		list := g.names
		more := ""
		if len(list) > 3 {
			more = fmt.Sprintf(" and %d more", len(list)-3)
			list = list[:3]
		}
		text := strings.Join(list, ", ") + more + " " + g.verb
		if g.verb == "changed" && strings.Contains(list[0], " → ") {
			text = strings.Join(list, ", ") + more // "build arg V changed: 1 → 2" says it already
		}
		parts = append(parts, text)
	}
	return strings.Join(parts, "; ")
}

// readable tells the inputs whose values mean something to a person.
func readable(name string) bool {
	return strings.HasPrefix(name, "build arg ") || name == "network"
}

// diffVars says which variable the instruction's text refers to changed.
func diffVars(old, cur map[string]string) string {
	var out []string
	for k, v := range cur {
		if ov, ok := old[k]; !ok {
			out = append(out, k+" set: "+v)
		} else if ov != v {
			out = append(out, k+" changed: "+ov+" → "+v)
		}
	}
	for k := range old {
		if _, ok := cur[k]; !ok {
			out = append(out, k+" unset")
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// oneLine keeps a reason on one line: a heredoc's text has newlines.
func oneLine(s string) string {
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}
