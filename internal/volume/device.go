package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/cairnproject/cairn"
)

// Device is an open volume (read-write) or snapshot (read-only). Devices
// of the same volume share one index and head; every method is safe for
// concurrent use. A Device satisfies the NBD server's Export interface,
// through a small adapter for the extent type.
type Device struct {
	e        *Engine
	rt       *runtime
	key      cairn.ID
	readOnly bool
	once     sync.Once
}

// OpenVolume opens a volume for reading and writing.
func (e *Engine) OpenVolume(id cairn.ID) (*Device, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.st.Volumes[id]
	if !ok {
		return nil, fmt.Errorf("volume %s: %w", id.Short(), cairn.ErrNotFound)
	}
	rt := e.vols[id]
	if rt == nil {
		var err error
		if rt, err = e.openRuntime(v.Head, v.Size, true); err != nil {
			return nil, err
		}
		e.vols[id] = rt
	}
	rt.refs++
	return &Device{e: e, rt: rt, key: id}, nil
}

// OpenSnapshot opens a snapshot for reading.
func (e *Engine) OpenSnapshot(id cairn.ID) (*Device, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.st.Snapshots[id]
	if !ok {
		return nil, fmt.Errorf("snapshot %s: %w", id.Short(), cairn.ErrNotFound)
	}
	rt := e.snaps[id]
	if rt == nil {
		var err error
		if rt, err = e.openRuntime(s.Layer, s.Size, false); err != nil {
			return nil, err
		}
		e.snaps[id] = rt
	}
	rt.refs++
	return &Device{e: e, rt: rt, key: id, readOnly: true}, nil
}

// openRuntime opens the layers from the root to top and resolves them
// into an index, one layer's presence at a time. The caller holds e.mu.
func (e *Engine) openRuntime(top uint64, size int64, writable bool) (*runtime, error) {
	ids, err := e.st.path(top)
	if err != nil {
		return nil, err
	}
	layers := make([]*layer, 0, len(ids))
	fail := func(err error) (*runtime, error) {
		for _, l := range layers {
			l.close()
		}
		return nil, err
	}
	for _, id := range ids {
		l, err := openLayer(e.dir, id, writable && id == top)
		if err != nil {
			return fail(err)
		}
		layers = append(layers, l)
	}
	ix, err := newIndex(layers, size)
	if err != nil {
		return fail(err)
	}
	dirty := false
	for pos, l := range layers {
		p, certain, err := l.loadPresence(blocksFor(size))
		if err != nil {
			return fail(err)
		}
		if !certain && !e.st.Layers[l.id].Uncertain {
			e.st.Layers[l.id].Uncertain = true
			dirty = true
			e.opts.Logger.Warn("layer presence rebuilt after damage; changed-extent queries across it will be unsure", "layer", l.id)
		}
		ix.applyLayer(pos, p)
		if writable && l.id == top {
			l.pres = p
		}
	}
	if dirty {
		if err := e.st.save(e.dir); err != nil {
			return fail(err)
		}
	}
	rt := &runtime{idx: ix, ids: ids, closed: make(chan struct{})}
	if writable {
		rt.head = layers[len(layers)-1]
	}
	return rt, nil
}

// Close releases the device; the last one of a volume flushes and
// checkpoints its head.
func (d *Device) Close() error {
	var err error
	d.once.Do(func() {
		e := d.e
		e.mu.Lock()
		defer e.mu.Unlock()
		m := e.vols
		if d.readOnly {
			m = e.snaps
		}
		d.rt.refs--
		if d.rt.refs == 0 && m[d.key] == d.rt {
			delete(m, d.key)
			err = e.closeRuntime(d.rt)
		}
	})
	return err
}

// Size is the device's size in bytes.
func (d *Device) Size() int64 {
	d.rt.layout.RLock()
	defer d.rt.layout.RUnlock()
	return d.rt.idx.size
}

// ReadOnly reports whether the device is a snapshot.
func (d *Device) ReadOnly() bool { return d.readOnly }

// ReadAt fills p from off.
func (d *Device) ReadAt(ctx context.Context, p []byte, off int64) error {
	d.rt.layout.RLock()
	defer d.rt.layout.RUnlock()
	return d.rt.idx.readAt(p, off)
}

func (d *Device) writable() error {
	if d.readOnly {
		return fmt.Errorf("snapshot %s is read-only: %w", d.key.Short(), cairn.ErrDenied)
	}
	return nil
}

// WriteAt writes p at off.
func (d *Device) WriteAt(ctx context.Context, p []byte, off int64) error {
	if err := d.writable(); err != nil {
		return err
	}
	d.rt.layout.RLock()
	defer d.rt.layout.RUnlock()
	return d.rt.idx.writeAt(d.rt.head, p, off)
}

// Flush makes every write completed before the call durable, whichever
// device of the volume made it.
func (d *Device) Flush(ctx context.Context) error {
	if d.readOnly {
		return nil
	}
	d.rt.layout.RLock()
	defer d.rt.layout.RUnlock()
	return d.rt.head.flush()
}

// StartWriteback starts writing what was written to [off, off+n) back to
// disk, and returns without waiting for it (sync_file_range with
// SYNC_FILE_RANGE_WRITE; it may wait for room in the disk's queue). It
// is advice and makes nothing durable: only Flush does. A writer that
// fills a whole volume (a restore) calls it as it goes, so the disk
// writes while the writer works and its final Flush finds little left;
// otherwise a host with plenty of memory keeps all of it dirty until
// that Flush, which then writes it all while the writer waits.
func (d *Device) StartWriteback(off, n int64) error {
	if err := d.writable(); err != nil {
		return err
	}
	d.rt.layout.RLock()
	defer d.rt.layout.RUnlock()
	if err := unix.SyncFileRange(int(d.rt.head.data.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE); err != nil {
		return fmt.Errorf("starting writeback of layer %d: %w", d.rt.head.id, err)
	}
	return nil
}

// Trim discards [off, off+n): the range reads as zeros afterwards.
func (d *Device) Trim(ctx context.Context, off, n int64) error {
	return d.Zero(ctx, off, n, false)
}

// Zero makes [off, off+n) read as zeros; with noHole the range stays
// allocated.
func (d *Device) Zero(ctx context.Context, off, n int64, noHole bool) error {
	if err := d.writable(); err != nil {
		return err
	}
	d.rt.layout.RLock()
	defer d.rt.layout.RUnlock()
	return d.rt.idx.zero(d.rt.head, off, n, noHole)
}

// FastZero reports that zeroing costs no more than punching a hole.
func (d *Device) FastZero() bool { return true }

// MultiConn reports that Flush covers writes of every device of the volume.
func (d *Device) MultiConn() bool { return true }

// BlockStatus describes [off, off+n): holes where no layer holds data.
func (d *Device) BlockStatus(ctx context.Context, off, n int64) ([]Extent, error) {
	d.rt.layout.RLock()
	defer d.rt.layout.RUnlock()
	return d.rt.idx.blockStatus(off, n, 4096)
}

// Source adapts a device to what a backup reads: io.ReaderAt semantics,
// the size, and the allocated extents.
func (d *Device) Source() *Source { return &Source{d: d} }

// Source reads a device as a backup source.
type Source struct{ d *Device }

// ReadAt implements io.ReaderAt.
func (s *Source) ReadAt(p []byte, off int64) (int, error) {
	size := s.d.Size()
	if off >= size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), size-off)
	if err := s.d.ReadAt(context.Background(), p[:n], off); err != nil {
		return 0, err
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// Size is the device's size.
func (s *Source) Size() int64 { return s.d.Size() }

// Allocated returns the extents some layer holds; the rest reads as zeros.
// Of a read-only device (a snapshot, whose layers no longer take writes)
// it also leaves out the blocks that are holes in the layer that holds
// them: ranges trimmed or zeroed before the snapshot, such as the blocks
// of files a file system deleted and discarded, read as zeros too.
func (s *Source) Allocated() ([]cairn.Extent, bool, error) {
	d := s.d
	d.rt.layout.RLock()
	defer d.rt.layout.RUnlock()
	ix := d.rt.idx
	var out []cairn.Extent
	add := func(off, n int64) {
		if k := len(out); k > 0 && out[k-1].End() == off {
			out[k-1].Length += n
		} else {
			out = append(out, cairn.Extent{Offset: off, Length: n})
		}
	}
	nb := int64(len(ix.owner))
	for b := int64(0); b < nb; {
		o, _ := ix.lookup(b)
		if o == noOwner {
			b++
			continue
		}
		// A run of blocks with one owner.
		start := b
		for b++; b < nb; b++ {
			if next, _ := ix.lookup(b); next != o {
				break
			}
		}
		off, end := start*BlockSize, min(b*BlockSize, ix.size)
		if !d.readOnly || o == mixedOwner {
			add(off, end-off)
			continue
		}
		runs, err := dataRuns(ix.layers[o].data, off, end)
		if err != nil {
			return nil, false, fmt.Errorf("layer %d: %w", ix.layers[o].id, err)
		}
		for _, r := range runs {
			add(r.Offset, r.Length)
		}
	}
	return out, true, nil
}

// dataRuns returns the parts of [off, end) of f that hold data, widened
// to whole blocks; the rest of the range is holes, or lies past the end
// of f, and reads as zeros. It uses SEEK_DATA and SEEK_HOLE on f's
// descriptor, whose offset nothing else uses (layers are read and
// written at explicit offsets). Where the file system cannot tell, the
// whole range is returned.
func dataRuns(f *os.File, off, end int64) ([]cairn.Extent, error) {
	fd := int(f.Fd())
	var out []cairn.Extent
	for off < end {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data from off to the end of the file
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return append(out, cairn.Extent{Offset: off, Length: end - off}), nil
		}
		if err != nil {
			return nil, fmt.Errorf("seeking data: %w", err)
		}
		if data >= end {
			break
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("seeking a hole: %w", err)
		}
		from := data / BlockSize * BlockSize
		to := min(end, (min(hole, end)+BlockSize-1)/BlockSize*BlockSize)
		if k := len(out); k > 0 && out[k-1].End() >= from {
			out[k-1].Length = to - out[k-1].Offset
		} else {
			out = append(out, cairn.Extent{Offset: from, Length: to - from})
		}
		off = to
	}
	return out, nil
}
