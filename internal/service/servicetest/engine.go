package servicetest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/nbd"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/volume"
)

// pageSize is the unit of the fake's data, as the engine's.
const pageSize = volume.PageSize

type page = [pageSize]byte

// pages is sparse data: what is missing reads as zeros. Pages are never
// changed in place (a write replaces them), so a copy of the map is a
// snapshot.
type pages map[int64]*page

// Engine is an in-memory service.Engine whose calls go through Faults.
type Engine struct {
	faults *Faults

	mu   sync.Mutex
	tick time.Time // the clock: every event is a microsecond later
	// clock, when set, is a test's clock the engine's follows.
	clock   func() time.Time
	vols    map[cairn.ID]*fakeVolume
	snaps   map[cairn.ID]*fakeSnapshot
	exports map[string]cairn.ID
}

type fakeVolume struct {
	info volume.VolumeInfo
	data pages
	open int
}

type fakeSnapshot struct {
	info volume.SnapshotInfo
	data pages
}

var _ service.Engine = (*Engine)(nil)

// NewEngine returns an empty fake engine whose calls faults governs
// (nil: none fail).
func NewEngine(faults *Faults) *Engine {
	if faults == nil {
		faults = NewFaults()
	}
	return &Engine{faults: faults, tick: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		vols: map[cairn.ID]*fakeVolume{}, snaps: map[cairn.ID]*fakeSnapshot{}, exports: map[string]cairn.ID{}}
}

// Faults returns the engine's faults.
func (e *Engine) Faults() *Faults { return e.faults }

// SetClock makes the engine's clock follow clock (while it moves
// forward; every event stays a microsecond later than the last).
func (e *Engine) SetClock(clock func() time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.clock = clock
}

// now advances the clock; the caller holds e.mu.
func (e *Engine) now() time.Time {
	e.tick = e.tick.Add(time.Microsecond)
	if e.clock != nil {
		if t := e.clock(); t.After(e.tick) {
			e.tick = t
		}
	}
	return e.tick
}

func (e *Engine) volumeInfo(v *fakeVolume) volume.VolumeInfo {
	info := v.info
	info.InUse = v.open > 0
	info.Allocated = int64(len(v.data)) * pageSize
	for _, s := range e.snaps {
		if s.info.Volume == v.info.ID {
			info.Snapshots++
		}
	}
	return info
}

// Volumes implements service.Engine.
func (e *Engine) Volumes(ctx context.Context) ([]volume.VolumeInfo, error) {
	c, err := e.faults.Begin(ctx, "Engine.Volumes")
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	out := make([]volume.VolumeInfo, 0, len(e.vols))
	for _, v := range e.vols {
		out = append(out, e.volumeInfo(v))
	}
	e.mu.Unlock()
	slices.SortFunc(out, func(a, b volume.VolumeInfo) int { return a.Created.Compare(b.Created) })
	return out, c.End(ctx)
}

// Snapshots implements service.Engine.
func (e *Engine) Snapshots(ctx context.Context) ([]volume.SnapshotInfo, error) {
	c, err := e.faults.Begin(ctx, "Engine.Snapshots")
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	out := make([]volume.SnapshotInfo, 0, len(e.snaps))
	for _, s := range e.snaps {
		out = append(out, s.info)
	}
	e.mu.Unlock()
	slices.SortFunc(out, func(a, b volume.SnapshotInfo) int { return a.Created.Compare(b.Created) })
	return out, c.End(ctx)
}

func validSize(size int64) error {
	if size <= 0 || size%pageSize != 0 {
		return fmt.Errorf("size %d: want a positive multiple of %d: %w", size, pageSize, cairn.ErrInvalid)
	}
	return nil
}

// CreateVolume implements service.Engine.
func (e *Engine) CreateVolume(ctx context.Context, name string, size int64) (volume.VolumeInfo, error) {
	c, err := e.faults.Begin(ctx, "Engine.CreateVolume")
	if err != nil {
		return volume.VolumeInfo{}, err
	}
	if err := validSize(size); err != nil {
		return volume.VolumeInfo{}, err
	}
	e.mu.Lock()
	v := &fakeVolume{info: volume.VolumeInfo{ID: cairn.NewID(), Name: name, Size: size, Created: e.now()}, data: pages{}}
	e.vols[v.info.ID] = v
	info := e.volumeInfo(v)
	e.mu.Unlock()
	return info, c.End(ctx)
}

// CloneVolume implements service.Engine.
func (e *Engine) CloneVolume(ctx context.Context, name string, snapshot cairn.ID) (volume.VolumeInfo, error) {
	c, err := e.faults.Begin(ctx, "Engine.CloneVolume")
	if err != nil {
		return volume.VolumeInfo{}, err
	}
	e.mu.Lock()
	s, ok := e.snaps[snapshot]
	if !ok {
		e.mu.Unlock()
		return volume.VolumeInfo{}, fmt.Errorf("snapshot %s: %w", snapshot.Short(), cairn.ErrNotFound)
	}
	src := s.info.ID
	v := &fakeVolume{info: volume.VolumeInfo{ID: cairn.NewID(), Name: name, Size: s.info.Size, Created: e.now(), Source: &src},
		data: clonePages(s.data)}
	e.vols[v.info.ID] = v
	info := e.volumeInfo(v)
	e.mu.Unlock()
	return info, c.End(ctx)
}

func clonePages(p pages) pages {
	out := make(pages, len(p))
	for k, v := range p {
		out[k] = v
	}
	return out
}

// ExtendVolume implements service.Engine.
func (e *Engine) ExtendVolume(ctx context.Context, id cairn.ID, size int64) error {
	c, err := e.faults.Begin(ctx, "Engine.ExtendVolume")
	if err != nil {
		return err
	}
	if err := validSize(size); err != nil {
		return err
	}
	e.mu.Lock()
	v, ok := e.vols[id]
	switch {
	case !ok:
		err = fmt.Errorf("volume %s: %w", id.Short(), cairn.ErrNotFound)
	case size <= v.info.Size:
		err = fmt.Errorf("volume %s has %d bytes; it can only grow: %w", id.Short(), v.info.Size, cairn.ErrInvalid)
	default:
		v.info.Size = size
	}
	e.mu.Unlock()
	if err != nil {
		return err
	}
	return c.End(ctx)
}

// DeleteVolume implements service.Engine.
func (e *Engine) DeleteVolume(ctx context.Context, id cairn.ID) error {
	c, err := e.faults.Begin(ctx, "Engine.DeleteVolume")
	if err != nil {
		return err
	}
	e.mu.Lock()
	v, ok := e.vols[id]
	switch {
	case !ok:
		err = fmt.Errorf("volume %s: %w", id.Short(), cairn.ErrNotFound)
	case v.open > 0:
		err = fmt.Errorf("volume %s is in use: %w", id.Short(), cairn.ErrConflict)
	case e.volumeInfo(v).Snapshots > 0:
		err = fmt.Errorf("volume %s has snapshots; delete them first: %w", id.Short(), cairn.ErrConflict)
	default:
		delete(e.vols, id)
	}
	e.mu.Unlock()
	if err != nil {
		return err
	}
	return c.End(ctx)
}

// CreateSnapshot implements service.Engine.
func (e *Engine) CreateSnapshot(ctx context.Context, vol cairn.ID, name string) (volume.SnapshotInfo, error) {
	c, err := e.faults.Begin(ctx, "Engine.CreateSnapshot")
	if err != nil {
		return volume.SnapshotInfo{}, err
	}
	e.mu.Lock()
	v, ok := e.vols[vol]
	if !ok {
		e.mu.Unlock()
		return volume.SnapshotInfo{}, fmt.Errorf("volume %s: %w", vol.Short(), cairn.ErrNotFound)
	}
	s := &fakeSnapshot{info: volume.SnapshotInfo{ID: cairn.NewID(), Volume: vol, Name: name, Size: v.info.Size, Created: e.now()},
		data: clonePages(v.data)}
	s.info.Allocated = int64(len(s.data)) * pageSize
	e.snaps[s.info.ID] = s
	info := s.info
	e.mu.Unlock()
	return info, c.End(ctx)
}

// DeleteSnapshot implements service.Engine. A fake snapshot is never
// open: its data is read through Snapshot.
func (e *Engine) DeleteSnapshot(ctx context.Context, id cairn.ID) error {
	c, err := e.faults.Begin(ctx, "Engine.DeleteSnapshot")
	if err != nil {
		return err
	}
	e.mu.Lock()
	_, ok := e.snaps[id]
	delete(e.snaps, id)
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("snapshot %s: %w", id.Short(), cairn.ErrNotFound)
	}
	return c.End(ctx)
}

// RevertVolume implements service.Engine.
func (e *Engine) RevertVolume(ctx context.Context, vol, snapshot cairn.ID) error {
	c, err := e.faults.Begin(ctx, "Engine.RevertVolume")
	if err != nil {
		return err
	}
	e.mu.Lock()
	v, vok := e.vols[vol]
	s, sok := e.snaps[snapshot]
	switch {
	case !vok:
		err = fmt.Errorf("volume %s: %w", vol.Short(), cairn.ErrNotFound)
	case !sok || s.info.Volume != vol:
		err = fmt.Errorf("snapshot %s of volume %s: %w", snapshot.Short(), vol.Short(), cairn.ErrNotFound)
	case v.open > 0:
		err = fmt.Errorf("volume %s is in use: %w", vol.Short(), cairn.ErrConflict)
	default:
		v.data, v.info.Size = clonePages(s.data), s.info.Size
	}
	e.mu.Unlock()
	if err != nil {
		return err
	}
	return c.End(ctx)
}

// OpenVolume implements service.Engine.
func (e *Engine) OpenVolume(ctx context.Context, id cairn.ID) (service.Device, error) {
	c, err := e.faults.Begin(ctx, "Engine.OpenVolume")
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	v, ok := e.vols[id]
	if ok {
		v.open++
	}
	e.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("volume %s: %w", id.Short(), cairn.ErrNotFound)
	}
	d := &device{e: e, v: v}
	if err := c.End(ctx); err != nil {
		_ = d.Close()
		return nil, err
	}
	return d, nil
}

// Export implements service.Engine.
func (e *Engine) Export(ctx context.Context, name string, id cairn.ID) error {
	c, err := e.faults.Begin(ctx, "Engine.Export")
	if err != nil {
		return err
	}
	if name == "" {
		return fmt.Errorf("export without a name: %w", cairn.ErrInvalid)
	}
	e.mu.Lock()
	_, ok := e.vols[id]
	if ok {
		e.exports[name] = id
	}
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("volume %s: %w", id.Short(), cairn.ErrNotFound)
	}
	return c.End(ctx)
}

// Unexport implements service.Engine.
func (e *Engine) Unexport(ctx context.Context, name string) error {
	c, err := e.faults.Begin(ctx, "Engine.Unexport")
	if err != nil {
		return err
	}
	e.mu.Lock()
	delete(e.exports, name)
	e.mu.Unlock()
	return c.End(ctx)
}

// Exported implements service.Engine.
func (e *Engine) Exported(ctx context.Context) (map[string]cairn.ID, error) {
	c, err := e.faults.Begin(ctx, "Engine.Exported")
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	m := maps.Clone(e.exports)
	e.mu.Unlock()
	return m, c.End(ctx)
}

// snapshotData returns a snapshot's size and data (the fake repository
// reads it).
func (e *Engine) snapshotData(id cairn.ID) (volume.SnapshotInfo, pages, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.snaps[id]
	if !ok {
		return volume.SnapshotInfo{}, nil, fmt.Errorf("snapshot %s: %w", id.Short(), cairn.ErrNotFound)
	}
	return s.info, s.data, nil
}

// device is an open fake volume.
type device struct {
	e      *Engine
	v      *fakeVolume
	closed bool
}

var _ service.Device = (*device)(nil)

func (d *device) Size() int64 {
	d.e.mu.Lock()
	defer d.e.mu.Unlock()
	return d.v.info.Size
}

func (d *device) ReadOnly() bool  { return false }
func (d *device) FastZero() bool  { return true }
func (d *device) MultiConn() bool { return true }

// check is a device call's common start: the faults, then the range.
func (d *device) check(ctx context.Context, method string, off, n int64) (Call, error) {
	c, err := d.e.faults.Begin(ctx, "Device."+method)
	if err != nil {
		return c, err
	}
	if off < 0 || n < 0 || off+n > d.Size() {
		return c, fmt.Errorf("device %s: [%d, %d) outside the volume: %w", method, off, off+n, cairn.ErrInvalid)
	}
	return c, nil
}

func (d *device) ReadAt(ctx context.Context, p []byte, off int64) error {
	c, err := d.check(ctx, "ReadAt", off, int64(len(p)))
	if err != nil {
		return err
	}
	d.e.mu.Lock()
	readPages(d.v.data, p, off)
	d.e.mu.Unlock()
	return c.End(ctx)
}

func (d *device) WriteAt(ctx context.Context, p []byte, off int64) error {
	c, err := d.check(ctx, "WriteAt", off, int64(len(p)))
	if err != nil {
		return err
	}
	d.e.mu.Lock()
	writePages(d.v.data, p, off)
	d.e.mu.Unlock()
	return c.End(ctx)
}

func (d *device) Zero(ctx context.Context, off, n int64, _ bool) error {
	c, err := d.check(ctx, "Zero", off, n)
	if err != nil {
		return err
	}
	d.e.mu.Lock()
	zeroPages(d.v.data, off, n)
	d.e.mu.Unlock()
	return c.End(ctx)
}

func (d *device) Trim(ctx context.Context, off, n int64) error {
	c, err := d.check(ctx, "Trim", off, n)
	if err != nil {
		return err
	}
	d.e.mu.Lock()
	zeroPages(d.v.data, off, n)
	d.e.mu.Unlock()
	return c.End(ctx)
}

func (d *device) Flush(ctx context.Context) error {
	c, err := d.e.faults.Begin(ctx, "Device.Flush")
	if err != nil {
		return err
	}
	return c.End(ctx)
}

func (d *device) BlockStatus(ctx context.Context, off, n int64) ([]nbd.Extent, error) {
	c, err := d.check(ctx, "BlockStatus", off, n)
	if err != nil {
		return nil, err
	}
	// Pages never written (or zeroed away) are holes that read as zeros.
	var out []nbd.Extent
	d.e.mu.Lock()
	for o, end := off, off+n; o < end; {
		l := min(end, (o/pageSize+1)*pageSize) - o
		hole := d.v.data[o/pageSize] == nil
		if k := len(out); k > 0 && out[k-1].Hole == hole {
			out[k-1].Length += l
		} else {
			out = append(out, nbd.Extent{Length: l, Hole: hole, Zero: hole})
		}
		o += l
	}
	d.e.mu.Unlock()
	return out, c.End(ctx)
}

func (d *device) Close() error {
	d.e.mu.Lock()
	defer d.e.mu.Unlock()
	if d.closed {
		return fmt.Errorf("device closed twice: %w", cairn.ErrInvalid)
	}
	d.closed = true
	d.v.open--
	return nil
}

// readPages fills p from off.
func readPages(data pages, p []byte, off int64) {
	for len(p) > 0 {
		pn, in := off/pageSize, off%pageSize
		n := min(int64(len(p)), pageSize-in)
		if pg := data[pn]; pg != nil {
			copy(p[:n], pg[in:in+n])
		} else {
			clear(p[:n])
		}
		p, off = p[n:], off+n
	}
}

// writePages writes p at off, replacing the pages it touches; a page
// left all zeros is dropped.
func writePages(data pages, p []byte, off int64) {
	for len(p) > 0 {
		pn, in := off/pageSize, off%pageSize
		n := min(int64(len(p)), pageSize-in)
		var np page
		if old := data[pn]; old != nil {
			np = *old
		}
		copy(np[in:in+n], p[:n])
		if np == (page{}) {
			delete(data, pn)
		} else {
			data[pn] = &np
		}
		p, off = p[n:], off+n
	}
}

func zeroPages(data pages, off, n int64) {
	for n > 0 {
		pn, in := off/pageSize, off%pageSize
		k := min(n, pageSize-in)
		if old := data[pn]; old != nil {
			np := *old
			clear(np[in : in+k])
			if np == (page{}) {
				delete(data, pn)
			} else {
				data[pn] = &np
			}
		}
		off, n = off+k, n-k
	}
}

// Peek lists the volumes and snapshots without going through Faults, for
// a test's checks.
func (e *Engine) Peek() ([]volume.VolumeInfo, []volume.SnapshotInfo) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var vols []volume.VolumeInfo
	for _, v := range e.vols {
		vols = append(vols, e.volumeInfo(v))
	}
	var snaps []volume.SnapshotInfo
	for _, s := range e.snaps {
		snaps = append(snaps, s.info)
	}
	slices.SortFunc(vols, func(a, b volume.VolumeInfo) int { return a.Created.Compare(b.Created) })
	slices.SortFunc(snaps, func(a, b volume.SnapshotInfo) int { return a.Created.Compare(b.Created) })
	return vols, snaps
}

// OpenDevices is how many devices are open.
func (e *Engine) OpenDevices() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, v := range e.vols {
		n += v.open
	}
	return n
}

// Pages returns the data of a volume or snapshot, by page offset; pages
// of zeros are absent.
func (e *Engine) Pages(id cairn.ID) (map[int64][]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var data pages
	if v, ok := e.vols[id]; ok {
		data = v.data
	} else if s, ok := e.snaps[id]; ok {
		data = s.data
	} else {
		return nil, fmt.Errorf("volume or snapshot %s: %w", id.Short(), cairn.ErrNotFound)
	}
	out := make(map[int64][]byte, len(data))
	for k, p := range data {
		out[k*pageSize] = append([]byte(nil), p[:]...)
	}
	return out, nil
}

// Write writes p at off into a volume without going through Faults, as
// a test's client would.
func (e *Engine) Write(id cairn.ID, off int64, p []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.vols[id]
	if !ok {
		return fmt.Errorf("volume %s: %w", id.Short(), cairn.ErrNotFound)
	}
	if off < 0 || off+int64(len(p)) > v.info.Size {
		return fmt.Errorf("write [%d, %d) outside the volume: %w", off, off+int64(len(p)), cairn.ErrInvalid)
	}
	writePages(v.data, p, off)
	return nil
}
