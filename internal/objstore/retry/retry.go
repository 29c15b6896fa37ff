// Package retry wraps a Backend so that transient failures (errors that
// wrap cairn.ErrUnavailable) are retried with exponential backoff and full
// jitter, within a bounded time per operation. Permanent failures return
// at once.
package retry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
)

// Policy bounds the retries of one operation.
type Policy struct {
	// MaxElapsed is the most time one operation may take, counted from
	// its start, before it stops retrying (default 2 minutes). For a Get
	// that is the whole read: the reopenings of a broken stream share it.
	MaxElapsed time.Duration
	// InitialDelay and MaxDelay bound the backoff (defaults 100 ms, 10 s).
	InitialDelay time.Duration
	MaxDelay     time.Duration
	// OnRetry, when set, hears about every retry (for logs).
	OnRetry func(op, name string, attempt int, delay time.Duration, err error)
	// Now is the clock that measures MaxElapsed (time.Now when nil).
	Now func() time.Time
	// Sleep waits for d, or until ctx ends, when it returns ctx's error
	// (a timer when nil). Tests inject Now and Sleep to run the backoff
	// without waiting.
	Sleep func(ctx context.Context, d time.Duration) error
}

func (p Policy) withDefaults() Policy {
	if p.MaxElapsed <= 0 {
		p.MaxElapsed = 2 * time.Minute
	}
	if p.InitialDelay <= 0 {
		p.InitialDelay = 100 * time.Millisecond
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = 10 * time.Second
	}
	if p.Now == nil {
		p.Now = time.Now
	}
	if p.Sleep == nil {
		p.Sleep = sleep
	}
	return p
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Retryable reports whether err is worth another attempt.
func Retryable(err error) bool { return errors.Is(err, cairn.ErrUnavailable) }

// Do calls fn until it succeeds, fails permanently, the context ends, or
// the policy's time runs out. The last error is returned, annotated with
// the attempts made when there was more than one. A context that has
// already ended fails at once, without calling fn.
func (p Policy) Do(ctx context.Context, op, name string, fn func(ctx context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o := p.begin(op, name)
	for {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if err := o.backoff(ctx, err); err != nil {
			return err
		}
	}
}

// operation is the retry state of one operation: when it started, which
// bounds its time, and the attempts that failed.
type operation struct {
	p        Policy
	op, name string
	start    time.Time
	failures int // since the last progress
	attempts int // in all
}

func (p Policy) begin(op, name string) *operation {
	p = p.withDefaults()
	return &operation{p: p, op: op, name: name, start: p.Now()}
}

// progress notes that the operation moved forward (a broken stream had
// delivered bytes): the next backoff starts from the initial delay again,
// within the same time budget.
func (o *operation) progress() { o.failures = 0 }

// backoff is called after an attempt failed with err. When another
// attempt is worth making and fits in the budget, it waits for the
// backoff delay and returns nil; otherwise it returns the error to give
// up with.
func (o *operation) backoff(ctx context.Context, err error) error {
	o.attempts++
	if !Retryable(err) {
		return err
	}
	if cerr := ctx.Err(); cerr != nil {
		return stopped(err, cerr)
	}
	o.failures++
	ceiling := min(o.p.MaxDelay, o.p.InitialDelay<<min(o.failures-1, 20))
	delay := time.Duration(rand.Int64N(int64(ceiling) + 1))
	elapsed := o.p.Now().Sub(o.start)
	if elapsed+delay > o.p.MaxElapsed {
		return fmt.Errorf("%w (gave up after %d attempts in %v)", err, o.attempts, elapsed.Round(time.Millisecond))
	}
	if o.p.OnRetry != nil {
		o.p.OnRetry(o.op, o.name, o.attempts, delay, err)
	}
	if cerr := o.p.Sleep(ctx, delay); cerr != nil {
		return stopped(err, cerr)
	}
	return nil
}

// stopped is the error of an operation whose context ended while it was
// retrying: it wraps both the last failure and the context's error.
func stopped(err, ctxErr error) error {
	return fmt.Errorf("%w (stopped retrying: %w)", err, ctxErr)
}

// Backend retries the operations of the Backend it wraps.
type Backend struct {
	be     objstore.Backend
	policy Policy
}

var _ objstore.Backend = (*Backend)(nil)

// New wraps be.
func New(be objstore.Backend, p Policy) *Backend { return &Backend{be: be, policy: p.withDefaults()} }

// Unwrap returns the wrapped backend.
func (b *Backend) Unwrap() objstore.Backend { return b.be }

// Location implements objstore.Backend.
func (b *Backend) Location() string { return b.be.Location() }

// Close implements objstore.Backend: it closes the wrapped backend.
func (b *Backend) Close() error { return b.be.Close() }

// Put implements objstore.Backend. A create-if-absent Put that failed
// after reaching the store and then finds the object exists succeeds if
// the stored object is the one it tried to write.
func (b *Backend) Put(ctx context.Context, name string, data []byte, opts objstore.PutOptions) error {
	attempts := 0
	err := b.policy.Do(ctx, "put", name, func(ctx context.Context) error {
		attempts++
		return b.be.Put(ctx, name, data, opts)
	})
	if opts.IfAbsent && attempts > 1 && errors.Is(err, cairn.ErrExists) {
		var stored []byte
		if gerr := b.policy.Do(ctx, "get", name, func(ctx context.Context) error {
			var e error
			stored, e = objstore.ReadAll(ctx, b.be, name, 0, -1)
			return e
		}); gerr == nil && bytes.Equal(stored, data) {
			return nil
		}
	}
	return err
}

// Get implements objstore.Backend. A read that breaks with a transient
// error reopens the object where it stopped, after a backoff; the whole
// read, every reopening included, has the policy's MaxElapsed from the
// call to Get.
func (b *Backend) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o := b.policy.begin("get", name)
	for {
		rc, err := b.be.Get(ctx, name, offset, length)
		if err == nil {
			return &resumingReader{ctx: ctx, be: b.be, op: o, name: name, offset: offset, length: length, rc: rc}, nil
		}
		if err := o.backoff(ctx, err); err != nil {
			return nil, err
		}
	}
}

// resumingReader reads an object through streams that may break. It is
// a loop, not a recursion: however often the store breaks the stream,
// the stack stays flat and the operation's budget ends it.
type resumingReader struct {
	ctx    context.Context
	be     objstore.Backend
	op     *operation
	name   string
	offset int64         // of the next byte to read
	length int64         // still to read; < 0 to the end
	rc     io.ReadCloser // nil after the stream broke, until reopened
	broken error         // why the last stream broke
	err    error         // the permanent failure every later Read returns
}

func (r *resumingReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.length == 0 {
		return 0, io.EOF
	}
	if r.length > 0 && int64(len(p)) > r.length {
		p = p[:r.length]
	}
	for {
		if r.rc == nil {
			if err := r.reopen(); err != nil {
				r.err = err
				return 0, err
			}
		}
		n, err := r.rc.Read(p)
		r.offset += int64(n)
		if r.length > 0 {
			r.length -= int64(n)
		}
		if n > 0 {
			r.op.progress()
		}
		if err == nil || errors.Is(err, io.EOF) {
			return n, err
		}
		if !Retryable(err) {
			r.err = err
			return n, err
		}
		// The stream broke: the next round, or the next Read if this
		// one delivered bytes, reopens at the current offset.
		r.rc.Close()
		r.rc, r.broken = nil, err
		if n > 0 {
			return n, nil
		}
	}
}

// reopen waits the backoff after the stream broke and opens the object
// again at the current offset, retrying within the operation's budget.
func (r *resumingReader) reopen() error {
	err := r.broken
	for {
		if err := r.op.backoff(r.ctx, err); err != nil {
			return err
		}
		var rc io.ReadCloser
		rc, err = r.be.Get(r.ctx, r.name, r.offset, r.length)
		if err == nil {
			r.rc, r.broken = rc, nil
			return nil
		}
	}
}

// Close closes the current stream, if any; a Read after Close fails
// rather than reopening the object.
func (r *resumingReader) Close() error {
	var err error
	if r.rc != nil {
		err = r.rc.Close()
		r.rc = nil
	}
	if r.err == nil {
		r.err = fmt.Errorf("retry: get %s: read after close: %w", r.name, cairn.ErrInvalid)
	}
	return err
}

// Stat implements objstore.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (objstore.ObjectInfo, error) {
	var info objstore.ObjectInfo
	err := b.policy.Do(ctx, "stat", name, func(ctx context.Context) error {
		var err error
		info, err = b.be.Stat(ctx, name)
		return err
	})
	return info, err
}

// List implements objstore.Backend. A listing is retried only if it failed
// before delivering anything: backends retry their own page requests, and
// delivering an object twice would break the contract.
func (b *Backend) List(ctx context.Context, prefix string, fn func(objstore.ObjectInfo) error) error {
	delivered := false
	err := b.policy.Do(ctx, "list", prefix, func(ctx context.Context) error {
		err := b.be.List(ctx, prefix, func(info objstore.ObjectInfo) error {
			delivered = true
			return fn(info)
		})
		if err != nil && delivered {
			return stopRetry{err}
		}
		return err
	})
	var stop stopRetry
	if errors.As(err, &stop) {
		return fmt.Errorf("listing %s broke after it had begun: %w", prefix, stop.err)
	}
	return err
}

// stopRetry hides an error's transience from Do.
type stopRetry struct{ err error }

func (s stopRetry) Error() string { return s.err.Error() }

// Delete implements objstore.Backend.
func (b *Backend) Delete(ctx context.Context, name string) error {
	return b.policy.Do(ctx, "delete", name, func(ctx context.Context) error {
		return b.be.Delete(ctx, name)
	})
}

// DeleteBatch implements objstore.BatchDeleter, retrying the whole batch
// (deleting is idempotent); without batch support below, it deletes one
// by one.
func (b *Backend) DeleteBatch(ctx context.Context, names []string) error {
	return b.policy.Do(ctx, "delete batch", fmt.Sprintf("%d objects", len(names)), func(ctx context.Context) error {
		return objstore.DeleteAll(ctx, b.be, names, 8, nil)
	})
}
