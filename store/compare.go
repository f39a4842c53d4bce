package store

import (
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/minibuild/minibuild/layer"
)

// Relation says how two images' step at one position compare.
type Relation string

// The relations of CompareHistory, from "nothing to explain" to "only one
// image has this step".
const (
	RelShared      Relation = "shared"      // same instruction, same layer (or neither has one)
	RelContent     Relation = "content"     // same instruction, different layer: what it read changed
	RelInstruction Relation = "instruction" // the instructions differ
	RelOnlyA       Relation = "only_a"      // A has this step, B has ended
	RelOnlyB       Relation = "only_b"      // B has this step, A has ended
)

// Step is one history entry of an image and the layer it made.
type Step struct {
	Instruction string    `json:"instruction"`     // created_by; "" when the image has no usable history
	Layer       *LayerRef `json:"layer,omitempty"` // nil for a metadata-only step (empty_layer)
}

// LayerRef names one layer of an image: the blob (as df and the registry
// name it), its content (the diff id, what "same layer" compares) and size.
type LayerRef struct {
	Digest v1.Hash `json:"digest"`
	DiffID v1.Hash `json:"diff_id"`
	Size   int64   `json:"size"`
}

// StepComparison is one position of the two chains.
type StepComparison struct {
	Step     int      `json:"step"` // 1-based, over the images' history entries (the base's included)
	Relation Relation `json:"relation"`
	A        *Step    `json:"a,omitempty"`
	B        *Step    `json:"b,omitempty"`
}

// Comparison is where two images' chains of steps diverge. The leading
// Shared steps are the same in both (what one build reused of the other,
// or both of a common parent); Divergence is the first step that is not,
// nil when the chains are identical.
type Comparison struct {
	Shared      int              `json:"shared"`
	SharedBytes int64            `json:"shared_bytes"` // the compressed size of the shared steps' layers
	Divergence  *StepComparison  `json:"divergence,omitempty"`
	Steps       []StepComparison `json:"steps"`
}

// CompareHistory pairs the two images' history entries position by
// position (an entry with empty_layer consumes no layer) and says for each
// whether the step is shared, read different content, is a different
// instruction, or exists in one image only. It reads only configs and
// manifests, never layer contents. An image whose history does not account
// for its layers (built by a tool that writes none) is compared as one
// unnamed step per layer.
func CompareHistory(a, b v1.Image) (Comparison, error) {
	sa, err := imageSteps(a)
	if err != nil {
		return Comparison{}, fmt.Errorf("image A: %w", err)
	}
	sb, err := imageSteps(b)
	if err != nil {
		return Comparison{}, fmt.Errorf("image B: %w", err)
	}
	return compareSteps(sa, sb), nil
}

func compareSteps(sa, sb []Step) Comparison {
	var c Comparison
	prefix := true
	for i := 0; i < max(len(sa), len(sb)); i++ {
		sc := StepComparison{Step: i + 1}
		if i < len(sa) {
			sc.A = &sa[i]
		}
		if i < len(sb) {
			sc.B = &sb[i]
		}
		sc.Relation = relation(sc.A, sc.B)
		if prefix && sc.Relation == RelShared {
			c.Shared++
			if sc.A.Layer != nil {
				c.SharedBytes += sc.A.Layer.Size
			}
		} else if prefix {
			prefix = false
			d := sc
			c.Divergence = &d
		}
		c.Steps = append(c.Steps, sc)
	}
	return c
}

func relation(a, b *Step) Relation {
	switch {
	case b == nil:
		return RelOnlyA
	case a == nil:
		return RelOnlyB
	case a.Instruction != b.Instruction:
		return RelInstruction
	case a.Layer == nil && b.Layer == nil:
		return RelShared
	case a.Layer == nil || b.Layer == nil || a.Layer.DiffID != b.Layer.DiffID:
		return RelContent
	}
	return RelShared
}

// imageSteps pairs an image's history with its layers.
func imageSteps(img v1.Image) ([]Step, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	pairs, err := layer.Pairs(m, cf)
	if err != nil {
		return nil, err
	}
	layers := make([]LayerRef, len(pairs))
	for i, p := range pairs {
		layers[i] = LayerRef{Digest: p.Desc.Digest, DiffID: p.DiffID, Size: p.Desc.Size}
	}
	withLayer := 0
	for _, h := range cf.History {
		if !h.EmptyLayer {
			withLayer++
		}
	}
	var steps []Step
	if withLayer != len(layers) {
		for i := range layers {
			steps = append(steps, Step{Layer: &layers[i]})
		}
		return steps, nil
	}
	next := 0
	for _, h := range cf.History {
		s := Step{Instruction: h.CreatedBy}
		if !h.EmptyLayer {
			s.Layer = &layers[next]
			next++
		}
		steps = append(steps, s)
	}
	return steps, nil
}

// Lines says the comparison in words, one line each: the shared steps,
// the first divergence and why, then the rest in runs of one relation.
func (c Comparison) Lines() []string {
	if len(c.Steps) == 0 {
		return []string{"both images have no steps"}
	}
	var out []string
	if c.Shared > 0 {
		out = append(out, fmt.Sprintf("%s shared (%s)", stepRange(1, c.Shared), sharedWhat(c.Steps[:c.Shared])))
	}
	if c.Divergence == nil {
		return append(out, "the images are the same step by step")
	}
	d := c.Steps[c.Shared]
	switch d.Relation {
	case RelOnlyA, RelOnlyB:
		return append(out, moreSteps(c.Steps[c.Shared:]))
	case RelContent:
		out = append(out, fmt.Sprintf("step %d: %s — same instruction, different content: layer %s vs %s",
			d.Step, instruction(d.A), layerName(d.A.Layer), layerName(d.B.Layer)))
	default:
		out = append(out, fmt.Sprintf("step %d: instruction differs: A `%s` | B `%s`", d.Step, instruction(d.A), instruction(d.B)))
	}
	return append(out, restLines(c.Steps[c.Shared+1:])...)
}

// restLines summarises the steps after the first divergence: each run of
// one relation is a line.
func restLines(steps []StepComparison) []string {
	var out []string
	for i := 0; i < len(steps); {
		r := steps[i].Relation
		if r == RelOnlyA || r == RelOnlyB {
			return append(out, moreSteps(steps[i:]))
		}
		j := i
		for j < len(steps) && steps[j].Relation == r {
			j++
		}
		run := steps[i:j]
		from, to := run[0].Step, run[len(run)-1].Step
		switch r {
		case RelShared:
			out = append(out, fmt.Sprintf("%s: %s", stepRange(from, to), sharedWhat(run)))
		case RelContent:
			out = append(out, fmt.Sprintf("%s: same instruction, different content", stepRange(from, to)))
		default:
			out = append(out, fmt.Sprintf("%s: instruction differs", stepRange(from, to)))
		}
		i = j
	}
	return out
}

// moreSteps is the line for the tail only one image has: the shorter
// chain has ended, so every step of it is A's or every one is B's.
func moreSteps(steps []StepComparison) string {
	who, n := "A", 0
	var names []string
	for _, s := range steps {
		st := s.A
		if s.Relation == RelOnlyB {
			who, st = "B", s.B
		}
		n++
		if len(names) < 3 {
			names = append(names, "`"+instruction(st)+"`")
		}
	}
	if n > len(names) {
		names = append(names, "…")
	}
	plural := "s"
	if n == 1 {
		plural = ""
	}
	return fmt.Sprintf("%s has %d more step%s: %s", who, n, plural, strings.Join(names, ", "))
}

// sharedWhat says what a run of shared steps have in common.
func sharedWhat(run []StepComparison) string {
	for _, s := range run {
		if s.A.Layer != nil {
			return "same instruction, same layer"
		}
	}
	return "same instruction, no layer"
}

func stepRange(from, to int) string {
	if from == to {
		return fmt.Sprintf("step %d", from)
	}
	return fmt.Sprintf("steps %d–%d", from, to)
}

func instruction(s *Step) string {
	if s.Instruction == "" {
		return "(no history)"
	}
	return s.Instruction
}

// layerName is a layer digest shortened as docker shortens ids.
func layerName(l *LayerRef) string {
	if l == nil {
		return "none"
	}
	return fmt.Sprintf("%s:%.12s…", l.Digest.Algorithm, l.Digest.Hex)
}
