package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Bad input exits non-zero with a message naming Dockerfile:LINE, tags
// nothing, and leaves every image built before it there and intact.
func TestBadInputFailsClearlyAndLosesNothing(t *testing.T) {
	e := newEnv(t)
	keepCtx := project(t, "FROM busybox\nRUN echo keep > /keep.txt\nCMD [\"cat\", \"/keep.txt\"]\n", nil)
	keep := e.build(keepCtx, nil, "-t", "keep:1")
	inspectBefore := e.ok("inspect", "keep:1").stdout
	imagesBefore := e.ok("images").stdout

	cases := []struct {
		name       string
		dockerfile string
		files      map[string]string
		line       int
		mention    []string // also in stderr
		pattern    string   // regexp over stderr
	}{
		{
			name:       "syntax error",
			dockerfile: "FROM busybox\n\nENV GOOD=1 BAD\nRUN true\n",
			line:       3,
		},
		{
			name:       "unterminated heredoc",
			dockerfile: "FROM busybox\nRUN true\nCOPY <<EOF /x\nno end marker\n",
			line:       3,
		},
		{
			name:       "COPY with one argument",
			dockerfile: "FROM busybox\nWORKDIR /app\nCOPY onlyone\n",
			line:       3,
		},
		{
			name:       "unknown instruction",
			dockerfile: "FROM busybox\nRUN true\nFROBNICATE now\n",
			line:       3,
			mention:    []string{"FROBNICATE"},
		},
		{
			name:       "missing COPY source",
			dockerfile: "FROM busybox\nWORKDIR /app\nRUN true\nCOPY nothere.txt /app/\n",
			line:       4,
			mention:    []string{"nothere.txt"},
		},
		{
			name:       "COPY outside the context",
			dockerfile: "FROM busybox\nRUN true\nCOPY present.txt /\nCOPY ../outside.txt /stolen.txt\n",
			files:      map[string]string{"present.txt": "ok\n"},
			line:       4,
		},
		{
			name:       "COPY through a symlink out of the context",
			dockerfile: "FROM busybox\nCOPY escape/outside.txt /stolen.txt\n",
			line:       2,
		},
		{
			name:       "unknown base image",
			dockerfile: "# a registry nobody listens on\n\nFROM 127.0.0.1:1/nope:latest\nRUN true\n",
			line:       3,
			mention:    []string{"127.0.0.1:1/nope"},
		},
		{
			name:       "RUN exits 1",
			dockerfile: "FROM busybox\nWORKDIR /w\nRUN echo boom-output; echo to-stderr >&2; false\nRUN echo never\n",
			line:       3,
			mention:    []string{"boom-output"},
			pattern:    `(?i)exit(ed)?( with)?( code| status)?[: ]+1\b`,
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			// A file just outside the context that the escapes aim for.
			if err := os.WriteFile(filepath.Join(parent, "outside.txt"), []byte("secret\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(parent, "ctx")
			writeFiles(t, dir, map[string]string{"Dockerfile": tc.dockerfile})
			writeFiles(t, dir, tc.files)
			if err := os.Symlink("..", filepath.Join(dir, "escape")); err != nil {
				t.Fatal(err)
			}
			tag := "bad:" + string(rune('a'+i))
			b := e.buildJSON(dir, nil, "-t", tag)
			if b.code == 0 {
				t.Fatalf("bad input built successfully:\n%s", b.result)
			}
			want := "Dockerfile:" + itoa(tc.line)
			if !regexp.MustCompile(`Dockerfile:` + itoa(tc.line) + `\b`).MatchString(b.stderr) {
				t.Errorf("stderr does not name %s:\n%s", want, b.stderr)
			}
			for _, m := range tc.mention {
				if !strings.Contains(b.stderr, m) {
					t.Errorf("stderr does not mention %q:\n%s", m, b.stderr)
				}
			}
			if tc.pattern != "" && !regexp.MustCompile(tc.pattern).MatchString(b.stderr) {
				t.Errorf("stderr does not match %s:\n%s", tc.pattern, b.stderr)
			}
			if strings.Contains(b.stderr, "panic:") {
				t.Errorf("the binary panicked:\n%s", b.stderr)
			}
			if r := e.run(runOpts{}, "inspect", tag); r.code == 0 {
				t.Errorf("the failed build tagged %s", tag)
			}
			if got := e.ok("inspect", "keep:1").stdout; got != inspectBefore {
				t.Errorf("inspect keep:1 changed after a failed build:\nbefore:\n%s\nafter:\n%s", inspectBefore, got)
			}
		})
	}

	// The failed RUN left nothing in the cache: it executes again (and fails
	// again), while the steps before it are reused.
	t.Run("failed RUN is not cached", func(t *testing.T) {
		dir := project(t, "FROM busybox\nWORKDIR /w\nRUN echo boom-output; false\n", nil)
		first := e.buildJSON(dir, nil, "-t", "bad:again")
		second := e.buildJSON(dir, nil, "-t", "bad:again")
		if first.code == 0 || second.code == 0 {
			t.Fatalf("a RUN that exits 1 succeeded:\n%s\n%s", first.result, second.result)
		}
		i := second.find(t, "RUN")
		if got := second.seen[stepID(second.steps[i])]; len(got) < 2 || got[0] != "running" || got[len(got)-1] != "error" {
			t.Errorf("the failed RUN reports %v on the rebuild; want running then error (never cached)", got)
		}
		for _, s := range second.steps[1:i] {
			if s.Status != "cached" {
				t.Errorf("step %d %q before the failed RUN is %s on the rebuild; want cached", s.Step, s.Instruction, s.Status)
			}
		}
	})

	// Everything built before is still listed and intact: a rebuild of it
	// reuses every step, and saving it reads every blob.
	if got := e.ok("images").stdout; !strings.Contains(got, "keep") || !strings.Contains(got, "busybox") {
		t.Errorf("images after the failures:\n%s\nbefore:\n%s", got, imagesBefore)
	}
	again := e.build(keepCtx, nil, "-t", "keep:1")
	if again.res.ImageID != keep.res.ImageID || again.res.StepsBuilt != 0 {
		t.Errorf("rebuilding keep:1 after the failures: id %s (was %s), %d steps built", again.res.ImageID, keep.res.ImageID, again.res.StepsBuilt)
	}
	saved := filepath.Join(t.TempDir(), "keep.tar")
	e.ok("save", "-o", saved, "keep:1")
	tool(t, "skopeo", "inspect", "docker-archive:"+saved)
	out := filepath.Join(t.TempDir(), "rootfs")
	e.build(project(t, "FROM keep:1\n", nil), nil, "-o", "type=local,dest="+out)
	if got := readFile(t, filepath.Join(out, "keep.txt")); got != "keep\n" {
		t.Errorf("keep:1 content after the failures: /keep.txt = %q", got)
	}
	if _, err := os.Stat(filepath.Join(out, "stolen.txt")); err == nil {
		t.Errorf("a file from outside the context ended up in an image")
	}
}

func stepID(s stepEvent) string { return s.Stage + "/" + itoa(s.Step) }

func itoa(n int) string { return strconv.Itoa(n) }
