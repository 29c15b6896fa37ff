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
	// MaxElapsed is the most time one operation may spend retrying
	// (default 2 minutes).
	MaxElapsed time.Duration
	// InitialDelay and MaxDelay bound the backoff (defaults 100 ms, 10 s).
	InitialDelay time.Duration
	MaxDelay     time.Duration
	// OnRetry, when set, hears about every retry (for logs).
	OnRetry func(op, name string, attempt int, delay time.Duration, err error)
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
	return p
}

// Retryable reports whether err is worth another attempt.
func Retryable(err error) bool { return errors.Is(err, cairn.ErrUnavailable) }

// Do calls fn until it succeeds, fails permanently, the context ends, or
// the policy's time runs out. The last error is returned, annotated with
// the attempts made when there was more than one.
func (p Policy) Do(ctx context.Context, op, name string, fn func(ctx context.Context) error) error {
	p = p.withDefaults()
	start := time.Now()
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil || !Retryable(err) || ctx.Err() != nil {
			return err
		}
		backoff := min(p.MaxDelay, p.InitialDelay<<min(attempt-1, 20))
		delay := time.Duration(rand.Int64N(int64(backoff) + 1))
		if time.Since(start)+delay > p.MaxElapsed {
			return fmt.Errorf("%w (gave up after %d attempts in %v)", err, attempt, time.Since(start).Round(time.Millisecond))
		}
		if p.OnRetry != nil {
			p.OnRetry(op, name, attempt, delay, err)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
	}
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

// Get implements objstore.Backend. A read that fails part-way resumes
// where it stopped.
func (b *Backend) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := b.policy.Do(ctx, "get", name, func(ctx context.Context) error {
		var err error
		rc, err = b.be.Get(ctx, name, offset, length)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &resumingReader{ctx: ctx, b: b, name: name, offset: offset, length: length, rc: rc}, nil
}

type resumingReader struct {
	ctx    context.Context
	b      *Backend
	name   string
	offset int64 // of the next byte to read
	length int64 // still to read; < 0 to the end
	rc     io.ReadCloser
}

func (r *resumingReader) Read(p []byte) (int, error) {
	if r.length == 0 {
		return 0, io.EOF
	}
	if r.length > 0 && int64(len(p)) > r.length {
		p = p[:r.length]
	}
	n, err := r.rc.Read(p)
	r.offset += int64(n)
	if r.length > 0 {
		r.length -= int64(n)
	}
	if err == nil || errors.Is(err, io.EOF) || !Retryable(err) || n > 0 {
		return n, err
	}
	// The stream broke: reopen at the current offset.
	r.rc.Close()
	rerr := r.b.policy.Do(r.ctx, "get", r.name, func(ctx context.Context) error {
		rc, err := r.b.be.Get(ctx, r.name, r.offset, r.length)
		if err != nil {
			return err
		}
		r.rc = rc
		return nil
	})
	if rerr != nil {
		r.rc = io.NopCloser(bytes.NewReader(nil))
		return 0, rerr
	}
	return r.Read(p)
}

func (r *resumingReader) Close() error { return r.rc.Close() }

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
