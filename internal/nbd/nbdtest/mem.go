// Package nbdtest provides an in-memory nbd.Export and nbd.Catalog, and a
// helper that runs an nbd.Server on a unix socket, for tests.
package nbdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/nbd"
)

// PageSize is the allocation granularity of Mem.
const PageSize = 4096

// Op names an operation of Mem, for hooks and counters.
type Op int

// The operations of Mem.
const (
	OpRead Op = iota
	OpWrite
	OpFlush
	OpTrim
	OpZero
	OpBlockStatus
	numOps
)

func (o Op) String() string {
	switch o {
	case OpRead:
		return "read"
	case OpWrite:
		return "write"
	case OpFlush:
		return "flush"
	case OpTrim:
		return "trim"
	case OpZero:
		return "zero"
	case OpBlockStatus:
		return "block-status"
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// Hook runs before every operation of a Mem, with its range (0, 0 for
// flushes). A non-nil error fails the operation, which then has no effect;
// a hook may also block, to delay the operation.
type Hook func(ctx context.Context, op Op, off, length int64) error

// MemOptions configure a Mem.
type MemOptions struct {
	ReadOnly    bool
	FastZero    bool // Zero is advertised as fast
	NoMultiConn bool // MultiConn reports false
}

// Mem is a sparse in-memory nbd.Export. It allocates 4 KiB pages on write,
// so BlockStatus reports the pages never written (or trimmed or zeroed
// away) as holes; it tracks which pages were changed since the last Flush,
// counts operations, and can fail or delay them through a Hook.
type Mem struct {
	size int64
	opts MemOptions

	mu    sync.RWMutex
	pages map[int64]*[PageSize]byte
	dirty map[int64]struct{} // pages changed since the last Flush

	hook atomic.Pointer[Hook]
	ops  [numOps]atomic.Int64
}

var _ nbd.Export = (*Mem)(nil)

// NewMem returns an empty (all holes) export of size bytes.
func NewMem(size int64, opts MemOptions) *Mem {
	if size < 0 {
		panic("nbdtest: negative size")
	}
	return &Mem{size: size, opts: opts, pages: map[int64]*[PageSize]byte{}, dirty: map[int64]struct{}{}}
}

// SetHook installs h (nil removes the hook).
func (m *Mem) SetHook(h Hook) {
	if h == nil {
		m.hook.Store(nil)
		return
	}
	m.hook.Store(&h)
}

// Count reports how many times op was called (including failed calls).
func (m *Mem) Count(op Op) int64 { return m.ops[op].Load() }

// Flushes reports how many times Flush was called.
func (m *Mem) Flushes() int64 { return m.Count(OpFlush) }

func (m *Mem) enter(ctx context.Context, op Op, off, length int64) error {
	m.ops[op].Add(1)
	if h := m.hook.Load(); h != nil {
		if err := (*h)(ctx, op, off, length); err != nil {
			return err
		}
	}
	if off < 0 || length < 0 || off > m.size || length > m.size-off {
		return fmt.Errorf("nbdtest: %s [%d, +%d) outside export of %d bytes: %w", op, off, length, m.size, cairn.ErrInvalid)
	}
	return nil
}

// Size implements nbd.Export.
func (m *Mem) Size() int64 { return m.size }

// ReadOnly implements nbd.Export.
func (m *Mem) ReadOnly() bool { return m.opts.ReadOnly }

// FastZero implements nbd.Export.
func (m *Mem) FastZero() bool { return m.opts.FastZero }

// MultiConn implements nbd.Export: Mem has no cache, so it is true unless
// MemOptions.NoMultiConn.
func (m *Mem) MultiConn() bool { return !m.opts.NoMultiConn }

// ReadAt implements nbd.Export.
func (m *Mem) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := m.enter(ctx, OpRead, off, int64(len(p))); err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	m.read(p, off)
	return nil
}

func (m *Mem) read(p []byte, off int64) {
	for len(p) > 0 {
		pg, in := off/PageSize, int(off%PageSize)
		n := min(len(p), PageSize-in)
		if page := m.pages[pg]; page != nil {
			copy(p[:n], page[in:])
		} else {
			clear(p[:n])
		}
		p, off = p[n:], off+int64(n)
	}
}

var errReadOnly = errors.New("nbdtest: write to read-only export")

// WriteAt implements nbd.Export.
func (m *Mem) WriteAt(ctx context.Context, p []byte, off int64) error {
	if err := m.enter(ctx, OpWrite, off, int64(len(p))); err != nil {
		return err
	}
	if m.opts.ReadOnly {
		return errReadOnly
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.write(p, off)
	return nil
}

func (m *Mem) write(p []byte, off int64) {
	for len(p) > 0 {
		pg, in := off/PageSize, int(off%PageSize)
		n := min(len(p), PageSize-in)
		page := m.pages[pg]
		if page == nil {
			page = new([PageSize]byte)
			m.pages[pg] = page
		}
		copy(page[in:], p[:n])
		m.dirty[pg] = struct{}{}
		p, off = p[n:], off+int64(n)
	}
}

// Fill writes p at off for test setup: it works on read-only exports and
// bypasses the hook and counters. Pages written are not dirty.
func (m *Mem) Fill(p []byte, off int64) {
	if off < 0 || int64(len(p)) > m.size-off {
		panic("nbdtest: Fill outside the export")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.write(p, off)
	clear(m.dirty)
}

// Bytes returns a copy of the whole export.
func (m *Mem) Bytes() []byte {
	p := make([]byte, m.size)
	m.mu.RLock()
	defer m.mu.RUnlock()
	m.read(p, 0)
	return p
}

// Allocated reports how many bytes of pages are allocated.
func (m *Mem) Allocated() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return int64(len(m.pages)) * PageSize
}

// Synced reports whether no page overlapping [off, off+length) changed
// since the last Flush.
func (m *Mem) Synced(off, length int64) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for pg := off / PageSize; pg*PageSize < off+length; pg++ {
		if _, ok := m.dirty[pg]; ok {
			return false
		}
	}
	return true
}

// Flush implements nbd.Export: it marks every page clean.
func (m *Mem) Flush(ctx context.Context) error {
	if err := m.enter(ctx, OpFlush, 0, 0); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.dirty)
	return nil
}

// Trim implements nbd.Export: pages wholly inside the range are freed;
// partial pages keep their data.
func (m *Mem) Trim(ctx context.Context, off, length int64) error {
	if err := m.enter(ctx, OpTrim, off, length); err != nil {
		return err
	}
	if m.opts.ReadOnly {
		return errReadOnly
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	first, end := (off+PageSize-1)/PageSize, (off+length)/PageSize
	if off+length == m.size {
		end = (m.size + PageSize - 1) / PageSize // the partial last page
	}
	for pg := first; pg < end; pg++ {
		if m.pages[pg] != nil {
			delete(m.pages, pg)
			m.dirty[pg] = struct{}{}
		}
	}
	return nil
}

// Zero implements nbd.Export. Without noHole, pages wholly inside the range
// are freed; with it they are allocated and cleared.
func (m *Mem) Zero(ctx context.Context, off, length int64, noHole bool) error {
	if err := m.enter(ctx, OpZero, off, length); err != nil {
		return err
	}
	if m.opts.ReadOnly {
		return errReadOnly
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for end := off + length; off < end; {
		pg, in := off/PageSize, off%PageSize
		n := min(end-off, PageSize-in)
		page := m.pages[pg]
		whole := n == PageSize || (in == 0 && off+n == m.size)
		switch {
		case whole && !noHole:
			delete(m.pages, pg)
		case page == nil && noHole:
			m.pages[pg] = new([PageSize]byte)
		case page != nil:
			clear(page[in : in+n])
		}
		m.dirty[pg] = struct{}{}
		off += n
	}
	return nil
}

// BlockStatus implements nbd.Export. Unallocated pages are holes reading as
// zeros; allocated pages that hold only zeros are reported as zero.
func (m *Mem) BlockStatus(ctx context.Context, off, length int64) ([]nbd.Extent, error) {
	if err := m.enter(ctx, OpBlockStatus, off, length); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	const maxExtents = 1 << 16
	var exts []nbd.Extent
	var zeros [PageSize]byte
	for end := off + length; off < end && len(exts) < maxExtents; {
		pg, in := off/PageSize, off%PageSize
		n := min(PageSize-in, m.size-off)
		e := nbd.Extent{Length: n, Hole: true, Zero: true}
		if page := m.pages[pg]; page != nil {
			e = nbd.Extent{Length: n, Zero: bytes.Equal(page[in:in+n], zeros[:n])}
		}
		if k := len(exts) - 1; k >= 0 && exts[k].Hole == e.Hole && exts[k].Zero == e.Zero {
			exts[k].Length += n
		} else {
			exts = append(exts, e)
		}
		off += n
	}
	return exts, nil
}
