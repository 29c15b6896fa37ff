package retry_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/faulty"
	"github.com/cairnproject/cairn/internal/objstore/mem"
	"github.com/cairnproject/cairn/internal/objstore/objstoretest"
	"github.com/cairnproject/cairn/internal/objstore/retry"
)

var fast = retry.Policy{InitialDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, MaxElapsed: 5 * time.Second}

// Through 20% injected failures, the wrapped backend still conforms.
func TestConformanceThroughFaults(t *testing.T) {
	seed := uint64(0)
	objstoretest.Run(t, objstoretest.Options{}, func(t *testing.T) objstore.Backend {
		seed++
		return retry.New(faulty.New(mem.New(mem.Options{}), faulty.Options{Seed: seed, FailRate: 0.2, FailAfterRate: 0.1}), fast)
	})
}

func TestPermanentErrorsAreNotRetried(t *testing.T) {
	var calls atomic.Int32
	be := &scripted{fn: func() error { calls.Add(1); return fmt.Errorf("swift get x: %w", cairn.ErrDenied) }}
	_, err := retry.New(be, fast).Stat(t.Context(), "x")
	if !errors.Is(err, cairn.ErrDenied) || calls.Load() != 1 {
		t.Fatalf("%v after %d calls", err, calls.Load())
	}
}

func TestGivesUpWithinBudget(t *testing.T) {
	var calls atomic.Int32
	be := &scripted{fn: func() error { calls.Add(1); return fmt.Errorf("put: 503: %w", cairn.ErrUnavailable) }}
	clock := newFakeClock()
	p := clock.policy(200 * time.Millisecond)
	err := retry.New(be, p).Put(t.Context(), "x", nil, objstore.PutOptions{})
	if !errors.Is(err, cairn.ErrUnavailable) || calls.Load() < 3 {
		t.Fatalf("%v after %d calls", err, calls.Load())
	}
	if e := clock.elapsed(); e > p.MaxElapsed || e < p.MaxElapsed-p.MaxDelay {
		t.Fatalf("gave up after %v of a %v budget", e, p.MaxElapsed)
	}
}

func TestContextStopsRetries(t *testing.T) {
	var calls atomic.Int32
	be := &scripted{fn: func() error { calls.Add(1); return cairn.ErrUnavailable }}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	clock := newFakeClock()
	p := clock.policy(time.Hour)
	sleep := p.Sleep
	p.Sleep = func(ctx context.Context, d time.Duration) error {
		if clock.sleepCount() == 2 {
			cancel() // during the third wait
		}
		return sleep(ctx, d)
	}
	_, err := retry.New(be, p).Stat(ctx, "x")
	if !errors.Is(err, context.Canceled) || !errors.Is(err, cairn.ErrUnavailable) || calls.Load() != 3 {
		t.Fatalf("%v after %d calls", err, calls.Load())
	}
	// An ended context reaches no backend at all.
	if _, err := retry.New(be, p).Stat(ctx, "x"); !errors.Is(err, context.Canceled) || calls.Load() != 3 {
		t.Fatalf("cancelled before the first attempt: %v after %d calls", err, calls.Load())
	}
}

// A create-if-absent put whose first attempt reached the store but
// reported failure must not turn into "already exists".
func TestIfAbsentAfterLostReply(t *testing.T) {
	inner := mem.New(mem.Options{})
	be := retry.New(faulty.New(inner, faulty.Options{FailAfterRate: 1}), fast)
	// Every put "fails" after storing; the retry finds its own object.
	err := be.Put(t.Context(), "config", []byte("mine"), objstore.PutOptions{IfAbsent: true})
	if err != nil && !errors.Is(err, cairn.ErrUnavailable) {
		t.Fatalf("put: %v", err)
	}
	if err := inner.Put(t.Context(), "other", []byte("theirs"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	be = retry.New(faulty.New(inner, faulty.Options{}), fast)
	if err := be.Put(t.Context(), "other", []byte("mine"), objstore.PutOptions{IfAbsent: true}); !errors.Is(err, cairn.ErrExists) {
		t.Fatalf("someone else's object: %v", err)
	}
}

// A read that breaks part-way resumes at the right offset.
func TestResumingRead(t *testing.T) {
	inner := mem.New(mem.Options{})
	data := bytes.Repeat([]byte("0123456789"), 10000)
	if err := inner.Put(t.Context(), "x", data, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	be := retry.New(&breaking{Backend: inner, every: 3000}, fast)
	got, err := objstore.ReadAll(t.Context(), be, "x", 5, 90000)
	if err != nil || !bytes.Equal(got, data[5:90005]) {
		t.Fatalf("resumed read: %v, %d bytes", err, len(got))
	}
}

// scripted fails every call with fn's error.
type scripted struct {
	objstore.Backend
	fn func() error
}

func (s *scripted) Location() string { return "scripted:" }
func (s *scripted) Put(context.Context, string, []byte, objstore.PutOptions) error {
	return s.fn()
}
func (s *scripted) Stat(context.Context, string) (objstore.ObjectInfo, error) {
	return objstore.ObjectInfo{}, s.fn()
}

// breaking returns readers that fail with a transient error every n bytes.
type breaking struct {
	objstore.Backend
	every int
}

func (b *breaking) Get(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	rc, err := b.Backend.Get(ctx, name, off, length)
	if err != nil {
		return nil, err
	}
	return &breakingReader{rc: rc, left: b.every}, nil
}

type breakingReader struct {
	rc       io.ReadCloser
	left     int
	withData bool // fail in the Read that returns the last bytes
}

func (r *breakingReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, errReset
	}
	if len(p) > r.left {
		p = p[:r.left]
	}
	n, err := r.rc.Read(p)
	r.left -= n
	if r.left == 0 && r.withData && err == nil {
		return n, errReset
	}
	return n, err
}

func (r *breakingReader) Close() error { return r.rc.Close() }

// fakeClock is a clock that moves only when the policy sleeps on it.
type fakeClock struct {
	mu     sync.Mutex
	start  time.Time
	now    time.Time
	sleeps int
}

func newFakeClock() *fakeClock {
	t0 := time.Unix(1_000_000, 0)
	return &fakeClock{start: t0, now: t0}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.sleeps++
	return nil
}

func (c *fakeClock) elapsed() time.Duration { return c.Now().Sub(c.start) }

func (c *fakeClock) sleepCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sleeps
}

// policy retries on the fake clock.
func (c *fakeClock) policy(maxElapsed time.Duration) retry.Policy {
	return retry.Policy{InitialDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond, MaxElapsed: maxElapsed, Now: c.Now, Sleep: c.Sleep}
}

// streamPlan says how the nth Get of a flaky backend goes.
type streamPlan struct {
	openErr    error // the request fails
	breakAfter int   // the body breaks after this many bytes; < 0 never
	withData   bool  // the break comes in the Read that returns the last bytes
}

// flaky serves Gets from the backend it embeds as its plan says.
type flaky struct {
	objstore.Backend
	plan func(open int) streamPlan

	mu    sync.Mutex
	opens int
}

func (f *flaky) Get(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	f.mu.Lock()
	n := f.opens
	f.opens++
	f.mu.Unlock()
	p := f.plan(n)
	if p.openErr != nil {
		return nil, p.openErr
	}
	rc, err := f.Backend.Get(ctx, name, off, length)
	if err != nil || p.breakAfter < 0 {
		return rc, err
	}
	return &breakingReader{rc: rc, left: p.breakAfter, withData: p.withData}, nil
}

func (f *flaky) openCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opens
}

var errReset = fmt.Errorf("connection reset: %w", cairn.ErrUnavailable)

func storeRandom(t *testing.T, n int) (*mem.Backend, []byte) {
	t.Helper()
	inner := mem.New(mem.Options{})
	data := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if err := inner.Put(t.Context(), "x", data, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	return inner, data
}

// A store whose every stream breaks before its first byte must end the
// read with an error within the operation's one budget, backing off
// before every reopening, and with a flat stack (the old reader recursed
// on itself, with a fresh budget and no pause each time, until the
// runtime died of a stack overflow).
func TestGetBrokenBeforeFirstByteGivesUp(t *testing.T) {
	inner, _ := storeRandom(t, 1000)
	be := &flaky{Backend: inner, plan: func(open int) streamPlan {
		if open < 5 {
			return streamPlan{openErr: fmt.Errorf("get: 503: %w", cairn.ErrUnavailable)}
		}
		return streamPlan{breakAfter: 0}
	}}
	clock := newFakeClock()
	p := clock.policy(time.Second)
	_, err := objstore.ReadAll(t.Context(), retry.New(be, p), "x", 0, -1)
	if !errors.Is(err, cairn.ErrUnavailable) {
		t.Fatalf("read: %v, want the transient error", err)
	}
	opens := be.openCount()
	if opens < 10 {
		t.Fatalf("gave up after %d opens", opens)
	}
	// One budget from the Get's start, the failed requests before the
	// first stream included.
	if e := clock.elapsed(); e > p.MaxElapsed || e < p.MaxElapsed-p.MaxDelay {
		t.Fatalf("gave up after %v of a %v budget", e, p.MaxElapsed)
	}
	if s := clock.sleepCount(); s != opens-1 {
		t.Fatalf("%d backoff waits for %d opens: want one before every reopening", s, opens)
	}
}

// Streams that break before their first byte now and then, and others
// part-way, still deliver exactly the object's bytes.
func TestGetBrokenNowAndThen(t *testing.T) {
	inner, data := storeRandom(t, 200_000)
	for _, tc := range []struct {
		name        string
		off, length int64
	}{
		{"whole", 0, -1},
		{"range", 7, 150_000},
		{"tail", 199_000, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(3, uint64(tc.off)))
			be := &flaky{Backend: inner, plan: func(int) streamPlan {
				switch r.IntN(4) {
				case 0:
					return streamPlan{breakAfter: 0}
				case 1:
					return streamPlan{openErr: fmt.Errorf("get: 500: %w", cairn.ErrUnavailable)}
				case 2:
					return streamPlan{breakAfter: r.IntN(20_000) + 1, withData: r.IntN(2) == 0}
				}
				return streamPlan{breakAfter: -1}
			}}
			got, err := objstore.ReadAll(t.Context(), retry.New(be, newFakeClock().policy(time.Hour)), "x", tc.off, tc.length)
			end := int64(len(data))
			if tc.length >= 0 {
				end = tc.off + tc.length
			}
			if err != nil || !bytes.Equal(got, data[tc.off:end]) {
				t.Fatalf("read: %v, %d bytes, want %d exact bytes", err, len(got), end-tc.off)
			}
		})
	}
}

// Streams that break part-way every time resume where they stopped,
// whether the error comes after the last bytes or with them (the old
// reader handed the latter error to the caller, failing the read).
func TestGetBreaksMidStreamRepeatedly(t *testing.T) {
	inner, data := storeRandom(t, 100_000)
	for _, withData := range []bool{false, true} {
		t.Run(fmt.Sprintf("withData=%v", withData), func(t *testing.T) {
			be := &flaky{Backend: inner, plan: func(int) streamPlan { return streamPlan{breakAfter: 3000, withData: withData} }}
			clock := newFakeClock()
			got, err := objstore.ReadAll(t.Context(), retry.New(be, clock.policy(time.Second)), "x", 5, 90_000)
			if err != nil || !bytes.Equal(got, data[5:90_005]) {
				t.Fatalf("read: %v, %d bytes", err, len(got))
			}
			if opens := be.openCount(); opens != 30 {
				t.Fatalf("%d opens for 90000 bytes in streams of 3000", opens)
			}
		})
	}
}

// A read that gave up keeps failing: the old reader answered the next
// Read with io.EOF, and a caller that retried its Read took a truncated
// object for a whole one.
func TestGetFailureIsSticky(t *testing.T) {
	inner, _ := storeRandom(t, 1000)
	be := &flaky{Backend: inner, plan: func(open int) streamPlan {
		if open == 0 {
			return streamPlan{breakAfter: 0}
		}
		return streamPlan{openErr: fmt.Errorf("get: 403: %w", cairn.ErrDenied)}
	}}
	rc, err := retry.New(be, newFakeClock().policy(time.Second)).Get(t.Context(), "x", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	buf := make([]byte, 100)
	for i := range 2 {
		if n, err := rc.Read(buf); n != 0 || !errors.Is(err, cairn.ErrDenied) {
			t.Fatalf("read %d after the reopening failed: %d bytes, %v", i+1, n, err)
		}
	}
}
