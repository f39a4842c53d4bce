package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/minibuild/minibuild/executor"
	"github.com/minibuild/minibuild/export"
)

func TestProgressModes(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for mode, want := range map[string]string{
		"": "*main.plainProgress", "auto": "*main.plainProgress", // not a terminal
		"plain": "*main.plainProgress", "json": "*main.jsonProgress", "quiet": "main.quietProgress",
	} {
		p, err := newProgress(mode, f)
		if err != nil {
			t.Errorf("%q: %v", mode, err)
			continue
		}
		if got := fmt.Sprintf("%T", p); got != want {
			t.Errorf("%q: %s, want %s", mode, got, want)
		}
		p.Close()
	}
	for _, mode := range []string{"fancy", "rawjson"} { // rawjson is buildx's other schema: refused, not mimicked
		if _, err := newProgress(mode, f); err == nil || !strings.Contains(err.Error(), "want auto, plain, tty, json or quiet") {
			t.Errorf("the unknown mode %s: %v", mode, err)
		}
		if _, err := newBlobProgress(mode, f); err == nil || !strings.Contains(err.Error(), "want auto, plain, tty, json or quiet") {
			t.Errorf("the unknown blob progress mode %s: %v", mode, err)
		}
	}
	if _, err := newBlobProgress("fancy", f); err == nil {
		t.Error("an unknown blob progress mode was accepted")
	}
}

var testResult = &executor.Result{ID: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)},
	Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("cd", 32)}, StepsCached: 2, StepsBuilt: 1, FirstMiss: "step 3/3 COPY a . — a changed"}

func TestPlainProgressLines(t *testing.T) {
	var buf bytes.Buffer
	p := &plainProgress{w: &buf}
	p.Event(executor.Event{Kind: executor.KindStep, Stage: "builder", Step: 2, Steps: 3, Instruction: "RUN make", Status: executor.StatusCached, Key: "sha256:0123456789abcdef"})
	p.Event(executor.Event{Kind: executor.KindStep, Stage: "stage-1", Step: 3, Steps: 3, Instruction: "COPY a .", Status: executor.StatusRunning, Reason: "a changed"})
	p.Event(executor.Event{Kind: executor.KindLog, Stage: "stage-1", Step: 3, Steps: 3, Line: "hello"})
	p.Event(executor.Event{Kind: executor.KindWarning, Line: "careful"})
	p.Result(testResult, []string{"app:1"}, 1500*time.Millisecond)
	want := "[builder 2/3] RUN make  CACHED 0123456789ab\n" +
		"[3/3] COPY a .  (cache miss: a changed)\n" +
		"[3/3] | hello\n" +
		"WARNING: careful\n" +
		"built app:1 sha256:abababababab in 1.50s: 2 cached, 1 built; first miss: step 3/3 COPY a . — a changed\n"
	if buf.String() != want {
		t.Errorf("plain progress:\n%s\nwant:\n%s", buf.String(), want)
	}
}

func TestJSONProgressEvents(t *testing.T) {
	var buf bytes.Buffer
	p := &jsonProgress{enc: json.NewEncoder(&buf)}
	p.Event(executor.Event{Kind: executor.KindStep, Stage: "s", Step: 1, Steps: 1, Instruction: "RUN a\nb", Status: executor.StatusDone, Key: "sha256:k", Duration: 20 * time.Millisecond})
	p.Result(testResult, nil, time.Second)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), buf.String())
	}
	var step, res map[string]any
	json.Unmarshal([]byte(lines[0]), &step)
	json.Unmarshal([]byte(lines[1]), &res)
	if step["event"] != "step" || step["status"] != "done" || step["instruction"] != "RUN a …" || step["duration_ms"] != 20.0 || step["key"] != "sha256:k" {
		t.Errorf("step event %v", step)
	}
	if res["event"] != "result" || res["image_id"] != testResult.ID.String() || res["steps_cached"] != 2.0 || res["tags"] == nil {
		t.Errorf("result event %v (tags must be [], not null)", res)
	}
}

func TestBlobProgress(t *testing.T) {
	e := export.BlobEvent{Ref: "r/a:1", Digest: "sha256:0123456789abcdef0123", Status: export.StatusMounted, Size: 7}
	var plain, js, quiet bytes.Buffer
	for w, mode := range map[*bytes.Buffer]string{&plain: "tty", &js: "json", &quiet: "quiet"} {
		bp, err := newBlobProgress(mode, w)
		if err != nil {
			t.Fatal(err)
		}
		bp.event(e)
	}
	if plain.String() != "0123456789ab: mounted\n" {
		t.Errorf("plain: %q", plain.String())
	}
	if !strings.Contains(js.String(), `"event":"blob"`) || !strings.Contains(js.String(), `"status":"mounted"`) {
		t.Errorf("json: %q", js.String())
	}
	if quiet.Len() != 0 {
		t.Errorf("quiet wrote %q", quiet.String())
	}
}
