package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SIGTERM during a RUN stops the build, kills the step's processes, leaves no
// mount behind (checked at cleanup) and no stale lock: the next build works.
func TestSigtermStopsTheBuildCleanly(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sig    syscall.Signal
		marker string
		early  bool // signal as soon as the RUN reports running, while its sandbox starts
		group  bool // signal the process group, as Ctrl-C in a terminal does
	}{
		{"SIGTERM", syscall.SIGTERM, "3217", false, false},
		{"SIGINT to the group", syscall.SIGINT, "3218", false, true},
		{"SIGTERM while the sandbox starts", syscall.SIGTERM, "3216", true, false},
		{"SIGINT while the sandbox starts", syscall.SIGINT, "3215", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			sig, marker := tc.sig, tc.marker
			// The output "go-2" differs from the instruction text, so it is
			// seen only once the command really runs.
			ctx := project(t, "FROM busybox\nRUN echo go-$((1+1)); sleep "+marker+"\n", nil)
			t.Cleanup(func() { killSleepers(marker) })
			cmd, log := startBuildUntil(t, e, func(line string) bool {
				if tc.early {
					return strings.Contains(line, `"status":"running"`) && strings.Contains(line, "sleep "+marker)
				}
				return strings.Contains(line, "go-2") && !strings.Contains(line, "RUN echo")
			}, "-t", "sig:1", ctx)
			if !tc.early {
				time.Sleep(200 * time.Millisecond)
			}
			if !tc.early && !sleeperRunning(marker) {
				t.Fatalf("no `sleep %s` process while the RUN runs", marker)
			}
			target := cmd.Process.Pid // the build process alone (kill PID, CI timeouts)
			if tc.group {
				target = -target
			}
			interrupt(t, cmd, target, sig, 15*time.Second, marker, log.String)
			// Nothing cached, nothing tagged, and the store is usable.
			if r := e.run(runOpts{}, "inspect", "sig:1"); r.code == 0 {
				t.Errorf("an interrupted build tagged sig:1")
			}
			ok := project(t, "FROM busybox\nRUN echo after > /after.txt\n", nil)
			out := filepath.Join(t.TempDir(), "rootfs")
			e.build(ok, nil, "-t", "after:1", "-o", "type=local,dest="+out)
			if got := readFile(t, filepath.Join(out, "after.txt")); got != "after\n" {
				t.Errorf("build after the interrupt: /after.txt = %q", got)
			}
		})
	}
}

// killSleepers kills what a failed test left running of its step, so that
// the temp dirs can be removed.
func killSleepers(marker string) {
	for _, pid := range sleepers(marker) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

func sleeperRunning(marker string) bool { return len(sleepers(marker)) > 0 }

// sleepers lists the processes of the step (` + "`sleep MARKER`" + `).
func sleepers(marker string) []int {
	var out []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), "sleep "+marker) {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil && pid != os.Getpid() {
				out = append(out, pid)
			}
		}
	}
	return out
}

// interrupt sends sig to target (a pid, or a negative process group),
// requires the build cmd to fail within timeout, and the step's `sleep
// MARKER` process to be gone soon after.
func interrupt(t *testing.T, cmd *exec.Cmd, target int, sig syscall.Signal, timeout time.Duration, marker string, log func() string) {
	t.Helper()
	if err := syscall.Kill(target, sig); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("the build succeeded after %v", sig)
		}
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the build did not stop within %v of %v:\n%s", timeout, sig, log())
	}
	deadline := time.Now().Add(5 * time.Second)
	for sleeperRunning(marker) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if sleeperRunning(marker) {
		t.Errorf("the step's `sleep %s` survived %v", marker, sig)
	}
}
