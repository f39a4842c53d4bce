package executor

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/minibuild/minibuild/parser"
)

// graph is the stage graph, checked before anything runs: every FROM and
// COPY --from resolved to an earlier stage or to an image.
type graph struct {
	bases []string // each stage's FROM, expanded with the global ARGs
	deps  [][]int  // the earlier stages each stage reads
	names []string // display names: the AS name or "stage-N"
}

// analyze resolves stage references and rejects duplicates, cycles and
// references to unknown or later stages, naming the Dockerfile line.
func analyze(df *parser.Dockerfile, meta map[string]string) (*graph, error) {
	g := &graph{bases: make([]string, len(df.Stages)), deps: make([][]int, len(df.Stages)), names: make([]string, len(df.Stages))}
	byName := map[string]int{}
	for i, st := range df.Stages {
		g.names[i] = st.Name
		if st.Name == "" {
			g.names[i] = fmt.Sprintf("stage-%d", i)
		} else if j, dup := byName[st.Name]; dup {
			return nil, parser.Errorf(df.File, st.Line, "duplicate stage name %q, first defined on line %d", st.Name, df.Stages[j].Line)
		}
		if st.Name != "" {
			byName[st.Name] = i
		}
	}
	// ref resolves a stage reference made from stage i: an earlier stage,
	// or -1 for an image; a reference to i itself or a later stage is an error.
	ref := func(i int, what, r string) (int, error) {
		if j, ok := byName[strings.ToLower(r)]; ok {
			if j >= i {
				if j == i {
					return 0, fmt.Errorf("%s %s: stage %q refers to itself (a cycle)", what, r, df.Stages[i].Name)
				}
				return 0, fmt.Errorf("%s %s: stage %q is defined later, on line %d; a stage can only use earlier stages", what, r, r, df.Stages[j].Line)
			}
			return j, nil
		}
		if n, err := strconv.Atoi(r); err == nil {
			if n < 0 || n >= i {
				return 0, fmt.Errorf("%s %s: stage index %d is not an earlier stage (this is stage %d)", what, r, n, i)
			}
			return n, nil
		}
		return -1, nil
	}
	for i, st := range df.Stages {
		base, err := parser.ExpandWord(st.BaseName, parser.EnvList(meta), df.Escape)
		if err != nil {
			return nil, parser.Errorf(df.File, st.Line, "FROM %s: %v", st.BaseName, err)
		}
		if base == "" {
			return nil, parser.Errorf(df.File, st.Line, "FROM %s: base name expands to an empty string", st.BaseName)
		}
		g.bases[i] = base
		j, err := ref(i, "FROM", base)
		if err != nil {
			return nil, parser.Errorf(df.File, st.Line, "%v", err)
		}
		if j >= 0 {
			g.deps[i] = append(g.deps[i], j)
		} else if base != "scratch" {
			if _, err := name.ParseReference(base); err != nil {
				return nil, parser.Errorf(df.File, st.Line, "FROM %s: invalid image reference: %v", base, err)
			}
		}
		for _, step := range st.Steps {
			for _, from := range stepFroms(step.Cmd) {
				j, err := ref(i, from[0], from[1])
				if err != nil {
					return nil, parser.Errorf(df.File, step.Line, "%v", err)
				}
				if j >= 0 {
					g.deps[i] = append(g.deps[i], j)
					continue
				}
				if _, err := name.ParseReference(from[1]); err != nil {
					return nil, parser.Errorf(df.File, step.Line, "%s=%s: no stage of that name and not an image reference: %v", from[0], from[1], err)
				}
			}
		}
	}
	return g, nil
}

// stageRef resolves a reference made from stage i to an earlier stage.
func (g *graph) stageRef(df *parser.Dockerfile, i int, r string) (int, bool) {
	for j := 0; j < i; j++ {
		if df.Stages[j].Name != "" && df.Stages[j].Name == strings.ToLower(r) {
			return j, true
		}
	}
	if n, err := strconv.Atoi(r); err == nil && n >= 0 && n < i {
		return n, true
	}
	return 0, false
}

// needed lists the stages the target depends on, itself included, in
// index order: a stage nothing needs is neither built nor its base pulled.
func (g *graph) needed(target int) []int {
	seen := map[int]bool{}
	var visit func(int)
	visit = func(i int) {
		if seen[i] {
			return
		}
		seen[i] = true
		for _, d := range g.deps[i] {
			visit(d)
		}
	}
	visit(target)
	var out []int
	for i := range g.deps {
		if seen[i] {
			out = append(out, i)
		}
	}
	return out
}

// hasDependents tells whether another stage builds on or reads stage i.
func (g *graph) hasDependents(i int) bool {
	for _, deps := range g.deps {
		for _, d := range deps {
			if d == i {
				return true
			}
		}
	}
	return false
}
