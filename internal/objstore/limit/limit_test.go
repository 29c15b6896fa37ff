package limit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/limit"
	"github.com/cairnproject/cairn/internal/objstore/mem"
	"github.com/cairnproject/cairn/internal/objstore/objstoretest"
)

// One slot is the strictest setting: the suite must pass through it
// without deadlocking.
func TestConformance(t *testing.T) {
	for _, n := range []int{1, 4} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			objstoretest.Run(t, objstoretest.Options{}, func(t *testing.T) objstore.Backend {
				return limit.New(n).Wrap(mem.New(mem.Options{}))
			})
		})
	}
}

// inFlight counts the requests inside the backends below the limiters,
// across all of them, and fails the test when there are more than max.
type inFlight struct {
	t        *testing.T
	max      int32
	now, top atomic.Int32
}

func (c *inFlight) enter() {
	n := c.now.Add(1)
	if n > c.max {
		c.t.Errorf("%d requests in flight, limit %d", n, c.max)
	}
	for {
		top := c.top.Load()
		if n <= top || c.top.CompareAndSwap(top, n) {
			return
		}
	}
}

func (c *inFlight) leave() { c.now.Add(-1) }

// gate is a backend whose requests, once they reach it, announce
// themselves on entered and wait for the test to let them through on
// pass. A Get's request ends when its body ends or is closed; a listing
// is not in flight while it waits for the caller's fn.
type gate struct {
	objstore.Backend
	count   *inFlight
	entered chan<- string
	pass    <-chan struct{}
}

func (g *gate) through(op, name string) {
	g.count.enter()
	g.entered <- op + " " + name
	<-g.pass
}

func (g *gate) Put(ctx context.Context, name string, data []byte, opts objstore.PutOptions) error {
	g.through("put", name)
	defer g.count.leave()
	return g.Backend.Put(ctx, name, data, opts)
}

func (g *gate) Stat(ctx context.Context, name string) (objstore.ObjectInfo, error) {
	g.through("stat", name)
	defer g.count.leave()
	return g.Backend.Stat(ctx, name)
}

func (g *gate) Delete(ctx context.Context, name string) error {
	g.through("delete", name)
	defer g.count.leave()
	return g.Backend.Delete(ctx, name)
}

func (g *gate) List(ctx context.Context, prefix string, fn func(objstore.ObjectInfo) error) error {
	g.through("list", prefix)
	defer g.count.leave()
	return g.Backend.List(ctx, prefix, func(info objstore.ObjectInfo) error {
		g.count.leave()
		defer g.count.enter()
		return fn(info)
	})
}

func (g *gate) Get(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	g.through("get", name)
	rc, err := g.Backend.Get(ctx, name, off, length)
	if err != nil {
		g.count.leave()
		return nil, err
	}
	return &countedBody{rc: rc, count: g.count}, nil
}

type countedBody struct {
	rc    io.ReadCloser
	count *inFlight
	done  bool
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && !b.done {
		b.done = true
		b.count.leave()
	}
	return n, err
}

func (b *countedBody) Close() error {
	if !b.done {
		b.done = true
		b.count.leave()
	}
	return b.rc.Close()
}

// waitFor waits until cond holds: the state the test reads back.
func waitFor(cond func() bool) {
	for !cond() {
		runtime.Gosched()
	}
}

func put(t *testing.T, b objstore.Backend, name string, data []byte) {
	t.Helper()
	if err := b.Put(t.Context(), name, data, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Requests of every kind, through two backends sharing a limiter, never
// number more than its slots in flight; the ones waiting go through one
// by one as slots free.
func TestBound(t *testing.T) {
	for _, n := range []int{1, 2, 3} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			ctx := t.Context()
			count := &inFlight{t: t, max: int32(n)}
			entered := make(chan string)
			pass := make(chan struct{})
			l := limit.New(n)
			var backends []objstore.Backend
			for range 2 {
				m := mem.New(mem.Options{})
				for _, name := range []string{"a", "b", "l/1", "l/2"} {
					put(t, m, name, bytes.Repeat([]byte(name), 1000))
				}
				backends = append(backends, l.Wrap(&gate{Backend: m, count: count, entered: entered, pass: pass}))
			}
			ops := []func(b objstore.Backend) error{
				func(b objstore.Backend) error { return b.Put(ctx, "c", []byte("c"), objstore.PutOptions{}) },
				func(b objstore.Backend) error { _, err := b.Stat(ctx, "a"); return err },
				func(b objstore.Backend) error { return b.Delete(ctx, "b") },
				func(b objstore.Backend) error {
					return b.List(ctx, "l/", func(objstore.ObjectInfo) error { return nil })
				},
				func(b objstore.Backend) error { // read to the end, close later
					rc, err := b.Get(ctx, "a", 0, -1)
					if err != nil {
						return err
					}
					defer rc.Close()
					_, err = io.Copy(io.Discard, rc)
					return err
				},
				func(b objstore.Backend) error { // close without reading
					rc, err := b.Get(ctx, "a", 10, 10)
					if err != nil {
						return err
					}
					return rc.Close()
				},
			}
			total := 3 * len(ops)
			var wg sync.WaitGroup
			for i := range total {
				wg.Go(func() {
					if err := ops[i%len(ops)](backends[i%2]); err != nil {
						t.Errorf("op %d: %v", i, err)
					}
				})
			}
			// n requests get in; the others wait for slots.
			for range n {
				<-entered
			}
			waitFor(func() bool { return l.Stats().Waiting == total-n })
			if s := l.Stats(); s != (limit.Stats{Limit: n, InFlight: n, Waiting: total - n}) {
				t.Fatalf("stats %+v with %d requests for %d slots", s, total, n)
			}
			// Each request let through makes room for one more.
			for received := n; received < total; received++ {
				pass <- struct{}{}
				<-entered
				if s := l.Stats(); s.InFlight > n {
					t.Fatalf("stats %+v", s)
				}
			}
			for range n {
				pass <- struct{}{}
			}
			wg.Wait()
			if top := count.top.Load(); top != int32(n) {
				t.Fatalf("at most %d requests in flight, want %d", top, n)
			}
			if s := l.Stats(); s != (limit.Stats{Limit: n}) {
				t.Fatalf("stats %+v after every request ended", s)
			}
		})
	}
}

// A Get holds its slot until its body ends, fails or is closed, and
// gives it back once however it ends.
func TestGetHoldsSlotUntilBodyEnds(t *testing.T) {
	ctx := t.Context()
	inner := mem.New(mem.Options{})
	put(t, inner, "x", bytes.Repeat([]byte("x"), 100))
	l := limit.New(1)
	b := l.Wrap(&failingBodies{Backend: inner})

	// waitingStat starts a Stat and returns its result once it is waiting
	// for the slot.
	waitingStat := func() <-chan error {
		done := make(chan error, 1)
		go func() { _, err := b.Stat(ctx, "x"); done <- err }()
		waitFor(func() bool { return l.Stats().Waiting == 1 })
		return done
	}
	for _, tc := range []struct {
		name string
		end  func(t *testing.T, rc io.ReadCloser)
	}{
		{"read to the end", func(t *testing.T, rc io.ReadCloser) {
			if _, err := io.Copy(io.Discard, rc); err != nil {
				t.Fatal(err)
			}
		}},
		{"closed unread", func(t *testing.T, rc io.ReadCloser) {
			if err := rc.Close(); err != nil {
				t.Fatal(err)
			}
		}},
		{"read error", func(t *testing.T, rc io.ReadCloser) {
			if _, err := io.Copy(io.Discard, rc); !errors.Is(err, cairn.ErrUnavailable) {
				t.Fatalf("read: %v", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "x"
			if tc.name == "read error" {
				name = "fail/x"
				put(t, inner, name, []byte("doomed"))
			}
			rc, err := b.Get(ctx, name, 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			stat := waitingStat()
			// Part of the body read: still the transfer's slot.
			if _, err := rc.Read(make([]byte, 1)); err != nil && name == "x" {
				t.Fatal(err)
			}
			if s := l.Stats(); s.InFlight != 1 || s.Waiting != 1 {
				t.Fatalf("stats %+v while a body is open", s)
			}
			tc.end(t, rc)
			if err := <-stat; err != nil {
				t.Fatalf("stat once the body ended: %v", err)
			}
			// Closing after the end gives nothing back twice (the
			// semaphore would panic).
			if err := rc.Close(); err != nil {
				t.Fatal(err)
			}
			if s := l.Stats(); s != (limit.Stats{Limit: 1}) {
				t.Fatalf("stats %+v after the body ended", s)
			}
		})
	}
}

// failingBodies gives bodies of objects under "fail/" that break after
// their first byte.
type failingBodies struct{ objstore.Backend }

func (f *failingBodies) Get(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	rc, err := f.Backend.Get(ctx, name, off, length)
	if err != nil || len(name) < 5 || name[:5] != "fail/" {
		return rc, err
	}
	return &breakAfterOne{rc: rc}, nil
}

type breakAfterOne struct {
	rc   io.ReadCloser
	read bool
}

func (b *breakAfterOne) Read(p []byte) (int, error) {
	if b.read {
		return 0, fmt.Errorf("connection reset: %w", cairn.ErrUnavailable)
	}
	b.read = true
	return b.rc.Read(p[:min(1, len(p))])
}

func (b *breakAfterOne) Close() error { return b.rc.Close() }

// A caller whose context ends while it waits for a slot returns at once
// with the context's error, and its request never reaches the store.
func TestCancelWhileWaiting(t *testing.T) {
	inner := mem.New(mem.Options{})
	put(t, inner, "x", []byte("x"))
	var stats atomic.Int32
	l := limit.New(1)
	b := l.Wrap(&countingStats{Backend: inner, n: &stats})
	rc, err := b.Get(t.Context(), "x", 0, -1) // holds the only slot
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { _, err := b.Stat(ctx, "x"); done <- err }()
	waitFor(func() bool { return l.Stats().Waiting == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("stat cancelled while waiting: %v", err)
	}
	if stats.Load() != 0 {
		t.Fatal("a cancelled request reached the store")
	}
	if s := l.Stats(); s != (limit.Stats{Limit: 1, InFlight: 1}) {
		t.Fatalf("stats %+v", s)
	}
}

type countingStats struct {
	objstore.Backend
	n *atomic.Int32
}

func (c *countingStats) Stat(ctx context.Context, name string) (objstore.ObjectInfo, error) {
	c.n.Add(1)
	return c.Backend.Stat(ctx, name)
}

// A listing's fn may issue requests through the same limiter, as garbage
// collection deletes what it lists: with one slot, holding it across fn
// would deadlock.
func TestListCallbackMayIssueRequests(t *testing.T) {
	inner := mem.New(mem.Options{})
	for _, name := range []string{"h/1", "h/2", "h/3"} {
		put(t, inner, name, []byte(name))
	}
	l := limit.New(1)
	b := l.Wrap(inner)
	ctx := t.Context()
	err := b.List(ctx, "h/", func(info objstore.ObjectInfo) error {
		if s := l.Stats(); s.InFlight != 0 {
			return fmt.Errorf("listing holds a slot while fn runs: %+v", s)
		}
		return b.Delete(ctx, info.Name)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := inner.List(ctx, "h/", func(info objstore.ObjectInfo) error { return fmt.Errorf("%s left", info.Name) }); err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s != (limit.Stats{Limit: 1}) {
		t.Fatalf("stats %+v", s)
	}
}

// A batch delete over a backend without batches deletes object by
// object, each under the bound.
func TestDeleteBatchOneByOne(t *testing.T) {
	inner := mem.New(mem.Options{})
	var names []string
	for i := range 20 {
		names = append(names, fmt.Sprintf("d/%02d", i))
		put(t, inner, names[i], []byte{byte(i)})
	}
	count := &inFlight{t: t, max: 2}
	entered := make(chan string)
	pass := make(chan struct{})
	l := limit.New(2)
	b := l.Wrap(&gate{Backend: inner, count: count, entered: entered, pass: pass})
	done := make(chan error, 1)
	go func() { done <- b.DeleteBatch(t.Context(), names) }()
	for range names {
		<-entered
		pass <- struct{}{}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if ok, err := objstore.Exists(t.Context(), inner, name); ok || err != nil {
			t.Fatalf("%s: exists %v, %v", name, ok, err)
		}
	}
}
