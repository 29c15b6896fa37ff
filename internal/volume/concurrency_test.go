package volume

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	goruntime "runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cairnproject/cairn"
)

// ioKind is what one operation of a concurrent test does.
type ioKind int

const (
	ioWrite ioKind = iota
	ioZero
	ioZeroNoHole
	ioFlush
)

// ioOp is one operation on a device, kept to replay it on a model.
type ioOp struct {
	kind   ioKind
	off, n int64
	data   []byte // ioWrite only
}

func (o ioOp) String() string {
	return fmt.Sprintf("kind %d [%d, %d)", o.kind, o.off, o.off+o.n)
}

// randomOp makes an operation inside block b of a volume of size bytes:
// whole-block, whole-page, sub-page and unaligned writes, zeroing with and
// without holes, and flushes. Ops stay inside b so that goroutines owning
// different blocks never overlap, and the final content is determined.
func randomOp(r *rand.Rand, b, size int64) ioOp {
	lo, hi := b*BlockSize, min((b+1)*BlockSize, size)
	randRange := func() (int64, int64) {
		off := lo + r.Int64N(hi-lo)
		return off, 1 + r.Int64N(hi-off)
	}
	var o ioOp
	switch k := r.IntN(40); {
	case k < 8: // the whole block
		o = ioOp{kind: ioWrite, off: lo, n: hi - lo}
	case k < 16: // whole pages
		first := r.Int64N((hi - lo) / PageSize)
		last := first + 1 + r.Int64N((hi-lo)/PageSize-first)
		o = ioOp{kind: ioWrite, off: lo + first*PageSize, n: (last - first) * PageSize}
	case k < 22: // within one page, or straddling two
		off := lo + r.Int64N(hi-lo)
		o = ioOp{kind: ioWrite, off: off, n: 1 + r.Int64N(min(PageSize-1, hi-off))}
	case k < 28: // unaligned, partial pages around whole ones
		o.kind = ioWrite
		o.off, o.n = randRange()
	case k < 33:
		o.kind = ioZero
		o.off, o.n = randRange()
	case k < 38:
		o.kind = ioZeroNoHole
		o.off, o.n = randRange()
	default: // rarer: a flush waits for the disk
		return ioOp{kind: ioFlush}
	}
	if o.kind == ioWrite {
		o.data = randomData(r, o.n)
	}
	return o
}

// randomData returns n bytes of which none is zero, unlike a hole's, and
// which differ with the position and from one call to the next.
func randomData(r *rand.Rand, n int64) []byte {
	data := make([]byte, n+7)
	seed := r.Uint64()
	for i := 0; i < len(data)-7; i += 8 {
		binary.LittleEndian.PutUint64(data[i:], (seed+uint64(i)*0x9E3779B97F4A7C15)|0x0101010101010101)
	}
	return data[:n]
}

func fullBlockWrite(r *rand.Rand, b, size int64) ioOp {
	o := ioOp{kind: ioWrite, off: b * BlockSize, n: min((b+1)*BlockSize, size) - b*BlockSize}
	o.data = randomData(r, o.n)
	return o
}

func (o ioOp) do(ctx context.Context, d *Device) error {
	var err error
	switch o.kind {
	case ioWrite:
		err = d.WriteAt(ctx, o.data, o.off)
	case ioZero:
		err = d.Zero(ctx, o.off, o.n, false)
	case ioZeroNoHole:
		err = d.Zero(ctx, o.off, o.n, true)
	case ioFlush:
		err = d.Flush(ctx)
	}
	if err != nil {
		return fmt.Errorf("%v: %w", o, err)
	}
	return nil
}

// contentModel is what a single-layer volume must show: its bytes, and
// the pages its presence holds. Goroutines owning different blocks may
// apply operations to it concurrently: they touch different elements.
type contentModel struct {
	data []byte
	held []bool // per page
}

func newContentModel(size int64) *contentModel {
	return &contentModel{data: make([]byte, size), held: make([]bool, size/PageSize)}
}

func (m *contentModel) hold(off, end int64) {
	for pg := off / PageSize; pg*PageSize < end; pg++ {
		m.held[pg] = true
	}
}

func (m *contentModel) blockHeld(b int64) bool {
	for pg := b * pagesPerBlock; pg < min((b+1)*pagesPerBlock, int64(len(m.held))); pg++ {
		if m.held[pg] {
			return true
		}
	}
	return false
}

// apply mirrors what the engine does, down to which pages a zeroing
// records: partial pages are written; whole pages are recorded only in
// blocks some layer holds (the others read as zeros already).
func (m *contentModel) apply(o ioOp) {
	end := o.off + o.n
	switch o.kind {
	case ioWrite:
		copy(m.data[o.off:], o.data)
		m.hold(o.off, end)
	case ioZero, ioZeroNoHole:
		clear(m.data[o.off:end])
		alStart := (o.off + PageSize - 1) / PageSize * PageSize
		alEnd := end / PageSize * PageSize
		if alStart >= alEnd {
			m.hold(o.off, end)
			return
		}
		m.hold(o.off, alStart)
		m.hold(alEnd, end)
		for b := alStart / BlockSize; b*BlockSize < alEnd; b++ {
			if m.blockHeld(b) {
				m.hold(max(alStart, b*BlockSize), min(alEnd, (b+1)*BlockSize))
			}
		}
	}
}

// extents returns the held pages within size as merged byte ranges.
func (m *contentModel) extents(size int64) []cairn.Extent {
	var out []cairn.Extent
	for pg, h := range m.held {
		off := int64(pg) * PageSize
		if !h || off >= size {
			continue
		}
		if k := len(out); k > 0 && out[k-1].End() == off {
			out[k-1].Length += PageSize
		} else {
			out = append(out, cairn.Extent{Offset: off, Length: PageSize})
		}
	}
	return out
}

// TestConcurrentWriters writes one volume from several goroutines, through
// several devices or one, each goroutine owning every G-th block: so
// neighbouring blocks, in different stripes but one word of the head's
// presence bitmap, are written by different goroutines at once. A block
// written for the first time updates that word while a neighbour's
// rewrite takes the fast path that reads it; phases are separated by
// waits, so under the race detector any unsynchronised access between
// the two is reported whatever the scheduling. The volume is extended
// while the writers run, then written in its new part; the content is
// compared with a model byte for byte, and so is the presence after the
// engine is closed (checkpoint) or abandoned after a flush (log replay)
// and reopened.
func TestConcurrentWriters(t *testing.T) {
	for _, tc := range []struct {
		name       string
		devices    int
		goroutines int
		crash      bool
	}{
		{"several devices", 3, 6, false},
		{"one device", 1, 6, false},
		{"several devices, crash after flush", 3, 6, true},
	} {
		t.Run(tc.name, func(t *testing.T) { runConcurrentWriters(t, tc.devices, tc.goroutines, tc.crash) })
	}
}

func runConcurrentWriters(t *testing.T, ndev, g int, crash bool) {
	ctx := t.Context()
	dir := t.TempDir()
	e, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { e.Close() }()
	// Neither size is a whole number of blocks or of bitmap words; the
	// extension needs a longer bitmap.
	const size0 = 200*BlockSize - 3*PageSize
	const size1 = 330*BlockSize + 5*PageSize
	const opsPerPhase = 60
	v, err := e.CreateVolume(ctx, "v", size0)
	if err != nil {
		t.Fatal(err)
	}
	devs := make([]*Device, ndev)
	for i := range devs {
		if devs[i], err = e.OpenVolume(v.ID); err != nil {
			t.Fatal(err)
		}
	}
	m := newContentModel(size1)
	rands := make([]*rand.Rand, g)
	for i := range rands {
		rands[i] = rand.New(rand.NewPCG(uint64(i), 42))
	}
	owned := func(w int, limit int64, round int) []int64 {
		var out []int64
		for b := int64(w); b*BlockSize < limit; b += int64(g) {
			if round < 0 || int(b/int64(g))%2 == round {
				out = append(out, b)
			}
		}
		return out
	}
	// run runs fn in one goroutine per writer and waits for them all.
	run := func(extra func() error, fn func(w int, d *Device, r *rand.Rand) error) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, g+1)
		for w := range g {
			wg.Go(func() { errs[w] = fn(w, devs[w%ndev], rands[w]) })
		}
		if extra != nil {
			wg.Go(func() { errs[g] = extra() })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	do := func(d *Device, o ioOp) error {
		if err := o.do(ctx, d); err != nil {
			return err
		}
		m.apply(o)
		return nil
	}

	// Phase 1: every writer's even rounds of blocks, whole.
	run(nil, func(w int, d *Device, r *rand.Rand) error {
		for _, b := range owned(w, size0, 0) {
			if err := do(d, fullBlockWrite(r, b, size0)); err != nil {
				return err
			}
		}
		return nil
	})

	// Phase 2: first writes to the odd rounds, each followed by a rewrite
	// of a block held whole already (the fast path), while the neighbours
	// do the same; then random operations. Once every writer is halfway
	// through them, the volume is extended while they go on.
	var halfway sync.WaitGroup
	halfway.Add(g)
	extend := func() error {
		halfway.Wait()
		return e.ExtendVolume(ctx, v.ID, size1)
	}
	run(extend, func(w int, d *Device, r *rand.Rand) error {
		even := owned(w, size0, 0)
		for i, b := range owned(w, size0, 1) {
			if err := do(d, fullBlockWrite(r, b, size0)); err != nil {
				return err
			}
			if err := do(d, fullBlockWrite(r, even[i%len(even)], size0)); err != nil {
				return err
			}
		}
		signalled := false
		defer func() {
			if !signalled { // stopped by an error: let the extension go on
				halfway.Done()
			}
		}()
		all := owned(w, size0, -1)
		for i := range opsPerPhase {
			if i == opsPerPhase/2 {
				halfway.Done()
				signalled = true
			}
			if err := do(d, randomOp(r, all[r.IntN(len(all))], size0)); err != nil {
				return err
			}
		}
		return nil
	})
	if got := devs[0].Size(); got != size1 {
		t.Fatalf("size after the extension: %d, want %d", got, size1)
	}

	// Phase 3: the new part, first whole blocks next to each other's,
	// then random operations anywhere, including the old last block.
	run(nil, func(w int, d *Device, r *rand.Rand) error {
		for _, b := range owned(w, size1, -1) {
			if b*BlockSize >= size0 {
				if err := do(d, fullBlockWrite(r, b, size1)); err != nil {
					return err
				}
			}
		}
		all := owned(w, size1, -1)
		for range opsPerPhase {
			if err := do(d, randomOp(r, all[r.IntN(len(all))], size1)); err != nil {
				return err
			}
		}
		return d.Flush(ctx)
	})

	check := func(when string, d *Device) {
		t.Helper()
		if got := readAll(t, d); !bytes.Equal(got, m.data) {
			t.Fatalf("%s: content differs from the model at %d", when, firstDiff(got, m.data))
		}
		got, err := e.AllocatedExtents(ctx, Ref{Volume: v.ID})
		if err != nil {
			t.Fatal(err)
		}
		if want := m.extents(size1); !slices.Equal(got, want) {
			t.Fatalf("%s: presence differs from the model\ngot  %v\nwant %v", when, got, want)
		}
	}
	check("live", devs[0])
	if crash {
		e.crash()
	} else {
		for _, d := range devs {
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if e, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	d, err := e.OpenVolume(v.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	check("reopened", d)
}

// TestSnapshotWhileWriting takes snapshots while goroutines write, each
// to blocks of its own. A snapshot must show, for every writer, a prefix
// of its operations: at least every operation that had completed when
// CreateSnapshot was called, none that started after it returned.
func TestSnapshotWhileWriting(t *testing.T) {
	ctx := t.Context()
	e := openEngine(t, t.TempDir())
	const (
		writers = 4
		nblocks = 48
		size    = nblocks * BlockSize
		ops     = 120
		nsnaps  = 6
	)
	v, err := e.CreateVolume(ctx, "v", size)
	if err != nil {
		t.Fatal(err)
	}
	devs := make([]*Device, 2)
	for i := range devs {
		if devs[i], err = e.OpenVolume(v.ID); err != nil {
			t.Fatal(err)
		}
		defer devs[i].Close()
	}
	// Every writer's operations are made up front, to be replayed on
	// models when checking the snapshots.
	plans := make([][]ioOp, writers)
	for w := range plans {
		r := rand.New(rand.NewPCG(uint64(w), 9))
		for range ops {
			b := int64(w) + int64(r.IntN(nblocks/writers))*writers
			plans[w] = append(plans[w], randomOp(r, b, size))
		}
	}
	var started, done [writers]atomic.Int64
	// Snapshot k is taken once every writer is past operation
	// (k+1)*ops/(nsnaps+1); the writers do not wait for it.
	var rounds [nsnaps]sync.WaitGroup
	for k := range rounds {
		rounds[k].Add(writers)
	}
	type taken struct {
		id     cairn.ID
		lo, hi [writers]int64 // operations completed before, started by its end
	}
	snaps := make([]taken, nsnaps)
	var wg sync.WaitGroup
	errs := make([]error, writers+1)
	for w := range writers {
		wg.Go(func() {
			d := devs[w%len(devs)]
			next := 0
			for i, o := range plans[w] {
				for next < nsnaps && i == (next+1)*ops/(nsnaps+1) {
					rounds[next].Done()
					next++
				}
				started[w].Store(int64(i + 1))
				if err := o.do(ctx, d); err != nil {
					errs[w] = err
					break
				}
				done[w].Store(int64(i + 1))
			}
			for ; next < nsnaps; next++ {
				rounds[next].Done()
			}
		})
	}
	wg.Go(func() {
		for k := range snaps {
			rounds[k].Wait()
			s := &snaps[k]
			for w := range writers {
				s.lo[w] = done[w].Load()
			}
			info, err := e.CreateSnapshot(ctx, v.ID, fmt.Sprint("s", k))
			if err != nil {
				errs[writers] = err
				return
			}
			s.id = info.ID
			for w := range writers {
				s.hi[w] = started[w].Load()
			}
		}
	})
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	// ownedEqual compares the blocks of writer w.
	ownedEqual := func(w int, a, b []byte) bool {
		for blk := int64(w); blk < nblocks; blk += writers {
			lo, hi := blk*BlockSize, (blk+1)*BlockSize
			if !bytes.Equal(a[lo:hi], b[lo:hi]) {
				return false
			}
		}
		return true
	}
	for k, s := range snaps {
		d := mustOpenSnapshot(t, e, s.id)
		got := readAll(t, d)
		for w := range writers {
			m := newContentModel(size)
			found := false
			for i := int64(0); i <= s.hi[w] && !found; i++ {
				if i >= s.lo[w] && ownedEqual(w, got, m.data) {
					found = true
				}
				if i < int64(len(plans[w])) {
					m.apply(plans[w][i])
				}
			}
			if !found {
				t.Errorf("snapshot %d: writer %d's blocks are no prefix of its operations between %d and %d", k, w, s.lo[w], s.hi[w])
			}
		}
	}
	m := newContentModel(size)
	for w := range writers {
		for _, o := range plans[w] {
			m.apply(o)
		}
	}
	if got := readAll(t, devs[0]); !bytes.Equal(got, m.data) {
		t.Fatalf("volume differs from the model at %d", firstDiff(got, m.data))
	}
}

// hookContext calls onErr the first time Err is asked: the merge asks
// before it copies into an open head, so the hook runs when the merge
// has chosen its way and is about to copy.
type hookContext struct {
	context.Context
	once  sync.Once
	onErr func()
}

func (c *hookContext) Err() error {
	c.once.Do(c.onErr)
	return c.Context.Err()
}

// TestMergeIntoOpenHeadKeepsWriteInFlight deletes a snapshot whose pages
// are copied up into the open head while a write to one of those blocks
// is in flight: its data in the head's file, not yet recorded. The copy
// must not overwrite it with the snapshot's older data: the write was
// acknowledged and must read back.
func TestMergeIntoOpenHeadKeepsWriteInFlight(t *testing.T) {
	ctx := t.Context()
	e := openEngine(t, t.TempDir())
	v, d := newVolume(t, e, 16*BlockSize)
	defer d.Close()
	if err := d.WriteAt(ctx, bytes.Repeat([]byte{1}, 4*BlockSize), 0); err != nil {
		t.Fatal(err)
	}
	s, err := e.CreateSnapshot(ctx, v.ID, "s")
	if err != nil {
		t.Fatal(err)
	}
	// The head holds more than the snapshot would give it: the merge
	// copies the snapshot's pages up into the head, I/O going on.
	if err := d.WriteAt(ctx, bytes.Repeat([]byte{2}, 8*BlockSize), 8*BlockSize); err != nil {
		t.Fatal(err)
	}
	inFlight := bytes.Repeat([]byte{3}, BlockSize)
	want := readAll(t, d)
	copy(want[BlockSize:], inFlight)

	// The write stops between its data and its record until released.
	reached, release := make(chan struct{}), make(chan struct{})
	d.rt.idx.afterData = func() {
		close(reached)
		<-release
	}
	copied := make(chan struct{})
	e.mu.Lock()
	e.stop = func(step string) error {
		if step == "merge.copied" {
			close(copied)
		}
		return nil
	}
	e.mu.Unlock()
	var writer sync.WaitGroup
	var writeErr error
	hctx := &hookContext{Context: ctx, onErr: func() {
		writer.Go(func() { writeErr = d.WriteAt(ctx, inFlight, BlockSize) })
		<-reached
	}}
	deleted := make(chan error, 1)
	go func() { deleted <- e.DeleteSnapshot(hctx, s.ID) }()
	<-reached
	// Release the write once the merge has copied, or waits for the
	// volume's I/O to drain (a pending layout lock fails TryRLock).
wait:
	for {
		select {
		case <-copied:
			break wait
		default:
		}
		if !d.rt.layout.TryRLock() {
			break
		}
		d.rt.layout.RUnlock()
		goruntime.Gosched()
	}
	close(release)
	writer.Wait()
	if writeErr != nil {
		t.Fatal(writeErr)
	}
	if err := <-deleted; err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, d); !bytes.Equal(got, want) {
		t.Fatalf("volume differs after the merge at %d: %d, want %d", firstDiff(got, want), got[firstDiff(got, want)], want[firstDiff(got, want)])
	}
}

// TestDeleteSnapshotWhileWriting deletes a volume's snapshot while
// goroutines write the volume, each to blocks of its own: the snapshot's
// layer is merged into the open head either by copying its pages up into
// the head, in batches with the volume's I/O paused, or, the head being
// small, by copying the head's pages down. Content and presence must
// match a model afterwards, and after a reopen.
func TestDeleteSnapshotWhileWriting(t *testing.T) {
	for _, tc := range []struct {
		name       string
		headBlocks int64 // written after the snapshot, before the deletion
	}{
		{"copied up in batches", 128},
		{"head merged down", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			e, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { e.Close() }()
			const (
				writers = 4
				nblocks = 256 // more than one batch of copying up
				size    = nblocks * BlockSize
				ops     = 80
			)
			v, d := newVolume(t, e, size)
			m := newContentModel(size)
			r := rand.New(rand.NewPCG(5, 5))
			apply := func(o ioOp) {
				t.Helper()
				if err := o.do(ctx, d); err != nil {
					t.Fatal(err)
				}
				m.apply(o)
			}
			for b := range int64(nblocks) {
				apply(fullBlockWrite(r, b, size))
			}
			s, err := e.CreateSnapshot(ctx, v.ID, "s")
			if err != nil {
				t.Fatal(err)
			}
			for b := nblocks - tc.headBlocks; b < nblocks; b++ {
				apply(fullBlockWrite(r, b, size))
			}

			var halfway sync.WaitGroup
			halfway.Add(writers)
			var wg sync.WaitGroup
			errs := make([]error, writers+1)
			for w := range writers {
				wg.Go(func() {
					r := rand.New(rand.NewPCG(uint64(w), 6))
					signalled := false
					defer func() {
						if !signalled {
							halfway.Done()
						}
					}()
					for i := range ops {
						if i == ops/2 {
							halfway.Done()
							signalled = true
						}
						b := int64(w) + int64(r.IntN(nblocks/writers))*writers
						o := randomOp(r, b, size)
						if err := o.do(ctx, d); err != nil {
							errs[w] = err
							return
						}
						m.apply(o)
					}
				})
			}
			wg.Go(func() {
				halfway.Wait()
				errs[writers] = e.DeleteSnapshot(ctx, s.ID)
			})
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			check := func(when string, d *Device) {
				t.Helper()
				if got := readAll(t, d); !bytes.Equal(got, m.data) {
					t.Fatalf("%s: content differs from the model at %d", when, firstDiff(got, m.data))
				}
				got, err := e.AllocatedExtents(ctx, Ref{Volume: v.ID})
				if err != nil {
					t.Fatal(err)
				}
				if want := m.extents(size); !slices.Equal(got, want) {
					t.Fatalf("%s: presence differs from the model\ngot  %v\nwant %v", when, got, want)
				}
			}
			check("live", d)
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			if e, err = Open(dir, Options{}); err != nil {
				t.Fatal(err)
			}
			if d, err = e.OpenVolume(v.ID); err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			check("reopened", d)
			if n := len(e.Snapshots(v.ID)); n != 0 {
				t.Fatalf("%d snapshots left", n)
			}
		})
	}
}
