package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// demoLines are the three lines examples/demo.sh ends with, one per kind of
// reuse, and the numbers in them.
var demoLines = []*regexp.Regexp{
	regexp.MustCompile(`(?m)^reuse within a project: (\d+) of (\d+) steps cached, only (.+) and after rebuilt$`),
	regexp.MustCompile(`(?m)^reuse across images: app-b reused (\d+) steps; df: (\d+) layers \(([^)]+)\) shared, stored once; app-b alone adds (\S+)$`),
	regexp.MustCompile(`(?m)^reuse across hosts: pull of app-b downloaded (\d+) of (\d+) layers; build of app-a on a fresh host ran (\d+) steps$`),
}

// make demo's script, run as a user runs it (this store as the first
// host's, the binary under test), prints the three reuse lines with the
// numbers the two example apps give: 5 of python-app's 8 steps cached after
// an app.py edit; app-b reusing python-app's 5 first steps and its 4 layers
// stored once; a fresh host pulling only app-b's 1 own layer of 5 and
// building app-a from the registry cache without running a step. It leaves
// no temporary directory (nor registry) behind.
func TestDemo(t *testing.T) {
	for _, tool := range []string{"docker-registry", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (apt-get install -y %s)", tool, tool)
		}
	}
	e := newEnv(t)
	tmp := t.TempDir()
	// recipe runs a script of examples/ci; the demo is beside that directory.
	r := e.recipe("../demo.sh", tmp, "TMPDIR="+tmp)
	if r.code != 0 {
		t.Fatalf("demo.sh failed:\n%s", r)
	}
	var got [][]string
	for i, re := range demoLines {
		m := re.FindStringSubmatch(r.stdout)
		if m == nil {
			t.Fatalf("demo line %d (%s) missing:\n%s", i+1, re, r.stdout)
		}
		got = append(got, m)
	}
	num := func(line, field int) int {
		n, err := strconv.Atoi(got[line][field])
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if num(0, 1) != 5 || num(0, 2) != 8 || got[0][3] != "COPY app.py ." {
		t.Errorf("within a project: %q, want 5 of 8 steps cached, only COPY app.py . and after rebuilt", got[0][0])
	}
	if num(1, 1) != 5 || num(1, 2) != 4 {
		t.Errorf("across images: %q, want app-b reusing 5 steps and 4 layers shared", got[1][0])
	}
	layersB := strings.Fields(e.ok("inspect", "-f", `{{join .RootFS.Layers " "}}`, "app-b:1.0").stdout)
	if num(2, 1) != 1 || num(2, 2) != len(layersB) || len(layersB) != 5 || num(2, 3) != 0 {
		t.Errorf("across hosts: %q, want 1 of 5 layers downloaded (app-b has %d) and 0 steps run", got[2][0], len(layersB))
	}
	for _, want := range []string{
		"steps 1–6 shared (same instruction, same layer)",
		"step 7: instruction differs: A `COPY app.py .` | B `COPY worker.py .`",
		"app-b:1.0", // df -v names the images
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("demo output lacks %q:\n%s", want, r.stdout)
		}
	}
	e.checkSharedOnce("myapp:1.1", "app-b:1.0", 4)
	if left, _ := filepath.Glob(filepath.Join(tmp, "minibuild-demo.*")); len(left) > 0 {
		t.Errorf("demo.sh left %v behind", left)
	}

	// The demo's store also shows explain's other answer: the edit of
	// app.py is the same instruction reading different content.
	out := e.ok("explain", "myapp:1.0", "myapp:1.1").stdout
	if !regexp.MustCompile("(?m)^steps 1–6 shared .*\n^step 7: COPY app.py . — same instruction, different content: layer sha256:[0-9a-f]{12}… vs sha256:[0-9a-f]{12}…\n^steps 8–9: same instruction, no layer$").MatchString(out) {
		t.Errorf("explain myapp:1.0 myapp:1.1:\n%s", out)
	}
	var c struct {
		Shared     int `json:"shared"`
		Divergence struct {
			Step     int    `json:"step"`
			Relation string `json:"relation"`
		} `json:"divergence"`
	}
	js := e.ok("explain", "--format", "json", "myapp:1.0", "myapp:1.1").stdout
	if err := json.Unmarshal([]byte(js), &c); err != nil || c.Shared != 6 || c.Divergence.Step != 7 || c.Divergence.Relation != "content" {
		t.Errorf("explain --format json: %+v, %v\n%s", c, err, js)
	}
}

// checkSharedOnce checks df -v's account of two images: n layers used by
// both, each listed (and so counted) once, and the layer blobs' total the
// sum of the distinct layers (each shared layer stored once).
func (e *env) checkSharedOnce(a, b string, n int) {
	e.t.Helper()
	var u struct {
		Kinds []struct {
			Kind string `json:"kind"`
			Size int64  `json:"size"`
		} `json:"kinds"`
		Layers []struct {
			Digest string   `json:"digest"`
			Size   int64    `json:"size"`
			Images []string `json:"images"`
		} `json:"layers"`
	}
	if err := json.Unmarshal([]byte(e.ok("df", "-v", "--format", "json").stdout), &u); err != nil {
		e.t.Fatal(err)
	}
	ida := strings.TrimSpace(e.ok("inspect", "-f", "{{.Id}}", a).stdout)
	idb := strings.TrimSpace(e.ok("inspect", "-f", "{{.Id}}", b).stdout)
	shared, seen := 0, map[string]bool{}
	var sum int64
	for _, l := range u.Layers {
		if seen[l.Digest] {
			e.t.Errorf("df -v lists layer %s twice", l.Digest)
		}
		seen[l.Digest] = true
		sum += l.Size
		if slices.Contains(l.Images, ida) && slices.Contains(l.Images, idb) {
			shared++
		}
	}
	if shared != n {
		e.t.Errorf("%d layers shared by %s and %s, want %d", shared, a, b, n)
	}
	for _, k := range u.Kinds {
		if k.Kind == "layer blobs" && k.Size != sum {
			e.t.Errorf("layer blobs %d bytes, the distinct layers %d", k.Size, sum)
		}
	}
}
