package dbagent

import (
	"fmt"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
)

// Hold is the life of a held quiesce, shared by the engines: it ends
// exactly once, by Release, by Abort, or by its watch when MaxHold has
// passed, so a caller that never releases cannot leave a server quiesced.
type Hold struct {
	mu       sync.Mutex
	ended    bool
	why      error // why it ended, for the calls that come after
	done     chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	watched  chan struct{} // closed when the watch goroutine has returned
}

// StartHold starts a hold whose watch ends it with onExpire when maxHold
// passes first.
func StartHold(maxHold time.Duration, onExpire func()) *Hold {
	h := &Hold{done: make(chan struct{}), stop: make(chan struct{}), watched: make(chan struct{})}
	go func() {
		defer close(h.watched)
		t := time.NewTimer(maxHold)
		defer t.Stop()
		select {
		case <-t.C:
			h.end(fmt.Errorf("quiesce held longer than %v and released by the agent: %w", maxHold, cairn.ErrConflict), onExpire)
		case <-h.stop:
		}
	}()
	return h
}

// End ends the hold by running fn, unless it has ended already: then it
// returns why. why is what later calls are told. End stops the watch and
// waits for it first, so no goroutine of the hold outlives it.
func (h *Hold) End(why error, fn func()) error {
	h.stopOnce.Do(func() { close(h.stop) })
	<-h.watched
	return h.end(why, fn)
}

func (h *Hold) end(why error, fn func()) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ended {
		return h.why
	}
	h.ended, h.why = true, why
	fn()
	close(h.done)
	return nil
}

// Done is closed once the hold has ended.
func (h *Hold) Done() <-chan struct{} { return h.done }
