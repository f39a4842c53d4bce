package executor

import (
	"time"

	"github.com/minibuild/minibuild/cache"
)

// Event is one thing a build reports as it goes; cmd/minibuild renders
// events as tty, plain or json progress.
type Event struct {
	Kind        EventKind
	Stage       string
	Step, Steps int
	Instruction string
	Status      Status
	Key         string
	Duration    time.Duration
	Reason      string      // why a step missed the cache (in one line), or why it failed
	Miss        *cache.Miss // the first miss of a stage, as data: what changed, old and new
	Line        string      // one line of a RUN's output (KindLog) or a warning (KindWarning)
}

// EventKind says what an Event reports.
type EventKind string

// The kinds of events.
const (
	KindStep    EventKind = "step"
	KindLog     EventKind = "log"
	KindWarning EventKind = "warning"
)

// Status is a step's state.
type Status string

// The states a step goes through: cached, or running then done or error.
const (
	StatusCached  Status = "cached"
	StatusRunning Status = "running"
	StatusDone    Status = "done"
	StatusError   Status = "error"
)
