package volume

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/bits"
	"slices"
	"sync/atomic"

	"github.com/cairnproject/cairn"
)

// Geometry. A block is the unit of the owner index; a page, the unit of
// partial presence within a block.
const (
	BlockSize     = 64 << 10
	PageSize      = 4 << 10
	pagesPerBlock = BlockSize / PageSize
	fullMask      = 1<<pagesPerBlock - 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// presence records which pages of a volume one layer holds: whole blocks
// in a bitset, and page masks for blocks held in part. It is what a layer
// contributes to the volume's content, and so also its changed-block
// tracking: a change nobody recorded cannot be read either.
//
// Concurrency: changes (grow, add, union) and everything reading partial
// need the owner's exclusion (head.mu for a head). isFull alone may run at
// the same time as changes: a head's write fast path calls it holding only
// the block's stripe, while a writer of a neighbouring block, in another
// stripe but the same bitset word, sets its bit under head.mu. So the
// bitset's words are read and set atomically, and the bitset itself, with
// the block count, is published whole through an atomic pointer: a reader
// sees the old bitset or the new one, never a torn one.
type presence struct {
	full    atomic.Pointer[blockBits]
	partial map[int64]uint16 // block -> pages held, never 0 or fullMask
}

// blockBits is a bitset of whole blocks: bit b of word b/64 for block b.
// nblocks and the length of words never change once published; growing
// makes a new blockBits.
type blockBits struct {
	nblocks int64
	words   []atomic.Uint64
}

func newPresence(nblocks int64) *presence {
	p := &presence{partial: map[int64]uint16{}}
	p.full.Store(&blockBits{nblocks: nblocks, words: make([]atomic.Uint64, (nblocks+63)/64)})
	return p
}

// nblocks returns the number of blocks the presence covers.
func (p *presence) nblocks() int64 { return p.full.Load().nblocks }

// grow makes the presence cover nblocks blocks. Bits are copied into a
// new bitset when the words run out; changes being excluded meanwhile,
// none is lost, and readers go on with the old bitset until the new one
// is published.
func (p *presence) grow(nblocks int64) {
	old := p.full.Load()
	if nblocks <= old.nblocks {
		return
	}
	words := old.words
	if need := (nblocks + 63) / 64; int64(len(words)) < need {
		words = make([]atomic.Uint64, need)
		for i := range old.words {
			words[i].Store(old.words[i].Load())
		}
	}
	p.full.Store(&blockBits{nblocks: nblocks, words: words})
}

// isFull reports whether block b is held whole. It may run concurrently
// with changes (see presence); a block being added may not be seen yet,
// one seen held stays held.
func (p *presence) isFull(b int64) bool {
	f := p.full.Load()
	return b < f.nblocks && f.words[b/64].Load()&(1<<(b%64)) != 0
}

// setFull records block b, below nblocks, as held whole.
func (p *presence) setFull(b int64) {
	p.full.Load().words[b/64].Or(1 << (b % 64))
}

// pages returns the pages of block b the layer holds.
func (p *presence) pages(b int64) uint16 {
	if p.isFull(b) {
		return fullMask
	}
	return p.partial[b]
}

// add records pages of block b as held and reports whether that changed
// anything.
func (p *presence) add(b int64, mask uint16) bool {
	if b >= p.nblocks() {
		p.grow(b + 1)
	}
	old := p.pages(b)
	now := old | mask
	if now == old {
		return false
	}
	if now == fullMask {
		delete(p.partial, b)
		p.setFull(b)
	} else {
		p.partial[b] = now
	}
	return true
}

// union adds every page q holds.
func (p *presence) union(q *presence) {
	qf := q.full.Load()
	p.grow(qf.nblocks)
	pf := p.full.Load()
	for i := range qf.words {
		if w := qf.words[i].Load(); w != 0 {
			pf.words[i].Or(w)
		}
	}
	for b, m := range q.partial {
		p.add(b, m)
	}
	// A partial entry may have become full through q's bitset.
	for b := range p.partial {
		if p.isFull(b) {
			delete(p.partial, b)
		}
	}
}

// each calls fn for every block with pages held, in block order.
func (p *presence) each(fn func(b int64, mask uint16)) {
	partials := make([]int64, 0, len(p.partial))
	for b := range p.partial {
		partials = append(partials, b)
	}
	slices.Sort(partials)
	pi := 0
	f := p.full.Load()
	for i := range f.words {
		for w := f.words[i].Load(); w != 0; {
			bit := int64(bits.TrailingZeros64(w))
			b := int64(i)*64 + bit
			for pi < len(partials) && partials[pi] < b {
				fn(partials[pi], p.partial[partials[pi]])
				pi++
			}
			fn(b, fullMask)
			w &= w - 1
		}
	}
	for ; pi < len(partials); pi++ {
		fn(partials[pi], p.partial[partials[pi]])
	}
}

// extents returns the byte ranges the layer holds, merged, within size.
func (p *presence) extents(size int64) []cairn.Extent {
	var out []cairn.Extent
	add := func(off, n int64) {
		if off >= size {
			return
		}
		n = min(n, size-off)
		if k := len(out); k > 0 && out[k-1].End() == off {
			out[k-1].Length += n
			return
		}
		out = append(out, cairn.Extent{Offset: off, Length: n})
	}
	p.each(func(b int64, mask uint16) {
		base := b * BlockSize
		if mask == fullMask {
			add(base, BlockSize)
			return
		}
		for pg := int64(0); pg < pagesPerBlock; pg++ {
			if mask&(1<<pg) != 0 {
				add(base+pg*PageSize, PageSize)
			}
		}
	})
	return out
}

// Checkpoint encoding:
//
//	"CVP1", uvarint nblocks
//	uvarint runs, runs x (uvarint gap from the previous run's end, uvarint length) of whole blocks
//	uvarint partials, partials x (uvarint gap from the previous block + 1, uint16 mask)
//	uint32 CRC-32C of everything before
var presenceMagic = [4]byte{'C', 'V', 'P', '1'}

func (p *presence) encode() []byte {
	out := append([]byte(nil), presenceMagic[:]...)
	out = binary.AppendUvarint(out, uint64(p.nblocks()))
	type run struct{ start, n int64 }
	var runs []run
	var partials []int64
	p.each(func(b int64, mask uint16) {
		if mask != fullMask {
			partials = append(partials, b)
			return
		}
		if k := len(runs); k > 0 && runs[k-1].start+runs[k-1].n == b {
			runs[k-1].n++
			return
		}
		runs = append(runs, run{b, 1})
	})
	out = binary.AppendUvarint(out, uint64(len(runs)))
	var prev int64
	for _, r := range runs {
		out = binary.AppendUvarint(out, uint64(r.start-prev))
		out = binary.AppendUvarint(out, uint64(r.n))
		prev = r.start + r.n
	}
	out = binary.AppendUvarint(out, uint64(len(partials)))
	prev = -1
	for _, b := range partials {
		out = binary.AppendUvarint(out, uint64(b-prev-1))
		out = binary.LittleEndian.AppendUint16(out, p.partial[b])
		prev = b
	}
	return binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, castagnoli))
}

// maxBlocks bounds a decoded presence (1 PiB of 64 KiB blocks).
const maxBlocks = 1 << 34

func decodePresence(data []byte) (*presence, error) {
	bad := func(what string) (*presence, error) {
		return nil, fmt.Errorf("presence: %s: %w", what, cairn.ErrCorrupt)
	}
	if len(data) < len(presenceMagic)+4 || [4]byte(data[:4]) != presenceMagic {
		return bad("bad magic")
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[len(data)-4:]) {
		return bad("checksum mismatch")
	}
	r := body[4:]
	// Every value has one encoding: minimal varints, runs that do not
	// touch, so that decoding and encoding agree byte for byte.
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(r)
		if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
			return 0, false
		}
		r = r[n:]
		return v, true
	}
	nb, ok := next()
	if !ok || nb > maxBlocks {
		return bad("bad block count")
	}
	p := newPresence(int64(nb))
	nruns, ok := next()
	if !ok || nruns > nb {
		return bad("bad run count")
	}
	var pos uint64
	for i := range nruns {
		gap, ok1 := next()
		n, ok2 := next()
		if !ok1 || !ok2 || n == 0 || gap > nb || n > nb || pos+gap+n > nb || i > 0 && gap == 0 {
			return bad("bad run")
		}
		pos += gap
		for b := pos; b < pos+n; b++ {
			p.setFull(int64(b))
		}
		pos += n
	}
	nparts, ok := next()
	if !ok || nparts > nb {
		return bad("bad partial count")
	}
	prev := int64(-1)
	for range nparts {
		gap, ok := next()
		if !ok || gap >= nb || len(r) < 2 {
			return bad("bad partial block")
		}
		b := prev + 1 + int64(gap)
		if b >= int64(nb) {
			return bad("partial block out of range")
		}
		mask := binary.LittleEndian.Uint16(r)
		r = r[2:]
		if mask == 0 || mask == fullMask || p.isFull(b) {
			return bad("bad partial mask")
		}
		p.partial[b] = mask
		prev = b
	}
	if len(r) != 0 {
		return bad("trailing bytes")
	}
	return p, nil
}

// A log record says: block b now holds at least these pages. Records are
// appended at flush time, after the data they describe is durable, and
// replayed over the last checkpoint on open; a torn tail is ignored.
const logRecordSize = 16

func encodeLogRecord(dst []byte, b int64, mask uint16) []byte {
	start := len(dst)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(b))
	dst = binary.LittleEndian.AppendUint16(dst, mask)
	dst = append(dst, 0, 0)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// replayLog applies the records in data to p. It returns the number of
// bytes of whole, valid records; the rest is a torn tail. A record for a
// block past p's size (written after an extension the state did not get
// to record before a crash) names nothing the layer shows: it is skipped,
// and p never grows, so a damaged log cannot allocate for blocks that do
// not exist.
func replayLog(p *presence, data []byte) int {
	n := 0
	for len(data)-n >= logRecordSize {
		rec := data[n : n+logRecordSize]
		if crc32.Checksum(rec[:12], castagnoli) != binary.LittleEndian.Uint32(rec[12:]) {
			break
		}
		b := int64(binary.LittleEndian.Uint64(rec))
		mask := binary.LittleEndian.Uint16(rec[8:])
		if b < 0 || b >= maxBlocks || mask == 0 {
			break
		}
		if b < p.nblocks() {
			p.add(b, mask)
		}
		n += logRecordSize
	}
	return n
}
