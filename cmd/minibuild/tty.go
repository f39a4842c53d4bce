package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/minibuild/minibuild/executor"
)

// ttyProgress prints finished steps as lines and keeps one live status
// line at the bottom showing every running step — one per stage, side by
// side when stages run concurrently — with its elapsed time.
//
// NO_COLOR drops the colours; TERM=dumb drops the cursor codes as well,
// and with them the live line (finished steps are still printed).
type ttyProgress struct {
	mu      sync.Mutex
	w       io.Writer
	width   int
	esc     ttyCodes
	running map[string]runningStep // by stage
	order   []string               // stages in the order they started running
	stop    chan struct{}
	done    chan struct{}
}

type runningStep struct {
	ev      executor.Event
	started time.Time
}

// ttyCodes are the escape sequences the tty progress writes; an empty one
// writes nothing.
type ttyCodes struct {
	clear, blue, green, red, dim, reset string
}

// codesFor picks the sequences the terminal environment allows.
func codesFor(env termEnv) ttyCodes {
	c := ttyCodes{clear: ansiClear, blue: ansiBlue, green: ansiGreen, red: ansiRed, dim: ansiDim, reset: ansiReset}
	if env.noColor || env.dumb {
		c = ttyCodes{clear: c.clear}
	}
	if env.dumb {
		c.clear = ""
	}
	return c
}

func newTTYProgress(w *os.File, env termEnv) *ttyProgress {
	width := 100
	if cols, _, err := term.GetSize(int(w.Fd())); err == nil && cols > 20 {
		width = cols
	}
	t := &ttyProgress{w: w, width: width, esc: codesFor(env), running: map[string]runningStep{}, stop: make(chan struct{}), done: make(chan struct{})}
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
	if len(t.running) == 0 || t.esc.clear == "" {
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
	fmt.Fprintf(t.w, "%s%s%s%s", t.esc.clear, t.esc.blue, line, t.esc.reset)
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
		fmt.Fprintf(t.w, "%sWARNING: %s\n", t.esc.clear, e.Line)
	case executor.KindLog:
		fmt.Fprintf(t.w, "%s%s%s %s%s\n", t.esc.clear, t.esc.dim, stepLabel(e), e.Line, t.esc.reset)
	case executor.KindStep:
		instr := oneLine(e.Instruction)
		switch e.Status {
		case executor.StatusCached:
			fmt.Fprintf(t.w, "%s%s %s %sCACHED%s\n", t.esc.clear, stepLabel(e), instr, t.esc.green, t.esc.reset)
		case executor.StatusRunning:
			if _, ok := t.running[e.Stage]; !ok {
				t.order = append(t.order, e.Stage)
			}
			t.running[e.Stage] = runningStep{ev: e, started: time.Now()}
			if e.Reason != "" {
				fmt.Fprintf(t.w, "%s%s%s cache miss: %s%s\n", t.esc.clear, t.esc.dim, stepLabel(e), e.Reason, t.esc.reset)
			}
		case executor.StatusDone:
			fmt.Fprintf(t.w, "%s%s %s %sDONE %.2fs%s\n", t.esc.clear, stepLabel(e), instr, t.esc.blue, e.Duration.Seconds(), t.esc.reset)
			t.finish(e.Stage)
		case executor.StatusError:
			fmt.Fprintf(t.w, "%s%s %s %sERROR%s\n", t.esc.clear, stepLabel(e), instr, t.esc.red, t.esc.reset)
			t.finish(e.Stage)
		}
	}
	t.drawRunning()
}

func (t *ttyProgress) Result(res *executor.Result, tags []string, took time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.w, "%s%s\n", t.esc.clear, summary(res, tags, took))
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
		fmt.Fprint(t.w, t.esc.clear)
	}
	t.mu.Unlock()
}
