package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/executor"
	"github.com/minibuild/minibuild/export"
)

// progress renders build events; every mode ends with Result.
type progress interface {
	Event(executor.Event)
	Result(res *executor.Result, tags []string, took time.Duration)
	Close()
}

// progressModes are the valid --progress values, for the error that
// refuses any other.
const progressModes = "auto, plain, tty, json or quiet"

// termEnv is what the environment says about the terminal: NO_COLOR
// (https://no-color.org: set and not empty) drops colours, TERM=dumb
// drops cursor movement too and makes auto mode plain.
type termEnv struct {
	noColor, dumb bool
}

func readTermEnv(getenv func(string) string) termEnv {
	return termEnv{noColor: getenv("NO_COLOR") != "", dumb: getenv("TERM") == "dumb"}
}

func newProgress(mode string, w *os.File) (progress, error) {
	env := readTermEnv(os.Getenv)
	switch mode {
	case "auto", "":
		if isTerminal(w) && !env.dumb {
			return newTTYProgress(w, env), nil
		}
		return &plainProgress{w: w}, nil
	case "plain":
		return &plainProgress{w: w}, nil
	case "tty":
		return newTTYProgress(w, env), nil
	case "json":
		return &jsonProgress{enc: json.NewEncoder(w), now: time.Now}, nil
	case "quiet":
		return quietProgress{}, nil
	}
	return nil, fmt.Errorf("--progress=%s: want %s", mode, progressModes)
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

// jsonProgress writes DESIGN.md's machine-readable events, one per line,
// each with its RFC 3339 "time"; warnings and the error a build ends
// with are events too, so that stderr holds nothing but JSON lines.
type jsonProgress struct {
	mu  sync.Mutex
	enc *json.Encoder
	now func() time.Time
}

type jsonStep struct {
	Event       string `json:"event"`
	Time        string `json:"time"`
	Stage       string `json:"stage"`
	Step        int    `json:"step"`
	Steps       int    `json:"steps"`
	Instruction string `json:"instruction"`
	Status      string `json:"status"`
	Key         string `json:"key,omitempty"`
	DurationMS  int64  `json:"duration_ms"`
	Reason      string `json:"reason,omitempty"`
	// Miss is the first miss of a stage as data: {"kind":"inputs",
	// "changes":[{"input":"build arg V","how":"changed","old":"1","new":"2"}]}.
	Miss *cache.Miss `json:"miss,omitempty"`
}

type jsonLine struct {
	Event string `json:"event"`
	Time  string `json:"time"`
	Stage string `json:"stage,omitempty"`
	Step  int    `json:"step,omitempty"`
	Line  string `json:"line"`
}

// jsonMessage is a warning or an error.
type jsonMessage struct {
	Event   string `json:"event"`
	Time    string `json:"time"`
	Message string `json:"message"`
}

type jsonResult struct {
	Event       string   `json:"event"`
	Time        string   `json:"time"`
	ImageID     string   `json:"image_id"`
	Digest      string   `json:"digest"`
	Tags        []string `json:"tags"`
	StepsCached int      `json:"steps_cached"`
	StepsBuilt  int      `json:"steps_built"`
	DurationMS  int64    `json:"duration_ms"`
	FirstMiss   string   `json:"first_miss,omitempty"`
}

// jsonTime is an event's "time".
func jsonTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func (j *jsonProgress) Event(e executor.Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	now := j.stamp()
	switch e.Kind {
	case executor.KindStep:
		j.enc.Encode(jsonStep{Event: "step", Time: now, Stage: e.Stage, Step: e.Step, Steps: e.Steps, Instruction: oneLine(e.Instruction),
			Status: string(e.Status), Key: e.Key, DurationMS: e.Duration.Milliseconds(), Reason: e.Reason, Miss: e.Miss})
	case executor.KindLog:
		j.enc.Encode(jsonLine{Event: "log", Time: now, Stage: e.Stage, Step: e.Step, Line: e.Line})
	case executor.KindWarning:
		j.enc.Encode(jsonMessage{Event: "warning", Time: now, Message: e.Line})
	}
}

func (j *jsonProgress) Result(res *executor.Result, tags []string, took time.Duration) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if tags == nil {
		tags = []string{}
	}
	j.enc.Encode(jsonResult{Event: "result", Time: j.stamp(), ImageID: res.ID.String(), Digest: res.Digest.String(), Tags: tags,
		StepsCached: res.StepsCached, StepsBuilt: res.StepsBuilt, DurationMS: took.Milliseconds(), FirstMiss: res.FirstMiss})
}

func (j *jsonProgress) Close() {}

// stamp is the "time" of an event written now.
func (j *jsonProgress) stamp() string {
	if j.now == nil {
		return jsonTime(time.Now())
	}
	return jsonTime(j.now())
}

// writeJSONError writes the error a command ends with as an event, in
// place of main's "error:" line, when the command's progress is json.
func writeJSONError(w io.Writer, err error, now time.Time) {
	json.NewEncoder(w).Encode(jsonMessage{Event: "error", Time: jsonTime(now), Message: err.Error()})
}

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
	case "json":
		return &blobProgress{w: w, json: true}, nil
	case "quiet":
		return &blobProgress{w: io.Discard}, nil
	}
	return nil, fmt.Errorf("--progress=%s: want %s", mode, progressModes)
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
		json.NewEncoder(p.w).Encode(map[string]any{"event": "blob", "time": jsonTime(time.Now()), "ref": e.Ref, "digest": e.Digest, "status": e.Status, "size": e.Size})
		return
	}
	fmt.Fprintf(p.w, "%s: %s\n", shortKey(e.Digest), blobWords[e.Status])
}
