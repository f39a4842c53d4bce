package executor

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/minibuild/minibuild/parser"
)

// source is what a FROM, COPY --from or RUN --mount from= names: an
// earlier stage, an image reference ("scratch" for the empty image), or a
// named build context's directory.
type source struct {
	stage int    // an earlier stage's index, or -1
	image string // when stage < 0 and dir is ""
	dir   string // a --build-context directory
}

func (s source) isStage() bool { return s.stage >= 0 }

// stageNode is one stage of the graph with every reference it makes
// resolved, so that the build reads them instead of resolving again.
type stageNode struct {
	name     string // display name: the AS name or "stage-N"
	baseText string // FROM's argument, expanded with the global ARGs
	base     source
	// froms resolves the COPY --from and RUN --mount from= values the
	// stage's own instructions use, by their text.
	froms      map[string]source
	deps       []int // the earlier stages it reads
	dependents bool  // another stage builds on or reads it
}

// graph is the stage graph, checked before anything runs.
type graph struct {
	df       *parser.Dockerfile
	byName   map[string]int
	contexts map[string]source // --build-context NAME=…, by lower-case name
	stages   []stageNode
}

// analyze resolves every stage reference once and rejects duplicates,
// cycles and references to unknown or later stages, naming the line.
// contexts are the named build contexts: NAME → a directory, or
// "docker-image://REF".
func analyze(df *parser.Dockerfile, meta, contexts map[string]string) (*graph, error) {
	g := &graph{df: df, byName: map[string]int{}, contexts: map[string]source{}, stages: make([]stageNode, len(df.Stages))}
	for name, v := range contexts {
		src := source{stage: -1, dir: v}
		if ref, ok := strings.CutPrefix(v, "docker-image://"); ok {
			src = source{stage: -1, image: ref}
		}
		g.contexts[strings.ToLower(name)] = src
	}
	for i, st := range df.Stages {
		g.stages[i].name = st.Name
		if st.Name == "" {
			g.stages[i].name = fmt.Sprintf("stage-%d", i)
		} else if j, dup := g.byName[st.Name]; dup {
			return nil, parser.Errorf(df.File, st.Line, "duplicate stage name %q, first defined on line %d", st.Name, df.Stages[j].Line)
		}
		if st.Name != "" {
			g.byName[st.Name] = i
		}
	}
	for i, st := range df.Stages {
		if err := g.analyzeStage(i, st, meta); err != nil {
			return nil, err
		}
	}
	for i := range g.stages {
		for _, d := range g.stages[i].deps {
			g.stages[d].dependents = true
		}
	}
	return g, nil
}

// analyzeStage resolves stage i's FROM and the references of its steps.
func (g *graph) analyzeStage(i int, st parser.Stage, meta map[string]string) error {
	file := g.df.File
	node := &g.stages[i]
	base, err := parser.ExpandWord(st.BaseName, parser.EnvList(meta), g.df.Escape)
	if err != nil {
		return parser.Errorf(file, st.Line, "FROM %s: %v", st.BaseName, err)
	}
	if base == "" {
		return parser.Errorf(file, st.Line, "FROM %s: base name expands to an empty string", st.BaseName)
	}
	node.baseText = base
	if node.base, err = g.resolve(i, "FROM", base); err != nil {
		return parser.Errorf(file, st.Line, "%v", err)
	}
	if node.base.isStage() {
		node.deps = append(node.deps, node.base.stage)
	}
	node.froms = map[string]source{}
	for _, step := range st.Steps {
		for _, from := range stepFroms(step.Cmd) {
			src, err := g.resolve(i, from[0], from[1])
			if err != nil {
				return parser.Errorf(file, step.Line, "%v", err)
			}
			node.froms[from[1]] = src
			if src.isStage() {
				node.deps = append(node.deps, src.stage)
			}
		}
	}
	return nil
}

// resolve resolves reference r made from stage i by instruction what: a
// named build context (which overrides a stage of that name, as in
// BuildKit), an earlier stage by name or index, else an image. A
// reference to i itself or to a later stage is an error, and so is an
// invalid image reference.
func (g *graph) resolve(i int, what, r string) (source, error) {
	if src, ok := g.contexts[strings.ToLower(r)]; ok {
		if what == "FROM" && src.dir != "" {
			return source{}, fmt.Errorf("FROM %s: the build context %s is a directory; a directory can be read with COPY --from=%s or RUN --mount=from=%s, and FROM takes docker-image://REF", r, src.dir, r, r)
		}
		return src, nil
	}
	if j, ok := g.byName[strings.ToLower(r)]; ok {
		switch {
		case j == i:
			return source{}, fmt.Errorf("%s %s: stage %q refers to itself (a cycle)", what, r, g.df.Stages[i].Name)
		case j > i:
			return source{}, fmt.Errorf("%s %s: stage %q is defined later, on line %d; a stage can only use earlier stages", what, r, r, g.df.Stages[j].Line)
		}
		return source{stage: j}, nil
	}
	if n, err := strconv.Atoi(r); err == nil {
		if n < 0 || n >= i {
			return source{}, fmt.Errorf("%s %s: stage index %d is not an earlier stage (this is stage %d)", what, r, n, i)
		}
		return source{stage: n}, nil
	}
	if what == "FROM" && r == "scratch" {
		return source{stage: -1, image: r}, nil
	}
	if _, err := name.ParseReference(r); err != nil {
		if what == "FROM" {
			return source{}, fmt.Errorf("FROM %s: invalid image reference: %v", r, err)
		}
		return source{}, fmt.Errorf("%s=%s: no stage of that name and not an image reference: %v", what, r, err)
	}
	return source{stage: -1, image: r}, nil
}

// stepFroms lists the stages or images an instruction reads, as
// {"COPY --from", name} or {"RUN --mount from", name}.
func stepFroms(cmd instructions.Command) [][2]string {
	switch c := cmd.(type) {
	case *instructions.CopyCommand:
		if c.From != "" {
			return [][2]string{{"COPY --from", c.From}}
		}
	case *instructions.RunCommand:
		var out [][2]string
		func() {
			defer func() { _ = recover() }() // a hand-made RunCommand has no mount state
			for _, m := range instructions.GetMounts(c) {
				if m.From != "" {
					out = append(out, [2]string{"RUN --mount from", m.From})
				}
			}
		}()
		return out
	}
	return nil
}

// needed lists the stages the target depends on, itself included, in
// index order: a stage nothing needs is neither built nor its base pulled.
func (g *graph) needed(target int) []int {
	seen := make([]bool, len(g.stages))
	var visit func(int)
	visit = func(i int) {
		if seen[i] {
			return
		}
		seen[i] = true
		for _, d := range g.stages[i].deps {
			visit(d)
		}
	}
	visit(target)
	var out []int
	for i, ok := range seen {
		if ok {
			out = append(out, i)
		}
	}
	return out
}

// imageChain lists the stages the target's image is made of: the target
// and the stages it is built FROM, base first.
func (g *graph) imageChain(target int) []int {
	chain := []int{target}
	for i := target; g.stages[i].base.isStage(); i = g.stages[i].base.stage {
		chain = append([]int{g.stages[i].base.stage}, chain...)
	}
	return chain
}
