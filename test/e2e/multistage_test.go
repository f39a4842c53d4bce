package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// threeStages has two independent builder stages of real work, a final
// stage that copies from both, and a stage nothing needs that would fail.
const threeStages = `FROM busybox AS builder-a
RUN sleep 2 && mkdir /out && echo a > /out/a.txt

FROM busybox AS builder-b
RUN sleep 2 && mkdir /out && echo b > /out/b.txt

FROM busybox AS broken
RUN echo this stage must never run && exit 9

FROM busybox
COPY --from=builder-a /out/a.txt /app/
COPY --from=builder-b /out/b.txt /app/
CMD ["cat", "/app/a.txt", "/app/b.txt"]
`

// Independent stages overlap: the second builder starts before the first
// has finished (shown by the order of events, not by a timed assertion),
// and the stage nothing needs never runs. With --jobs 1 they take turns.
func TestIndependentStagesRunConcurrently(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, threeStages, nil)
	out := filepath.Join(t.TempDir(), "out")
	b := e.build(ctx, nil, "-t", "three:1", "-o", "type=local,dest="+out)
	b.checkConsistent(t)
	if got := readFile(t, filepath.Join(out, "app", "a.txt")) + readFile(t, filepath.Join(out, "app", "b.txt")); got != "a\nb\n" {
		t.Errorf("final stage holds %q", got)
	}
	if strings.Contains(b.stderr, "must never run") || len(b.stage("broken")) > 0 {
		t.Errorf("the unneeded stage ran:%s", b.describe())
	}
	if !overlapping(b, "builder-a", "builder-b") {
		t.Errorf("the builder stages did not run concurrently:%s", b.describe())
	}
	t.Logf("three-stage build took %d ms (two stages of 2 s each)", b.res.DurationMS)

	serial := e.build(ctx, nil, "--no-cache", "--jobs", "1", "-t", "three:serial")
	if overlapping(serial, "builder-a", "builder-b") {
		t.Errorf("--jobs 1 ran two stages at once:%s", serial.describe())
	}
}

// overlapping reports whether a RUN of stage y started before the RUN of
// stage x finished, or the other way round.
func overlapping(b built, x, y string) bool {
	pos := func(stage, status string) int {
		for i, ev := range b.events {
			if ev.Stage == stage && strings.HasPrefix(ev.Instruction, "RUN") && ev.Status == status {
				return i
			}
		}
		return -1
	}
	xs, xd, ys, yd := pos(x, "running"), pos(x, "done"), pos(y, "running"), pos(y, "done")
	if xs < 0 || xd < 0 || ys < 0 || yd < 0 {
		return false
	}
	return (ys < xd && xs < yd)
}

// A failing stage stops the others at once; the error names the stage,
// the step and the line; nothing is left running or mounted.
func TestFailingStageStopsTheOthers(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, `FROM busybox AS slow
RUN sleep 300 && echo late > /late

FROM busybox AS fails
RUN echo about to fail && exit 3

FROM busybox
COPY --from=slow /late /late
COPY --from=fails /etc/passwd /p
`, nil)
	start := time.Now()
	r := e.run(runOpts{timeout: 2 * time.Minute}, "build", "--progress=plain", ctx)
	if r.code == 0 {
		t.Fatalf("build succeeded:\n%s", r)
	}
	if took := time.Since(start); took > time.Minute {
		t.Errorf("the failure did not stop the slow stage (took %v)", took)
	}
	for _, want := range []string{"Dockerfile:5:", "stage fails", "step 2/2", "code 3"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("error lacks %q:\n%s", want, r)
		}
	}
	// A killed process may take a moment to be gone (CI saw one still
	// listed once, right after the build exited); one that runs on is
	// there for its 300 s.
	var out []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if out, _ = exec.Command("pgrep", "-f", "sleep 300").Output(); len(out) == 0 {
			break
		}
	}
	if len(out) > 0 {
		ps, _ := exec.Command("ps", "-o", "pid,ppid,stat,etime,args", "-p", strings.Join(strings.Fields(string(out)), ",")).CombinedOutput()
		t.Errorf("the slow stage's process is still running 5 s after the build:\n%s", ps)
		exec.Command("pkill", "-f", "sleep 300").Run()
	}
	e.checkNoMounts()
	leftovers, _ := filepath.Glob(filepath.Join(e.root, "snapshots", "tmp", "*"))
	if len(leftovers) > 0 {
		t.Errorf("temp dirs left behind: %v", leftovers)
	}
}

// The stage graph is checked before anything runs.
func TestStageGraphErrors(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name, dockerfile, want string
	}{
		{"duplicate name", "FROM busybox AS a\nRUN true\nFROM busybox AS a\nRUN true\n", "Dockerfile:3: duplicate stage name"},
		{"copy from a later stage", "FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\n", "Dockerfile:2:"},
		{"from a later stage", "FROM b AS a\nFROM busybox AS b\n", "Dockerfile:1:"},
		{"cycle", "FROM busybox AS a\nRUN true\nFROM c AS c\n", "Dockerfile:3:"},
		{"index out of range", "FROM busybox\nCOPY --from=4 /x /y\n", "Dockerfile:2:"},
		{"unknown stage", "FROM busybox\nCOPY --from=No_Such_Stage! /x /y\n", "Dockerfile:2:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := project(t, c.dockerfile, nil)
			b := e.buildJSON(ctx, nil)
			if b.code == 0 {
				t.Fatalf("accepted:\n%s", b.result)
			}
			if !strings.Contains(b.stderr, c.want) {
				t.Errorf("error lacks %q:\n%s", c.want, b.result)
			}
			for _, ev := range b.events {
				if ev.Status == "running" || ev.Status == "done" {
					t.Errorf("a step ran before the graph was checked: %+v", ev)
				}
			}
		})
	}
}

// COPY --from an index, an image in the store and an image that is not a
// stage; global ARGs in FROM; a stage sees a global ARG only once it
// re-declares it; the platform ARGs hold linux/amd64 values.
func TestCopyFromAndArgScoping(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, `ARG BASE=busybox
ARG GREETING=hello
FROM ${BASE} AS first
RUN echo "unset:[$GREETING]" > /first.txt

FROM $BASE
ARG GREETING
ARG TARGETPLATFORM
ARG TARGETARCH
ARG BUILDOS
COPY --from=0 /first.txt /first.txt
COPY --from=busybox:latest /bin/busybox /bb
RUN echo "$GREETING $TARGETPLATFORM $TARGETARCH $BUILDOS" > /args.txt
`, nil)
	out := filepath.Join(t.TempDir(), "out")
	e.build(ctx, []string{}, "--build-arg", "GREETING=hi", "-o", "type=local,dest="+out)
	if got := readFile(t, filepath.Join(out, "first.txt")); got != "unset:[]\n" {
		t.Errorf("a global ARG leaked into a stage that did not declare it: %q", got)
	}
	if got := readFile(t, filepath.Join(out, "args.txt")); got != "hi linux/amd64 amd64 linux\n" {
		t.Errorf("ARGs in the final stage: %q", got)
	}
	fi, err := os.Stat(filepath.Join(out, "bb"))
	if err != nil || fi.Size() < 100000 {
		t.Errorf("COPY --from=busybox:latest gave %v, %v", fi, err)
	}
}
