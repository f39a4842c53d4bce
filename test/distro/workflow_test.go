package distro

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// step is the last {"event":"step"} line of one step of --progress=json.
type step struct {
	Stage       string `json:"stage"`
	Step        int    `json:"step"`
	Instruction string `json:"instruction"`
	Status      string `json:"status"`
	Reason      string `json:"reason"`
}

// buildSteps runs a --progress=json build and returns its steps in order.
func (e *env) buildSteps(dir string, args ...string) ([]step, result) {
	e.t.Helper()
	r := e.run(nil, append(append([]string{"build", "--progress=json"}, args...), dir)...)
	if r.code != 0 {
		e.t.Fatalf("build failed:\n%s", r)
	}
	var steps []step
	index := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(r.stderr))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var s struct {
			Event string `json:"event"`
			step
		}
		if json.Unmarshal([]byte(strings.TrimSpace(sc.Text())), &s) != nil || s.Event != "step" {
			continue
		}
		id := fmt.Sprintf("%s/%d", s.Stage, s.Step)
		if i, ok := index[id]; ok {
			steps[i] = s.step
		} else {
			index[id] = len(steps)
			steps = append(steps, s.step)
		}
	}
	if len(steps) == 0 {
		e.t.Fatalf("no step events:\n%s", r)
	}
	return steps, r
}

// TestClassicWorkflow: apt-get install python3, COPY requirements.txt, pip
// install (a local sdist), COPY app.py, CMD; edit app.py and rebuild: every
// step before COPY app.py is cached, and the rebuild is quick (logged, not
// asserted: the machine is shared).
func TestClassicWorkflow(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join(t.TempDir(), "app")
	if out, err := exec.Command("cp", "-a", "testdata/_workflow", dir).CombinedOutput(); err != nil {
		t.Fatalf("copy the workflow context: %v\n%s", err, out)
	}
	start := time.Now()
	first, _ := e.buildSteps(dir, "-t", "myapp:1.0")
	t.Logf("first build: %v", time.Since(start).Round(time.Millisecond))
	for _, s := range first {
		if s.Step > 1 && s.Status != "done" {
			t.Errorf("first build: step %d %q is %s, want done", s.Step, s.Instruction, s.Status)
		}
	}

	f, err := os.OpenFile(filepath.Join(dir, "app.py"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "print(%q)\n", "edited")
	f.Close()

	start = time.Now()
	archive := filepath.Join(t.TempDir(), "myapp.tar")
	second, _ := e.buildSteps(dir, "-t", "myapp:1.1", "-o", "type=oci,dest="+archive)
	took := time.Since(start)
	t.Logf("rebuild after editing app.py: %v (the issue asks for under a second)", took.Round(time.Millisecond))
	copyApp := -1
	for i, s := range second {
		if strings.HasPrefix(s.Instruction, "COPY app.py") {
			copyApp = i
		}
	}
	if copyApp < 0 {
		t.Fatalf("no COPY app.py step in %+v", second)
	}
	for i, s := range second {
		switch {
		case i < copyApp && s.Status != "cached":
			t.Errorf("rebuild: step %d %q is %s (%s), want cached", s.Step, s.Instruction, s.Status, s.Reason)
		case i >= copyApp && s.Step > 1 && s.Instruction != "" && !strings.HasPrefix(s.Instruction, "CMD") && s.Status != "done":
			t.Errorf("rebuild: step %d %q is %s, want rebuilt", s.Step, s.Instruction, s.Status)
		}
	}

	img, err := readOCIArchive(archive, filepath.Join(t.TempDir(), "oci"))
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{
		"/app/app.py": "file",
		"/usr/local/lib/python3.11/dist-packages/greet/__init__.py": "file",
		"/usr/bin/python3": "symlink",
	} {
		if n, ok := img.files[p]; !ok || n.Type != want {
			t.Errorf("myapp:1.1 has no %s %s (got %+v)", want, p, n)
		}
	}
	if n := img.files["/app/app.py"]; n.Size != 63 {
		t.Errorf("/app/app.py in myapp:1.1 is %d bytes, want 63 (the edited file)", n.Size)
	}
	if got := configField(img.config, "Cmd"); fmt.Sprint(got) != "[python3 app.py]" {
		t.Errorf("Cmd = %v", got)
	}
}
