package volume

import (
	"context"
	"fmt"

	"github.com/cairnproject/cairn"
)

// Ref names a volume's live content (Snapshot zero) or one of its
// snapshots.
type Ref struct {
	Volume   cairn.ID
	Snapshot cairn.ID
}

// top returns the layer and size of a ref. The caller holds e.mu.
func (e *Engine) top(r Ref) (uint64, int64, error) {
	if !r.Snapshot.IsZero() {
		s, ok := e.st.Snapshots[r.Snapshot]
		if !ok {
			return 0, 0, fmt.Errorf("snapshot %s: %w", r.Snapshot.Short(), cairn.ErrNotFound)
		}
		return s.Layer, s.Size, nil
	}
	v, ok := e.st.Volumes[r.Volume]
	if !ok {
		return 0, 0, fmt.Errorf("volume %s: %w", r.Volume.Short(), cairn.ErrNotFound)
	}
	return v.Head, v.Size, nil
}

// ChangedExtents returns the byte ranges where to may differ from from,
// at 4 KiB granularity: every page any layer between them holds. A zero
// from means everything allocated in to. known is false when a layer
// between them had its tracking rebuilt after damage: the caller must
// then read everything. The list is never silently incomplete.
func (e *Engine) ChangedExtents(ctx context.Context, from *Ref, to Ref) (list []cairn.Extent, known bool, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	toTop, toSize, err := e.top(to)
	if err != nil {
		return nil, false, err
	}
	toPath, err := e.st.path(toTop)
	if err != nil {
		return nil, false, err
	}
	inFrom := map[uint64]bool{}
	var fromPath []uint64
	if from != nil {
		fromTop, _, err := e.top(*from)
		if err != nil {
			return nil, false, err
		}
		if fromPath, err = e.st.path(fromTop); err != nil {
			return nil, false, err
		}
		for _, id := range fromPath {
			inFrom[id] = true
		}
	}
	inTo := map[uint64]bool{}
	for _, id := range toPath {
		inTo[id] = true
	}
	// Layers on one side only: on a shared path that is everything above
	// from; across branches (a revert, a clone), both sides of the fork.
	var diff []uint64
	for _, id := range toPath {
		if !inFrom[id] {
			diff = append(diff, id)
		}
	}
	for _, id := range fromPath {
		if !inTo[id] {
			diff = append(diff, id)
		}
	}
	acc := newPresence(blocksFor(toSize))
	known = true
	for _, id := range diff {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		p, certain, err := e.presenceOf(id)
		if err != nil {
			return nil, false, err
		}
		known = known && certain && !e.st.Layers[id].Uncertain
		acc.union(p)
	}
	return acc.extents(toSize), known, nil
}

// AllocatedExtents returns the ranges of a volume or snapshot that some
// layer holds.
func (e *Engine) AllocatedExtents(ctx context.Context, r Ref) ([]cairn.Extent, error) {
	list, _, err := e.ChangedExtents(ctx, nil, r)
	return list, err
}

// presenceOf returns a layer's presence: the live one of an open head
// (copied under its lock), otherwise read from disk. The caller holds e.mu.
func (e *Engine) presenceOf(id uint64) (*presence, bool, error) {
	for _, rt := range e.vols {
		if rt.head.id == id {
			rt.head.mu.Lock()
			defer rt.head.mu.Unlock()
			p := newPresence(rt.head.pres.nblocks())
			p.union(rt.head.pres)
			return p, true, nil
		}
	}
	l, err := openLayer(e.dir, id, false)
	if err != nil {
		return nil, false, err
	}
	defer l.close()
	return l.loadPresence(blocksFor(e.st.Layers[id].Size))
}
