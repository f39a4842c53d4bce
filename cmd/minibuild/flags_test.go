package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestKeyValues(t *testing.T) {
	got, err := keyValues([]string{"a=1", "b=x=y", "c", "a=2"}, "--label")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": "2", "b": "x=y", "c": ""} // K alone is K="", as docker; the last wins
	if len(got) != len(want) {
		t.Errorf("%v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if m, err := keyValues(nil, "--label"); m != nil || err != nil {
		t.Errorf("no flags: %v, %v; want nil", m, err)
	}
	if _, err := keyValues([]string{"=v"}, "--label"); err == nil || !strings.Contains(err.Error(), `--label "=v"`) {
		t.Errorf("an empty key: %v", err)
	}
}

func TestReadDockerfile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "other.Dockerfile"), []byte("FROM busybox\n"), 0o644)

	b, name, err := readDockerfile("", dir)
	if err != nil || string(b) != "FROM scratch\n" || name != "Dockerfile" {
		t.Errorf("default: %q %q %v", b, name, err)
	}
	b, name, err = readDockerfile(filepath.Join(dir, "other.Dockerfile"), dir)
	if err != nil || string(b) != "FROM busybox\n" || name != "other.Dockerfile" {
		t.Errorf("-f: %q %q %v; errors name the file by its base name", b, name, err)
	}
	if _, _, err := readDockerfile(filepath.Join(dir, "missing"), dir); err == nil || !strings.Contains(err.Error(), "read Dockerfile") {
		t.Errorf("missing: %v", err)
	}

	// A FIFO is an error at once, never a wait for a writer.
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readDockerfile(fifo, dir); err == nil || !strings.Contains(err.Error(), "is a FIFO") {
		t.Errorf("a FIFO: %v", err)
	}

	stdin := filepath.Join(dir, "stdin")
	os.WriteFile(stdin, []byte("FROM stdin\n"), 0o644)
	f, _ := os.Open(stdin)
	defer f.Close()
	saved := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = saved }()
	b, name, err = readDockerfile("-", dir)
	if err != nil || string(b) != "FROM stdin\n" || name != "Dockerfile" {
		t.Errorf("-f -: %q %q %v", b, name, err)
	}
}

func TestSourceDateEpoch(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "")
	if e, err := sourceDateEpoch(); e != nil || err != nil {
		t.Errorf("unset: %v %v", e, err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	if e, err := sourceDateEpoch(); err != nil || e.Unix() != 1700000000 || e.Location().String() != "UTC" {
		t.Errorf("set: %v %v", e, err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
	if _, err := sourceDateEpoch(); err == nil {
		t.Error("a non-number was accepted")
	}
}

// executorOptions turns the input flags into executor.Options: an absolute
// context, the Dockerfile, build args, labels and secrets.
func TestExecutorOptions(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\n"), 0o644)
	t.Setenv("FROM_ENV", "e")
	t.Setenv("SOURCE_DATE_EPOCH", "")
	t.Chdir(dir)
	b := &buildOptions{global: &globalOptions{root: "/r"}, buildArgs: []string{"A=1", "FROM_ENV"}, labels: []string{"l=v"},
		secrets: []string{"id=s,env=FROM_ENV"}, target: "t", network: "none", jobs: 2}
	opts, err := b.executorOptions(".", nil)
	if err != nil {
		t.Fatal(err)
	}
	if opts.ContextDir != dir || opts.StateDir != "/r/buildctx" || string(opts.Dockerfile) != "FROM scratch\n" || opts.DockerfileName != "Dockerfile" {
		t.Errorf("paths: %+v", opts)
	}
	if opts.BuildArgs["A"] != "1" || opts.BuildArgs["FROM_ENV"] != "e" || opts.Labels["l"] != "v" || string(opts.Secrets["s"]) != "e" {
		t.Errorf("args %v labels %v secrets %v", opts.BuildArgs, opts.Labels, opts.Secrets)
	}
	if opts.Target != "t" || opts.Network != "none" || opts.Jobs != 2 {
		t.Errorf("policy: %+v", opts)
	}
	if _, err := b.executorOptions(filepath.Join(dir, "Dockerfile"), nil); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("a file as the context: %v", err)
	}
}
