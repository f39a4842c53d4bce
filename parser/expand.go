package parser

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// Expand returns a deep copy of cmd with docker's variable expansion applied
// over env ("K=V", the last of a key wins), using the command's own BuildKit
// Expand method so the set of expanded fields is exactly BuildKit's:
// RUN/CMD/ENTRYPOINT command lines are left to the shell (only RUN --mount
// values expand), COPY/ADD heredocs with an unquoted delimiter expand, and
// EXPOSE words are expanded and split as dockerfile2llb does. ARG is copied
// unexpanded: its default is expanded by Scope.Arg only when no --build-arg
// replaces it, as BuildKit does. cmd itself is never modified.
func Expand(cmd instructions.Command, env []string, escape rune) (instructions.Command, error) {
	cp, err := clone(cmd, escape)
	if err != nil {
		return nil, err
	}
	envs := shell.EnvsFromSlice(env)
	lex := shell.NewLex(escape)
	switch c := cp.(type) {
	case *instructions.ArgCommand:
		return c, nil
	case *instructions.ExposeCommand:
		var ports []string
		for _, p := range c.Ports {
			ps, err := lex.ProcessWords(p, envs)
			if err != nil {
				return nil, fmt.Errorf("expand EXPOSE: %w", err)
			}
			ports = append(ports, ps...)
		}
		c.Ports = ports
		return c, nil
	}
	if ex, ok := cp.(instructions.SupportsSingleWordExpansion); ok {
		err := ex.Expand(func(word string) (string, error) {
			w, _, err := lex.ProcessWord(word, envs)
			return w, err
		})
		if err != nil {
			return nil, fmt.Errorf("expand %s: %w", strings.ToUpper(cp.Name()), err)
		}
	}
	if ex, ok := cp.(instructions.SupportsSingleWordExpansionRaw); ok {
		// Heredoc bodies: variables only, quotes kept (dockerfile2llb).
		raw := shell.NewLex('\\')
		raw.SkipProcessQuotes = true
		err := ex.ExpandRaw(func(word string) (string, error) {
			w, _, err := raw.ProcessWord(word, envs)
			return w, err
		})
		if err != nil {
			return nil, fmt.Errorf("expand %s heredoc: %w", strings.ToUpper(cp.Name()), err)
		}
	}
	return cp, nil
}

// ExpandWord expands one word (a FROM argument, a --platform value, ...)
// with docker's rules over env ("K=V", the last of a key wins).
func ExpandWord(word string, env []string, escape rune) (string, error) {
	w, _, err := shell.NewLex(escape).ProcessWord(word, shell.EnvsFromSlice(env))
	if err != nil {
		return "", fmt.Errorf("expand %q: %w", word, err)
	}
	return w, nil
}

// clone deep-copies a parsed command so that expanding it cannot reach the
// shared parsed Dockerfile.
func clone(cmd instructions.Command, escape rune) (instructions.Command, error) {
	switch c := cmd.(type) {
	case *instructions.MaintainerCommand:
		return shallow(c), nil
	case *instructions.OnbuildCommand:
		return shallow(c), nil
	case *instructions.WorkdirCommand:
		return shallow(c), nil
	case *instructions.UserCommand:
		return shallow(c), nil
	case *instructions.StopSignalCommand:
		return shallow(c), nil
	case *instructions.AddCommand:
		cp := *c
		cp.SourcesAndDest = cloneSources(c.SourcesAndDest)
		cp.ExcludePatterns = slices.Clone(c.ExcludePatterns)
		cp.KeepGitDir = cloneBool(c.KeepGitDir)
		cp.Unpack = cloneBool(c.Unpack)
		return &cp, nil
	case *instructions.CopyCommand:
		cp := *c
		cp.SourcesAndDest = cloneSources(c.SourcesAndDest)
		cp.ExcludePatterns = slices.Clone(c.ExcludePatterns)
		return &cp, nil
	case *instructions.RunCommand:
		return cloneRun(c, escape)
	}
	if cp := cloneConfig(cmd); cp != nil {
		return cp, nil
	}
	return nil, fmt.Errorf("copy instruction: unsupported type %T", cmd)
}

// shallow copies a command that holds no slice, map or pointer.
func shallow[T any](c *T) *T {
	cp := *c
	return &cp
}

// cloneConfig deep-copies the commands that hold lists of image config
// values; nil for any other command.
func cloneConfig(cmd instructions.Command) instructions.Command {
	switch c := cmd.(type) {
	case *instructions.EnvCommand:
		return copyWith(c, func(cp *instructions.EnvCommand) { cp.Env = slices.Clone(c.Env) })
	case *instructions.LabelCommand:
		return copyWith(c, func(cp *instructions.LabelCommand) { cp.Labels = slices.Clone(c.Labels) })
	case *instructions.CmdCommand:
		return copyWith(c, func(cp *instructions.CmdCommand) { cp.ShellDependantCmdLine = cloneCmdLine(c.ShellDependantCmdLine) })
	case *instructions.EntrypointCommand:
		return copyWith(c, func(cp *instructions.EntrypointCommand) {
			cp.ShellDependantCmdLine = cloneCmdLine(c.ShellDependantCmdLine)
		})
	case *instructions.HealthCheckCommand:
		return copyWith(c, cloneHealth)
	case *instructions.ExposeCommand:
		return copyWith(c, func(cp *instructions.ExposeCommand) { cp.Ports = slices.Clone(c.Ports) })
	case *instructions.VolumeCommand:
		return copyWith(c, func(cp *instructions.VolumeCommand) { cp.Volumes = slices.Clone(c.Volumes) })
	case *instructions.ShellCommand:
		return copyWith(c, func(cp *instructions.ShellCommand) { cp.Shell = slices.Clone(c.Shell) })
	case *instructions.ArgCommand:
		return copyWith(c, cloneArgs)
	}
	return nil
}

// copyWith copies *c, then lets deep replace the copy's shared parts.
func copyWith[T any](c *T, deep func(cp *T)) *T {
	cp := *c
	deep(&cp)
	return &cp
}

// cloneHealth replaces the copy's health check with its own copy.
func cloneHealth(cp *instructions.HealthCheckCommand) {
	if cp.Health != nil {
		h := *cp.Health
		h.Test = slices.Clone(h.Test)
		cp.Health = &h
	}
}

// cloneArgs replaces the copy's ARGs (and their values) with its own.
func cloneArgs(cp *instructions.ArgCommand) {
	args := make([]instructions.KeyValuePairOptional, len(cp.Args))
	for i, a := range cp.Args {
		if a.Value != nil {
			v := *a.Value
			a.Value = &v
		}
		args[i] = a
	}
	cp.Args = args
}

func cloneSources(s instructions.SourcesAndDest) instructions.SourcesAndDest {
	s.SourcePaths = slices.Clone(s.SourcePaths)
	s.SourceContents = slices.Clone(s.SourceContents)
	return s
}

func cloneCmdLine(s instructions.ShellDependantCmdLine) instructions.ShellDependantCmdLine {
	s.CmdLine = slices.Clone(s.CmdLine)
	s.Files = slices.Clone(s.Files)
	return s
}

func cloneBool(b *bool) *bool {
	if b == nil {
		return nil
	}
	v := *b
	return &v
}

// cloneRun re-parses a RUN instruction from its source. A RunCommand keeps
// its --mount/--network state behind unexported fields that its Expand
// mutates in place, so a struct copy would share (and race on) that state;
// parsing the same text again is the only way to get an independent one.
func cloneRun(c *instructions.RunCommand, escape rune) (*instructions.RunCommand, error) {
	var b strings.Builder
	if escape != 0 && escape != bkparser.DefaultEscapeToken {
		fmt.Fprintf(&b, "# escape=%c\n", escape)
	}
	b.WriteString(c.String())
	b.WriteByte('\n')
	for _, f := range c.Files {
		b.WriteString(f.Data)
		b.WriteString(f.Name)
		b.WriteByte('\n')
	}
	res, err := bkparser.Parse(bytes.NewReader([]byte(b.String())))
	if err != nil {
		return nil, fmt.Errorf("copy RUN instruction: %w", err)
	}
	if len(res.AST.Children) != 1 {
		return nil, fmt.Errorf("copy RUN instruction: re-parse gave %d instructions", len(res.AST.Children))
	}
	node := res.AST.Children[0]
	node.StartLine, node.EndLine = lines(c.Location())
	v, err := instructions.ParseInstruction(node)
	if err != nil {
		return nil, fmt.Errorf("copy RUN instruction: %w", err)
	}
	rc, ok := v.(*instructions.RunCommand)
	if !ok || !slices.Equal(rc.CmdLine, c.CmdLine) || rc.PrependShell != c.PrependShell ||
		!slices.Equal(rc.Files, c.Files) || !sameSet(rc.FlagsUsed, c.FlagsUsed) {
		return nil, fmt.Errorf("copy RUN instruction: re-parse of %q differs from the original", c.String())
	}
	return rc, nil
}

// sameSet compares BuildKit's FlagsUsed, which come out of a map in random order.
func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}
