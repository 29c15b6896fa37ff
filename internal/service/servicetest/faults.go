// Package servicetest is for tests of the service: the conformance
// suites every Engine and Repository passes (RunEngine, RunRepository),
// and in-memory fakes of both (NewEngine, NewRepository) whose every call
// a test can make fail, or hold at a precise point, through Faults.
package servicetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// ErrInjected is what an injected failure wraps unless its Fault says
// otherwise.
var ErrInjected = errors.New("injected failure")

// Fault is one rule of a Faults: which calls it touches, and what it
// does to them.
type Fault struct {
	// Method names the calls, as "Engine.CreateVolume",
	// "Device.WriteAt" or "Repository.BackupSnapshot".
	Method string
	// Call is the first call of Method it touches, counted from 1 since
	// the last Reset; 0 is the first call from now on.
	Call int
	// Times is how many calls it touches from there; 0 is every one.
	Times int
	// After makes it act once the call has taken effect, rather than
	// before: the effect stays, and the caller sees the failure (or
	// waits), as after a crash at that point.
	After bool
	// Gate, when set, holds the call until the gate is opened or the
	// call's context ends (the call then fails with the context's error).
	Gate *Gate
	// Err, when set, is what the call fails with (after the gate, if
	// any). Without Err and Gate the call fails with ErrInjected.
	Err error
}

// Gate holds the calls a Fault touches until it is opened.
type Gate struct {
	reached  chan struct{}
	open     chan struct{}
	once     sync.Once
	openOnce sync.Once
}

// NewGate returns a closed gate.
func NewGate() *Gate {
	return &Gate{reached: make(chan struct{}), open: make(chan struct{})}
}

// Reached is closed once a call waits at the gate.
func (g *Gate) Reached() <-chan struct{} { return g.reached }

// Open lets every call waiting at the gate, and every later one, through.
func (g *Gate) Open() { g.openOnce.Do(func() { close(g.open) }) }

// Wait waits until the gate is open (nil) or ctx ends (its error).
func (g *Gate) Wait(ctx context.Context) error {
	g.once.Do(func() { close(g.reached) })
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Faults counts the calls of the fakes sharing it, in order, and applies
// its rules to them. It is safe for concurrent use.
type Faults struct {
	mu     sync.Mutex
	counts map[string]int
	trace  []string
	rules  []*rule
}

type rule struct {
	Fault
	first int // the first call it touches
	left  int // calls left to touch; -1 every one
}

// NewFaults returns a Faults with no rules.
func NewFaults() *Faults { return &Faults{counts: map[string]int{}} }

// Add adds a rule.
func (f *Faults) Add(ft Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := &rule{Fault: ft, first: ft.Call, left: ft.Times}
	if r.first == 0 {
		r.first = f.counts[ft.Method] + 1
	}
	if r.left == 0 {
		r.left = -1
	}
	f.rules = append(f.rules, r)
}

// Fail makes the nth call of method (from 1, since the last Reset) fail
// once with ErrInjected.
func (f *Faults) Fail(method string, n int) {
	f.Add(Fault{Method: method, Call: n, Times: 1})
}

// Hold makes the next call of method wait at a new gate, before it takes
// effect or (after) once it has; it returns the gate.
func (f *Faults) Hold(method string, after bool) *Gate {
	g := NewGate()
	f.Add(Fault{Method: method, Times: 1, After: after, Gate: g})
	return g
}

// Reset forgets the rules, the counts and the trace.
func (f *Faults) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules, f.trace = nil, nil
	clear(f.counts)
}

// Clear forgets the rules, keeping the counts and the trace.
func (f *Faults) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
}

// Trace returns the calls made since the last Reset, in order.
func (f *Faults) Trace() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.trace)
}

// Call is one call in progress.
type Call struct {
	f      *Faults
	method string
	n      int
}

// Begin counts a call of method and applies the rules that act before it
// takes effect; an error means the call must fail with it, and do
// nothing.
func (f *Faults) Begin(ctx context.Context, method string) (Call, error) {
	f.mu.Lock()
	f.counts[method]++
	n := f.counts[method]
	f.trace = append(f.trace, method)
	f.mu.Unlock()
	c := Call{f: f, method: method, n: n}
	return c, c.apply(ctx, false)
}

// End applies the rules that act once the call has taken effect; an
// error means the call must report it (its effect stays).
func (c Call) End(ctx context.Context) error { return c.apply(ctx, true) }

func (c Call) apply(ctx context.Context, after bool) error {
	if c.f == nil {
		return nil
	}
	var hit []*rule
	c.f.mu.Lock()
	for _, r := range c.f.rules {
		if r.Method != c.method || r.After != after || c.n < r.first || r.left == 0 {
			continue
		}
		if r.left > 0 {
			r.left--
		}
		hit = append(hit, r)
	}
	c.f.mu.Unlock()
	for _, r := range hit {
		if r.Gate != nil {
			if err := r.Gate.Wait(ctx); err != nil {
				return fmt.Errorf("%s (call %d) held until its context ended: %w", c.method, c.n, err)
			}
		}
		if r.Err != nil {
			return fmt.Errorf("%s (call %d): %w", c.method, c.n, r.Err)
		}
		if r.Gate == nil {
			return fmt.Errorf("%s (call %d): %w", c.method, c.n, ErrInjected)
		}
	}
	return nil
}
