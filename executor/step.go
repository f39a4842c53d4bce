package executor

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/buildctx"
	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/copier"
	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/parser"
	"github.com/minibuild/minibuild/snapshot"
)

// stepExec is one instruction of a stage being keyed, looked up and, on a
// miss, executed.
type stepExec struct {
	b    *builder
	run  *stageRun
	step parser.Step
	n    int
	file string

	cmd   instructions.Command // expanded
	canon string
	// inputs are the digests the key covers beyond the instruction text;
	// inputNames says what they are, for explaining a miss.
	inputs     []digest.Digest
	inputNames func() map[string]string
	// execute produces the step's record on a miss.
	execute func(ctx context.Context) (*cache.Record, error)
	// release frees what prepare holds (a COPY plan's downloads).
	release func() error
}

// exec keys the step, reuses or executes it, and returns its key.
func (s *stepExec) exec(ctx context.Context, parent digest.Digest) (digest.Digest, error) {
	report := s.run.report
	start := time.Now()
	instr := strings.TrimSpace(s.step.Original)
	defer func() {
		if s.release != nil {
			s.release()
		}
	}()
	if err := s.prepare(ctx); err != nil {
		report(Event{Step: s.n, Instruction: instr, Status: StatusError, Reason: err.Error()})
		return "", s.fail(err)
	}
	key := cache.Key(parent, s.canon, s.inputs...)
	s.b.noteKey(s.run.index, key)
	opts := s.b.opts
	if !s.run.missed && !opts.NoCache {
		if rec, ok := s.lookup(ctx, key, parent); ok {
			s.applyRecord(rec)
			s.b.count(true)
			report(Event{Step: s.n, Instruction: instr, Status: StatusCached, Key: string(key), Duration: time.Since(start)})
			return key, nil
		}
	}
	var reason string
	if !s.run.missed {
		s.run.missed = true
		reason = "--no-cache"
		if !opts.NoCache {
			reason = opts.Cache.Explain(parent, s.where(), s.canon, s.inputMap())
		}
		s.b.noteMiss(s.run, fmt.Sprintf("step %d/%d %s — %s", s.n, s.run.steps, firstLine(instr), reason))
	}
	report(Event{Step: s.n, Instruction: instr, Status: StatusRunning, Key: string(key), Reason: reason})
	rec, err := s.execute(ctx)
	if err != nil {
		report(Event{Step: s.n, Instruction: instr, Status: StatusError, Key: string(key), Duration: time.Since(start), Reason: err.Error()})
		return "", s.fail(err)
	}
	if err := opts.Cache.Put(key, parent, s.where(), s.canon, s.inputMap(), rec); err != nil {
		return "", s.fail(err)
	}
	s.applyRecord(rec)
	s.b.count(false)
	report(Event{Step: s.n, Instruction: instr, Status: StatusDone, Key: string(key), Duration: time.Since(start)})
	return key, nil
}

// inputMap names what the step read, computed only when a miss needs it.
func (s *stepExec) inputMap() map[string]string {
	if s.inputNames == nil {
		return nil
	}
	return s.inputNames()
}

// where names the step's place in this project, for miss explanations.
func (s *stepExec) where() string {
	return fmt.Sprintf("%s\x00%s\x00%d", s.b.opts.ContextDir, s.run.name, s.n)
}

// fail names the Dockerfile line and the step in an error.
func (s *stepExec) fail(err error) error {
	var pe *parser.Error
	if errors.As(err, &pe) {
		return err
	}
	if errors.Is(err, context.Canceled) {
		// Still a context.Canceled for the caller (exit code 130), but the
		// user learns where the build stopped.
		return &parser.Error{File: s.file, Line: s.step.Line, Err: err,
			Msg: fmt.Sprintf("%sstep %d/%d %s: interrupted", s.run.prefix(), s.n, s.run.steps, firstLine(s.step.Original))}
	}
	return parser.Errorf(s.file, s.step.Line, "%sstep %d/%d %s: %v", s.run.prefix(), s.n, s.run.steps, firstLine(s.step.Original), err)
}

// usable checks that a record's layer is really in the store: the index
// never outranks the blobs.
func (s *stepExec) usable(rec *cache.Record) bool {
	return rec.Layer == nil || s.b.opts.Store.HasBlob(rec.Layer.Digest)
}

func (s *stepExec) applyRecord(rec *cache.Record) {
	r := *rec
	if e := s.b.opts.Epoch; e != nil {
		r.History.Created = v1.Time{Time: e.UTC()}
	}
	if r.History.Author != "" {
		s.run.state.config.Author = r.History.Author
	}
	if _, ok := s.cmd.(*instructions.CmdCommand); ok {
		// Also on a hit: a later ENTRYPOINT that executes must keep this CMD.
		s.run.state.cmdSet = true
	}
	s.run.state.apply(&r)
}

// prepare expands the instruction, applies its effect on the ARG scope,
// computes its inputs and readies its execution.
func (s *stepExec) prepare(ctx context.Context) error {
	cfg := &s.run.state.config.Config
	if arg, ok := s.step.Cmd.(*instructions.ArgCommand); ok {
		// ARG defaults expand with the scope as it is, then join it.
		if _, err := s.run.scope.Arg(arg); err != nil {
			return err
		}
	}
	cmd, err := parser.Expand(s.step.Cmd, s.run.scope.ExpandEnv(), s.b.df.Escape)
	if err != nil {
		return err
	}
	if env, ok := cmd.(*instructions.EnvCommand); ok {
		for _, kv := range env.Env {
			s.run.scope.SetEnv(kv.Key, kv.Value)
		}
	}
	s.cmd = cmd
	s.canon = parser.Canonical(cmd)
	switch c := cmd.(type) {
	case *instructions.RunCommand:
		return s.prepareRun(ctx, c)
	case *instructions.CopyCommand:
		if c.Parents || len(c.ExcludePatterns) > 0 {
			return fmt.Errorf("COPY --parents and --exclude are not supported")
		}
		return s.prepareCopy(ctx, c.SourcesAndDest, c.Chown, c.Chmod, false, "", c.From)
	case *instructions.AddCommand:
		if len(c.ExcludePatterns) > 0 {
			return fmt.Errorf("ADD --exclude is not supported")
		}
		return s.prepareCopy(ctx, c.SourcesAndDest, c.Chown, c.Chmod, true, c.Checksum, "")
	case *instructions.WorkdirCommand:
		return s.prepareWorkdir(ctx, c)
	}
	s.execute = func(context.Context) (*cache.Record, error) {
		next := *cfg.DeepCopy()
		author, err := s.applyMetadata(&next, cmd)
		if err != nil {
			return nil, err
		}
		return &cache.Record{Config: next, History: s.history(true, author)}, nil
	}
	return nil
}

// history is the step's history entry.
func (s *stepExec) history(empty bool, author string) v1.History {
	createdBy := strings.TrimSpace(s.step.Original)
	if run, ok := s.cmd.(*instructions.RunCommand); ok {
		createdBy = "RUN " + strings.Join(s.runArgs(run), " ")
	}
	return v1.History{Created: v1.Time{Time: time.Now().UTC()}, CreatedBy: createdBy, EmptyLayer: empty, Author: author, Comment: "minibuild"}
}

// applyMetadata applies an instruction that only changes the config.
func (s *stepExec) applyMetadata(cfg *v1.Config, cmd instructions.Command) (author string, err error) {
	switch c := cmd.(type) {
	case *instructions.EnvCommand:
		for _, kv := range c.Env {
			cfg.Env = setEnv(cfg.Env, kv.Key, kv.Value)
		}
	case *instructions.LabelCommand:
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		for _, kv := range c.Labels {
			cfg.Labels[kv.Key] = kv.Value
		}
	case *instructions.ExposeCommand:
		if cfg.ExposedPorts == nil {
			cfg.ExposedPorts = map[string]struct{}{}
		}
		for _, p := range c.Ports {
			ports, err := expandPorts(p)
			if err != nil {
				return "", err
			}
			for _, port := range ports {
				cfg.ExposedPorts[port] = struct{}{}
			}
		}
	case *instructions.UserCommand:
		cfg.User = c.User
	case *instructions.VolumeCommand:
		if cfg.Volumes == nil {
			cfg.Volumes = map[string]struct{}{}
		}
		for _, v := range c.Volumes {
			if v == "" {
				return "", fmt.Errorf("VOLUME specified can not be an empty string")
			}
			cfg.Volumes[v] = struct{}{}
		}
	case *instructions.CmdCommand:
		cfg.Cmd = s.withShell(cfg, c.ShellDependantCmdLine)
	case *instructions.EntrypointCommand:
		cfg.Entrypoint = s.withShell(cfg, c.ShellDependantCmdLine)
		if !s.run.state.cmdSet {
			cfg.Cmd = nil
		}
	case *instructions.ShellCommand:
		cfg.Shell = append([]string(nil), c.Shell...)
	case *instructions.StopSignalCommand:
		cfg.StopSignal = c.Signal
	case *instructions.HealthCheckCommand:
		h := c.Health
		cfg.Healthcheck = &v1.HealthConfig{Test: h.Test, Interval: h.Interval, Timeout: h.Timeout, StartPeriod: h.StartPeriod, Retries: h.Retries}
	case *instructions.OnbuildCommand:
		cfg.OnBuild = append(cfg.OnBuild, c.Expression)
	case *instructions.MaintainerCommand:
		return c.Maintainer, nil
	case *instructions.ArgCommand:
		// ARGs change the scope (done in prepare), never the config.
	default:
		return "", fmt.Errorf("instruction %s is not supported", strings.ToUpper(cmd.Name()))
	}
	return "", nil
}

// expandPorts turns "80", "80/udp" or "8000-8002/tcp" into docker's
// "PORT/PROTO" keys.
func expandPorts(spec string) ([]string, error) {
	portPart, proto, ok := strings.Cut(spec, "/")
	if !ok {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	lo, hi, isRange := strings.Cut(portPart, "-")
	start, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("invalid port %q", spec)
	}
	end := start
	if isRange {
		if end, err = strconv.ParseUint(hi, 10, 16); err != nil || end < start {
			return nil, fmt.Errorf("invalid port range %q", spec)
		}
	}
	var out []string
	for p := start; p <= end; p++ {
		out = append(out, fmt.Sprintf("%d/%s", p, proto))
	}
	return out, nil
}

// withShell prepends the image's shell to a shell-form command line.
func (s *stepExec) withShell(cfg *v1.Config, c instructions.ShellDependantCmdLine) []string {
	if !c.PrependShell {
		return append([]string(nil), c.CmdLine...)
	}
	return append(shellOf(cfg), strings.Join(c.CmdLine, " "))
}

func shellOf(cfg *v1.Config) []string {
	if len(cfg.Shell) > 0 {
		return append([]string(nil), cfg.Shell...)
	}
	return []string{"/bin/sh", "-c"}
}

// prepareWorkdir sets the working dir and, when it does not exist in the
// image, creates it in a small layer (as BuildKit does).
func (s *stepExec) prepareWorkdir(ctx context.Context, c *instructions.WorkdirCommand) error {
	cfg := &s.run.state.config.Config
	dir := c.Path
	if !path.IsAbs(dir) {
		base := cfg.WorkingDir
		if base == "" {
			base = "/"
		}
		dir = path.Join(base, dir)
	}
	dir = path.Clean(dir)
	s.canon = "WORKDIR " + dir
	s.execute = func(ctx context.Context) (*cache.Record, error) {
		next := *cfg.DeepCopy()
		next.WorkingDir = dir
		missing, err := s.missingDirs(ctx, dir)
		if err != nil {
			return nil, err
		}
		if len(missing) == 0 {
			return &cache.Record{Config: next, History: s.history(true, "")}, nil
		}
		// As BuildKit, the dirs belong to the USER in effect.
		var owner identity
		if cfg.User != "" {
			if owner, err = resolveUser(imageFiles(ctx, s.b.opts.Snapshots, s.run.state.snapshotLayers()), cfg.User); err != nil {
				return nil, err
			}
		}
		l, err := s.writeLayer(ctx, func(w *layer.Writer) error {
			for _, d := range missing {
				hdr := &tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, ModTime: s.layerTime(),
					Uid: int(owner.UID), Gid: int(owner.GID)}
				if err := w.Add(hdr, nil); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		return &cache.Record{Layer: l, Config: next, History: s.history(false, "")}, nil
	}
	return nil
}

// missingDirs lists dir and its parents that the image lacks, top first.
func (s *stepExec) missingDirs(ctx context.Context, dir string) ([]string, error) {
	var missing []string
	for d := dir; d != "/"; d = path.Dir(d) {
		_, err := s.b.opts.Snapshots.Stat(ctx, s.run.state.snapshotLayers(), d)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		missing = append([]string{d}, missing...)
	}
	return missing, nil
}

// layerTime is the mtime of entries minibuild itself creates: the epoch
// when set, else the Unix epoch, so such layers are deterministic anyway.
func (s *stepExec) layerTime() time.Time {
	if e := s.b.opts.Epoch; e != nil {
		return *e
	}
	return time.Unix(0, 0)
}

// prepareCopy plans a COPY or ADD from the context: the plan's key covers
// exactly the files that will land.
func (s *stepExec) prepareCopy(ctx context.Context, sd instructions.SourcesAndDest, chown, chmod string, isAdd bool, checksum, from string) error {
	cfg := &s.run.state.config.Config
	layers := s.run.state.snapshotLayers()
	req := copier.Request{
		Sources: sd.SourcePaths,
		Dest:    sd.DestPath,
		Workdir: cfg.WorkingDir,
		Add:     isAdd,
		DestInfo: func(p string) (fs.FileInfo, error) {
			return s.b.opts.Snapshots.Stat(ctx, layers, p)
		},
	}
	if checksum != "" {
		d, err := digest.Parse(checksum)
		if err != nil {
			return fmt.Errorf("invalid checksum %q: %w", checksum, err)
		}
		req.Checksum = d
	}
	if chown != "" {
		id, err := resolveUser(imageFiles(ctx, s.b.opts.Snapshots, layers), chown)
		if err != nil {
			return fmt.Errorf("--chown=%s: %w", chown, err)
		}
		req.Chown = &copier.Owner{UID: int(id.UID), GID: int(id.GID)}
	}
	if chmod != "" {
		m, err := strconv.ParseUint(chmod, 8, 32)
		if err != nil || m > 0o7777 {
			return fmt.Errorf("invalid --chmod=%s: only octal modes are supported", chmod)
		}
		mode := fs.FileMode(m)
		req.Chmod = &mode
	}
	for _, h := range sd.SourceContents {
		req.Heredocs = append(req.Heredocs, copier.Heredoc{Name: h.Path, Data: h.Data})
	}
	var src *buildctx.Context
	var err error
	switch {
	case from != "":
		if src, err = s.b.fromSource(ctx, s.run.index, from); err != nil {
			return err
		}
		req.KeepOwner = true
	case len(sd.SourcePaths) > 0:
		if src, err = s.b.context(ctx); err != nil {
			return err
		}
	}
	if from != "" {
		s.release = src.Close // after the layer is written: Write reads through it
	}
	plan, err := copier.Plan(ctx, src, req)
	if err != nil {
		return err
	}
	closeSrc := s.release
	s.release = func() error {
		err := plan.Close()
		if closeSrc != nil {
			closeSrc()
		}
		return err
	}
	s.inputs = []digest.Digest{plan.Key()}
	s.inputNames = plan.Inputs
	s.execute = func(ctx context.Context) (*cache.Record, error) {
		l, err := s.writeLayer(ctx, plan.Write)
		if err != nil {
			return nil, err
		}
		return &cache.Record{Layer: l, Config: *cfg.DeepCopy(), History: s.history(false, "")}, nil
	}
	return nil
}

// writeLayer writes a layer into the store: the blob is committed, whole
// and verified, before any record names it.
func (s *stepExec) writeLayer(ctx context.Context, fill func(*layer.Writer) error) (*cache.Layer, error) {
	bw, err := s.b.opts.Store.NewBlobWriter()
	if err != nil {
		return nil, err
	}
	defer bw.Abort()
	opts := layer.Options{Epoch: s.b.opts.Epoch}
	var ingest *snapshot.Ingest
	if s.run.needsRootfs[s.n-2] {
		// Extract the layer as it is written: a later step needs it as a
		// lower dir, and reading the blob back means decompressing it.
		if ingest, err = s.b.opts.Snapshots.NewIngest(ctx); err != nil {
			return nil, err
		}
		defer ingest.Abort()
		opts.Tee = ingest
	}
	w := layer.NewWriter(bw, opts)
	if err := fill(w); err != nil {
		return nil, err
	}
	desc, err := w.Close()
	if err != nil {
		return nil, err
	}
	if err := bw.Commit(desc.Digest); err != nil {
		return nil, err
	}
	if ingest != nil {
		if err := ingest.Commit(ctx, desc.DiffID); err != nil {
			// Only an optimization: the layer is extracted from its blob when needed.
			s.b.opts.Progress(Event{Kind: KindWarning, Line: err.Error()})
		}
	}
	return &cache.Layer{Digest: desc.Digest, DiffID: desc.DiffID, Size: desc.Size, MediaType: layer.MediaType}, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

var _ io.Writer = (*lineWriter)(nil)
