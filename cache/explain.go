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
	Layer       digest.Digest     `json:"layer,omitempty"` // the diffID of the layer it made
}

// Miss is why a step missed the cache, as data and (String) in one line.
type Miss struct {
	// Kind is one of: not-built, inputs (Changes say which), vars
	// (Changes: a variable's value changed the text), instruction (Was is
	// the text before), base (Changes: the base), parent (an earlier step
	// changed), record-missing, no-cache.
	Kind    string   `json:"kind"`
	Changes []Change `json:"changes,omitempty"`
	Was     string   `json:"was,omitempty"`
}

// Change is one input that differs from the last build at the place.
type Change struct {
	Input string `json:"input"` // "app.py", "build arg VERSION", "ENV APP", "network", "base"
	How   string `json:"how"`   // changed, added, removed
	Old   string `json:"old,omitempty"`
	New   string `json:"new,omitempty"`
}

// Explain says why the step with inputs in missed at place where (its
// Dockerfile, stage and step), comparing with the last step recorded
// there — never with another project's step that happened to share a
// parent:
//
//   - the same instruction on the same parent: which inputs changed, were
//     added or removed ("app.py changed", "build arg V changed: 1 → 2");
//   - another instruction on the same parent: the variable whose value
//     changed it ("build arg VERSION changed: 1.0 → 1.1"), else the text
//     it had;
//   - another parent at the stage's first miss: the base that changed;
//   - nothing there before: "not built before".
func (x *Index) Explain(where string, in *Inputs) Miss {
	var prev hint
	if readJSON(x.hintPath(hintKey(in.Parent, where, in.Instruction)), &prev) == nil {
		if c := diffInputs(prev.Inputs, in.Names()); len(c) > 0 {
			return Miss{Kind: "inputs", Changes: c}
		}
		return Miss{Kind: "record-missing"}
	}
	if readJSON(x.hintPath(hintKey(in.Parent, where)), &prev) == nil {
		if c := diffVars(prev.Vars, in.Why.Vars); len(c) > 0 && prev.Display == in.Why.Display {
			return Miss{Kind: "vars", Changes: c}
		}
		was := prev.Display
		if was == "" {
			was = prev.Instruction
		}
		return Miss{Kind: "instruction", Was: was}
	}
	if readJSON(x.hintPath(hintKey("", where)), &prev) == nil && prev.Parent != in.Parent {
		if prev.Base != "" && in.Why.Base != "" && prev.Base != in.Why.Base {
			return Miss{Kind: "base", Changes: []Change{{Input: "base", How: "changed", Old: prev.Base, New: in.Why.Base}}}
		}
		return Miss{Kind: "parent", Was: in.Why.Base}
	}
	return Miss{Kind: "not-built"}
}

// String is the miss in one line, as the summary and progress say it.
func (m Miss) String() string {
	switch m.Kind {
	case "inputs", "vars":
		return oneLine(describe(m.Changes))
	case "instruction":
		return oneLine("instruction changed (was: " + m.Was + ")")
	case "base":
		c := m.Changes[0]
		return oneLine("base changed: " + c.Old + " → " + c.New)
	case "parent":
		if strings.HasPrefix(m.Was, "stage ") {
			return "its base, " + m.Was + ", changed"
		}
		return "an earlier step changed"
	case "record-missing":
		return "record missing from the cache"
	case "no-cache":
		return "--no-cache"
	}
	return "not built before"
}

// diffInputs lists the inputs that changed, were added or removed; values
// a person can read (build args, the network) keep old and new, content
// only its name.
func diffInputs(old, cur map[string]string) []Change {
	var out []Change
	for k, v := range cur {
		switch ov, ok := old[k]; {
		case !ok:
			out = append(out, Change{Input: k, How: "added"})
		case ov != v && readable(k):
			out = append(out, Change{Input: k, How: "changed", Old: ov, New: v})
		case ov != v:
			out = append(out, Change{Input: k, How: "changed"})
		}
	}
	for k := range old {
		if _, ok := cur[k]; !ok {
			out = append(out, Change{Input: k, How: "removed"})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Input < out[j].Input })
	return out
}

// readable tells the inputs whose values mean something to a person.
func readable(name string) bool {
	return strings.HasPrefix(name, "build arg ") || name == "network" || name == "add-host"
}

// diffVars lists the variables the instruction's text refers to whose
// values changed, appeared or went.
func diffVars(old, cur map[string]string) []Change {
	var out []Change
	for k, v := range cur {
		if ov, ok := old[k]; !ok {
			out = append(out, Change{Input: k, How: "set", New: v})
		} else if ov != v {
			out = append(out, Change{Input: k, How: "changed", Old: ov, New: v})
		}
	}
	for k, v := range old {
		if _, ok := cur[k]; !ok {
			out = append(out, Change{Input: k, How: "unset", Old: v})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Input < out[j].Input })
	return out
}

// describe words changes: "build arg V changed: 1 → 2", "a.py, b.py and 3
// more changed; c.py added".
func describe(changes []Change) string {
	var valued []string
	groups := map[string][]string{}
	for _, c := range changes {
		switch {
		case c.How == "changed" && (c.Old != "" || c.New != ""):
			valued = append(valued, c.Input+" changed: "+c.Old+" → "+c.New)
		case c.How == "set":
			valued = append(valued, c.Input+" set: "+c.New)
		case c.How == "unset":
			valued = append(valued, c.Input+" unset")
		default:
			groups[c.How] = append(groups[c.How], c.Input)
		}
	}
	parts := []string{}
	if len(valued) > 0 {
		parts = append(parts, strings.Join(valued, ", "))
	}
	for _, how := range []string{"changed", "added", "removed"} {
		names := groups[how]
		if len(names) == 0 {
			continue
		}
		more := ""
		if len(names) > 3 {
			more = fmt.Sprintf(" and %d more", len(names)-3)
			names = names[:3]
		}
		parts = append(parts, strings.Join(names, ", ")+more+" "+how)
	}
	return strings.Join(parts, "; ")
}

// oneLine keeps a reason on one line: a heredoc's text has newlines.
func oneLine(s string) string {
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}

// PreviousLayer is the diffID of the layer the last step recorded at
// place where made: with the same instruction on the same parent if there
// is one, else whatever stood there last (a step after an earlier miss
// has a new parent). It is what this step's new layer most likely
// differs from by a few files (snapshot.NewPatchIngest); "" if none.
func (x *Index) PreviousLayer(where string, in *Inputs) digest.Digest {
	for _, k := range []digest.Digest{hintKey(in.Parent, where, in.Instruction), hintKey("", where)} {
		var prev struct {
			Layer digest.Digest `json:"layer"` // only: a COPY's hint lists every file
		}
		if readJSON(x.hintPath(k), &prev) == nil && prev.Layer != "" {
			return prev.Layer
		}
	}
	return ""
}
