package nbd_test

// A clock the test advances by hand, and the connections and listener that
// let a test both drive the server's timeouts with it and observe what the
// server is doing (blocked reading, blocked writing, a read that failed),
// so that tests wait for events rather than for time to pass.

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/nbd"
)

// fakeClock is an nbd.Clock that moves only when Advance is called. The
// functions given to AfterFunc, and the deadlines of the fakeConns made
// with it, fire inside the Advance call that reaches them (one due already,
// d <= 0, on the next Advance): once Advance returns, everything due has
// happened (a deadline that passed has been applied to the real
// connection, so a blocked Read or Write fails).
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	conns   []*fakeConn
	changed chan struct{} // closed and replaced when timers are added
}

type fakeTimer struct {
	at time.Time
	f  func()
}

var _ nbd.Clock = (*fakeClock)(nil)

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), changed: make(chan struct{})}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	close(c.changed)
	c.changed = make(chan struct{})
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		i := slices.Index(c.timers, t)
		if i < 0 {
			return false
		}
		c.timers = slices.Delete(c.timers, i, i+1)
		return true
	}
}

// Advance moves the clock forward by d and fires what became due, in
// order, before returning.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	var due []*fakeTimer
	c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool {
		if t.at.After(now) {
			return false
		}
		due = append(due, t)
		return true
	})
	conns := slices.Clone(c.conns)
	c.mu.Unlock()
	slices.SortStableFunc(due, func(a, b *fakeTimer) int { return a.at.Compare(b.at) })
	for _, t := range due {
		t.f()
	}
	for _, fc := range conns {
		fc.expire(now)
	}
}

// waitTimers blocks until at least n functions wait in AfterFunc, and
// reports true; or until stop is closed, and reports false.
func (c *fakeClock) waitTimers(n int, stop <-chan struct{}) bool {
	for {
		c.mu.Lock()
		pending, changed := len(c.timers), c.changed
		c.mu.Unlock()
		if pending >= n {
			return true
		}
		select {
		case <-changed:
		case <-stop:
			return false
		}
	}
}

// pastDeadline is a deadline already passed on the real clock: it makes the
// real connection's blocked and future reads (or writes) fail at once.
func pastDeadline() time.Time { return time.Unix(1, 0) }

// fakeConn is the server's side of a connection. Its deadlines are times of
// its fakeClock: one the clock passes is applied to the real connection as
// pastDeadline. It records what the server does with it, for tests to wait
// on.
type fakeConn struct {
	net.Conn
	clk     *fakeClock
	onClose func() // called on the first Close

	mu                        sync.Mutex
	rd, wd                    time.Time // deadlines as the server set them; zero: none
	reading                   bool      // a Read is in progress
	readBytes                 int64     // bytes all Reads returned
	readErr                   error     // the first error a Read returned
	writeLen                  int       // length of the Write in progress, 0 if none
	readTimeout, writeTimeout bool      // the clock passed a deadline the server had set
	closed                    bool
	changed                   chan struct{} // closed and replaced on every change above
}

func newFakeConn(nc net.Conn, clk *fakeClock, onClose func()) *fakeConn {
	c := &fakeConn{Conn: nc, clk: clk, onClose: onClose, changed: make(chan struct{})}
	clk.mu.Lock()
	clk.conns = append(clk.conns, c)
	clk.mu.Unlock()
	return c
}

// notify wakes the waiters; c.mu is held.
func (c *fakeConn) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *fakeConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	c.reading = true
	c.notify()
	c.mu.Unlock()
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.reading = false
	c.readBytes += int64(n)
	if err != nil && c.readErr == nil {
		c.readErr = err
	}
	c.notify()
	c.mu.Unlock()
	return n, err
}

func (c *fakeConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writeLen = len(p)
	c.notify()
	c.mu.Unlock()
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.writeLen = 0
	c.notify()
	c.mu.Unlock()
	return n, err
}

func (c *fakeConn) Close() error {
	c.mu.Lock()
	first := !c.closed
	c.closed = true
	c.notify()
	c.mu.Unlock()
	err := c.Conn.Close()
	if first {
		c.onClose()
	}
	return err
}

func (c *fakeConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *fakeConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rd = t
	return c.Conn.SetReadDeadline(c.real(t, c.clk.Now()))
}

func (c *fakeConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wd = t
	return c.Conn.SetWriteDeadline(c.real(t, c.clk.Now()))
}

// real is the deadline to set on the real connection for deadline t at
// time now: none until the clock passes t.
func (c *fakeConn) real(t, now time.Time) time.Time {
	if t.IsZero() || t.After(now) {
		return time.Time{}
	}
	return pastDeadline()
}

// expire applies the deadlines the clock passed. The clock calls it after
// moving to now; a deadline set meanwhile saw the new time already.
func (c *fakeConn) expire(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.rd.IsZero() && !c.rd.After(now) {
		c.readTimeout = true
		c.Conn.SetReadDeadline(pastDeadline())
	}
	if !c.wd.IsZero() && !c.wd.After(now) {
		c.writeTimeout = true
		c.Conn.SetWriteDeadline(pastDeadline())
	}
}

// timedOut reports whether the clock has passed a read (and a write)
// deadline the server set: a test that advanced the clock to make the
// server time out checks this first, so that a server setting no deadline
// (or too late a one) fails the test instead of leaving it waiting for a
// close that never comes.
func (c *fakeConn) timedOut() (read, write bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readTimeout, c.writeTimeout
}

// waitUntil blocks until cond, called with c.mu held, holds.
func (c *fakeConn) waitUntil(cond func() bool) {
	for {
		c.mu.Lock()
		ok, changed := cond(), c.changed
		c.mu.Unlock()
		if ok {
			return
		}
		<-changed
	}
}

// waitReadBlocked waits until the server has read all n bytes the client
// sent and waits in Read for more: whatever deadline governs that wait is
// set by then.
func (c *fakeConn) waitReadBlocked(n int64) {
	c.waitUntil(func() bool { return c.reading && c.readBytes == n })
}

// waitWriteBlocked waits until the server is writing a buffer of at least
// n bytes. A buffer larger than the socket can hold stays blocked until
// the client reads it (or the write deadline passes).
func (c *fakeConn) waitWriteBlocked(n int) {
	c.waitUntil(func() bool { return c.writeLen >= n })
}

// waitReadFailed waits until a Read by the server failed (a deadline
// passed, the connection was halted, or the client went away).
func (c *fakeConn) waitReadFailed() {
	c.waitUntil(func() bool { return c.readErr != nil })
}

// fakeListener hands the server fakeConns of one fakeClock and tells the
// test about them.
type fakeListener struct {
	net.Listener
	clk *fakeClock

	mu       sync.Mutex
	accepted []*fakeConn
	taken    int // accepted connections handed to the test by next
	open     int // accepted connections the server has not closed
	changed  chan struct{}
}

func (l *fakeListener) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *fakeListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	defer l.notify()
	fc := newFakeConn(nc, l.clk, l.connClosed)
	l.accepted = append(l.accepted, fc)
	l.open++
	return fc, nil
}

func (l *fakeListener) waitUntil(cond func() bool) {
	for {
		l.mu.Lock()
		ok, changed := cond(), l.changed
		l.mu.Unlock()
		if ok {
			return
		}
		<-changed
	}
}

// next returns the server's side of the next connection accepted, waiting
// for it. Connections are handed out in the order they were accepted.
func (l *fakeListener) next() *fakeConn {
	l.waitUntil(func() bool { return len(l.accepted) > l.taken })
	l.mu.Lock()
	defer l.mu.Unlock()
	l.taken++
	return l.accepted[l.taken-1]
}

// waitOpenAtMost waits until the server holds at most n of the
// connections it accepted open.
func (l *fakeListener) waitOpenAtMost(n int) {
	l.waitUntil(func() bool { return l.open <= n })
}

// connClosed counts a connection the server closed.
func (l *fakeListener) connClosed() {
	l.mu.Lock()
	l.open--
	l.notify()
	l.mu.Unlock()
}

// testServer is a server whose time the test drives: Serve runs with a
// fakeClock, on a fakeListener, with a context the test can end.
type testServer struct {
	sock   string
	clock  *fakeClock
	l      *fakeListener
	cancel context.CancelFunc
	done   chan error // receives what Serve returned
}

// startServer runs a server for cat whose clock and context the test
// controls. Nothing times out unless the test advances the clock. The
// server stops, and the test waits for Serve to return, when it ends.
func startServer(t *testing.T, cat nbd.Catalog, opts nbd.Options) *testServer {
	t.Helper()
	l, sock := listenUnix(t)
	if opts.Logger == nil {
		opts.Logger, _ = newLogger(t, false)
	}
	s := &testServer{sock: sock, clock: newFakeClock(), done: make(chan error, 1)}
	s.l = &fakeListener{Listener: l, clk: s.clock, changed: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	s.cancel = cancel
	srv := nbd.NewServer(cat, opts)
	nbd.SetClock(srv, s.clock)
	go func() { s.done <- srv.Serve(ctx, s.l) }()
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	return s
}

// conn returns the server's side of the next connection it accepted.
func (s *testServer) conn() *fakeConn { return s.l.next() }

// wait waits for Serve to return and fails the test if it returned an
// error.
func (s *testServer) wait(t *testing.T) {
	t.Helper()
	err := <-s.done
	s.done <- err // for the cleanup
	if err != nil {
		t.Errorf("Serve: %v", err)
	}
}
