package retry_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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
	start := time.Now()
	p := fast
	p.MaxElapsed = 200 * time.Millisecond
	err := retry.New(be, p).Put(t.Context(), "x", nil, objstore.PutOptions{})
	if !errors.Is(err, cairn.ErrUnavailable) || time.Since(start) > time.Second || calls.Load() < 3 {
		t.Fatalf("%v after %d calls in %v", err, calls.Load(), time.Since(start))
	}
}

func TestContextStopsRetries(t *testing.T) {
	be := &scripted{fn: func() error { return cairn.ErrUnavailable }}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	p := fast
	p.MaxElapsed = time.Hour
	start := time.Now()
	if _, err := retry.New(be, p).Stat(ctx, "x"); err == nil || time.Since(start) > time.Second {
		t.Fatalf("%v after %v", err, time.Since(start))
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
	rc   io.ReadCloser
	left int
}

func (r *breakingReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, fmt.Errorf("connection reset: %w", cairn.ErrUnavailable)
	}
	if len(p) > r.left {
		p = p[:r.left]
	}
	n, err := r.rc.Read(p)
	r.left -= n
	return n, err
}

func (r *breakingReader) Close() error { return r.rc.Close() }
