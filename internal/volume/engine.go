// Package volume is cairn's volume engine: thin volumes in local sparse
// files with O(1) copy-on-write snapshots, instant clones, revert, and
// changed-block tracking that survives restarts. A volume is a path of
// layers in a tree; its last layer (the head) takes writes, the others are
// frozen snapshots, shared between the volumes cloned from them.
// docs/ARCHITECTURE.md ("Volume engine") explains the design.
package volume

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairnproject/cairn"
)

// Options tune an Engine.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
}

// Engine manages the volumes of one data directory. Only one process may
// open a data directory at a time. It is safe for concurrent use.
type Engine struct {
	dir  string
	opts Options
	lock *os.File

	mu    sync.Mutex
	st    *state
	vols  map[cairn.ID]*runtime // open volumes
	snaps map[cairn.ID]*runtime // open snapshots

	// stop, set by tests only, makes a multi-step change stop at a named
	// step as if the process died there.
	stop func(step string) error
}

// step reports the error a test set for a named step, or nil.
func (e *Engine) step(name string) error {
	if e.stop == nil {
		return nil
	}
	return e.stop(name)
}

// runtime is the shared open state of a volume or snapshot: its index and,
// for volumes, its head.
type runtime struct {
	layout sync.RWMutex // I/O holds it shared; layout changes exclusive
	idx    *index
	head   *layer // nil for snapshots
	ids    []uint64
	refs   int
	// closed is closed once the runtime is (its last device closed).
	closed chan struct{}
}

// Open opens (creating if needed) the engine's data directory.
func Open(dir string, opts Options) (*Engine, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Join(dir, "layers"), 0o700); err != nil {
		return nil, fmt.Errorf("volume engine: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "engine.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("volume engine: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		owner, _ := os.ReadFile(lock.Name())
		lock.Close()
		return nil, fmt.Errorf("data directory %s is in use by another cairn process (%s): %w", dir, strings.TrimSpace(string(owner)), cairn.ErrConflict)
	}
	_ = lock.Truncate(0)
	_, _ = lock.WriteAt([]byte("pid "+strconv.Itoa(os.Getpid())+"\n"), 0)
	st, err := loadState(dir)
	if err != nil {
		lock.Close()
		return nil, err
	}
	e := &Engine{dir: dir, opts: opts, lock: lock, st: st, vols: map[cairn.ID]*runtime{}, snaps: map[cairn.ID]*runtime{}}
	if err := e.removeStrays(); err != nil {
		lock.Close()
		return nil, err
	}
	// Finish deletions a crash interrupted.
	for id, l := range st.Layers {
		if l.Hidden {
			if err := e.collectLayer(context.Background(), id); err != nil {
				opts.Logger.Warn("collecting a deleted snapshot's layer", "layer", id, "err", err)
			}
		}
	}
	return e, nil
}

// removeStrays deletes layer files the state does not know: left by a
// crash between creating a layer and recording it.
func (e *Engine) removeStrays() error {
	entries, err := os.ReadDir(filepath.Join(e.dir, "layers"))
	if err != nil {
		return fmt.Errorf("volume engine: %w", err)
	}
	for _, ent := range entries {
		name := ent.Name()
		idStr, _, _ := strings.Cut(name, ".")
		id, err := strconv.ParseUint(idStr, 10, 64)
		if err != nil {
			continue
		}
		if _, ok := e.st.Layers[id]; !ok || strings.HasSuffix(name, ".tmp") {
			if err := os.Remove(filepath.Join(e.dir, "layers", name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// Close flushes and checkpoints every open volume and releases the data
// directory. Devices still open become unusable.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	for id, rt := range e.vols {
		errs = append(errs, e.closeRuntime(rt))
		delete(e.vols, id)
	}
	for id, rt := range e.snaps {
		errs = append(errs, e.closeRuntime(rt))
		delete(e.snaps, id)
	}
	if e.lock != nil {
		e.lock.Close()
		e.lock = nil
	}
	return errors.Join(errs...)
}

func (e *Engine) closeRuntime(rt *runtime) error {
	rt.layout.Lock()
	defer rt.layout.Unlock()
	var err error
	if rt.head != nil {
		if err = rt.head.flush(); err == nil {
			rt.head.mu.Lock()
			err = rt.head.checkpoint(rt.head.pres)
			rt.head.mu.Unlock()
		}
	}
	for _, l := range rt.idx.layers {
		l.close()
	}
	close(rt.closed)
	return err
}

// WaitVolumeClosed returns once no device of volume id is open (at once
// if none is), or with ctx's error. A volume detached from a client is
// closed a moment later, when the server ends its session; deleting it
// waits for that here rather than failing as in use.
func (e *Engine) WaitVolumeClosed(ctx context.Context, id cairn.ID) error {
	e.mu.Lock()
	rt := e.vols[id]
	e.mu.Unlock()
	if rt == nil {
		return nil
	}
	select {
	case <-rt.closed:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("volume %s still open: %w", id.Short(), ctx.Err())
	}
}

// VolumeInfo describes a volume.
type VolumeInfo struct {
	ID        cairn.ID  `json:"id"`
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	Created   time.Time `json:"created"`
	Source    *cairn.ID `json:"source_snapshot,omitempty"`
	Snapshots int       `json:"snapshots"`
	InUse     bool      `json:"in_use"`
	// Allocated is the disk space the volume's own head layer uses.
	Allocated int64 `json:"allocated"`
}

// SnapshotInfo describes a snapshot.
type SnapshotInfo struct {
	ID        cairn.ID  `json:"id"`
	Volume    cairn.ID  `json:"volume"`
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	Created   time.Time `json:"created"`
	InUse     bool      `json:"in_use"`
	Allocated int64     `json:"allocated"`
}

func (e *Engine) allocated(layer uint64) int64 {
	var st unix.Stat_t
	if err := unix.Stat(layerPath(e.dir, layer, ".data"), &st); err != nil {
		return 0
	}
	return st.Blocks * 512
}

func (e *Engine) volumeInfo(v *volumeRec) VolumeInfo {
	n := 0
	for _, s := range e.st.Snapshots {
		if s.Volume == v.ID {
			n++
		}
	}
	_, inUse := e.vols[v.ID]
	return VolumeInfo{ID: v.ID, Name: v.Name, Size: v.Size, Created: v.Created, Source: v.Source,
		Snapshots: n, InUse: inUse, Allocated: e.allocated(v.Head)}
}

func (e *Engine) snapshotInfo(s *snapshotRec) SnapshotInfo {
	_, inUse := e.snaps[s.ID]
	return SnapshotInfo{ID: s.ID, Volume: s.Volume, Name: s.Name, Size: s.Size, Created: s.Created, InUse: inUse, Allocated: e.allocated(s.Layer)}
}

// Volumes lists the volumes, oldest first.
func (e *Engine) Volumes() []VolumeInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []VolumeInfo
	for _, v := range e.st.Volumes {
		out = append(out, e.volumeInfo(v))
	}
	slices.SortFunc(out, func(a, b VolumeInfo) int { return a.Created.Compare(b.Created) })
	return out
}

// Volume describes one volume.
func (e *Engine) Volume(id cairn.ID) (VolumeInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.st.Volumes[id]
	if !ok {
		return VolumeInfo{}, fmt.Errorf("volume %s: %w", id.Short(), cairn.ErrNotFound)
	}
	return e.volumeInfo(v), nil
}

// Snapshots lists a volume's snapshots (all snapshots for the zero ID),
// oldest first.
func (e *Engine) Snapshots(volume cairn.ID) []SnapshotInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []SnapshotInfo
	for _, s := range e.st.Snapshots {
		if volume.IsZero() || s.Volume == volume {
			out = append(out, e.snapshotInfo(s))
		}
	}
	slices.SortFunc(out, func(a, b SnapshotInfo) int { return a.Created.Compare(b.Created) })
	return out
}

// Snapshot describes one snapshot.
func (e *Engine) Snapshot(id cairn.ID) (SnapshotInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.st.Snapshots[id]
	if !ok {
		return SnapshotInfo{}, fmt.Errorf("snapshot %s: %w", id.Short(), cairn.ErrNotFound)
	}
	return e.snapshotInfo(s), nil
}

func validSize(size int64) error {
	if size <= 0 || size%PageSize != 0 || size > maxBlocks*BlockSize {
		return fmt.Errorf("size %d: want a positive multiple of %d: %w", size, PageSize, cairn.ErrInvalid)
	}
	return nil
}

// newLayer records and creates an empty layer on parent.
func (e *Engine) newLayer(parent uint64, size int64) (uint64, error) {
	id := e.st.NextLayer
	e.st.NextLayer++
	if err := createLayerFiles(e.dir, id, size); err != nil {
		return 0, err
	}
	e.st.Layers[id] = &layerRec{ID: id, Parent: parent, Size: size}
	return id, nil
}

// CreateVolume makes a thin volume of size bytes: it takes no space until
// written.
func (e *Engine) CreateVolume(ctx context.Context, name string, size int64) (VolumeInfo, error) {
	if err := validSize(size); err != nil {
		return VolumeInfo{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	head, err := e.newLayer(0, size)
	if err != nil {
		return VolumeInfo{}, err
	}
	v := &volumeRec{ID: cairn.NewID(), Name: name, Size: size, Head: head, Created: e.opts.Now().UTC()}
	e.st.Volumes[v.ID] = v
	if err := e.st.save(e.dir); err != nil {
		return VolumeInfo{}, err
	}
	return e.volumeInfo(v), nil
}

// CloneVolume makes a new volume from a snapshot, instantly: the two
// share every block the clone has not written.
func (e *Engine) CloneVolume(ctx context.Context, name string, snapshot cairn.ID) (VolumeInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.st.Snapshots[snapshot]
	if !ok {
		return VolumeInfo{}, fmt.Errorf("snapshot %s: %w", snapshot.Short(), cairn.ErrNotFound)
	}
	head, err := e.newLayer(s.Layer, s.Size)
	if err != nil {
		return VolumeInfo{}, err
	}
	src := s.ID
	v := &volumeRec{ID: cairn.NewID(), Name: name, Size: s.Size, Head: head, Created: e.opts.Now().UTC(), Source: &src}
	e.st.Volumes[v.ID] = v
	if err := e.st.save(e.dir); err != nil {
		return VolumeInfo{}, err
	}
	return e.volumeInfo(v), nil
}

// DeleteVolume deletes a volume that has no snapshots and is not in use.
func (e *Engine) DeleteVolume(ctx context.Context, id cairn.ID) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.st.Volumes[id]
	if !ok {
		return fmt.Errorf("volume %s: %w", id.Short(), cairn.ErrNotFound)
	}
	if _, open := e.vols[id]; open {
		return fmt.Errorf("volume %s is in use: %w", id.Short(), cairn.ErrConflict)
	}
	for _, s := range e.st.Snapshots {
		if s.Volume == id {
			return fmt.Errorf("volume %s has snapshots; delete them first: %w", id.Short(), cairn.ErrConflict)
		}
	}
	parent := e.st.Layers[v.Head].Parent
	delete(e.st.Volumes, id)
	delete(e.st.Layers, v.Head)
	if err := e.st.save(e.dir); err != nil {
		return err
	}
	if err := removeLayerFiles(e.dir, v.Head); err != nil {
		return err
	}
	if parent != 0 {
		return e.collectLayer(ctx, parent)
	}
	return nil
}

// ExtendVolume grows a volume to size bytes.
func (e *Engine) ExtendVolume(ctx context.Context, id cairn.ID, size int64) error {
	if err := validSize(size); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.st.Volumes[id]
	if !ok {
		return fmt.Errorf("volume %s: %w", id.Short(), cairn.ErrNotFound)
	}
	if size <= v.Size {
		return fmt.Errorf("volume %s has %d bytes; it can only grow: %w", id.Short(), v.Size, cairn.ErrInvalid)
	}
	if err := os.Truncate(layerPath(e.dir, v.Head, ".data"), size); err != nil {
		return fmt.Errorf("extending volume %s: %w", id.Short(), err)
	}
	if rt, open := e.vols[id]; open {
		rt.layout.Lock()
		rt.idx.grow(size)
		rt.head.mu.Lock()
		rt.head.pres.grow(blocksFor(size))
		rt.head.mu.Unlock()
		rt.layout.Unlock()
	}
	v.Size = size
	e.st.Layers[v.Head].Size = size
	return e.st.save(e.dir)
}

// CreateSnapshot freezes the volume's content in O(1): every write
// acknowledged before the call is in the snapshot, none after.
func (e *Engine) CreateSnapshot(ctx context.Context, volume cairn.ID, name string) (SnapshotInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.st.Volumes[volume]
	if !ok {
		return SnapshotInfo{}, fmt.Errorf("volume %s: %w", volume.Short(), cairn.ErrNotFound)
	}
	rt := e.vols[volume]
	if rt != nil {
		rt.layout.Lock()
		defer rt.layout.Unlock()
		if len(rt.idx.layers) >= maxDepth {
			return SnapshotInfo{}, fmt.Errorf("volume %s: too many snapshots deep: %w", volume.Short(), cairn.ErrConflict)
		}
	}
	old := v.Head
	// Make the frozen layer whole on disk: data, then presence.
	if rt != nil {
		if err := rt.head.flush(); err != nil {
			return SnapshotInfo{}, err
		}
		rt.head.mu.Lock()
		err := rt.head.checkpoint(rt.head.pres)
		rt.head.mu.Unlock()
		if err != nil {
			return SnapshotInfo{}, err
		}
	} else if err := e.checkpointClosed(old, v.Size); err != nil {
		return SnapshotInfo{}, err
	}
	head, err := e.newLayer(old, v.Size)
	if err != nil {
		return SnapshotInfo{}, err
	}
	e.st.Layers[old].Frozen = true
	s := &snapshotRec{ID: cairn.NewID(), Volume: volume, Name: name, Layer: old, Size: v.Size, Created: e.opts.Now().UTC()}
	e.st.Snapshots[s.ID] = s
	v.Head = head
	if err := e.st.save(e.dir); err != nil {
		return SnapshotInfo{}, err
	}
	if rt != nil {
		nl, err := openLayer(e.dir, head, true)
		if err != nil {
			return SnapshotInfo{}, err
		}
		nl.pres = newPresence(blocksFor(v.Size))
		rt.head.log.Close()
		rt.head.log = nil
		rt.head.pres = nil // frozen: its pages live on in the index
		rt.idx.layers = append(rt.idx.layers, nl)
		rt.head = nl
		rt.ids = append(rt.ids, head)
	}
	return e.snapshotInfo(s), nil
}

// checkpointClosed folds a closed head's log into its checkpoint.
func (e *Engine) checkpointClosed(id uint64, size int64) error {
	l, err := openLayer(e.dir, id, true)
	if err != nil {
		return err
	}
	defer l.close()
	p, certain, err := l.loadPresence(blocksFor(size))
	if err != nil {
		return err
	}
	if !certain {
		e.st.Layers[id].Uncertain = true
	}
	return l.checkpoint(p)
}

// DeleteSnapshot deletes a snapshot. Its space goes back where no other
// snapshot or clone needs it: its layer is merged into the one layer built
// on it, or kept, hidden, while several are.
func (e *Engine) DeleteSnapshot(ctx context.Context, id cairn.ID) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.st.Snapshots[id]
	if !ok {
		return fmt.Errorf("snapshot %s: %w", id.Short(), cairn.ErrNotFound)
	}
	if _, open := e.snaps[id]; open {
		return fmt.Errorf("snapshot %s is in use: %w", id.Short(), cairn.ErrConflict)
	}
	delete(e.st.Snapshots, id)
	e.st.Layers[s.Layer].Hidden = true
	if err := e.st.save(e.dir); err != nil {
		return err
	}
	return e.collectLayer(ctx, s.Layer)
}

// RevertVolume makes a volume's content that of one of its snapshots. The
// volume must not be in use; its other snapshots stay as they are.
func (e *Engine) RevertVolume(ctx context.Context, volume, snapshot cairn.ID) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.st.Volumes[volume]
	if !ok {
		return fmt.Errorf("volume %s: %w", volume.Short(), cairn.ErrNotFound)
	}
	s, ok := e.st.Snapshots[snapshot]
	if !ok || s.Volume != volume {
		return fmt.Errorf("snapshot %s of volume %s: %w", snapshot.Short(), volume.Short(), cairn.ErrNotFound)
	}
	if _, open := e.vols[volume]; open {
		return fmt.Errorf("volume %s is in use: %w", volume.Short(), cairn.ErrConflict)
	}
	old := v.Head
	oldParent := e.st.Layers[old].Parent
	head, err := e.newLayer(s.Layer, s.Size)
	if err != nil {
		return err
	}
	v.Head = head
	v.Size = s.Size
	delete(e.st.Layers, old)
	if err := e.st.save(e.dir); err != nil {
		return err
	}
	if err := removeLayerFiles(e.dir, old); err != nil {
		return err
	}
	if oldParent != 0 {
		return e.collectLayer(ctx, oldParent)
	}
	return nil
}

// collectLayer removes or merges a hidden layer once at most one layer
// builds on it. The caller holds e.mu.
func (e *Engine) collectLayer(ctx context.Context, id uint64) error {
	rec, ok := e.st.Layers[id]
	if !ok || !rec.Hidden {
		return nil
	}
	children := e.st.children(id)
	switch len(children) {
	case 0:
		parent := rec.Parent
		delete(e.st.Layers, id)
		if err := e.st.save(e.dir); err != nil {
			return err
		}
		if err := removeLayerFiles(e.dir, id); err != nil {
			return err
		}
		if parent != 0 {
			return e.collectLayer(ctx, parent)
		}
		return nil
	case 1:
		return e.merge(ctx, id, children[0])
	default:
		return nil
	}
}
