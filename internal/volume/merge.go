package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/cairnproject/cairn"
)

// merge folds hidden layer lid into its only child cid: every page lid
// holds and cid does not is copied into cid, so cid alone shows what both
// showed, and lid can go. The caller holds e.mu.
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

	buf := make([]byte, BlockSize)
	var copyErr error
	lp.each(func(b int64, lmask uint16) {
		if copyErr != nil || ctx.Err() != nil || b*BlockSize >= crec.Size {
			return
		}
		var st interface{ Unlock() }
		if headRT != nil {
			s := &headRT.idx.stripes[b%nStripes]
			s.Lock()
			st = s
			dst.mu.Lock()
			cp = dst.pres
		}
		need := lmask &^ cp.pages(b)
		if headRT != nil {
			dst.mu.Unlock()
		}
		if need != 0 {
			copyErr = copyPages(src, dst, b, need, crec.Size, buf)
			if copyErr == nil {
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
		if st != nil {
			st.Unlock()
		}
	})
	if copyErr != nil {
		return fmt.Errorf("merging layer %d into %d: %w", lid, cid, copyErr)
	}
	if err := ctx.Err(); err != nil {
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

	crec.Parent = lrec.Parent
	delete(e.st.Layers, lid)
	if err := e.st.save(e.dir); err != nil {
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
