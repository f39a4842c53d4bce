package executor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"

	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/layer"
	"github.com/minibuild/minibuild/sandbox"
	"github.com/minibuild/minibuild/snapshot"
)

// tailLines is how many output lines a failed RUN's error repeats.
const tailLines = 10

// runOp is a RUN: keyed on its text, the build args it can see, its
// network mode and the content of its bind mounts; executed in the
// sandbox over a snapshot of the stage's rootfs, its changes diffed into
// a layer.
type runOp struct {
	s       *step
	c       *instructions.RunCommand
	network sandbox.Network
	args    []string // the visible build args, as the key sees them
	mounts  []*runMount
}

func newRunOp(ctx context.Context, s *step, c *instructions.RunCommand) (*runOp, error) {
	network, err := s.runNetwork(c)
	if err != nil {
		return nil, err
	}
	if instructions.GetSecurity(c) == instructions.SecurityInsecure && !s.run.b.opts.AllowInsecure {
		return nil, errors.New("RUN --security=insecure is not allowed: build with --allow security.insecure")
	}
	scope := s.run.scope
	o := &runOp{s: s, c: c, network: network, args: argsKey(scope.Args(), scope.ExpandEnv())}
	if o.mounts, err = s.prepareMounts(ctx, c); err != nil {
		o.release()
		return nil, err
	}
	return o, nil
}

func (o *runOp) inputs(in *cache.Inputs) {
	in.BuildArgs = o.args
	in.Network = string(o.network)
	in.Hosts = o.s.run.b.opts.ExtraHosts
	for _, rm := range o.mounts {
		if rm.tree != "" {
			in.Mounts = append(in.Mounts, cache.MountInput{Target: rm.target, Tree: rm.tree})
		}
	}
}

// release closes the stage views bind mounts read from.
func (o *runOp) release() {
	for _, rm := range o.mounts {
		if rm.view != nil {
			rm.view.Close()
		}
	}
}

func (o *runOp) execute(ctx context.Context) (*cache.Record, error) {
	return o.s.executeRun(ctx, o.c, o.mounts, o.network)
}

// argsKey is the visible ARGs as a RUN's key sees them: "K=V" when K is
// in the environment (even empty), "K" alone when declared but unset —
// a RUN can tell the two apart, so one must not reuse the other's result.
func argsKey(args, env []string) []string {
	out := make([]string, len(args))
	for i, kv := range args {
		k, _, _ := strings.Cut(kv, "=")
		if _, set := lookupEnv(env, k); set {
			out[i] = kv
		} else {
			out[i] = k
		}
	}
	return out
}

// runNetwork is the network of a RUN: its --network flag, else the
// build's --network.
func (s *step) runNetwork(c *instructions.RunCommand) (sandbox.Network, error) {
	mode := s.run.b.opts.Network
	if slices.Contains(c.FlagsUsed, "network") {
		mode = instructions.GetNetwork(c)
	}
	switch mode {
	case "", "default":
		return sandbox.NetworkDefault, nil
	case "host":
		return sandbox.NetworkHost, nil
	case "none":
		return sandbox.NetworkNone, nil
	}
	return "", fmt.Errorf("network mode %q is not supported (want default, none or host)", mode)
}

// runArgs is the argv a RUN executes: the shell plus the command line for
// the shell form, a heredoc's body as the script, or the exec form as is.
func (s *step) runArgs(c *instructions.RunCommand) []string {
	cfg := &s.run.state.config.Config
	args := c.CmdLine
	if len(c.Files) > 0 && len(args) == 1 {
		if target, data, ok := heredocScript(c); ok {
			return shebangArgs(data, target)
		}
		if parser.MustParseHeredoc(args[0]) != nil {
			data := c.Files[0].Data
			if c.Files[0].Chomp {
				data = parser.ChompHeredocContent(data)
			}
			args = []string{data}
		} else {
			var b strings.Builder
			b.WriteString(args[0])
			for _, f := range c.Files {
				b.WriteByte('\n')
				b.WriteString(f.Data)
				b.WriteString(f.Name)
			}
			args = []string{b.String()}
		}
	}
	if !c.PrependShell {
		return append([]string(nil), args...)
	}
	return append(shellOf(cfg), strings.Join(args, " "))
}

// heredocScript is a RUN whose command is a single heredoc starting with
// "#!": BuildKit runs it as a script file at /dev/pipes/NAME, with its own
// interpreter, instead of passing the text to the shell.
func heredocScript(c *instructions.RunCommand) (target, data string, ok bool) {
	if len(c.Files) == 0 || len(c.CmdLine) != 1 || parser.MustParseHeredoc(c.CmdLine[0]) == nil ||
		!strings.HasPrefix(c.Files[0].Data, "#!") {
		return "", "", false
	}
	data = c.Files[0].Data
	if c.Files[0].Chomp {
		data = parser.ChompHeredocContent(data)
	}
	return "/dev/pipes/" + path.Base(c.Files[0].Name), data, true
}

// shebangArgs is the argv the kernel would make of executing script at
// target: the interpreter, its one optional argument, the script path. The
// script is mounted noexec, so minibuild does the kernel's part.
func shebangArgs(script, target string) []string {
	line, _, _ := strings.Cut(strings.TrimPrefix(script, "#!"), "\n")
	line = strings.TrimSpace(line)
	interp, arg := line, ""
	if i := strings.IndexAny(line, " \t"); i >= 0 {
		interp, arg = line[:i], strings.TrimSpace(line[i+1:])
	}
	if arg == "" {
		return []string{interp, target}
	}
	return []string{interp, arg, target}
}

func (s *step) executeRun(ctx context.Context, c *instructions.RunCommand, mounts []*runMount, network sandbox.Network) (*cache.Record, error) {
	s.warnFallbacks(network)
	ms, err := s.setupMounts(ctx, mounts)
	if err != nil {
		return nil, err
	}
	defer ms.Release()
	out := &lineWriter{redact: redactor(mounts), emit: func(line string) {
		s.run.b.opts.Progress(Event{Kind: KindLog, Stage: s.run.name, Step: s.n, Steps: s.run.steps, Line: line})
	}}
	spec, err := s.runSpec(ctx, c, ms, network, out)
	if err != nil {
		return nil, err
	}
	snap, err := s.run.b.opts.Snapshots.Prepare(ctx, s.run.state.layers, append(sandbox.MountPoints(), ms.points...)...)
	if err != nil {
		return nil, err
	}
	defer snap.Release()
	spec.Rootfs = snap.Mounts()
	err = sandbox.Run(ctx, spec)
	out.Flush()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var exit *sandbox.ExitError
		if errors.As(err, &exit) {
			return nil, &RunError{Code: exit.Code, Tail: out.Tail()}
		}
		return nil, err
	}
	return s.diffRecord(ctx, snap, "RUN "+strings.Join(s.runArgs(c), " "))
}

// warnFallbacks says once why RUN runs less isolated than asked: copying
// where overlayfs is refused, the host network where slirp4netns is not.
func (s *step) warnFallbacks(network sandbox.Network) {
	if why := s.run.b.opts.Snapshots.Probe(); why != nil {
		s.run.b.warn(fmt.Sprintf("overlay snapshots do not work here (%v); copying instead", why))
	}
	if network == sandbox.NetworkDefault {
		if why := sandbox.ProbeNetwork(); why != nil {
			s.run.b.warn(why.Error())
		}
	}
}

// runSpec is what the sandbox runs: the command as the image's USER, in
// its WORKDIR, with its environment and the step's mounts.
func (s *step) runSpec(ctx context.Context, c *instructions.RunCommand, ms *mountSetup, network sandbox.Network, out *lineWriter) (sandbox.Spec, error) {
	cfg := &s.run.state.config.Config
	id, err := resolveUser(s.run.imageFiles(ctx), cfg.User)
	if err != nil {
		return sandbox.Spec{}, err
	}
	if target, data, ok := heredocScript(c); ok {
		ms.files = append(ms.files, sandbox.File{Target: target, Data: []byte(data), Mode: 0o755})
	}
	cwd := cfg.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	return sandbox.Spec{
		Args:       s.runArgs(c),
		Env:        runEnv(append(s.run.scope.RunEnv(), ms.env...), id),
		Cwd:        cwd,
		UID:        id.UID,
		GID:        id.GID,
		ExtraGIDs:  id.Groups,
		Hostname:   runHostname,
		Mounts:     ms.mounts,
		Files:      ms.files,
		Network:    network,
		Insecure:   instructions.GetSecurity(c) == instructions.SecurityInsecure,
		ExtraHosts: s.run.b.opts.ExtraHosts,
		Net:        &s.run.b.net,
		Stdout:     out,
		Stderr:     out,
	}, nil
}

// diffRecord turns what the RUN changed into its layer and record; a RUN
// that changed nothing adds no layer, as BuildKit does.
func (s *step) diffRecord(ctx context.Context, snap *snapshot.Snapshot, createdBy string) (*cache.Record, error) {
	entries := 0
	l, err := s.writeLayer(ctx, func(w *layer.Writer) error {
		err := snap.Diff(w)
		entries = w.Entries()
		return err
	})
	if err != nil {
		return nil, err
	}
	if entries == 0 {
		return &cache.Record{Config: s.config(), History: s.history(createdBy, true)}, nil
	}
	return &cache.Record{Layer: l, Config: s.config(), History: s.history(createdBy, false)}, nil
}

// runHostname is a RUN's hostname, and its HOSTNAME unless the image sets one.
const runHostname = "minibuild"

// runEnv completes a RUN's environment as runc and docker do, without
// touching the image config: PATH when the image sets none, HOME from the
// user's passwd entry (runc's setupUser; "/" without one), HOSTNAME.
func runEnv(env []string, id identity) []string {
	for _, kv := range [][2]string{{"PATH", defaultPath}, {"HOME", id.Home}, {"HOSTNAME", runHostname}} {
		if v, ok := lookupEnv(env, kv[0]); !ok || (kv[0] == "HOME" && v == "") {
			env = setEnv(env, kv[0], kv[1]) // an empty HOME is no HOME to runc
		}
	}
	return env
}

// RunError is a RUN whose command exited non-zero.
type RunError struct {
	Code int
	Tail []string // the last lines of its output
}

func (e *RunError) Error() string {
	msg := fmt.Sprintf("command exited with code %d", e.Code)
	if len(e.Tail) > 0 {
		msg += "; last output:\n  " + strings.Join(e.Tail, "\n  ")
	}
	return msg
}

// lineWriter splits a RUN's output into lines for progress and keeps the
// last few for an error message. RUN stdout and stderr share it.
type lineWriter struct {
	mu   sync.Mutex
	emit func(string)
	// redact, when set, rewrites each line first (secret values).
	redact func(string) string
	buf    bytes.Buffer
	tail   []string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		i := bytes.IndexByte(w.buf.Bytes(), '\n')
		if i < 0 {
			break
		}
		w.line(string(w.buf.Next(i + 1)[:i]))
	}
	return len(p), nil
}

func (w *lineWriter) line(l string) {
	l = strings.TrimRight(l, "\r")
	if w.redact != nil {
		l = w.redact(l)
	}
	w.emit(l)
	w.tail = append(w.tail, l)
	if len(w.tail) > tailLines {
		w.tail = w.tail[1:]
	}
}

// Flush emits a last line that has no newline.
func (w *lineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf.Len() > 0 {
		w.line(w.buf.String())
		w.buf.Reset()
	}
}

// Tail returns the last lines written.
func (w *lineWriter) Tail() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.tail...)
}
