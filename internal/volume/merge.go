package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/cairnproject/cairn"
)

// merge folds hidden layer lid into its only child cid: every page lid
// holds and cid does not is copied into cid, so cid alone shows what both
// showed, and lid can go. The caller holds e.mu. When cid is the head of
// an open volume, the copy goes in batches that pause the volume's I/O.
//
// Order keeps a crash harmless: copied data is made durable, then cid's
// presence, then the state drops lid, then lid's files go. A crash before
// the state is saved leaves lid in the path below a cid that holds the same
// pages; the next merge finds nothing left to copy.
func (e *Engine) merge(ctx context.Context, lid, cid uint64) error {
	lrec, crec := e.st.Layers[lid], e.st.Layers[cid]
	src, err := openLayer(e.dir, lid, false)
	if err != nil {
		return err
	}
	defer src.close()
	lp, certain, err := src.loadPresence(blocksFor(lrec.Size))
	if err != nil {
		return err
	}
	// A closed child holding fewer pages than it would be given goes the
	// other way: its pages into the parent.
	if !e.isOpenHead(cid) {
		cl, err := openLayer(e.dir, cid, false)
		if err != nil {
			return err
		}
		cp, ccertain, err := cl.loadPresence(blocksFor(crec.Size))
		cl.close()
		if err != nil {
			return err
		}
		if ccertain && pageCount(cp, nil) < pageCount(lp, cp) {
			return e.mergeDown(ctx, lid, cid, lp, cp, certain)
		}
	} else if rt := e.openHead(cid); rt != nil {
		// An open head takes the same way when it is small enough to
		// copy with the volume's I/O paused.
		rt.layout.Lock()
		rt.head.mu.Lock()
		hp := newPresence(rt.head.pres.nblocks())
		hp.union(rt.head.pres)
		rt.head.mu.Unlock()
		n := pageCount(hp, nil)
		if n*PageSize <= maxPausedCopy && n < pageCount(lp, hp) {
			defer rt.layout.Unlock()
			return e.mergeDownHead(ctx, rt, lid, cid, lp, hp, certain)
		}
		rt.layout.Unlock()
	}
	if !certain || lrec.Uncertain {
		crec.Uncertain = true
	}

	// The child may be the head of an open volume, taking writes.
	var headRT *runtime
	for _, rt := range e.vols {
		if rt.head.id == cid {
			headRT = rt
		}
	}
	dst := (*layer)(nil)
	var cp *presence
	if headRT != nil {
		dst = headRT.head
	} else {
		if dst, err = openLayer(e.dir, cid, true); err != nil {
			return err
		}
		defer dst.close()
		var ok bool
		if cp, ok, err = dst.loadPresence(blocksFor(crec.Size)); err != nil {
			return err
		}
		if !ok {
			crec.Uncertain = true
		}
	}

	// Copying into an open head pauses the volume's I/O, a batch at a
	// time. A write puts its data in the head's file before it records
	// it; a copy decided on the head's presence meanwhile would put the
	// older data over the acknowledged write. With the layout held no
	// write is in flight, so the presence says exactly which pages the
	// head must keep. Batches are bounded, so I/O waits for at most
	// maxPausedBatch bytes of copying at a time.
	paused := false
	var batchBytes, batchBlocks int64
	resume := func() {
		if paused {
			headRT.layout.Unlock()
			paused = false
		}
	}
	buf := make([]byte, BlockSize)
	var copyErr error
	lp.each(func(b int64, lmask uint16) {
		if copyErr != nil || b*BlockSize >= crec.Size {
			return
		}
		if !paused {
			if ctx.Err() != nil {
				return
			}
			if headRT != nil {
				headRT.layout.Lock()
				paused = true
				batchBytes, batchBlocks = 0, 0
				cp = dst.pres
			}
		}
		batchBlocks++
		if headRT != nil {
			dst.mu.Lock()
		}
		need := lmask &^ cp.pages(b)
		if headRT != nil {
			dst.mu.Unlock()
		}
		if need != 0 {
			copyErr = copyPages(src, dst, b, need, crec.Size, buf)
			if copyErr == nil {
				batchBytes += int64(bits.OnesCount16(need)) * PageSize
				if headRT != nil {
					headRT.idx.apply(b, need, uint16(len(headRT.idx.layers)-1))
					dst.mu.Lock()
					if cp.add(b, need) {
						dst.record(b, need)
					}
					dst.mu.Unlock()
				} else {
					cp.add(b, need)
				}
			}
		}
		if batchBytes >= maxPausedBatch || batchBlocks >= maxPausedBlocks {
			resume()
		}
	})
	resume()
	if copyErr != nil {
		return fmt.Errorf("merging layer %d into %d: %w", lid, cid, copyErr)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := e.step("merge.copied"); err != nil {
		return err
	}
	if headRT != nil {
		if err := dst.flush(); err != nil {
			return err
		}
	} else {
		if err := unix.Fdatasync(int(dst.data.Fd())); err != nil {
			return fmt.Errorf("syncing layer %d: %w", cid, err)
		}
		if err := dst.checkpoint(cp); err != nil {
			return err
		}
	}

	if err := e.step("merge.checkpointed"); err != nil {
		return err
	}
	crec.Parent = lrec.Parent
	delete(e.st.Layers, lid)
	if err := e.st.save(e.dir); err != nil {
		return err
	}
	if err := e.step("merge.saved"); err != nil {
		return err
	}
	for _, rts := range []map[cairn.ID]*runtime{e.vols, e.snaps} {
		for _, rt := range rts {
			pos := slices.Index(rt.ids, lid)
			if pos < 0 {
				continue
			}
			rt.layout.Lock()
			rt.idx.layers[pos].close()
			rt.idx.dropLayer(pos)
			rt.ids = slices.Delete(rt.ids, pos, pos+1)
			rt.layout.Unlock()
		}
	}
	return removeLayerFiles(e.dir, lid)
}

// isOpenHead reports whether layer id is the head of an open volume.
func (e *Engine) isOpenHead(id uint64) bool { return e.openHead(id) != nil }

// openHead returns the runtime of the open volume whose head is layer id.
func (e *Engine) openHead(id uint64) *runtime {
	for _, rt := range e.vols {
		if rt.head.id == id {
			return rt
		}
	}
	return nil
}

// maxPausedCopy bounds what a merge copies while a volume's I/O waits.
const maxPausedCopy = 512 << 20

// A merge into an open head copies in batches, the volume's I/O waiting
// meanwhile: at most maxPausedBatch bytes copied, or maxPausedBlocks
// blocks looked at, per batch.
const (
	maxPausedBatch  = 4 << 20
	maxPausedBlocks = 4096
)

// copyPages copies the pages in mask of block b from src to dst.
func copyPages(src, dst *layer, b int64, mask uint16, size int64, buf []byte) error {
	for pg := int64(0); pg < pagesPerBlock; {
		if mask&(1<<pg) == 0 {
			pg++
			continue
		}
		first := pg
		for pg < pagesPerBlock && mask&(1<<pg) != 0 {
			pg++
		}
		off := b*BlockSize + first*PageSize
		n := min((pg-first)*PageSize, size-off)
		if n <= 0 {
			break
		}
		m, err := src.data.ReadAt(buf[:n], off)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		clear(buf[m:n]) // past the end of the source file: zeros
		if _, err := dst.data.WriteAt(buf[:n], off); err != nil {
			return err
		}
	}
	return nil
}

// pageCount counts the pages a presence holds (and, with not, that not
// does not hold).
func pageCount(p, not *presence) int64 {
	var n int64
	p.each(func(b int64, mask uint16) {
		if not != nil {
			mask &^= not.pages(b)
		}
		n += int64(bits.OnesCount16(mask))
	})
	return n
}

// mergeDown folds closed child layer cid into its hidden parent lid, the
// cheaper way when the child holds fewer pages than the parent would have
// to give it: the child's pages are copied into the parent's file, and
// the parent's layer takes the child's place (its snapshot, its
// children). The caller holds e.mu and has checked that cid is not an
// open volume's head.
//
// Order keeps a crash harmless: every path through lid goes on through
// cid, whose pages hide lid's, so the copies and the widened presence in
// lid change what nobody reads until the state says cid is gone; then
// cid's files go.
func (e *Engine) mergeDown(ctx context.Context, lid, cid uint64, lp, cp *presence, certain bool) error {
	lrec, crec := e.st.Layers[lid], e.st.Layers[cid]
	src, err := openLayer(e.dir, cid, false)
	if err != nil {
		return err
	}
	defer src.close()
	dst, err := openLayer(e.dir, lid, true)
	if err != nil {
		return err
	}
	defer dst.close()
	if crec.Size > lrec.Size {
		if err := dst.data.Truncate(crec.Size); err != nil {
			return fmt.Errorf("growing layer %d: %w", lid, err)
		}
	}
	lp.grow(blocksFor(crec.Size))
	buf := make([]byte, BlockSize)
	var copyErr error
	cp.each(func(b int64, mask uint16) {
		if copyErr != nil {
			return
		}
		if copyErr = ctx.Err(); copyErr != nil {
			return
		}
		if copyErr = copyPages(src, dst, b, mask, crec.Size, buf); copyErr == nil {
			lp.add(b, mask)
		}
	})
	if copyErr != nil {
		return fmt.Errorf("merging layer %d into %d: %w", cid, lid, copyErr)
	}
	if err := e.step("mergeDown.copied"); err != nil {
		return err
	}
	if err := unix.Fdatasync(int(dst.data.Fd())); err != nil {
		return fmt.Errorf("syncing layer %d: %w", lid, err)
	}
	if err := dst.checkpoint(lp); err != nil {
		return err
	}
	if err := e.step("mergeDown.checkpointed"); err != nil {
		return err
	}

	// lid becomes cid: same place in the tree, same users.
	lrec.Size = crec.Size
	lrec.Frozen = crec.Frozen
	lrec.Hidden = crec.Hidden
	lrec.Uncertain = lrec.Uncertain || crec.Uncertain || !certain
	for _, l := range e.st.Layers {
		if l.Parent == cid {
			l.Parent = lid
		}
	}
	for _, s := range e.st.Snapshots {
		if s.Layer == cid {
			s.Layer = lid
		}
	}
	for _, v := range e.st.Volumes {
		if v.Head == cid {
			v.Head = lid
		}
	}
	delete(e.st.Layers, cid)
	if err := e.st.save(e.dir); err != nil {
		return err
	}
	if err := e.step("mergeDown.saved"); err != nil {
		return err
	}
	for _, rts := range []map[cairn.ID]*runtime{e.vols, e.snaps} {
		for _, rt := range rts {
			pos := slices.Index(rt.ids, lid)
			if pos < 0 || pos+1 >= len(rt.ids) || rt.ids[pos+1] != cid {
				continue
			}
			rt.layout.Lock()
			// lid's layer, now holding both, takes cid's position; then
			// dropping position pos moves cid's blocks onto it.
			layers := rt.idx.layers
			layers[pos], layers[pos+1] = layers[pos+1], layers[pos]
			layers[pos].close()
			rt.idx.dropLayer(pos)
			rt.ids = slices.Delete(rt.ids, pos+1, pos+2)
			rt.layout.Unlock()
		}
	}
	return removeLayerFiles(e.dir, cid)
}

// mergeDownHead folds the head hid of an open volume into its hidden
// parent lid, as mergeDown does for a closed layer: the head's pages are
// copied into lid's file and lid's layer becomes the volume's head. The
// caller holds e.mu and rt.layout exclusively, so no I/O runs meanwhile;
// hp is the head's presence.
//
// A crash before the state is saved leaves the head as it was over a lid
// that also holds the head's pages; reads see the head's pages either
// way (unflushed writes may be seen, as a crash allows).
func (e *Engine) mergeDownHead(ctx context.Context, rt *runtime, lid, hid uint64, lp, hp *presence, certain bool) error {
	lrec, hrec := e.st.Layers[lid], e.st.Layers[hid]
	pos := slices.Index(rt.ids, lid)
	if pos < 0 || pos+1 != len(rt.ids)-1 || rt.ids[pos+1] != hid {
		return fmt.Errorf("merging head %d into %d: layer %d is not right below it: %w", hid, lid, lid, cairn.ErrCorrupt)
	}
	head := rt.head
	dst, err := openLayer(e.dir, lid, true)
	if err != nil {
		return err
	}
	keep := false
	defer func() {
		if !keep {
			dst.close()
		}
	}()
	size := rt.idx.size
	if size > lrec.Size {
		if err := dst.data.Truncate(size); err != nil {
			return fmt.Errorf("growing layer %d: %w", lid, err)
		}
	}
	lp.grow(blocksFor(size))
	buf := make([]byte, BlockSize)
	var copyErr error
	hp.each(func(b int64, mask uint16) {
		if copyErr != nil {
			return
		}
		if copyErr = ctx.Err(); copyErr != nil {
			return
		}
		if copyErr = copyPages(head, dst, b, mask, size, buf); copyErr == nil {
			lp.add(b, mask)
		}
	})
	if copyErr != nil {
		return fmt.Errorf("merging head %d into %d: %w", hid, lid, copyErr)
	}
	if err := e.step("mergeDownHead.copied"); err != nil {
		return err
	}
	if err := unix.Fdatasync(int(dst.data.Fd())); err != nil {
		return fmt.Errorf("syncing layer %d: %w", lid, err)
	}
	if err := dst.checkpoint(lp); err != nil {
		return err
	}
	if err := e.step("mergeDownHead.checkpointed"); err != nil {
		return err
	}

	lrec.Size = size
	lrec.Frozen, lrec.Hidden = false, false
	lrec.Uncertain = lrec.Uncertain || hrec.Uncertain || !certain
	for _, v := range e.st.Volumes {
		if v.Head == hid {
			v.Head = lid
		}
	}
	delete(e.st.Layers, hid)
	if err := e.st.save(e.dir); err != nil {
		return err
	}
	if err := e.step("mergeDownHead.saved"); err != nil {
		return err
	}
	// lid's new writable layer takes the head's position; dropping
	// position pos then moves the head's blocks onto it.
	dst.pres = lp
	layers := rt.idx.layers
	old := layers[pos]
	layers[pos+1] = dst
	old.close()
	head.close()
	rt.idx.dropLayer(pos)
	rt.ids = slices.Delete(rt.ids, pos+1, pos+2)
	rt.head = dst
	keep = true
	return removeLayerFiles(e.dir, hid)
}
