package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/minibuild/minibuild/executor"
	"github.com/minibuild/minibuild/export"
	"github.com/minibuild/minibuild/store"
)

func TestReadVersion(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.99", Main: debug.Module{Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"}}}
	v := readVersion(func() (*debug.BuildInfo, bool) { return bi, true })
	if v.Version != "devel" || v.Commit != "abc123" || !v.Modified || v.GoVersion != "go1.99" {
		t.Errorf("%+v", v)
	}
	if s := v.String(); !strings.Contains(s, "minibuild devel") || !strings.Contains(s, "commit: abc123 (modified)") || !strings.Contains(s, "go: go1.99") {
		t.Errorf("%q", s)
	}
	if v := readVersion(func() (*debug.BuildInfo, bool) { return nil, false }); v.Version != "devel" || v.Commit != "unknown" {
		t.Errorf("without build info: %+v", v)
	}
}

func TestVersionCommandAndFlag(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		cmd := newRootCommand()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs(args)
		if err := cmd.Execute(); err != nil || !strings.HasPrefix(out.String(), "minibuild ") || !strings.Contains(out.String(), "go: go") {
			t.Errorf("%v: %q, %v", args, out.String(), err)
		}
	}
}

func TestSuggestions(t *testing.T) {
	t.Chdir(t.TempDir())
	for args, want := range map[string]string{
		"imgaes":            "Did you mean this?\n\timages",
		"biuld .":           "Did you mean this?\n\tbuild",
		"build --tga x .":   "Did you mean this?\n\t--tag",
		"--no-cahce .":      "--no-cache",
		"images --rooot x":  "--root",
		"build --progres x": "--progress",
	} {
		cmd := newRootCommand()
		cmd.SetArgs(strings.Fields(args))
		cmd.SetOut(&bytes.Buffer{})
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", args, err, want)
		}
	}
	if levenshtein("kitten", "sitting") != 3 || levenshtein("", "ab") != 2 {
		t.Error("levenshtein")
	}
}

func TestErrorsInJSONMode(t *testing.T) {
	cmd := newRootCommand()
	var out bytes.Buffer
	reportError(&out, cmd, []string{"build", "--progress=json", "."}, errors.New("boom\nsecond line"))
	var ev map[string]string
	if err := json.Unmarshal(out.Bytes(), &ev); err != nil || ev["event"] != "error" || ev["message"] != "boom\nsecond line" {
		t.Errorf("%q: %v", out.String(), err)
	}
	if _, err := time.Parse(time.RFC3339, ev["time"]); err != nil {
		t.Errorf("time %q: %v", ev["time"], err)
	}
	out.Reset()
	reportError(&out, cmd, []string{"build", "--progress", "plain", "."}, errors.New("boom"))
	if out.String() != "error: boom\n" {
		t.Errorf("plain: %q", out.String())
	}
	if !progressIsJSON(nil, []string{"push", "--progress", "json", "x"}) || progressIsJSON(nil, []string{"build", "."}) {
		t.Error("progressIsJSON")
	}
}

// Every json event has an RFC 3339 time; a warning is an event with a
// message.
func TestJSONEventsHaveTimes(t *testing.T) {
	var buf bytes.Buffer
	at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	p := &jsonProgress{enc: json.NewEncoder(&buf), now: func() time.Time { return at }}
	p.Event(executor.Event{Kind: executor.KindWarning, Line: "careful"})
	p.Event(executor.Event{Kind: executor.KindLog, Line: "out"})
	p.Result(testResult, nil, time.Second)
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev["time"] != "2024-05-06T07:08:09Z" {
			t.Errorf("%s: %v", line, err)
		}
		if ev["event"] == "warning" && ev["message"] != "careful" {
			t.Errorf("warning %s", line)
		}
	}
}

func TestTermEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	if c := codesFor(readTermEnv(env(map[string]string{"NO_COLOR": "1", "TERM": "xterm"}))); c.blue != "" || c.reset != "" || c.clear == "" {
		t.Errorf("NO_COLOR: %+v", c)
	}
	if c := codesFor(readTermEnv(env(map[string]string{"TERM": "dumb"}))); c != (ttyCodes{}) {
		t.Errorf("TERM=dumb: %+v", c)
	}
	if c := codesFor(readTermEnv(env(map[string]string{"NO_COLOR": ""}))); c.blue == "" {
		t.Errorf("an empty NO_COLOR keeps colours: %+v", c)
	}
	var buf bytes.Buffer
	tp := &ttyProgress{w: &buf, width: 80, esc: ttyCodes{}, running: map[string]runningStep{}}
	tp.Event(executor.Event{Kind: executor.KindStep, Step: 1, Steps: 1, Instruction: "RUN x", Status: executor.StatusRunning})
	tp.Event(executor.Event{Kind: executor.KindStep, Step: 1, Steps: 1, Instruction: "RUN x", Status: executor.StatusDone})
	if strings.ContainsRune(buf.String(), '\x1b') || strings.ContainsRune(buf.String(), '\r') {
		t.Errorf("TERM=dumb output has control codes: %q", buf.String())
	}
}

func TestBuildNeedsRootBeforeAnyWork(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	b := &buildOptions{global: &globalOptions{root: root}, geteuid: func() int { return 1000 }}
	if _, err := b.run(t.Context(), "/nonexistent", quietProgress{}); err == nil || err.Error() != needRoot {
		t.Errorf("not root: %v", err)
	}
	if _, err := os.Stat(root); err == nil {
		t.Error("the store was created before the root check")
	}
}

func TestBuildRefusesNegativeJobs(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	b := &buildOptions{global: &globalOptions{root: root}, geteuid: func() int { return 0 }, jobs: -1}
	if _, err := b.run(t.Context(), "/nonexistent", quietProgress{}); err == nil || !strings.Contains(err.Error(), "--jobs -1") {
		t.Errorf("--jobs -1: %v", err)
	}
	if _, err := os.Stat(root); err == nil {
		t.Error("the store was created before the --jobs check")
	}
}

func TestCheckStdout(t *testing.T) {
	plan, err := export.NewPlan(export.Request{Outputs: []string{"-"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := (&buildOptions{quiet: true}).checkStdout(plan, false); err == nil || !strings.Contains(err.Error(), "-q") {
		t.Errorf("-q with -o -: %v", err)
	}
	if err := (&buildOptions{progress: "plain"}).checkStdout(plan, true); err == nil || !strings.Contains(err.Error(), "terminal") {
		t.Errorf("-o - to a terminal: %v", err)
	}
	if err := (&buildOptions{progress: "plain"}).checkStdout(plan, false); err != nil {
		t.Errorf("-o - to a pipe: %v", err)
	}
}

func TestContainerfileFallback(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Containerfile"), []byte("FROM podman\n"), 0o644)
	b, name, err := readDockerfile("", dir)
	if err != nil || string(b) != "FROM podman\n" || name != "Containerfile" {
		t.Errorf("Containerfile: %q %q %v", b, name, err)
	}
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM docker\n"), 0o644)
	if b, _, _ := readDockerfile("", dir); string(b) != "FROM docker\n" {
		t.Errorf("Dockerfile first: %q", b)
	}
	if _, _, err := readDockerfile("", t.TempDir()); err == nil || !strings.Contains(err.Error(), "Dockerfile") {
		t.Errorf("neither: %v", err)
	}
}

func TestInspectFormat(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	st, _ := store.Open(root)
	img, _ := random.Image(256, 2)
	md, _ := st.WriteImage(img)
	st.Tag("fmt:1", md)
	id, _ := img.ConfigName()
	for format, want := range map[string]string{
		"{{.Id}}":                       id.String(),
		"{{.RepoTags}}":                 "[fmt:1]",
		"{{len .RootFS.Layers}}":        "2",
		"{{.Os}}/{{.Architecture}}":     "/",
		"{{json .Config.Env}}":          "null",
		"{{join .RepoTags \",\"}}":      "fmt:1",
		"{{.Digest}}":                   md.String(),
		"{{upper (index .RepoTags 0)}}": "FMT:1",
	} {
		cmd := newRootCommand()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs([]string{"--root", root, "inspect", "--format", format, "fmt:1"})
		if err := cmd.Execute(); err != nil || out.String() != want+"\n" {
			t.Errorf("%s: %q, %v; want %q", format, out.String(), err, want)
		}
	}
	cmd := newRootCommand()
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetArgs([]string{"--root", root, "inspect", "--format", "{{.Nope}}", "fmt:1"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--format") {
		t.Errorf("a missing field: %v", err)
	}
}
