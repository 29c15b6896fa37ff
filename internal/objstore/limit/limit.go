// Package limit bounds the requests in flight to an object store, across
// every backend that shares one Limiter: a server that runs several
// tasks, each with its repositories' transfers, keeps the store's load
// (and its own sockets and memory) to one number.
//
// Every request holds a slot of the Limiter while the store works on it:
//
//   - Put, Stat and Delete for the call;
//   - Get until its body is closed, or has returned io.EOF or an error:
//     the transfer, not the request, is what costs;
//   - List while the backend below fetches the listing, but not while
//     the caller's fn runs, so fn may issue requests of its own;
//   - DeleteBatch for the call when the backend below deletes in
//     batches (one request), otherwise one slot per object deleted;
//   - RemoveTemporary for the call (its requests follow one another).
//
// A caller waiting for a slot gives up with its context's error as soon
// as the context ends.
//
// The contract that keeps this free of deadlocks: a goroutine must not
// wait for a slot (issue any request through a backend of the same
// Limiter) while it holds a Get body it has not read to the end nor
// closed. Were n such goroutines to hold the n slots, each would wait
// for the others forever. cairn's readers all take an object whole and
// close it before their next request (objstore.ReadAll and ReadInto),
// and the retry wrapper closes a broken stream before it reopens one.
//
// Wrap the retry wrapper around the limit, not the other way round, so
// that an operation backing off between attempts holds no slot.
package limit

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/cairnproject/cairn/internal/objstore"
)

// Limiter is a number of request slots that the backends it wraps share.
// It is safe for concurrent use.
type Limiter struct {
	size     int
	sem      *semaphore.Weighted
	inFlight atomic.Int64
	waiting  atomic.Int64
}

// New returns a Limiter of n slots; n below 1 counts as 1.
func New(n int) *Limiter {
	n = max(n, 1)
	return &Limiter{size: n, sem: semaphore.NewWeighted(int64(n))}
}

// Stats is a snapshot of a Limiter, for metrics.
type Stats struct {
	Limit    int `json:"limit"`     // slots in all
	InFlight int `json:"in_flight"` // requests holding a slot
	Waiting  int `json:"waiting"`   // requests waiting for one
}

// Stats returns how many requests hold and wait for slots.
func (l *Limiter) Stats() Stats {
	return Stats{Limit: l.size, InFlight: int(l.inFlight.Load()), Waiting: int(l.waiting.Load())}
}

// acquire waits for a slot, or for ctx to end.
func (l *Limiter) acquire(ctx context.Context, op, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !l.sem.TryAcquire(1) {
		l.waiting.Add(1)
		err := l.sem.Acquire(ctx, 1)
		l.waiting.Add(-1)
		if err != nil {
			return fmt.Errorf("limit: %s %s: waiting for one of %d request slots: %w", op, name, l.size, err)
		}
	}
	l.inFlight.Add(1)
	return nil
}

func (l *Limiter) release() {
	l.inFlight.Add(-1)
	l.sem.Release(1)
}

// Wrap returns be with its requests counted against l's slots. Closing
// the returned backend closes be; it does not affect l or the other
// backends l wraps.
func (l *Limiter) Wrap(be objstore.Backend) *Backend { return &Backend{be: be, l: l} }

// Backend is an objstore.Backend whose requests hold slots of a Limiter.
type Backend struct {
	be objstore.Backend
	l  *Limiter
}

var (
	_ objstore.Backend          = (*Backend)(nil)
	_ objstore.BatchDeleter     = (*Backend)(nil)
	_ objstore.TemporaryRemover = (*Backend)(nil)
)

// Unwrap returns the wrapped backend.
func (b *Backend) Unwrap() objstore.Backend { return b.be }

// Location implements objstore.Backend.
func (b *Backend) Location() string { return b.be.Location() }

// Close implements objstore.Backend: it closes the wrapped backend.
func (b *Backend) Close() error { return b.be.Close() }

// Put implements objstore.Backend.
func (b *Backend) Put(ctx context.Context, name string, data []byte, opts objstore.PutOptions) error {
	if err := b.l.acquire(ctx, "put", name); err != nil {
		return err
	}
	defer b.l.release()
	return b.be.Put(ctx, name, data, opts)
}

// Get implements objstore.Backend. The slot stays held until the body is
// closed or has returned io.EOF or an error.
func (b *Backend) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := b.l.acquire(ctx, "get", name); err != nil {
		return nil, err
	}
	rc, err := b.be.Get(ctx, name, offset, length)
	if err != nil {
		b.l.release()
		return nil, err
	}
	return &body{rc: rc, l: b.l}, nil
}

// body gives its slot back once: at the end of the stream or at Close.
type body struct {
	rc       io.ReadCloser
	l        *Limiter
	released atomic.Bool
}

func (r *body) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if err != nil {
		r.release()
	}
	return n, err
}

func (r *body) Close() error {
	err := r.rc.Close()
	r.release()
	return err
}

func (r *body) release() {
	if r.released.CompareAndSwap(false, true) {
		r.l.release()
	}
}

// Stat implements objstore.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (objstore.ObjectInfo, error) {
	if err := b.l.acquire(ctx, "stat", name); err != nil {
		return objstore.ObjectInfo{}, err
	}
	defer b.l.release()
	return b.be.Stat(ctx, name)
}

// List implements objstore.Backend. The slot is given back while fn runs
// and taken again after it, so that fn may issue requests (garbage
// collection deletes what it lists) without deadlocking on its own slot.
func (b *Backend) List(ctx context.Context, prefix string, fn func(objstore.ObjectInfo) error) error {
	if err := b.l.acquire(ctx, "list", prefix); err != nil {
		return err
	}
	held := true
	defer func() {
		if held {
			b.l.release()
		}
	}()
	return b.be.List(ctx, prefix, func(info objstore.ObjectInfo) error {
		b.l.release()
		held = false
		if err := fn(info); err != nil {
			return err
		}
		if err := b.l.acquire(ctx, "list", prefix); err != nil {
			return err
		}
		held = true
		return nil
	})
}

// Delete implements objstore.Backend.
func (b *Backend) Delete(ctx context.Context, name string) error {
	if err := b.l.acquire(ctx, "delete", name); err != nil {
		return err
	}
	defer b.l.release()
	return b.be.Delete(ctx, name)
}

// DeleteBatch implements objstore.BatchDeleter: one slot for a batch
// request when the backend below has them, otherwise one slot for every
// object, deleted on up to 8 goroutines.
func (b *Backend) DeleteBatch(ctx context.Context, names []string) error {
	bd, ok := b.be.(objstore.BatchDeleter)
	if !ok {
		// Hidden behind the interface, b's own DeleteBatch is not seen,
		// and DeleteAll calls b.Delete object by object.
		return objstore.DeleteAll(ctx, struct{ objstore.Backend }{b}, names, 8, nil)
	}
	if err := b.l.acquire(ctx, "delete batch", fmt.Sprintf("%d objects", len(names))); err != nil {
		return err
	}
	defer b.l.release()
	return bd.DeleteBatch(ctx, names)
}

// RemoveTemporary implements objstore.TemporaryRemover for the backend
// below, if it has temporary objects, holding one slot.
func (b *Backend) RemoveTemporary(ctx context.Context, age time.Duration) (int, error) {
	if err := b.l.acquire(ctx, "remove temporary", ""); err != nil {
		return 0, err
	}
	defer b.l.release()
	return objstore.RemoveTemporary(ctx, b.be, age)
}
