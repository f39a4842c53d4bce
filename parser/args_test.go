package parser

import (
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

func TestParseBuildArgs(t *testing.T) {
	env := map[string]string{"FROM_ENV": "e", "EMPTY_ENV": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	got, err := ParseBuildArgs([]string{"A=1", "B=", "C=x=y", "FROM_ENV", "EMPTY_ENV", "NOT_SET", "A=2"}, lookup)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, got, map[string]string{"A": "2", "B": "", "C": "x=y", "FROM_ENV": "e", "EMPTY_ENV": ""})
	for _, bad := range []string{"=v", "", " A=1"} {
		if _, err := ParseBuildArgs([]string{bad}, lookup); err == nil {
			t.Errorf("ParseBuildArgs(%q): no error", bad)
		}
	}
	got, err = ParseBuildArgs([]string{"X"}, nil)
	if err != nil || len(got) != 0 {
		t.Errorf("nil lookup: %v %v", got, err)
	}
}

func TestUnusedBuildArgs(t *testing.T) {
	df := mustParse(t, "ARG GLOBAL\nFROM x\nARG IN_STAGE=1 OTHER\nFROM y\nARG LAST\n")
	args := map[string]string{
		"GLOBAL": "", "IN_STAGE": "", "OTHER": "", "LAST": "",
		"HTTP_PROXY": "p", "no_proxy": "p", "TARGETARCH": "amd64", "BUILDPLATFORM": "x",
		"ZED": "1", "ALPHA": "2",
	}
	eq(t, UnusedBuildArgs(df, args), []string{"ALPHA", "ZED"})
	eq(t, len(UnusedBuildArgs(df, nil)), 0)
}

func TestResolveMetaArgs(t *testing.T) {
	df := mustParse(t, `ARG REG=docker.io
ARG IMG=$REG/library/busybox TAG
ARG FULL=${IMG}:${TAG:-latest}
ARG REQ=${MISSING:?oops}
FROM $FULL AS final
`)
	// REQ's default fails only when it is used, i.e. not overridden.
	_, err := ResolveMetaArgs(df, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "Dockerfile:4: ") || !strings.Contains(err.Error(), "oops") {
		t.Fatalf("error = %v", err)
	}
	meta, err := ResolveMetaArgs(df, map[string]string{"REQ": "x", "TAG": "1.36", "UNDECLARED": "u"})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, meta["IMG"], "docker.io/library/busybox")
	eq(t, meta["FULL"], "docker.io/library/busybox:1.36")
	eq(t, meta["TARGETPLATFORM"], "linux/amd64")
	eq(t, meta["TARGETSTAGE"], "final")
	if _, ok := meta["UNDECLARED"]; ok {
		t.Error("undeclared build arg leaked into the global scope")
	}
	from, err := ExpandWord(df.Stages[0].BaseName, EnvList(meta), df.Escape)
	eq(t, from, "docker.io/library/busybox:1.36")
	eq(t, err, nil)

	// A --build-arg replaces the default and TAG unset stays unset.
	meta, err = ResolveMetaArgsForTarget(df, map[string]string{"REQ": "x", "IMG": "alpine", "TARGETARCH": "arm64"}, "other")
	if err != nil {
		t.Fatal(err)
	}
	eq(t, meta["FULL"], "alpine:latest")
	eq(t, meta["TARGETARCH"], "arm64")
	eq(t, meta["TARGETSTAGE"], "other")
	if _, ok := meta["TAG"]; ok {
		t.Error("TAG declared without value should be unset")
	}
}

func argCmd(t *testing.T, src string) *instructions.ArgCommand {
	t.Helper()
	return onlyStep(t, src).Cmd.(*instructions.ArgCommand)
}

func envCmd(t *testing.T, sc *Scope, src string) {
	t.Helper()
	x, err := Expand(onlyStep(t, src).Cmd, sc.ExpandEnv(), '\\')
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range x.(*instructions.EnvCommand).Env {
		sc.SetEnv(kv.Key, kv.Value)
	}
}

func TestScope(t *testing.T) {
	meta := map[string]string{"GLOBAL": "g", "TARGETARCH": "amd64"}
	build := map[string]string{"OVER": "cli", "HTTP_PROXY": "http://proxy", "PATH": "/evil"}

	sc := NewScope(meta, build, '\\')
	sc.SetBaseEnv([]string{"PATH=/usr/bin:/bin", "HOME=/root"})
	// A global ARG is not visible until re-declared.
	if w, _ := ExpandWord("[$GLOBAL]", sc.ExpandEnv(), '\\'); w != "[]" {
		t.Errorf("global visible before ARG: %q", w)
	}
	if _, err := sc.Arg(argCmd(t, "ARG GLOBAL TARGETARCH")); err != nil {
		t.Fatal(err)
	}
	got, err := sc.Arg(argCmd(t, "ARG OVER=default WITHDEF=${GLOBAL}-x UNSET LATE=${REQ:?needs REQ}"))
	if err == nil {
		t.Fatalf("ARG with failing default: no error (%v)", got)
	}
	got, err = sc.Arg(argCmd(t, "ARG OVER=default WITHDEF=${GLOBAL}-x UNSET"))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, *got[0].Value, "cli") // --build-arg beats the default
	eq(t, *got[1].Value, "g-x") // default expanded with the scope
	eq(t, got[2].Value, (*string)(nil))

	envCmd(t, sc, "ENV WITHDEF=env-wins OTHER=$OVER")
	eq(t, sc.ExpandEnv(), []string{"PATH=/usr/bin:/bin", "HOME=/root", "GLOBAL=g", "TARGETARCH=amd64", "OVER=cli", "WITHDEF=env-wins", "OTHER=cli"})
	eq(t, sc.ImageEnv(), []string{"PATH=/usr/bin:/bin", "HOME=/root", "WITHDEF=env-wins", "OTHER=cli"})
	eq(t, sc.RunEnv(), append(sc.ExpandEnv(), "HTTP_PROXY=http://proxy"))
	eq(t, sc.Args(), []string{"GLOBAL=g", "TARGETARCH=amd64", "OVER=cli", "WITHDEF=env-wins", "UNSET="})

	// A later ARG of an ENV'd name wins (BuildKit order); the image Env keeps the ENV.
	if _, err := sc.Arg(argCmd(t, "ARG OTHER=argval")); err != nil {
		t.Fatal(err)
	}
	if w, _ := ExpandWord("$OTHER", sc.ExpandEnv(), '\\'); w != "argval" {
		t.Errorf("OTHER = %q", w)
	}
	eq(t, sc.ImageEnv()[3], "OTHER=cli")

	// A child stage (FROM this stage) inherits; changes do not flow back.
	child := sc.Clone()
	child.SetEnv("NEW", "1")
	if _, err := child.Arg(argCmd(t, "ARG C=1")); err != nil {
		t.Fatal(err)
	}
	for _, e := range sc.ExpandEnv() {
		if strings.HasPrefix(e, "NEW=") || strings.HasPrefix(e, "C=") {
			t.Errorf("clone leaked %q into the parent", e)
		}
	}
	eq(t, len(child.Args()), len(sc.Args())+1)
}

func TestScopeEmptyBuildArg(t *testing.T) {
	// As BuildKit's testDefaultEnvWithArgs: an empty --build-arg is a value.
	sc := NewScope(nil, map[string]string{"my_arg": ""}, 0)
	if _, err := sc.Arg(argCmd(t, "ARG my_arg=def")); err != nil {
		t.Fatal(err)
	}
	envCmd(t, sc, `ENV my_arg="my_arg=${my_arg:-def_val}"`)
	eq(t, sc.ImageEnv(), []string{"my_arg=my_arg=def_val"})
	eq(t, sc.Args(), []string{"my_arg=my_arg=def_val"})
}
