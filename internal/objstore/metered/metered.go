// Package metered wraps a Backend and counts its requests and bytes, for
// reports and metrics.
package metered

import (
	"context"
	"io"
	"sync/atomic"

	"github.com/cairnproject/cairn/internal/objstore"
)

// Counts is a snapshot of a Backend's counters.
type Counts struct {
	Puts      int64 `json:"puts"`
	PutBytes  int64 `json:"put_bytes"`
	Gets      int64 `json:"gets"`
	GetBytes  int64 `json:"get_bytes"`
	Stats     int64 `json:"stats"`
	Lists     int64 `json:"lists"`
	Deletes   int64 `json:"deletes"`
	ChunkPuts int64 `json:"chunk_puts"`
}

// Requests is the total number of requests counted.
func (c Counts) Requests() int64 { return c.Puts + c.Gets + c.Stats + c.Lists + c.Deletes }

// Backend counts what passes through it.
type Backend struct {
	be                                    objstore.Backend
	puts, putBytes, gets, getBytes, stats atomic.Int64
	lists, deletes, chunkPuts             atomic.Int64
}

var _ objstore.Backend = (*Backend)(nil)

// New wraps be.
func New(be objstore.Backend) *Backend { return &Backend{be: be} }

// Counts returns the counters so far.
func (b *Backend) Counts() Counts {
	return Counts{
		Puts: b.puts.Load(), PutBytes: b.putBytes.Load(), Gets: b.gets.Load(), GetBytes: b.getBytes.Load(),
		Stats: b.stats.Load(), Lists: b.lists.Load(), Deletes: b.deletes.Load(), ChunkPuts: b.chunkPuts.Load(),
	}
}

// Location implements objstore.Backend.
func (b *Backend) Location() string { return b.be.Location() }

// Close implements objstore.Backend: it closes the wrapped backend. The
// counters stay readable.
func (b *Backend) Close() error { return b.be.Close() }

// Put implements objstore.Backend.
func (b *Backend) Put(ctx context.Context, name string, data []byte, opts objstore.PutOptions) error {
	b.puts.Add(1)
	if len(name) > 7 && name[:7] == "chunks/" {
		b.chunkPuts.Add(1)
	}
	err := b.be.Put(ctx, name, data, opts)
	if err == nil {
		b.putBytes.Add(int64(len(data)))
	}
	return err
}

// Get implements objstore.Backend.
func (b *Backend) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	b.gets.Add(1)
	rc, err := b.be.Get(ctx, name, offset, length)
	if err != nil {
		return nil, err
	}
	return &countingReader{rc: rc, n: &b.getBytes}, nil
}

type countingReader struct {
	rc io.ReadCloser
	n  *atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	r.n.Add(int64(n))
	return n, err
}

func (r *countingReader) Close() error { return r.rc.Close() }

// Stat implements objstore.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (objstore.ObjectInfo, error) {
	b.stats.Add(1)
	return b.be.Stat(ctx, name)
}

// List implements objstore.Backend.
func (b *Backend) List(ctx context.Context, prefix string, fn func(objstore.ObjectInfo) error) error {
	b.lists.Add(1)
	return b.be.List(ctx, prefix, fn)
}

// Delete implements objstore.Backend.
func (b *Backend) Delete(ctx context.Context, name string) error {
	b.deletes.Add(1)
	return b.be.Delete(ctx, name)
}

// DeleteBatch implements objstore.BatchDeleter, counting one request per
// batch when the backend below batches.
func (b *Backend) DeleteBatch(ctx context.Context, names []string) error {
	if _, ok := b.be.(objstore.BatchDeleter); ok {
		b.deletes.Add(1)
	} else {
		b.deletes.Add(int64(len(names)))
	}
	return objstore.DeleteAll(ctx, b.be, names, 8, nil)
}

// Unwrap returns the wrapped backend.
func (b *Backend) Unwrap() objstore.Backend { return b.be }
