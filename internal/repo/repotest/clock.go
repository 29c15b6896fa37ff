package repotest

import (
	"context"
	"sync"
	"time"
)

// Clock is a fake clock for the repository's Options.Now, Sleep and Ticks,
// and for a mem backend's Now. Its time moves only when the test moves it
// (Advance, WakeSleepers, Pass); a sleeper wakes when the time reaches the
// time it waits for; tickers tick only when the test calls Tick. So a test
// decides when a heartbeat is due and when it runs, and what a sweep's
// margin or a look at a sweep under way waits for, and nothing depends on
// how fast the machine is. It is safe for concurrent use.
type Clock struct {
	mu       sync.Mutex
	now      time.Time
	sleepers map[*sleeper]struct{}
	watchers []sleepWatcher
	tickers  map[chan time.Time]struct{}
}

type sleeper struct {
	until time.Time
	wake  chan struct{}
}

// sleepWatcher is a Sleeping call waiting for n sleepers.
type sleepWatcher struct {
	n  int
	ch chan struct{}
}

// NewClock returns a clock that reads start until it is moved.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start, sleepers: map[*sleeper]struct{}{}, tickers: map[chan time.Time]struct{}{}}
}

// Now returns the clock's time (Options.Now, mem.Options.Now).
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d and wakes the sleepers whose time
// has come. It does not tick the tickers.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(c.now.Add(d))
}

// setLocked moves the clock to t, if that is forward, and wakes the sleepers
// whose time has come.
func (c *Clock) setLocked(t time.Time) {
	if t.After(c.now) {
		c.now = t
	}
	for s := range c.sleepers {
		if !s.until.After(c.now) {
			close(s.wake)
			delete(c.sleepers, s)
		}
	}
}

// Sleep returns once the clock reads until or later, or with ctx's error
// when ctx ends first (Options.Sleep): a process that waits until the test
// moves the time.
func (c *Clock) Sleep(ctx context.Context, until time.Time) error {
	c.mu.Lock()
	if !until.After(c.now) {
		c.mu.Unlock()
		return ctx.Err()
	}
	s := &sleeper{until: until, wake: make(chan struct{})}
	c.sleepers[s] = struct{}{}
	c.notifyLocked()
	c.mu.Unlock()
	select {
	case <-s.wake:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.sleepers, s)
		c.mu.Unlock()
		return ctx.Err()
	}
}

// Pass moves the clock forward to until, if it is behind, and returns
// (Options.Sleep): a process whose waits make the time pass for everyone
// on the clock. It suits the one process a test runs in its own goroutine
// (a gc whose consistency margins must pass for a lagging store's listings
// to catch up); two processes passing time would race it forward.
func (c *Clock) Pass(ctx context.Context, until time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(until)
	return nil
}

// Sleeping returns a channel that is closed once at least n sleepers wait
// on the clock (in Sleep). A test uses it to learn that a process has
// reached a wait.
func (c *Clock) Sleeping(n int) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan struct{})
	c.watchers = append(c.watchers, sleepWatcher{n: n, ch: ch})
	c.notifyLocked()
	return ch
}

func (c *Clock) notifyLocked() {
	kept := c.watchers[:0]
	for _, w := range c.watchers {
		if len(c.sleepers) >= w.n {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	c.watchers = kept
}

// WakeSleepers moves the clock forward to the latest time a current
// sleeper waits for, which wakes them all. With no sleeper it does nothing.
func (c *Clock) WakeSleepers() {
	c.mu.Lock()
	defer c.mu.Unlock()
	latest := c.now
	for s := range c.sleepers {
		if s.until.After(latest) {
			latest = s.until
		}
	}
	c.setLocked(latest)
}

// Ticks starts a ticker that ticks only when the test calls Tick
// (Options.Ticks); the period is ignored.
func (c *Clock) Ticks(time.Duration) (<-chan time.Time, func()) {
	ch := make(chan time.Time, 1)
	c.mu.Lock()
	c.tickers[ch] = struct{}{}
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.tickers, ch)
		c.mu.Unlock()
	}
}

// Tickers returns how many tickers run: started by Ticks and not yet
// stopped.
func (c *Clock) Tickers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.tickers)
}

// Tick gives every running ticker one tick at the clock's time. As with a
// time.Ticker, a ticker whose last tick has not been taken yet keeps that
// one and drops the new one.
func (c *Clock) Tick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch := range c.tickers {
		select {
		case ch <- c.now:
		default:
		}
	}
}
