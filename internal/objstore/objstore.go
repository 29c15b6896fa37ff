// Package objstore defines the Backend interface through which the
// repository stores its objects, and helpers shared by its implementations.
//
// Object names are slash-separated relative paths ("chunks/ab/abcd...").
// Objects are written whole and never modified in place; the repository
// names data by content or by random IDs, so it relies on neither
// list-after-write consistency nor overwrite ordering.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cairnproject/cairn"
)

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Name    string
	Size    int64
	ModTime time.Time // the store's clock at the time of the last Put
}

// PutOptions modify Put.
type PutOptions struct {
	// IfAbsent makes Put fail with cairn.ErrExists instead of replacing an
	// existing object: of concurrent IfAbsent Puts of one name, exactly
	// one succeeds. It may cost a round trip or a short wait (Swift);
	// the repository uses it only for its config.
	IfAbsent bool
}

// Backend is a store of named, immutable objects. Implementations must be
// safe for concurrent use by multiple goroutines, Close excepted.
//
// Every method that takes a context fails, with an error that wraps the
// context's, when given one that has already ended, and then changes
// nothing in the store.
type Backend interface {
	// Location names the store for messages, e.g. "local:/srv/repo". It
	// never contains secrets.
	Location() string

	// Put stores data under name. It is atomic: readers observe either the
	// previous state or all of data, never a part of it. When Put returns
	// nil the object is durable. Put does not retain data.
	Put(ctx context.Context, name string, data []byte, opts PutOptions) error

	// Get returns a reader for length bytes of the object starting at
	// offset; length < 0 means to the end. A missing object is
	// cairn.ErrNotFound. Reading past the end yields fewer bytes, not an
	// error; offset beyond the end is cairn.ErrInvalid.
	Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error)

	// Stat returns the object's size and modification time, or
	// cairn.ErrNotFound.
	Stat(ctx context.Context, name string) (ObjectInfo, error)

	// List calls fn once for every object whose name starts with prefix,
	// in no particular order. A listing may lag recent writes and deletes
	// on eventually consistent stores. An error from fn stops the listing
	// and is returned.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error

	// Delete removes the object. Deleting a missing object is not an error.
	Delete(ctx context.Context, name string) error

	// Close releases what the backend holds: idle connections, HTTP
	// transports it created. A wrapper closes the backend it wraps. Close
	// may be called only once every other call has returned and every
	// reader from Get is closed; it is idempotent. Every call after it
	// fails with an error that wraps ErrClosed.
	Close() error
}

// ErrClosed is the error of a call to a Backend after its Close.
var ErrClosed = errors.New("object store closed")

// MaxObjectSize bounds every object the repository writes. The repository
// splits larger structures (indexes) into parts, so no backend needs to
// support multi-part uploads.
const MaxObjectSize = 256 << 20

// ValidName reports whether name is an acceptable object name: non-empty,
// relative, slash-separated, without empty, "." or ".." components.
func ValidName(name string) error {
	if name == "" || len(name) > 1024 {
		return fmt.Errorf("object name %q: %w", name, cairn.ErrInvalid)
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("object name %q: %w", name, cairn.ErrInvalid)
		}
	}
	return nil
}

// ReadAll reads a whole object (or the given range) into memory.
func ReadAll(ctx context.Context, b Backend, name string, offset, length int64) ([]byte, error) {
	rc, err := b.Get(ctx, name, offset, length)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var buf []byte
	if length > 0 {
		buf = make([]byte, 0, length)
	}
	return readInto(rc, buf, name)
}

// ReadInto reads a whole object into buf, reusing its capacity, and returns
// the filled slice.
func ReadInto(ctx context.Context, b Backend, name string, buf []byte) ([]byte, error) {
	rc, err := b.Get(ctx, name, 0, -1)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return readInto(rc, buf[:0], name)
}

func readInto(r io.Reader, buf []byte, name string) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
		if len(buf) > MaxObjectSize {
			return nil, fmt.Errorf("reading %s: object larger than %d bytes: %w", name, MaxObjectSize, cairn.ErrCorrupt)
		}
	}
}

// Exists reports whether the object exists.
func Exists(ctx context.Context, b Backend, name string) (bool, error) {
	_, err := b.Stat(ctx, name)
	if errors.Is(err, cairn.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// TemporaryRemover is implemented by backends that can leave temporary
// objects behind when a writer dies (partial files, orphaned segments).
type TemporaryRemover interface {
	// RemoveTemporary deletes temporary objects older than age and
	// returns how many it removed.
	RemoveTemporary(ctx context.Context, age time.Duration) (int, error)
}

// RemoveTemporary finds a TemporaryRemover in be or, through Unwrap
// methods, in the backends it wraps, and runs it.
func RemoveTemporary(ctx context.Context, be Backend, age time.Duration) (int, error) {
	for be != nil {
		if tr, ok := be.(TemporaryRemover); ok {
			return tr.RemoveTemporary(ctx, age)
		}
		u, ok := be.(interface{ Unwrap() Backend })
		if !ok {
			return 0, nil
		}
		be = u.Unwrap()
	}
	return 0, nil
}

// BatchDeleter is implemented by backends that delete many objects in one
// request (S3 DeleteObjects, Swift bulk delete): fewer requests, and
// requests cost money.
type BatchDeleter interface {
	// DeleteBatch deletes the named objects; missing ones are not an
	// error. Callers pass at most MaxBatchDelete names.
	DeleteBatch(ctx context.Context, names []string) error
}

// MaxBatchDelete is the most names DeleteAll passes to one DeleteBatch
// (S3's limit per DeleteObjects request).
const MaxBatchDelete = 1000

// DeleteAll deletes the named objects: in batches where be supports them,
// otherwise one by one on up to parallel goroutines. done, when not nil,
// hears about every batch or object deleted, one call at a time. It
// returns nil only when every object was deleted: a context that ends
// before then makes it return the context's error.
func DeleteAll(ctx context.Context, be Backend, names []string, parallel int, done func(names []string)) error {
	if bd, ok := be.(BatchDeleter); ok {
		for len(names) > 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("deleting %d objects: %w", len(names), err)
			}
			n := min(len(names), MaxBatchDelete)
			if err := bd.DeleteBatch(ctx, names[:n]); err != nil {
				return err
			}
			if done != nil {
				done(names[:n])
			}
			names = names[n:]
		}
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, parallel))
	var doneMu sync.Mutex
	started := 0
	for _, name := range names {
		// A failed delete has cancelled gctx: start no more.
		if gctx.Err() != nil {
			break
		}
		started++
		g.Go(func() error {
			if err := be.Delete(gctx, name); err != nil {
				return err
			}
			if done != nil {
				doneMu.Lock()
				done([]string{name})
				doneMu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if started < len(names) {
		// Only the caller's context ending stops the loop without an
		// error from a delete.
		return fmt.Errorf("deleting %d objects: %d not deleted: %w", len(names), len(names)-started, ctx.Err())
	}
	return nil
}

// MapReadErrors wraps a response body so that its read errors, other than
// io.EOF, pass through mapErr: a backend's Get gives errors of the same
// kinds whether the request or the transfer after it fails.
func MapReadErrors(rc io.ReadCloser, mapErr func(error) error) io.ReadCloser {
	return &mappedBody{rc: rc, mapErr: mapErr}
}

type mappedBody struct {
	rc     io.ReadCloser
	mapErr func(error) error
}

func (m *mappedBody) Read(p []byte) (int, error) {
	n, err := m.rc.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = m.mapErr(err)
	}
	return n, err
}

func (m *mappedBody) Close() error { return m.rc.Close() }
