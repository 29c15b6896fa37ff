package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/repo/format"
	"golang.org/x/sync/errgroup"
)

// Delta backups.
//
// When a source can say exactly which bytes changed (a volume engine
// tracks 4 KiB pages), a region with a few changed pages need not be read
// whole: its index entries are the parent's, with the changed ranges cut
// out and pointed at "delta chunks", ordinary chunks into which the
// changed bytes of many regions are packed. Only the changed bytes are
// read and stored. A restore fetches each chunk once per index part
// whatever number of regions use it, so it stays one pass over the
// chunks; the limits below keep the number of chunks a region needs, and
// the share of a kept chunk that is dead weight, small: past them the
// region is read whole and stored as one chunk again (it "folds").
const (
	// deltaMaxShare: a region with more than this share changed is read whole.
	deltaMaxShare = 4
	// deltaMaxChunks: a region may use at most this many distinct chunks.
	deltaMaxChunks = 8
	// deltaMaxEntries: a region may have at most this many index entries.
	deltaMaxEntries = 64
)

// parentRegions holds a parent's index split at region boundaries: the
// entries of region i are entries[start[i]:start[i+1]].
type parentRegions struct {
	entries []format.Entry
	start   []int32
}

// splitRegions splits entries at every multiple of chunkSize. It returns
// false when the entries are not a well-formed cover of size bytes.
func splitRegions(entries []format.Entry, chunkSize, size int64) (*parentRegions, bool) {
	n := int((size + chunkSize - 1) / chunkSize)
	pr := &parentRegions{entries: make([]format.Entry, 0, len(entries)), start: make([]int32, 0, n+1)}
	var off int64
	for _, e := range entries {
		for e.Length > 0 {
			if off%chunkSize == 0 {
				pr.start = append(pr.start, int32(len(pr.entries)))
			}
			take := min(e.Length, chunkSize-off%chunkSize)
			part := e
			part.Length = take
			pr.entries = append(pr.entries, part)
			e.Length -= take
			if !e.Zero {
				e.ChunkOffset += take
			}
			off += take
		}
	}
	if off != size || len(pr.start) != n {
		return nil, false
	}
	pr.start = append(pr.start, int32(len(pr.entries)))
	return pr, true
}

// region returns the entries of region i, or nil past the end.
func (pr *parentRegions) region(i int) []format.Entry {
	if pr == nil || i+1 >= len(pr.start) {
		return nil
	}
	return pr.entries[pr.start[i]:pr.start[i+1]]
}

// regionLength is the number of bytes region i covers.
func (pr *parentRegions) regionLength(i int) int64 {
	var n int64
	for _, e := range pr.region(i) {
		n += e.Length
	}
	return n
}

// deltaPiece is a changed range of a region, to be read and packed.
type deltaPiece struct {
	region int
	offset int64 // in the source
	length int64
	entry  *format.Entry // filled in when its chunk is known
}

// deltaPlan is one region's new entries: the parent's, cut around the
// changed ranges, which become pieces.
type deltaPlan struct {
	region  int
	entries []format.Entry // Length set for every entry; pieces filled later
	pieces  []deltaPiece   // pieces[k].entry points into entries
}

// planDelta cuts changed (absolute, sorted, within the region) out of the
// parent's entries of a region starting at base. It returns false when
// the result would break the limits.
func planDelta(region int, base int64, parent []format.Entry, changed []cairn.Extent) (*deltaPlan, bool) {
	type slot struct {
		e     format.Entry
		piece bool
	}
	var slots []slot
	add := func(s slot) {
		if k := len(slots) - 1; k >= 0 {
			p := &slots[k]
			switch {
			case s.piece && p.piece:
				p.e.Length += s.e.Length
				return
			case !s.piece && !p.piece && s.e.Zero && p.e.Zero:
				p.e.Length += s.e.Length
				return
			case !s.piece && !p.piece && !s.e.Zero && !p.e.Zero && s.e.Chunk == p.e.Chunk && p.e.ChunkOffset+p.e.Length == s.e.ChunkOffset:
				p.e.Length += s.e.Length
				return
			}
		}
		slots = append(slots, s)
	}
	off := base
	c := 0
	for _, e := range parent {
		end := off + e.Length
		for off < end {
			for c < len(changed) && changed[c].End() <= off {
				c++
			}
			if c < len(changed) && changed[c].Offset <= off {
				n := min(end, changed[c].End()) - off
				add(slot{e: format.Entry{Length: n}, piece: true})
				off += n
				continue
			}
			next := end
			if c < len(changed) {
				next = min(next, changed[c].Offset)
			}
			part := e
			part.Length = next - off
			if !part.Zero {
				part.ChunkOffset += off - (end - e.Length)
			}
			add(slot{e: part})
			off = next
		}
	}
	if len(slots) > deltaMaxEntries {
		return nil, false
	}
	chunks := map[format.ChunkID]bool{}
	for _, s := range slots {
		if !s.piece && !s.e.Zero {
			chunks[s.e.Chunk] = true
		}
	}
	pieces := 0
	for _, s := range slots {
		if s.piece {
			pieces++
		}
	}
	// Each piece will sit in a delta chunk, usually one per backup.
	if len(chunks)+min(pieces, 1) > deltaMaxChunks {
		return nil, false
	}
	plan := &deltaPlan{region: region, entries: make([]format.Entry, len(slots))}
	pos := base
	for i, s := range slots {
		plan.entries[i] = s.e
		if s.piece {
			plan.pieces = append(plan.pieces, deltaPiece{region: region, offset: pos, length: s.e.Length, entry: &plan.entries[i]})
		}
		pos += s.e.Length
	}
	return plan, true
}

// runDelta reads the pieces of plans, packs them into chunks of at most
// chunkSize bytes and stores those, then records each region's entries.
// Pieces that read as zeros become zero entries.
func (b *backupRun) runDelta(plans []*deltaPlan) error {
	if len(plans) == 0 {
		return nil
	}
	g, ctx := errgroup.WithContext(b.ctx)
	uploads := make(chan deltaChunk, 1)
	goStage(g, min(b.r.opts.Transfers, 4), func() error {
		hasher := b.r.mk.NewHasher()
		for pk := range uploads {
			if ctx.Err() != nil {
				continue
			}
			if err := b.storeDelta(ctx, pk.data, pk.pieces, hasher); err != nil {
				return err
			}
		}
		return nil
	}, nil)
	g.Go(func() error {
		defer close(uploads)
		return b.readDelta(ctx, plans, uploads)
	})
	if err := g.Wait(); err != nil {
		return err
	}
	return b.ctx.Err()
}

// deltaChunk is pieces of changed bytes packed into one chunk's data.
type deltaChunk struct {
	data   []byte
	pieces []*deltaPiece
}

// readDelta reads the pieces of plans, packs them into chunks and sends
// those to uploads, and records each region's entries; it stops early,
// without an error, when ctx ends.
func (b *backupRun) readDelta(ctx context.Context, plans []*deltaPlan, uploads chan<- deltaChunk) error {
	buf := make([]byte, 0, b.chunkSize)
	var pending []*deltaPiece
	flush := func() {
		if len(pending) == 0 {
			return
		}
		select {
		case uploads <- deltaChunk{buf, pending}:
		case <-ctx.Done():
		}
		buf, pending = make([]byte, 0, b.chunkSize), nil
	}
	p := b.p
	for _, plan := range plans {
		var changed int64
		for k := range plan.pieces {
			pc := &plan.pieces[k]
			if ctx.Err() != nil {
				return nil
			}
			if int64(len(buf))+pc.length > b.chunkSize {
				flush()
			}
			at := len(buf)
			buf = buf[:at+int(pc.length)]
			n, err := b.src.ReadAt(buf[at:], pc.offset)
			if err != nil && !(errors.Is(err, io.EOF) && int64(n) == pc.length) {
				return fmt.Errorf("reading source at %d: %w", pc.offset, err)
			}
			p.add(&p.Read, pc.length)
			changed += pc.length
			if isZero(buf[at:]) {
				buf = buf[:at]
				*pc.entry = format.Entry{Length: pc.length, Zero: true}
				b.mu.Lock()
				b.stats.BytesZero += pc.length
				b.mu.Unlock()
				p.add(&p.Zero, pc.length)
				p.add(&p.Done, pc.length)
				continue
			}
			pc.entry.ChunkOffset = int64(at)
			pending = append(pending, pc)
		}
		unchanged := b.regionLength(plan.region) - changed
		b.mu.Lock()
		b.stats.BytesRead += changed
		b.stats.BytesUnchanged += unchanged
		b.frag[plan.region] = plan.entries
		b.mu.Unlock()
		p.add(&p.Unchanged, unchanged)
		p.add(&p.Done, unchanged)
	}
	flush()
	return nil
}

// storeDelta names, seals and stores one packed chunk and points its
// pieces' entries at it.
func (b *backupRun) storeDelta(ctx context.Context, data []byte, pieces []*deltaPiece, hasher interface {
	Sum([]byte) [32]byte
}) error {
	id := format.ChunkID(hasher.Sum(data))
	b.mu.Lock()
	for _, pc := range pieces {
		pc.entry.Chunk = id
	}
	b.mu.Unlock()
	length := int64(len(data))
	if !b.sess.first(id) {
		b.dedup(length, false)
		return nil
	}
	upload, err := b.sess.claim(ctx, id, b.known.contains(id))
	if err != nil {
		return err
	}
	if !upload {
		b.dedup(length, false)
		return nil
	}
	sealed, err := b.r.sealer.Seal(nil, format.TypeChunk, id.ObjectName(), data, b.level)
	if err != nil {
		return err
	}
	return b.upload(ctx, sealedChunk{id: id, data: sealed, length: length})
}

// claimEntries claims every chunk entries use, reporting false when one
// of them must be uploaded again (it may have been collected).
func (b *backupRun) claimEntries(ctx context.Context, entries []format.Entry) (bool, error) {
	var seen []format.ChunkID
	for _, e := range entries {
		if e.Zero || slices.Contains(seen, e.Chunk) {
			continue
		}
		seen = append(seen, e.Chunk)
		upload, err := b.sess.claim(ctx, e.Chunk, true)
		if err != nil {
			return false, err
		}
		if upload {
			return false, nil
		}
	}
	return true, nil
}

// regionLength is the length of region i of this backup's source.
func (b *backupRun) regionLength(i int) int64 {
	return min(b.chunkSize, b.size-int64(i)*b.chunkSize)
}

// flatEntries returns the backup's index: each region's entry, or its
// fragments.
func (b *backupRun) flatEntries() []format.Entry {
	if len(b.frag) == 0 {
		return b.entries
	}
	out := make([]format.Entry, 0, len(b.entries)+4*len(b.frag))
	for i, e := range b.entries {
		if f, ok := b.frag[i]; ok {
			out = append(out, f...)
			continue
		}
		out = append(out, e)
	}
	return out
}
