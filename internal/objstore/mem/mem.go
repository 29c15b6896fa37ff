// Package mem is an in-memory object store for tests. With a listing lag it
// behaves like an eventually consistent store: new objects appear in
// listings, and deleted ones disappear from them, only after the lag.
package mem

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
)

// Options configure a Backend.
type Options struct {
	// ListLag delays the effect of Put and Delete on List.
	ListLag time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

type object struct {
	data    []byte
	modTime time.Time
	created time.Time // first Put; listings show the object ListLag after it
	deleted bool      // tombstone, kept for ListLag so listings can lag deletes
}

// Backend is an in-memory objstore.Backend.
type Backend struct {
	opts   Options
	closed atomic.Bool

	mu      sync.Mutex
	objects map[string]*object
}

var _ objstore.Backend = (*Backend)(nil)

// New returns an empty store.
func New(opts Options) *Backend {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Backend{opts: opts, objects: map[string]*object{}}
}

// Location implements objstore.Backend.
func (b *Backend) Location() string { return "mem:" }

// Close implements objstore.Backend. The objects stay in memory, for
// tests to inspect through another handle; calls through this one fail.
func (b *Backend) Close() error {
	b.closed.Store(true)
	return nil
}

// usable returns the error a call must fail with before it starts: the
// context's, or ErrClosed.
func (b *Backend) usable(ctx context.Context, op, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.closed.Load() {
		return fmt.Errorf("mem: %s %s: %w", op, name, objstore.ErrClosed)
	}
	return nil
}

// Put implements objstore.Backend.
func (b *Backend) Put(ctx context.Context, name string, data []byte, opts objstore.PutOptions) error {
	if err := b.usable(ctx, "put", name); err != nil {
		return err
	}
	if err := objstore.ValidName(name); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if o, ok := b.objects[name]; ok && !o.deleted && opts.IfAbsent {
		return fmt.Errorf("mem: put %s: %w", name, cairn.ErrExists)
	}
	now := b.opts.Now()
	created := now
	if o, ok := b.objects[name]; ok && !o.deleted {
		created = o.created
	}
	b.objects[name] = &object{data: bytes.Clone(data), modTime: now, created: created}
	return nil
}

func (b *Backend) lookup(name string) (*object, error) {
	if err := objstore.ValidName(name); err != nil {
		return nil, err
	}
	o, ok := b.objects[name]
	if !ok || o.deleted {
		return nil, cairn.ErrNotFound
	}
	return o, nil
}

// Get implements objstore.Backend.
func (b *Backend) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := b.usable(ctx, "get", name); err != nil {
		return nil, err
	}
	b.mu.Lock()
	o, err := b.lookup(name)
	b.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("mem: get %s: %w", name, err)
	}
	if offset < 0 || offset > int64(len(o.data)) {
		return nil, fmt.Errorf("mem: get %s: offset %d out of range: %w", name, offset, cairn.ErrInvalid)
	}
	end := int64(len(o.data))
	if length >= 0 && offset+length < end {
		end = offset + length
	}
	return io.NopCloser(bytes.NewReader(o.data[offset:end])), nil
}

// Stat implements objstore.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (objstore.ObjectInfo, error) {
	if err := b.usable(ctx, "stat", name); err != nil {
		return objstore.ObjectInfo{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	o, err := b.lookup(name)
	if err != nil {
		return objstore.ObjectInfo{}, fmt.Errorf("mem: stat %s: %w", name, err)
	}
	return objstore.ObjectInfo{Name: name, Size: int64(len(o.data)), ModTime: o.modTime}, nil
}

// List implements objstore.Backend.
func (b *Backend) List(ctx context.Context, prefix string, fn func(objstore.ObjectInfo) error) error {
	if err := b.usable(ctx, "list", prefix); err != nil {
		return err
	}
	b.mu.Lock()
	now := b.opts.Now()
	var infos []objstore.ObjectInfo
	for name, o := range b.objects {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		settled := now.Sub(o.created) >= b.opts.ListLag
		// Before the lag has passed, a listing shows the previous state:
		// a new object is missing, a deleted one is still there.
		visible := !o.deleted && settled || o.deleted && !settled
		if visible {
			infos = append(infos, objstore.ObjectInfo{Name: name, Size: int64(len(o.data)), ModTime: o.modTime})
		}
	}
	b.mu.Unlock()
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements objstore.Backend.
func (b *Backend) Delete(ctx context.Context, name string) error {
	if err := b.usable(ctx, "delete", name); err != nil {
		return err
	}
	if err := objstore.ValidName(name); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.objects[name]
	if !ok || o.deleted {
		return nil
	}
	if b.opts.ListLag == 0 {
		delete(b.objects, name)
		return nil
	}
	b.objects[name] = &object{data: o.data, modTime: o.modTime, created: b.opts.Now(), deleted: true}
	return nil
}

// Corrupt flips one bit of a stored object, for tests.
func (b *Backend) Corrupt(name string, bit int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	o, err := b.lookup(name)
	if err != nil {
		return err
	}
	o.data[bit/8%len(o.data)] ^= 1 << (bit % 8)
	return nil
}
