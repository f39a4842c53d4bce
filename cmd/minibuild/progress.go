package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/minibuild/minibuild/executor"
	"github.com/minibuild/minibuild/export"
)

// progress renders build events; every mode ends with Result.
type progress interface {
	Event(executor.Event)
	Result(res *executor.Result, tags []string, took time.Duration)
	Close()
}

func newProgress(mode string, w *os.File) (progress, error) {
	switch mode {
	case "auto", "":
		if isTerminal(w) {
			return newTTYProgress(w), nil
		}
		return &plainProgress{w: w}, nil
	case "plain":
		return &plainProgress{w: w}, nil
	case "tty":
		return newTTYProgress(w), nil
	case "json", "rawjson":
		return &jsonProgress{enc: json.NewEncoder(w)}, nil
	case "quiet":
		return quietProgress{}, nil
	}
	return nil, fmt.Errorf("--progress=%s: want auto, plain, tty, json or quiet", mode)
}

// stepLabel is "[2/7]" or, for a named stage, "[builder 2/7]".
func stepLabel(e executor.Event) string {
	if e.Stage != "" && !strings.HasPrefix(e.Stage, "stage-") {
		return fmt.Sprintf("[%s %d/%d]", e.Stage, e.Step, e.Steps)
	}
	return fmt.Sprintf("[%d/%d]", e.Step, e.Steps)
}

func shortKey(k string) string {
	k = strings.TrimPrefix(k, "sha256:")
	if len(k) > 12 {
		k = k[:12]
	}
	return k
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// summary is the line every build ends with.
func summary(res *executor.Result, tags []string, took time.Duration) string {
	what := "sha256:" + shortKey(res.ID.String())
	if len(tags) > 0 {
		what = strings.Join(tags, ", ") + " " + what
	}
	s := fmt.Sprintf("built %s in %.2fs: %d cached, %d built", what, took.Seconds(), res.StepsCached, res.StepsBuilt)
	if res.FirstMiss != "" {
		s += "; first miss: " + res.FirstMiss
	} else {
		s += "; every step cached"
	}
	return s
}

// plainProgress writes one line per step event, for CI logs.
type plainProgress struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *plainProgress) Event(e executor.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Kind {
	case executor.KindWarning:
		fmt.Fprintf(p.w, "WARNING: %s\n", e.Line)
	case executor.KindLog:
		fmt.Fprintf(p.w, "%s | %s\n", stepLabel(e), e.Line)
	case executor.KindStep:
		instr := oneLine(e.Instruction)
		switch e.Status {
		case executor.StatusCached:
			fmt.Fprintf(p.w, "%s %s  CACHED %s\n", stepLabel(e), instr, shortKey(e.Key))
		case executor.StatusRunning:
			if e.Reason != "" {
				fmt.Fprintf(p.w, "%s %s  (cache miss: %s)\n", stepLabel(e), instr, e.Reason)
			} else {
				fmt.Fprintf(p.w, "%s %s\n", stepLabel(e), instr)
			}
		case executor.StatusDone:
			fmt.Fprintf(p.w, "%s DONE %.2fs %s\n", stepLabel(e), e.Duration.Seconds(), shortKey(e.Key))
		case executor.StatusError:
			fmt.Fprintf(p.w, "%s %s  ERROR\n", stepLabel(e), instr)
		}
	}
}

func (p *plainProgress) Result(res *executor.Result, tags []string, took time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.w, summary(res, tags, took))
}

func (p *plainProgress) Close() {}

// ttyProgress prints finished steps as lines and keeps one live status
// line at the bottom showing every running step — one per stage, side by
// side when stages run concurrently — with its elapsed time.
type ttyProgress struct {
	mu      sync.Mutex
	w       io.Writer
	width   int
	running map[string]runningStep // by stage
	order   []string               // stages in the order they started running
	stop    chan struct{}
	done    chan struct{}
}

type runningStep struct {
	ev      executor.Event
	started time.Time
}

func newTTYProgress(w *os.File) *ttyProgress {
	width := 100
	if cols, _, err := term.GetSize(int(w.Fd())); err == nil && cols > 20 {
		width = cols
	}
	t := &ttyProgress{w: w, width: width, running: map[string]runningStep{}, stop: make(chan struct{}), done: make(chan struct{})}
	go t.tick()
	return t
}

func (t *ttyProgress) tick() {
	defer close(t.done)
	tk := time.NewTicker(100 * time.Millisecond)
	defer tk.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tk.C:
			t.mu.Lock()
			t.drawRunning()
			t.mu.Unlock()
		}
	}
}

const (
	ansiClear = "\r\x1b[K"
	ansiBlue  = "\x1b[34m"
	ansiGreen = "\x1b[32m"
	ansiRed   = "\x1b[31m"
	ansiDim   = "\x1b[2m"
	ansiReset = "\x1b[0m"
)

// drawRunning rewrites the status line, cut to the terminal's width.
func (t *ttyProgress) drawRunning() {
	if len(t.running) == 0 {
		return
	}
	var parts []string
	for _, stage := range t.order {
		r, ok := t.running[stage]
		if !ok {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %s %.1fs", stepLabel(r.ev), oneLine(r.ev.Instruction), time.Since(r.started).Seconds()))
	}
	line := strings.Join(parts, " | ")
	if n := t.width - 1; len(line) > n {
		line = line[:n-1] + "…"
	}
	fmt.Fprintf(t.w, "%s%s%s%s", ansiClear, ansiBlue, line, ansiReset)
}

func (t *ttyProgress) finish(stage string) {
	delete(t.running, stage)
	for i, s := range t.order {
		if s == stage {
			t.order = append(t.order[:i], t.order[i+1:]...)
			break
		}
	}
}

func (t *ttyProgress) Event(e executor.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch e.Kind {
	case executor.KindWarning:
		fmt.Fprintf(t.w, "%sWARNING: %s\n", ansiClear, e.Line)
	case executor.KindLog:
		fmt.Fprintf(t.w, "%s%s%s %s%s\n", ansiClear, ansiDim, stepLabel(e), e.Line, ansiReset)
	case executor.KindStep:
		instr := oneLine(e.Instruction)
		switch e.Status {
		case executor.StatusCached:
			fmt.Fprintf(t.w, "%s%s %s %sCACHED%s\n", ansiClear, stepLabel(e), instr, ansiGreen, ansiReset)
		case executor.StatusRunning:
			if _, ok := t.running[e.Stage]; !ok {
				t.order = append(t.order, e.Stage)
			}
			t.running[e.Stage] = runningStep{ev: e, started: time.Now()}
			if e.Reason != "" {
				fmt.Fprintf(t.w, "%s%s%s cache miss: %s%s\n", ansiClear, ansiDim, stepLabel(e), e.Reason, ansiReset)
			}
		case executor.StatusDone:
			fmt.Fprintf(t.w, "%s%s %s %sDONE %.2fs%s\n", ansiClear, stepLabel(e), instr, ansiBlue, e.Duration.Seconds(), ansiReset)
			t.finish(e.Stage)
		case executor.StatusError:
			fmt.Fprintf(t.w, "%s%s %s %sERROR%s\n", ansiClear, stepLabel(e), instr, ansiRed, ansiReset)
			t.finish(e.Stage)
		}
	}
	t.drawRunning()
}

func (t *ttyProgress) Result(res *executor.Result, tags []string, took time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.w, "%s%s\n", ansiClear, summary(res, tags, took))
}

func (t *ttyProgress) Close() {
	select {
	case <-t.stop:
	default:
		close(t.stop)
	}
	<-t.done
	t.mu.Lock()
	if len(t.running) > 0 {
		fmt.Fprint(t.w, ansiClear)
	}
	t.mu.Unlock()
}

// jsonProgress writes DESIGN.md's machine-readable events, one per line.
type jsonProgress struct {
	mu  sync.Mutex
	enc *json.Encoder
}

type jsonStep struct {
	Event       string `json:"event"`
	Stage       string `json:"stage"`
	Step        int    `json:"step"`
	Steps       int    `json:"steps"`
	Instruction string `json:"instruction"`
	Status      string `json:"status"`
	Key         string `json:"key,omitempty"`
	DurationMS  int64  `json:"duration_ms"`
	Reason      string `json:"reason,omitempty"`
}

type jsonLine struct {
	Event string `json:"event"`
	Stage string `json:"stage,omitempty"`
	Step  int    `json:"step,omitempty"`
	Line  string `json:"line"`
}

type jsonResult struct {
	Event       string   `json:"event"`
	ImageID     string   `json:"image_id"`
	Digest      string   `json:"digest"`
	Tags        []string `json:"tags"`
	StepsCached int      `json:"steps_cached"`
	StepsBuilt  int      `json:"steps_built"`
	DurationMS  int64    `json:"duration_ms"`
	FirstMiss   string   `json:"first_miss,omitempty"`
}

func (j *jsonProgress) Event(e executor.Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	switch e.Kind {
	case executor.KindStep:
		j.enc.Encode(jsonStep{Event: "step", Stage: e.Stage, Step: e.Step, Steps: e.Steps, Instruction: oneLine(e.Instruction),
			Status: string(e.Status), Key: e.Key, DurationMS: e.Duration.Milliseconds(), Reason: e.Reason})
	case executor.KindLog:
		j.enc.Encode(jsonLine{Event: "log", Stage: e.Stage, Step: e.Step, Line: e.Line})
	case executor.KindWarning:
		j.enc.Encode(jsonLine{Event: "warning", Line: e.Line})
	}
}

func (j *jsonProgress) Result(res *executor.Result, tags []string, took time.Duration) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if tags == nil {
		tags = []string{}
	}
	j.enc.Encode(jsonResult{Event: "result", ImageID: res.ID.String(), Digest: res.Digest.String(), Tags: tags,
		StepsCached: res.StepsCached, StepsBuilt: res.StepsBuilt, DurationMS: took.Milliseconds(), FirstMiss: res.FirstMiss})
}

func (j *jsonProgress) Close() {}

// quietProgress prints nothing; the id goes to stdout.
type quietProgress struct{}

func (quietProgress) Event(executor.Event)                             {}
func (quietProgress) Result(*executor.Result, []string, time.Duration) {}
func (quietProgress) Close()                                           {}

// blobProgress prints registry blob events: "a1b2c3d4e5f6: pushed", or one
// {"event":"blob",…} object per line.
type blobProgress struct {
	mu   sync.Mutex
	w    io.Writer
	json bool
}

func newBlobProgress(mode string, w io.Writer) (*blobProgress, error) {
	switch mode {
	case "", "auto", "plain", "tty":
		return &blobProgress{w: w}, nil
	case "json", "rawjson":
		return &blobProgress{w: w, json: true}, nil
	case "quiet":
		return &blobProgress{w: io.Discard}, nil
	}
	return nil, fmt.Errorf("--progress=%s: want plain, json or quiet", mode)
}

// blobWords are docker's words for the registry statuses.
var blobWords = map[string]string{
	export.StatusExists:      "already exists",
	export.StatusDownloading: "pulling",
	export.StatusDone:        "pull complete",
	export.StatusPushing:     "pushing",
	export.StatusPushed:      "pushed",
	export.StatusMounted:     "mounted",
}

func (p *blobProgress) event(e export.BlobEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.json {
		json.NewEncoder(p.w).Encode(map[string]any{"event": "blob", "ref": e.Ref, "digest": e.Digest, "status": e.Status, "size": e.Size})
		return
	}
	fmt.Fprintf(p.w, "%s: %s\n", shortKey(e.Digest), blobWords[e.Status])
}
