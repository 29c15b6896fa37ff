package volume

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/cairnproject/cairn"
)

// Owner values besides a layer's position in the path.
const (
	noOwner    = 0xFFFF // no layer holds the block: it reads as zeros
	mixedOwner = 0xFFFE // pages come from different layers: see mixed
	maxDepth   = 0xFFFD
	nStripes   = 256
)

// index resolves every block of one volume or snapshot to the layer that
// holds it: two bytes per 64 KiB block (32 MiB per TiB) however many
// snapshots lie below. Blocks whose pages come from several layers are
// kept page by page in mixed; they arise from partial writes over older
// data, since writes never copy data up.
type index struct {
	size   int64
	layers []*layer // root first; the last one takes writes if any do
	owner  []uint16

	// Stripe s guards owner[b] and mixed[s] for every block b with
	// b % nStripes == s.
	stripes [nStripes]sync.RWMutex
	mixed   [nStripes]map[int64]*[pagesPerBlock]uint16

	// afterData, set by tests only, runs when a write's whole pages are
	// in the head's file and not yet recorded.
	afterData func()
}

func blocksFor(size int64) int64 { return (size + BlockSize - 1) / BlockSize }

// newIndex returns an index of layers in which nothing is held yet;
// applyLayer adds each layer's presence, oldest first.
func newIndex(layers []*layer, size int64) (*index, error) {
	if len(layers) > maxDepth {
		return nil, fmt.Errorf("%d layers deep, at most %d: %w", len(layers), maxDepth, cairn.ErrConflict)
	}
	ix := &index{size: size, layers: layers, owner: make([]uint16, blocksFor(size))}
	for i := range ix.owner {
		ix.owner[i] = noOwner
	}
	for s := range ix.mixed {
		ix.mixed[s] = map[int64]*[pagesPerBlock]uint16{}
	}
	return ix, nil
}

// applyLayer resolves the presence of the layer at pos over the ones
// below it.
func (ix *index) applyLayer(pos int, p *presence) {
	nb := int64(len(ix.owner))
	p.each(func(b int64, mask uint16) {
		if b < nb {
			ix.apply(b, mask, uint16(pos))
		}
	})
}

// dropLayer removes the layer at pos from the path, after its pages were
// merged into the layer above it (which then takes its position). Callers
// hold the runtime's layout exclusively.
func (ix *index) dropLayer(pos int) {
	p := uint16(pos)
	for i, o := range ix.owner {
		if o < mixedOwner && o > p {
			ix.owner[i] = o - 1
		}
	}
	for s := range ix.mixed {
		for _, pages := range ix.mixed[s] {
			for i, o := range pages {
				if o < mixedOwner && o > p {
					pages[i] = o - 1
				}
			}
		}
	}
	ix.layers = slices.Delete(ix.layers, pos, pos+1)
}

// apply makes layer pos the newest holder of the pages in mask of block b.
// The caller holds b's stripe for writing (or owns the index alone).
func (ix *index) apply(b int64, mask uint16, pos uint16) {
	mixed := ix.mixed[b%nStripes]
	switch o := ix.owner[b]; {
	case mask == fullMask, o == noOwner:
		// Pages of b that pos does not hold read as zeros from its file,
		// as they do in the older layers: there is no older data.
		ix.owner[b] = pos
		delete(mixed, b)
	case o == pos:
	case o == mixedOwner:
		pages := mixed[b]
		all := true
		for i := range pages {
			if mask&(1<<i) != 0 {
				pages[i] = pos
			}
			all = all && pages[i] == pos
		}
		if all {
			ix.owner[b] = pos
			delete(mixed, b)
		}
	default:
		var pages [pagesPerBlock]uint16
		for i := range pages {
			pages[i] = o
			if mask&(1<<i) != 0 {
				pages[i] = pos
			}
		}
		ix.owner[b] = mixedOwner
		mixed[b] = &pages
	}
}

func (ix *index) grow(size int64) {
	for int64(len(ix.owner)) < blocksFor(size) {
		ix.owner = append(ix.owner, noOwner)
	}
	ix.size = size
}

func (ix *index) checkRange(off, n int64) error {
	if off < 0 || n < 0 || off > ix.size || n > ix.size-off {
		return fmt.Errorf("range [%d, %d) outside the %d-byte volume: %w", off, off+n, ix.size, cairn.ErrInvalid)
	}
	return nil
}

// lookup returns b's owner and, for mixed blocks, its page owners.
func (ix *index) lookup(b int64) (uint16, [pagesPerBlock]uint16) {
	st := &ix.stripes[b%nStripes]
	st.RLock()
	defer st.RUnlock()
	return ix.lookupLocked(b)
}

func (ix *index) lookupLocked(b int64) (uint16, [pagesPerBlock]uint16) {
	var pages [pagesPerBlock]uint16
	o := ix.owner[b]
	if o == mixedOwner {
		pages = *ix.mixed[b%nStripes][b]
	}
	return o, pages
}

// readLayer reads p at off from the layer at pos; bytes past the end of
// that layer's file (a volume extended since) read as zeros.
func (ix *index) readLayer(pos uint16, p []byte, off int64) error {
	if pos == noOwner {
		clear(p)
		return nil
	}
	n, err := ix.layers[pos].data.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		clear(p[n:])
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading layer %d: %w", ix.layers[pos].id, err)
	}
	return nil
}

// readAt fills p from off. Runs of blocks held by one layer are read with
// one call. A range of more than one block held by more than one layer is
// read as planMixed says: the layer holding most of its pages first, in
// one call over its span, then the other layers' pages over it.
func (ix *index) readAt(p []byte, off int64) error {
	if err := ix.checkRange(off, int64(len(p))); err != nil {
		return err
	}
	base, from, to, ok := ix.planMixed(off, int64(len(p)))
	if ok {
		if err := ix.readLayer(base, p[from-off:to-off], from); err != nil {
			return err
		}
	}
	// done says [at, at+n) of layer o was read already: held by base, a
	// layer no write changes, and in its span.
	done := func(o uint16, at, n int64) bool { return ok && o == base && at >= from && at+n <= to }
	for len(p) > 0 {
		b := off / BlockSize
		o, pages := ix.lookup(b)
		if o != mixedOwner {
			n := min(int64(len(p)), BlockSize-off%BlockSize)
			// Extend the run while the next blocks have the same owner.
			for n < int64(len(p)) && n < 4<<20 {
				if no, _ := ix.lookup((off + n) / BlockSize); no != o {
					break
				}
				n = min(int64(len(p)), n+BlockSize)
			}
			if !done(o, off, n) {
				if err := ix.readLayer(o, p[:n], off); err != nil {
					return err
				}
			}
			p, off = p[n:], off+n
			continue
		}
		n := min(int64(len(p)), BlockSize-off%BlockSize)
		if err := ix.readMixed(pages, p[:n], off, done); err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// planMixed plans the read of [off, off+n) when it spans more than one
// block and more than one layer holds pages of it (ok). Such a range is
// otherwise read run by run, alternating between layer files, a mixed
// block run of pages by run of pages; on a cold page cache each run is a
// small read of its own, which the kernel's readahead does not
// anticipate: a snapshot whose blocks were mostly mixed (8 KiB pages
// written over a fifth of it, as a database writes) read at a fifth of
// the rate of one whose blocks were not. So the layer holding most of
// the range's pages, base, is read in one call over [from, to), the span
// from its first block in the range to its last, and the kernel is asked
// to read ahead each other layer's span, whose pages are then read over
// it. The spans may hold pages a layer above replaced, read for nothing
// but in sequential requests; holes cost nothing.
//
// The owners are looked up again as the pages are read: a write meanwhile
// (only the head takes writes) moves a page to the head, whose page is
// then read; a read concurrent with a write may return either, as ever.
// A range only the head and holes hold, or with no frozen layer in it,
// is read as before, with readahead asked for.
func (ix *index) planMixed(off, n int64) (base uint16, from, to int64, ok bool) {
	if n <= BlockSize {
		return 0, 0, 0, false
	}
	type span struct {
		from, to int64 // blocks
		pages    int
	}
	spans := map[uint16]*span{}
	add := func(o uint16, b int64, pages int) {
		if o == noOwner {
			return
		}
		if sp := spans[o]; sp != nil {
			sp.to = b + 1
			sp.pages += pages
			return
		}
		spans[o] = &span{b, b + 1, pages}
	}
	for b := off / BlockSize; b <= (off+n-1)/BlockSize; b++ {
		o, pages := ix.lookup(b)
		if o != mixedOwner {
			add(o, b, pagesPerBlock)
			continue
		}
		for _, po := range pages {
			add(po, b, 1)
		}
	}
	if len(spans) < 2 {
		return 0, 0, 0, false
	}
	// Base is a layer that takes no writes: a page can become the head's
	// during the read, and what the head's file held there before the
	// write is neither the page's old content nor its new.
	most := -1
	for pos, sp := range spans {
		if ix.layers[pos].log == nil && (sp.pages > most || sp.pages == most && pos < base) {
			base, most = pos, sp.pages
		}
	}
	ok = most >= 0
	clip := func(sp *span) (int64, int64) {
		return max(sp.from*BlockSize, off), min(sp.to*BlockSize, off+n)
	}
	for pos, sp := range spans {
		if !ok || pos != base {
			f, t := clip(sp)
			// Advice only: a failure changes no result.
			_ = unix.Fadvise(int(ix.layers[pos].data.Fd()), f, t-f, unix.FADV_WILLNEED)
		}
	}
	if !ok {
		return 0, 0, 0, false
	}
	from, to = clip(spans[base])
	return base, from, to, true
}

// readMixed reads a part of one mixed block page by page, grouping
// neighbouring pages of the same layer; runs that done says were read
// already are left as they are.
func (ix *index) readMixed(pages [pagesPerBlock]uint16, p []byte, off int64, done func(o uint16, at, n int64) bool) error {
	for len(p) > 0 {
		pg := off % BlockSize / PageSize
		o := pages[pg]
		n := min(int64(len(p)), PageSize-off%PageSize)
		for pg+1 < pagesPerBlock && n < int64(len(p)) && pages[pg+1] == o {
			pg++
			n = min(int64(len(p)), n+PageSize)
		}
		if !done(o, off, n) {
			if err := ix.readLayer(o, p[:n], off); err != nil {
				return err
			}
		}
		p, off = p[n:], off+n
	}
	return nil
}

// readPageLocked reads one whole page while its block's stripe is held.
func (ix *index) readPageLocked(p []byte, off int64) error {
	o, pages := ix.lookupLocked(off / BlockSize)
	if o == mixedOwner {
		o = pages[off%BlockSize/PageSize]
	}
	return ix.readLayer(o, p, off)
}

// markWritten records that the head now holds pages mask of block b. The
// caller holds b's stripe for writing.
func (ix *index) markWrittenLocked(head *layer, b int64, mask uint16) {
	ix.apply(b, mask, uint16(len(ix.layers)-1))
	head.mu.Lock()
	if head.pres.add(b, mask) {
		head.record(b, mask)
	}
	head.mu.Unlock()
}

// pagesIn returns the mask of pages of block b inside [off, end), which
// must be page aligned.
func pagesIn(b, off, end int64) uint16 {
	first := max(off, b*BlockSize)
	last := min(end, (b+1)*BlockSize)
	var mask uint16
	for pg := (first - b*BlockSize) / PageSize; pg < (last-b*BlockSize)/PageSize; pg++ {
		mask |= 1 << pg
	}
	return mask
}

// writeAt writes p at off into the head. Whole pages go straight to the
// head's file; a partial page is completed from the current content
// first, under its block's stripe so that concurrent writers to the page
// do not lose each other's bytes.
func (ix *index) writeAt(head *layer, p []byte, off int64) error {
	if err := ix.checkRange(off, int64(len(p))); err != nil {
		return err
	}
	end := off + int64(len(p))
	alStart := (off + PageSize - 1) / PageSize * PageSize
	alEnd := end / PageSize * PageSize
	if alStart >= alEnd {
		// Within one page, or straddling two without a whole one.
		for pgOff := off / PageSize * PageSize; pgOff < end; pgOff += PageSize {
			lo, hi := max(off, pgOff), min(end, pgOff+PageSize)
			if err := ix.writePartialPage(head, p[lo-off:hi-off], lo); err != nil {
				return err
			}
		}
		return nil
	}
	if off < alStart {
		if err := ix.writePartialPage(head, p[:alStart-off], off); err != nil {
			return err
		}
	}
	if alEnd < end {
		if err := ix.writePartialPage(head, p[alEnd-off:], alEnd); err != nil {
			return err
		}
	}
	if _, err := head.data.WriteAt(p[alStart-off:alEnd-off], alStart); err != nil {
		return fmt.Errorf("writing layer %d: %w", head.id, err)
	}
	if ix.afterData != nil {
		ix.afterData()
	}
	ix.markRange(head, alStart, alEnd)
	return nil
}

// markRange records the page-aligned range [off, end) as held by the head.
func (ix *index) markRange(head *layer, off, end int64) {
	headPos := uint16(len(ix.layers) - 1)
	for b := off / BlockSize; b*BlockSize < end; b++ {
		mask := pagesIn(b, off, end)
		st := &ix.stripes[b%nStripes]
		// Already held whole: no bookkeeping, the common case for a
		// volume without recent snapshots. The stripe guards owner[b];
		// the presence bit is read atomically, without head.mu, while
		// writers of other stripes' blocks may be setting bits of its
		// word (see presence). Bits are never cleared in a head, so a
		// bit seen set stays true; one not seen yet sends the write
		// down the locked path, which decides again.
		st.RLock()
		done := ix.owner[b] == headPos && head.pres.isFull(b)
		st.RUnlock()
		if done {
			continue
		}
		st.Lock()
		ix.markWrittenLocked(head, b, mask)
		st.Unlock()
	}
}

func (ix *index) writePartialPage(head *layer, p []byte, off int64) error {
	pgOff := off / PageSize * PageSize
	b := pgOff / BlockSize
	st := &ix.stripes[b%nStripes]
	st.Lock()
	defer st.Unlock()
	page := make([]byte, PageSize)
	n := min(PageSize, ix.size-pgOff)
	if err := ix.readPageLocked(page[:n], pgOff); err != nil {
		return err
	}
	copy(page[off-pgOff:], p)
	if _, err := head.data.WriteAt(page[:n], pgOff); err != nil {
		return fmt.Errorf("writing layer %d: %w", head.id, err)
	}
	ix.markWrittenLocked(head, b, 1<<(pgOff%BlockSize/PageSize))
	return nil
}

// zero makes [off, off+n) read as zeros. Whole pages that read as zeros
// already are left alone; the others become holes in the head (punch) or
// zeroed, allocated ranges (noHole); partial pages are written.
func (ix *index) zero(head *layer, off, n int64, noHole bool) error {
	if err := ix.checkRange(off, n); err != nil {
		return err
	}
	end := off + n
	alStart := (off + PageSize - 1) / PageSize * PageSize
	alEnd := end / PageSize * PageSize
	if alStart >= alEnd {
		return ix.writeAt(head, make([]byte, n), off)
	}
	if off < alStart {
		if err := ix.writeAt(head, make([]byte, alStart-off), off); err != nil {
			return err
		}
	}
	if alEnd < end {
		if err := ix.writeAt(head, make([]byte, end-alEnd), alEnd); err != nil {
			return err
		}
	}
	mode := uint32(unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE)
	if noHole {
		mode = unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE
	}
	fd := int(head.data.Fd())
	for b := alStart / BlockSize; b*BlockSize < alEnd; {
		// A run of blocks that no layer holds reads as zeros already.
		if o, _ := ix.lookup(b); o == noOwner {
			b++
			continue
		}
		runStart := max(alStart, b*BlockSize)
		for b++; b*BlockSize < alEnd; b++ {
			if o, _ := ix.lookup(b); o == noOwner {
				break
			}
		}
		runEnd := min(alEnd, b*BlockSize)
		if err := unix.Fallocate(fd, mode, runStart, runEnd-runStart); err != nil {
			// No hole punching here: write zeros.
			if err := writeZeros(head, runStart, runEnd-runStart); err != nil {
				return err
			}
		}
		ix.markRange(head, runStart, runEnd)
	}
	return nil
}

func writeZeros(l *layer, off, n int64) error {
	zeros := make([]byte, min(n, 1<<20))
	for n > 0 {
		m := min(n, int64(len(zeros)))
		if _, err := l.data.WriteAt(zeros[:m], off); err != nil {
			return fmt.Errorf("zeroing layer %d: %w", l.id, err)
		}
		off, n = off+m, n-m
	}
	return nil
}

// Extent is a run of a volume for block status: Hole (and so Zero) where
// no layer holds data.
type Extent struct {
	Length int64
	Hole   bool
	Zero   bool
}

// blockStatus describes [off, off+n) in at most maxExtents runs.
func (ix *index) blockStatus(off, n int64, maxExtents int) ([]Extent, error) {
	if err := ix.checkRange(off, n); err != nil {
		return nil, err
	}
	var out []Extent
	end := off + n
	for off < end && len(out) < maxExtents {
		b := off / BlockSize
		o, _ := ix.lookup(b)
		hole := o == noOwner
		l := min(end, (b+1)*BlockSize) - off
		if k := len(out); k > 0 && out[k-1].Hole == hole {
			out[k-1].Length += l
		} else {
			out = append(out, Extent{Length: l, Hole: hole, Zero: hole})
		}
		off += l
	}
	return out, nil
}
