package parser

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// proxyArgs are docker's predefined ARGs: usable without an ARG
// instruction, passed to RUN, kept out of the history.
var proxyArgs = []string{
	"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
	"FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy",
	"ALL_PROXY", "all_proxy",
}

// Platform is the only platform minibuild builds for and builds on.
const (
	PlatformOS   = "linux"
	PlatformArch = "amd64"
)

// builtinArgs are BuildKit's automatic platform ARGs (dockerfile2llb
// defaultArgs) for a linux/amd64 build on linux/amd64; TARGETSTAGE is added
// per target.
var builtinArgs = [][2]string{
	{"BUILDPLATFORM", PlatformOS + "/" + PlatformArch},
	{"BUILDOS", PlatformOS},
	{"BUILDOSVERSION", ""},
	{"BUILDARCH", PlatformArch},
	{"BUILDVARIANT", ""},
	{"TARGETPLATFORM", PlatformOS + "/" + PlatformArch},
	{"TARGETOS", PlatformOS},
	{"TARGETOSVERSION", ""},
	{"TARGETARCH", PlatformArch},
	{"TARGETVARIANT", ""},
}

// ParseBuildArgs turns --build-arg values into a map: "K=V" (V may be empty
// or contain "="), or "K" alone, which takes K's value from lookupEnv and is
// dropped when K is unset there (docker's behaviour).
func ParseBuildArgs(flags []string, lookupEnv func(string) (string, bool)) (map[string]string, error) {
	out := make(map[string]string, len(flags))
	for _, f := range flags {
		k, v, hasValue := strings.Cut(f, "=")
		if k == "" || strings.TrimSpace(k) != k {
			return nil, fmt.Errorf("invalid build arg %q: expected NAME=VALUE or NAME", f)
		}
		if !hasValue {
			if lookupEnv == nil {
				continue
			}
			ev, ok := lookupEnv(k)
			if !ok {
				continue
			}
			v = ev
		}
		out[k] = v
	}
	return out, nil
}

// UnusedBuildArgs lists, sorted, the names in args that no ARG instruction
// of df declares (globally or in any stage), leaving out docker's
// predefined proxy ARGs and BuildKit's automatic platform ARGs.
func UnusedBuildArgs(df *Dockerfile, args map[string]string) []string {
	declared := map[string]bool{"TARGETSTAGE": true, "SOURCE_DATE_EPOCH": true}
	for _, name := range proxyArgs {
		declared[name] = true
	}
	for _, kv := range builtinArgs {
		declared[kv[0]] = true
	}
	for _, a := range df.MetaArgs {
		for _, kv := range a.Args {
			declared[kv.Key] = true
		}
	}
	for _, st := range df.Stages {
		for _, step := range st.Steps {
			if a, ok := step.Cmd.(*instructions.ArgCommand); ok {
				for _, kv := range a.Args {
					declared[kv.Key] = true
				}
			}
		}
	}
	var unused []string
	for k := range args {
		if !declared[k] {
			unused = append(unused, k)
		}
	}
	sort.Strings(unused)
	return unused
}

// ResolveMetaArgs resolves the global scope (the ARGs before the first
// FROM) for the default target, the last stage.
func ResolveMetaArgs(df *Dockerfile, buildArgs map[string]string) (map[string]string, error) {
	return ResolveMetaArgsForTarget(df, buildArgs, "")
}

// ResolveMetaArgsForTarget resolves the global scope as dockerfile2llb does:
// the automatic platform ARGs and TARGETSTAGE (each replaceable by a
// --build-arg), then each global ARG in order, its value the --build-arg if
// given, else its default expanded with the ones before it. A global ARG
// declared without a value and not given stays unset. The result expands
// FROM lines (ExpandWord with EnvList) and seeds NewScope. target "" means
// the last stage.
func ResolveMetaArgsForTarget(df *Dockerfile, buildArgs map[string]string, target string) (map[string]string, error) {
	if target == "" && len(df.Stages) > 0 {
		target = df.Stages[len(df.Stages)-1].Name
	}
	if target == "" {
		target = "default"
	}
	var env envList
	for _, kv := range append(slices.Clone(builtinArgs), [2]string{"TARGETSTAGE", target}) {
		v := kv[1]
		if ov, ok := buildArgs[kv[0]]; ok {
			v = ov
		}
		env.set(kv[0], v)
	}
	lex := shell.NewLex(escapeOf(df))
	for _, cmd := range df.MetaArgs {
		for _, kv := range cmd.Args {
			if v, ok := buildArgs[kv.Key]; ok {
				env.set(kv.Key, v)
				continue
			}
			if kv.Value == nil {
				continue
			}
			v, _, err := lex.ProcessWord(*kv.Value, env.getter())
			if err != nil {
				line, _ := lines(cmd.Location())
				return nil, &Error{File: df.File, Line: line, Msg: err.Error(), Err: err}
			}
			env.set(kv.Key, v)
		}
	}
	return env.toMap(), nil
}

// EnvList turns a map into a sorted "K=V" list for Expand and ExpandWord.
func EnvList(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, k+"="+m[k])
	}
	return out
}

func escapeOf(df *Dockerfile) rune {
	if df.Escape == 0 {
		return '\\'
	}
	return df.Escape
}

// Scope is the ARG/ENV state of one stage while it is walked, with
// BuildKit's rules (dockerfile2llb dispatchArg/dispatchEnv):
//
//   - the environment seen by expansion and by RUN starts as the base
//     image's Env; ARG (when it has a value) and ENV set variables in it in
//     instruction order, the later one winning, so an ENV overrides an
//     earlier ARG of the same name (and an ARG a preceding ENV);
//   - an ARG's value is its --build-arg if given, else its default (expanded
//     now, with the current environment), else the global ARG value of the
//     same name, else it is declared but unset (not in the environment);
//   - global ARGs are visible in a stage only once re-declared;
//   - the image config Env gets ENV only, never ARG.
//
// A Scope is not safe for concurrent use; Clone it for a stage that starts
// FROM another stage (BuildKit carries the parent's ARGs over).
type Scope struct {
	meta      map[string]string
	buildArgs map[string]string
	escape    rune
	env       envList // what expansion and RUN see
	imageEnv  envList // base Env + ENV: the image config
	args      []instructions.KeyValuePairOptional
}

// NewScope starts a stage scope. meta is the resolved global scope
// (ResolveMetaArgs), buildArgs the --build-arg values, escape the
// Dockerfile's escape token.
func NewScope(meta, buildArgs map[string]string, escape rune) *Scope {
	if escape == 0 {
		escape = '\\'
	}
	return &Scope{meta: meta, buildArgs: buildArgs, escape: escape}
}

// SetBaseEnv sets the environment inherited from the base image's config
// ("K=V" list); call it right after NewScope for FROM <image>.
func (s *Scope) SetBaseEnv(env []string) {
	s.env = parseEnvList(env)
	s.imageEnv = parseEnvList(env)
}

// Clone copies the scope, for a stage that is FROM this stage.
func (s *Scope) Clone() *Scope {
	cp := *s
	cp.env = slices.Clone(s.env)
	cp.imageEnv = slices.Clone(s.imageEnv)
	cp.args = slices.Clone(s.args)
	return &cp
}

// Arg applies an ARG instruction as parsed (not expanded: the default is
// expanded here, and only when no --build-arg replaces it, so
// ARG X=${Y:?required} fails only when used). It returns the resolved
// pairs, Value nil for declared-but-unset, e.g. for the history
// ("ARG K=V").
func (s *Scope) Arg(cmd *instructions.ArgCommand) ([]instructions.KeyValuePairOptional, error) {
	lex := shell.NewLex(s.escape)
	out := make([]instructions.KeyValuePairOptional, 0, len(cmd.Args))
	for _, a := range cmd.Args {
		bv, hasValue := s.buildArgs[a.Key]
		switch {
		case hasValue:
			a.Value = &bv
		case a.Value != nil:
			v, _, err := lex.ProcessWord(*a.Value, s.env.getter())
			if err != nil {
				return nil, fmt.Errorf("expand ARG %s: %w", a.Key, err)
			}
			a.Value = &v
		default:
			if v, ok := s.meta[a.Key]; ok {
				a.Value = &v
			}
		}
		if a.Value != nil {
			s.env.set(a.Key, *a.Value)
		}
		s.args = append(s.args, a)
		out = append(out, a)
	}
	return out, nil
}

// SetEnv applies one (expanded) ENV pair.
func (s *Scope) SetEnv(k, v string) {
	s.env.set(k, v)
	s.imageEnv.set(k, v)
}

// ExpandEnv is the environment for Expand/ExpandWord of the next
// instruction: base Env, ARGs and ENVs in scope.
func (s *Scope) ExpandEnv() []string { return s.env.list() }

// RunEnv is the environment of a RUN: ExpandEnv plus docker's predefined
// proxy variables given as --build-arg (which need no ARG) unless already set.
func (s *Scope) RunEnv() []string {
	env := slices.Clone(s.env)
	for _, k := range proxyArgs {
		if v, ok := s.buildArgs[k]; ok {
			if _, set := env.get(k); !set {
				env.set(k, v)
			}
		}
	}
	return env.list()
}

// ImageEnv is the Env of the image config: base Env plus ENV, no ARG.
func (s *Scope) ImageEnv() []string { return s.imageEnv.list() }

// Args lists the ARGs in scope as "K=V" in declaration order, each name once
// and with the value a RUN sees (an ENV of the same name wins; "" when
// unset). BuildKit records exactly this in a RUN's history ("RUN |2 A=1
// B=2 ..."); it belongs in a RUN's cache key.
func (s *Scope) Args() []string {
	var out []string
	idx := map[string]int{}
	for _, a := range s.args {
		v, ok := s.env.get(a.Key)
		if !ok {
			v = a.ValueString()
		}
		if i, ok := idx[a.Key]; ok {
			out[i] = a.Key + "=" + v
			continue
		}
		idx[a.Key] = len(out)
		out = append(out, a.Key+"="+v)
	}
	return out
}

// envList is an ordered environment; setting an existing key replaces it in
// place, as docker does for the image Env.
type envList [][2]string

func parseEnvList(env []string) envList {
	var l envList
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		l.set(k, v)
	}
	return l
}

func (l *envList) set(k, v string) {
	for i := range *l {
		if shell.EqualEnvKeys((*l)[i][0], k) {
			(*l)[i] = [2]string{k, v}
			return
		}
	}
	*l = append(*l, [2]string{k, v})
}

func (l envList) get(k string) (string, bool) {
	for _, kv := range l {
		if shell.EqualEnvKeys(kv[0], k) {
			return kv[1], true
		}
	}
	return "", false
}

func (l envList) list() []string {
	out := make([]string, len(l))
	for i, kv := range l {
		out[i] = kv[0] + "=" + kv[1]
	}
	return out
}

func (l envList) toMap() map[string]string {
	m := make(map[string]string, len(l))
	for _, kv := range l {
		m[kv[0]] = kv[1]
	}
	return m
}

func (l envList) getter() shell.EnvGetter { return shell.EnvsFromSlice(l.list()) }
