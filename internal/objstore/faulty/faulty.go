// Package faulty wraps a Backend and injects faults: failed requests,
// corrupted and truncated reads, slow listings, and a simulated crash after
// which nothing reaches the store.
package faulty

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
)

// ErrInjected marks an injected failure. It is transient (it wraps
// cairn.ErrUnavailable): a retry may succeed.
var ErrInjected = fmt.Errorf("injected fault: %w", cairn.ErrUnavailable)

// ErrCrashed is returned for every request after the simulated crash.
var ErrCrashed = errors.New("simulated crash")

// Options choose the faults. Rates are probabilities in [0,1].
type Options struct {
	Seed uint64
	// FailRate fails requests before they reach the store.
	FailRate float64
	// FailAfterRate fails a Put after it reached the store (the caller
	// sees an error although the object was written).
	FailAfterRate float64
	// CorruptRate flips one bit in the data a Get returns.
	CorruptRate float64
	// TruncateRate cuts the data a Get returns short.
	TruncateRate float64
	// ListDelay delays each listing.
	ListDelay time.Duration
	// CrashAfter, when positive, lets that many Puts and Deletes through
	// and then fails every request, as if the process had died.
	CrashAfter int
	// Prefix, when set, limits rate-based faults to objects whose names
	// start with it.
	Prefix string
}

// Backend is a fault-injecting objstore.Backend.
type Backend struct {
	be   objstore.Backend
	opts Options

	mu        sync.Mutex
	rng       *rand.Rand
	mutations int
	crashed   bool
	injected  int
}

var _ objstore.Backend = (*Backend)(nil)

// New wraps be.
func New(be objstore.Backend, opts Options) *Backend {
	return &Backend{be: be, opts: opts, rng: rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x5eed))}
}

// SetOptions changes the faults from now on; the crash counter and random
// stream carry on.
func (b *Backend) SetOptions(opts Options) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.opts = opts
}

func (b *Backend) options() Options {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opts
}

// Injected returns how many faults were injected so far.
func (b *Backend) Injected() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.injected
}

// Crashed reports whether the simulated crash happened.
func (b *Backend) Crashed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.crashed
}

func (b *Backend) roll(rate float64) bool {
	if rate <= 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rng.Float64() < rate {
		b.injected++
		return true
	}
	return false
}

// before is called at the start of every request; mutating requests count
// towards the crash.
func (b *Backend) before(op, name string, mutating bool) error {
	opts := b.options()
	b.mu.Lock()
	if b.crashed {
		b.mu.Unlock()
		return fmt.Errorf("faulty: %s %s: %w", op, name, ErrCrashed)
	}
	if mutating && opts.CrashAfter > 0 {
		if b.mutations >= opts.CrashAfter {
			b.crashed = true
			b.mu.Unlock()
			return fmt.Errorf("faulty: %s %s: %w", op, name, ErrCrashed)
		}
		b.mutations++
	}
	b.mu.Unlock()
	if !strings.HasPrefix(name, opts.Prefix) {
		return nil
	}
	if b.roll(opts.FailRate) {
		return fmt.Errorf("faulty: %s %s: %w", op, name, ErrInjected)
	}
	return nil
}

// Location implements objstore.Backend.
func (b *Backend) Location() string { return b.be.Location() }

// Unwrap returns the wrapped backend.
func (b *Backend) Unwrap() objstore.Backend { return b.be }

// Close implements objstore.Backend: it closes the wrapped backend. No
// fault is injected into Close: a crashed process closes nothing, and
// the simulated crash is about what reaches the store.
func (b *Backend) Close() error { return b.be.Close() }

// Put implements objstore.Backend.
func (b *Backend) Put(ctx context.Context, name string, data []byte, opts objstore.PutOptions) error {
	if err := b.before("put", name, true); err != nil {
		return err
	}
	if err := b.be.Put(ctx, name, data, opts); err != nil {
		return err
	}
	if opts := b.options(); strings.HasPrefix(name, opts.Prefix) && b.roll(opts.FailAfterRate) {
		return fmt.Errorf("faulty: put %s (stored): %w", name, ErrInjected)
	}
	return nil
}

// Get implements objstore.Backend.
func (b *Backend) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := b.before("get", name, false); err != nil {
		return nil, err
	}
	rc, err := b.be.Get(ctx, name, offset, length)
	if err != nil {
		return nil, err
	}
	opts := b.options()
	inScope := strings.HasPrefix(name, opts.Prefix)
	corrupt, truncate := inScope && b.roll(opts.CorruptRate), inScope && b.roll(opts.TruncateRate)
	if !corrupt && !truncate {
		return rc, nil
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	data = bytes.Clone(data)
	if corrupt && len(data) > 0 {
		b.mu.Lock()
		i := b.rng.IntN(len(data) * 8)
		b.mu.Unlock()
		data[i/8] ^= 1 << (i % 8)
	}
	if truncate && len(data) > 0 {
		b.mu.Lock()
		data = data[:b.rng.IntN(len(data))]
		b.mu.Unlock()
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

// Stat implements objstore.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (objstore.ObjectInfo, error) {
	if err := b.before("stat", name, false); err != nil {
		return objstore.ObjectInfo{}, err
	}
	return b.be.Stat(ctx, name)
}

// List implements objstore.Backend.
func (b *Backend) List(ctx context.Context, prefix string, fn func(objstore.ObjectInfo) error) error {
	if err := b.before("list", prefix, false); err != nil {
		return err
	}
	if d := b.options().ListDelay; d > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
	return b.be.List(ctx, prefix, fn)
}

// Delete implements objstore.Backend.
func (b *Backend) Delete(ctx context.Context, name string) error {
	if err := b.before("delete", name, true); err != nil {
		return err
	}
	return b.be.Delete(ctx, name)
}

// DeleteBatch implements objstore.BatchDeleter one object at a time, so
// a simulated crash can stop a batch part-way, as a real one can.
func (b *Backend) DeleteBatch(ctx context.Context, names []string) error {
	for _, name := range names {
		if err := b.Delete(ctx, name); err != nil {
			return err
		}
	}
	return nil
}
