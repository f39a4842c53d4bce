package parser

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// Canonical is a deterministic, unambiguous text of an (expanded)
// instruction: the upper-cased instruction name, a space, and a JSON object
// of every field that changes what the instruction does (flags, JSON vs
// shell form, heredoc bodies, ...). Source formatting that BuildKit parses
// away (spacing between words, continuations, the case of the keyword, the
// key=value vs key value form of ENV/LABEL) does not show.
func Canonical(cmd instructions.Command) string {
	var v any
	switch c := cmd.(type) {
	case *instructions.RunCommand:
		v = canonRun{
			Cmd:      c.CmdLine,
			Shell:    c.PrependShell,
			Files:    c.Files,
			Mounts:   runMounts(c),
			Network:  runNetwork(c),
			Security: runSecurity(c),
			Devices:  runDevices(c),
		}
	case *instructions.CmdCommand:
		v = canonCmdLine{Cmd: c.CmdLine, Shell: c.PrependShell, Files: c.Files}
	case *instructions.EntrypointCommand:
		v = canonCmdLine{Cmd: c.CmdLine, Shell: c.PrependShell, Files: c.Files}
	case *instructions.CopyCommand:
		v = canonCopy{
			canonFiles: files(c.SourcesAndDest),
			From:       c.From,
			canonOwner: canonOwner{Chown: c.Chown, Chmod: c.Chmod, Link: c.Link},
			Parents:    c.Parents,
			Exclude:    nonNil(c.ExcludePatterns),
		}
	case *instructions.AddCommand:
		v = canonAdd{
			canonFiles: files(c.SourcesAndDest),
			canonOwner: canonOwner{Chown: c.Chown, Chmod: c.Chmod, Link: c.Link},
			Exclude:    nonNil(c.ExcludePatterns),
			KeepGitDir: c.KeepGitDir,
			Checksum:   c.Checksum,
			Unpack:     c.Unpack,
		}
	case *instructions.EnvCommand:
		v = pairs(c.Env)
	case *instructions.LabelCommand:
		v = pairs(c.Labels)
	case *instructions.ArgCommand:
		args := make([]canonArg, len(c.Args))
		for i, a := range c.Args {
			args[i] = canonArg{Key: a.Key, Value: a.Value}
		}
		v = args
	case *instructions.WorkdirCommand:
		v = c.Path
	case *instructions.UserCommand:
		v = c.User
	case *instructions.StopSignalCommand:
		v = c.Signal
	case *instructions.MaintainerCommand:
		v = c.Maintainer
	case *instructions.OnbuildCommand:
		v = c.Expression
	case *instructions.ExposeCommand:
		v = nonNil(c.Ports)
	case *instructions.VolumeCommand:
		v = nonNil(c.Volumes)
	case *instructions.ShellCommand:
		v = nonNil(c.Shell)
	case *instructions.HealthCheckCommand:
		v = c.Health
	default:
		// Unknown to this version: the Go representation is still
		// deterministic for the plain data BuildKit commands hold.
		v = fmt.Sprintf("%T %+v", cmd, cmd)
	}
	return strings.ToUpper(cmd.Name()) + " " + marshal(v)
}

type canonRun struct {
	Cmd      []string                       `json:"cmd"`
	Shell    bool                           `json:"shell"`
	Files    []instructions.ShellInlineFile `json:"files,omitempty"`
	Mounts   []*instructions.Mount          `json:"mounts,omitempty"`
	Network  string                         `json:"network,omitempty"`
	Security string                         `json:"security,omitempty"`
	Devices  []*instructions.Device         `json:"devices,omitempty"`
}

type canonCmdLine struct {
	Cmd   []string                       `json:"cmd"`
	Shell bool                           `json:"shell"`
	Files []instructions.ShellInlineFile `json:"files,omitempty"`
}

// canonCopy and canonAdd share their first fields through embedded
// structs, which encoding/json flattens in place: the keys keep the order
// (and so the text) they had as two flat structs.
type canonCopy struct {
	canonFiles
	From string `json:"from,omitempty"`
	canonOwner
	Parents bool     `json:"parents,omitempty"`
	Exclude []string `json:"exclude,omitempty"`
}

type canonAdd struct {
	canonFiles
	canonOwner
	Exclude    []string `json:"exclude,omitempty"`
	KeepGitDir *bool    `json:"keep_git_dir,omitempty"`
	Checksum   string   `json:"checksum,omitempty"`
	Unpack     *bool    `json:"unpack,omitempty"`
}

// canonFiles is what COPY and ADD copy, and where to.
type canonFiles struct {
	Sources  []string                     `json:"src"`
	Heredocs []instructions.SourceContent `json:"heredocs,omitempty"`
	Dest     string                       `json:"dest"`
}

func files(sd instructions.SourcesAndDest) canonFiles {
	return canonFiles{Sources: nonNil(sd.SourcePaths), Heredocs: sd.SourceContents, Dest: sd.DestPath}
}

// canonOwner is how COPY and ADD files land.
type canonOwner struct {
	Chown string `json:"chown,omitempty"`
	Chmod string `json:"chmod,omitempty"`
	Link  bool   `json:"link,omitempty"`
}

type canonArg struct {
	Key   string  `json:"key"`
	Value *string `json:"value"` // null = declared without a value
}

func pairs(kvs instructions.KeyValuePairs) [][2]string {
	out := make([][2]string, len(kvs))
	for i, kv := range kvs {
		out[i] = [2]string{kv.Key, kv.Value}
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func marshal(v any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only plain data reaches here; keep the output deterministic anyway.
		return fmt.Sprintf("%q", fmt.Sprintf("%+v", v))
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// The RUN flag accessors of BuildKit type-assert state that only exists on
// commands made by its parser; a hand-made RunCommand has none.

func runMounts(c *instructions.RunCommand) (m []*instructions.Mount) {
	defer func() { _ = recover() }()
	return instructions.GetMounts(c)
}

func runNetwork(c *instructions.RunCommand) (n string) {
	defer func() { _ = recover() }()
	return instructions.GetNetwork(c)
}

func runSecurity(c *instructions.RunCommand) (s string) {
	defer func() { _ = recover() }()
	return instructions.GetSecurity(c)
}

func runDevices(c *instructions.RunCommand) (d []*instructions.Device) {
	defer func() { _ = recover() }()
	return instructions.GetDevices(c)
}
