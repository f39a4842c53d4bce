package executor

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/parser"
)

// op is what one instruction family adds to a step, in the shape of
// BuildKit's solver.Op: the inputs its key covers beyond the parent and
// the instruction, its execution on a miss, and the release of what
// preparing it holds (a COPY's downloads, a stage's view). An op is made
// ready by its constructor (newOp), so there is nothing to fill in later.
type op interface {
	// inputs adds what the step reads to its key.
	inputs(in *cache.Inputs)
	// execute produces the step's record; the step's state is the one
	// before it.
	execute(ctx context.Context) (*cache.Record, error)
	// release frees what the op holds; called once, hit or miss.
	release()
}

// step is one instruction of a stage being keyed, looked up and, on a
// miss, executed.
type step struct {
	run *stageRun
	src parser.Step
	n   int // its number in the stage, FROM being 1
	// feedsRootfs tells that a later step or stage reads this stage's
	// rootfs as files: then a new layer is extracted as it is written.
	feedsRootfs bool

	cmd instructions.Command // expanded, once prepared
	// prevLayer is the layer this step made in the last build that ran
	// it on the same parent: its extracted dir is patched into the new
	// layer's (snapshot.NewPatchIngest).
	prevLayer digest.Digest
}

// exec keys the step, reuses or executes it, and returns its key.
func (s *step) exec(ctx context.Context, parent digest.Digest) (digest.Digest, error) {
	start := time.Now()
	instr := strings.TrimSpace(s.src.Original)
	o, in, err := s.prepare(ctx, parent)
	if err != nil {
		s.run.report(Event{Step: s.n, Instruction: instr, Status: StatusError, Reason: err.Error()})
		return "", s.fail(err)
	}
	defer o.release()
	b, key := s.run.b, in.Key()
	b.noteKey(s.run.index, key)
	reuse := func(rec *cache.Record) (digest.Digest, error) {
		s.apply(rec)
		b.count(true)
		s.run.report(Event{Step: s.n, Instruction: instr, Status: StatusCached, Key: string(key), Duration: time.Since(start)})
		return key, nil
	}
	if !s.run.missed && !b.opts.NoCache {
		if rec, ok := s.lookup(ctx, key, in); ok {
			return reuse(rec)
		}
	}
	if !b.opts.NoCache {
		// One execution per key across builds: wait for another build
		// executing this very step, then take its result.
		unlock, err := b.opts.Cache.Lock(ctx, key)
		if err != nil {
			return "", s.fail(err)
		}
		defer unlock()
		// Even after this stage's first miss: a build that ran the same
		// chain at the same time may have recorded this very key.
		if rec, ok := s.lookup(ctx, key, in); ok {
			return reuse(rec)
		}
	}
	miss := s.missReason(in)
	if !b.opts.NoCache {
		s.prevLayer = b.opts.Cache.PreviousLayer(s.where(), in)
	}
	running := Event{Step: s.n, Instruction: instr, Status: StatusRunning, Key: string(key), Miss: miss}
	if miss != nil {
		running.Reason = miss.String()
	}
	s.run.report(running)
	rec, err := o.execute(ctx)
	if err != nil {
		s.run.report(Event{Step: s.n, Instruction: instr, Status: StatusError, Key: string(key), Duration: time.Since(start), Reason: err.Error()})
		return "", s.fail(err)
	}
	if err := b.opts.Cache.Put(key, s.where(), in, rec); err != nil {
		return "", s.fail(err)
	}
	s.apply(rec)
	b.count(false)
	s.run.report(Event{Step: s.n, Instruction: instr, Status: StatusDone, Key: string(key), Duration: time.Since(start)})
	return key, nil
}

// prepare expands the instruction, applies its effect on the ARG/ENV
// scope, and makes its op and key inputs.
func (s *step) prepare(ctx context.Context, parent digest.Digest) (op, *cache.Inputs, error) {
	scope := s.run.scope
	if arg, ok := s.src.Cmd.(*instructions.ArgCommand); ok {
		// ARG defaults expand with the scope as it is, then join it.
		if _, err := scope.Arg(arg); err != nil {
			return nil, nil, err
		}
	}
	cmd, err := parser.Expand(s.src.Cmd, scope.ExpandEnv(), s.run.b.df.Escape)
	if err != nil {
		return nil, nil, err
	}
	if env, ok := cmd.(*instructions.EnvCommand); ok {
		for _, kv := range env.Env {
			scope.SetEnv(kv.Key, kv.Value)
		}
	}
	s.cmd = cmd
	o, err := newOp(ctx, s)
	if err != nil {
		return nil, nil, err // an op that fails to prepare releases itself
	}
	in := &cache.Inputs{Parent: parent, Instruction: parser.Canonical(cmd),
		Why: cache.Why{Display: strings.TrimSpace(s.src.Original), Vars: s.vars(), Base: s.run.base}}
	o.inputs(in)
	return o, in, nil
}

// varRef finds the variables an instruction's text refers to.
var varRef = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)

// vars are the values of the set variables the step's text refers to, by
// what a person calls them ("build arg VERSION", "ENV APP"): what a miss
// names when the text stayed and a value changed. Only explains.
func (s *step) vars() map[string]string {
	refs := varRef.FindAllStringSubmatch(s.src.Original, -1)
	if len(refs) == 0 {
		return nil
	}
	scope := s.run.scope
	env, image := scope.ExpandEnv(), scope.ImageEnv()
	out := map[string]string{}
	for _, r := range refs {
		v, ok := lookupEnv(env, r[1])
		if !ok {
			continue
		}
		kind := "build arg "
		if _, isEnv := lookupEnv(image, r[1]); isEnv {
			kind = "ENV "
		}
		out[kind+r[1]] = v
	}
	return out
}

// newOp makes the op of the step's instruction family.
func newOp(ctx context.Context, s *step) (op, error) {
	switch c := s.cmd.(type) {
	case *instructions.RunCommand:
		return newRunOp(ctx, s, c)
	case *instructions.CopyCommand:
		if c.Parents || len(c.ExcludePatterns) > 0 {
			return nil, fmt.Errorf("COPY --parents and --exclude are not supported")
		}
		return newCopyOp(ctx, s, copySpec{SourcesAndDest: c.SourcesAndDest, chown: c.Chown, chmod: c.Chmod, from: c.From})
	case *instructions.AddCommand:
		if len(c.ExcludePatterns) > 0 {
			return nil, fmt.Errorf("ADD --exclude is not supported")
		}
		return newCopyOp(ctx, s, copySpec{SourcesAndDest: c.SourcesAndDest, chown: c.Chown, chmod: c.Chmod, add: true, checksum: c.Checksum})
	case *instructions.WorkdirCommand:
		return newWorkdirOp(s, c), nil
	}
	return &metadataOp{s: s}, nil
}

// missReason marks the stage as having missed and, at its first miss,
// says why, for the progress event and the build's summary.
func (s *step) missReason(in *cache.Inputs) *cache.Miss {
	if s.run.missed {
		return nil
	}
	s.run.missed = true
	b := s.run.b
	miss := cache.Miss{Kind: "no-cache"}
	if !b.opts.NoCache {
		miss = b.opts.Cache.Explain(s.where(), in)
	}
	b.noteMiss(s.run.name, fmt.Sprintf("step %d/%d %s — %s", s.n, s.run.steps, firstLine(s.src.Original), miss.String()))
	return &miss
}

// where names the step's place — its project, Dockerfile, stage and
// number — so that a miss is explained against the last build of the
// same Dockerfile, never another that happened to share a parent.
func (s *step) where() string {
	o := s.run.b.opts
	return fmt.Sprintf("%s\x00%s\x00%s\x00%d", o.ContextDir, o.DockerfileName, s.run.name, s.n)
}

// fail names the Dockerfile line and the step in an error.
func (s *step) fail(err error) error {
	var pe *parser.Error
	if errors.As(err, &pe) {
		return err
	}
	file, r := s.run.b.opts.DockerfileName, s.run
	if errors.Is(err, context.Canceled) {
		// Still a context.Canceled for the caller (exit code 130), but the
		// user learns where the build stopped.
		return &parser.Error{File: file, Line: s.src.Line, Err: err,
			Msg: fmt.Sprintf("%sstep %d/%d %s: interrupted", r.prefix(), s.n, r.steps, firstLine(s.src.Original))}
	}
	return parser.Errorf(file, s.src.Line, "%sstep %d/%d %s: %v", r.prefix(), s.n, r.steps, firstLine(s.src.Original), err)
}

// apply replays the step's record onto the stage's image.
func (s *step) apply(rec *cache.Record) {
	r := *rec
	if e := s.run.b.opts.Epoch; e != nil {
		r.History.Created = v1.Time{Time: e.UTC()}
	}
	st := s.run.state
	if r.History.Author != "" {
		st.config.Author = r.History.Author
	}
	if _, ok := s.cmd.(*instructions.CmdCommand); ok {
		// Also on a hit: a later ENTRYPOINT that executes must keep this CMD.
		st.cmdSet = true
	}
	st.apply(&r)
}

// history is the step's history entry; createdBy "" means the
// instruction as written.
func (s *step) history(createdBy string, empty bool) v1.History {
	if createdBy == "" {
		createdBy = strings.TrimSpace(s.src.Original)
	}
	return v1.History{Created: v1.Time{Time: time.Now().UTC()}, CreatedBy: createdBy, EmptyLayer: empty, Comment: "minibuild"}
}

// config is a copy of the container config before this step.
func (s *step) config() v1.Config { return *s.run.state.config.Config.DeepCopy() }

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
