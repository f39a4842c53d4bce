// Package parser turns a Dockerfile into stages of typed instructions.
//
// The syntax is BuildKit's: the line parser (directives, continuations,
// comments, heredocs), the typed instructions and the shell lexer used for
// variable expansion all come from github.com/moby/buildkit/frontend/dockerfile.
// This package adds what minibuild needs around them: errors that name the
// file and line, deep-copying expansion (a parsed Dockerfile is shared by
// stages and builds and is never mutated), a canonical text of an instruction
// for cache keys, and docker's ARG/ENV scoping rules.
package parser

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
	"unicode"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// Dockerfile is a parsed Dockerfile. It is read-only once returned: Expand
// copies before it changes anything.
type Dockerfile struct {
	File     string                    // name used in messages, e.g. "Dockerfile"
	Escape   rune                      // '\\' or '`' (from "# escape=")
	Syntax   string                    // "# syntax=" directive, "" if none
	MetaArgs []instructions.ArgCommand // ARGs before the first FROM, unexpanded
	Stages   []Stage                   // in file order
	Warnings []string                  // "Dockerfile:LINE: Rule: message" from BuildKit's linter
}

// Stage is one FROM and the instructions that follow it.
type Stage struct {
	Name     string // lowercased AS name, "" if none
	BaseName string // the FROM argument as written (unexpanded)
	Platform string // --platform as written (unexpanded), "" if none
	Line     int    // line of the FROM
	EndLine  int    // last line of the FROM (continuations)
	Original string // source text of the FROM instruction
	Steps    []Step
}

// Step is one instruction of a stage.
type Step struct {
	Line, EndLine int    // first and last source line (heredoc bodies included)
	Original      string // source text, continuations joined, without heredoc bodies
	Cmd           instructions.Command
}

type warning struct {
	line int
	text string
}

// Error is a user-facing Dockerfile error that names the file and line.
type Error struct {
	File string
	Line int // 1-based; 0 when the error concerns the whole file
	Msg  string
	Err  error // the underlying BuildKit error, if any
}

// Error formats as "FILE:LINE: message" ("FILE: message" without a line).
func (e *Error) Error() string {
	if e.Line <= 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// Unwrap returns the underlying BuildKit error.
func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an *Error for file and line.
func Errorf(file string, line int, format string, args ...any) *Error {
	return &Error{File: file, Line: line, Msg: fmt.Sprintf(format, args...)}
}

// Parse reads and parses a Dockerfile. file is the name used in messages.
// Every error is an *Error.
func Parse(r io.Reader, file string) (*Dockerfile, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, &Error{File: file, Msg: fmt.Sprintf("read: %v", err), Err: err}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		// BuildKit's message for an empty file (dockerfile2llb).
		return nil, Errorf(file, 0, "the Dockerfile cannot be empty")
	}

	df := &Dockerfile{File: file}
	if v, _, _, ok := bkparser.ParseDirective("syntax", data); ok {
		df.Syntax = v
	}
	var warns []warning
	res, lint, err := parseAST(data, file, &warns)
	if err != nil {
		return nil, err
	}
	df.Escape = res.EscapeToken

	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		return nil, wrapError(file, errorLine(err), err)
	}
	if len(stages) == 0 {
		line := 0
		if len(res.AST.Children) > 0 {
			line = res.AST.Children[len(res.AST.Children)-1].StartLine
		}
		return nil, Errorf(file, line, "dockerfile contains no stages to build")
	}
	df.MetaArgs = metaArgs

	seen := map[string]bool{}
	for _, st := range stages {
		s, err := convertStage(st, file, lint, seen)
		if err != nil {
			return nil, err
		}
		df.Stages = append(df.Stages, s)
	}
	// Warnings come from several passes; present them in file order.
	sort.SliceStable(warns, func(i, j int) bool { return warns[i].line < warns[j].line })
	for _, w := range warns {
		df.Warnings = append(df.Warnings, w.text)
	}
	return df, nil
}

// parseAST runs BuildKit's line parser over data, with a linter that
// collects warnings into warns (the empty-continuation ones included).
func parseAST(data []byte, file string, warns *[]warning) (*bkparser.Result, *linter.Linter, error) {
	lint, err := newLinter(data, file, warns)
	if err != nil {
		return nil, nil, &Error{File: file, Line: directiveLine(data, "check"), Msg: err.Error(), Err: err}
	}
	res, err := bkparser.Parse(bytes.NewReader(data))
	if err != nil {
		line := errorLine(err)
		// Directive errors are located 0-based by BuildKit's line parser
		// (the line counter has not advanced yet); everything else is 1-based.
		if n := directiveBlockLines(data); line < n {
			line++
		}
		return nil, nil, wrapError(file, line, err)
	}
	for _, w := range res.Warnings {
		if w.URL == linter.RuleNoEmptyContinuation.URL && w.Location != nil {
			lint.Run(&linter.RuleNoEmptyContinuation, []bkparser.Range{*w.Location}, linter.RuleNoEmptyContinuation.Format())
		}
	}
	return res, lint, nil
}

// convertStage turns one of BuildKit's stages into a Stage, running the
// stage-level lint rules (seen holds the names of the stages before it)
// and the parse-time checks of each command.
func convertStage(st instructions.Stage, file string, lint *linter.Linter, seen map[string]bool) (Stage, error) {
	start, end := lines(st.Location)
	s := Stage{
		Name:     st.Name,
		BaseName: st.BaseName,
		Platform: st.Platform,
		Line:     start,
		EndLine:  end,
		Original: st.SourceCode,
	}
	if st.Name != "" {
		if seen[st.Name] {
			lint.Run(&linter.RuleDuplicateStageName, st.Location, linter.RuleDuplicateStageName.Format(st.Name))
		}
		seen[st.Name] = true
		if st.Name == "scratch" || st.Name == "context" {
			lint.Run(&linter.RuleReservedStageName, st.Location, linter.RuleReservedStageName.Format(st.Name))
		}
	}
	hasShell := false
	for _, cmd := range st.Commands {
		start, end := lines(cmd.Location())
		if err := checkCommand(cmd); err != nil {
			return Stage{}, wrapError(file, start, err)
		}
		switch c := cmd.(type) {
		case *instructions.ShellCommand:
			hasShell = true
		case *instructions.CmdCommand, *instructions.EntrypointCommand:
			// As dockerfile2llb: shell form without a SHELL gets a hint.
			if sd := shellDependant(c); sd != nil && sd.PrependShell && !hasShell {
				lint.Run(&linter.RuleJSONArgsRecommended, cmd.Location(), linter.RuleJSONArgsRecommended.Format(cmd.Name()))
			}
		}
		s.Steps = append(s.Steps, Step{
			Line:     start,
			EndLine:  end,
			Original: source(cmd),
			Cmd:      cmd,
		})
	}
	return s, nil
}

// checkCommand applies BuildKit's parse-time checks that live in
// dockerfile2llb rather than in the instructions package.
func checkCommand(cmd instructions.Command) error {
	c, ok := cmd.(*instructions.CopyCommand)
	if !ok || c.From == "" {
		return nil
	}
	res, err := shell.NewLex('\\').ProcessWordWithMatches(c.From, shell.EnvsFromSlice(nil))
	if err != nil {
		return err
	}
	if res.Result != c.From {
		return errors.New("variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround")
	}
	return nil
}

func shellDependant(cmd instructions.Command) *instructions.ShellDependantCmdLine {
	switch c := cmd.(type) {
	case *instructions.CmdCommand:
		return &c.ShellDependantCmdLine
	case *instructions.EntrypointCommand:
		return &c.ShellDependantCmdLine
	case *instructions.RunCommand:
		return &c.ShellDependantCmdLine
	}
	return nil
}

// source is the instruction's text as BuildKit keeps it (continuations
// joined, comments dropped, trimmed).
func source(cmd instructions.Command) string {
	if s, ok := cmd.(fmt.Stringer); ok {
		return s.String()
	}
	return cmd.Name()
}

// lines returns the first and last line of a BuildKit location.
func lines(loc []bkparser.Range) (start, end int) {
	for i, r := range loc {
		if i == 0 || r.Start.Line < start {
			start = r.Start.Line
		}
		if r.End.Line > end {
			end = r.End.Line
		}
	}
	return start, end
}

// errorLine finds the line BuildKit attached to err (0 if none).
func errorLine(err error) int {
	var le *bkparser.LocationError
	if errors.As(err, &le) {
		for _, loc := range le.Locations {
			if len(loc) > 0 {
				start, _ := lines(loc)
				return start
			}
		}
	}
	return 0
}

// wrapError keeps BuildKit's message but drops its location and
// "dockerfile parse error on line N:" wrapping.
func wrapError(file string, line int, err error) *Error {
	msg := err.Error()
	var le *bkparser.LocationError
	if errors.As(err, &le) && le.Unwrap() != nil {
		msg = le.Unwrap().Error()
	}
	return &Error{File: file, Line: line, Msg: msg, Err: err}
}

// directiveBlockLines counts the leading lines BuildKit's directive parser
// looks at: the parser directives, plus the line that ended the block or
// failed.
func directiveBlockLines(data []byte) int {
	var p bkparser.DirectiveParser
	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 0
	for sc.Scan() {
		line := sc.Bytes()
		if n == 0 {
			line = bytes.TrimPrefix(line, []byte{0xEF, 0xBB, 0xBF})
		}
		n++
		d, err := p.ParseLine(bytes.TrimLeftFunc(line, unicode.IsSpace))
		if err != nil || d == nil {
			return n
		}
	}
	return n
}

// directiveLine is the 1-based line of directive key, 0 if absent.
func directiveLine(data []byte, key string) int {
	if _, _, loc, ok := bkparser.ParseDirective(key, data); ok && len(loc) > 0 {
		return loc[0].Start.Line
	}
	return 0
}

// newLinter builds a BuildKit linter configured by the "# check=" directive
// whose warnings are collected into warns.
func newLinter(data []byte, file string, warns *[]warning) (*linter.Linter, error) {
	opts, _, _, _ := bkparser.ParseDirective("check", data)
	cfg, err := linter.ParseLintOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("parse check directive: %w", err)
	}
	cfg.Warn = func(rule, _, _, msg string, loc []bkparser.Range) {
		start, _ := lines(loc)
		text := fmt.Sprintf("%s: %s: %s", file, rule, msg)
		if start > 0 {
			text = fmt.Sprintf("%s:%d: %s: %s", file, start, rule, msg)
		}
		*warns = append(*warns, warning{line: start, text: text})
	}
	return linter.New(cfg), nil
}
