package repo

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/extents"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/repo/format"
	"golang.org/x/sync/errgroup"
)

// Target is what a restore writes: an image file or a block device.
type Target interface {
	io.ReaderAt
	io.WriterAt
	// Zero makes a range read as zeros (a hole where possible).
	Zero(off, n int64) error
	// Sync makes written data durable.
	Sync() error
	// Fresh reports that the target reads as zeros everywhere (a new
	// sparse file), so nothing needs comparing or zeroing.
	Fresh() bool
}

// AllocatedTarget is a Target that can tell, without reading, where it may
// hold data (a sparse file, a volume). A delta restore into it reads the
// target only there: the rest reads as zeros, so a zero range there needs
// nothing and data there is written without comparing.
type AllocatedTarget interface {
	Target
	// Allocated returns the extents that may hold data, sorted; every byte
	// outside them reads as zeros. ok is false when the target cannot
	// tell (it is then read everywhere). Restore calls it once, before it
	// writes anything.
	Allocated() (list []cairn.Extent, ok bool, err error)
}

// RestoreStats reports what a restore did.
type RestoreStats struct {
	Bytes         int64         `json:"bytes"`
	BytesWritten  int64         `json:"bytes_written"`
	BytesSkipped  int64         `json:"bytes_skipped"`
	BytesZero     int64         `json:"bytes_zero"`
	ChunksFetched int           `json:"chunks_fetched"`
	BytesFetched  int64         `json:"bytes_fetched"`
	Duration      time.Duration `json:"duration"`
}

// fetchAttempts is how often a chunk that fails verification is read
// before the failure counts as damage in the store.
const fetchAttempts = 3

// placement is one use of a chunk's bytes in the target.
type placement struct {
	offset      int64 // in the target
	length      int64
	chunkOffset int64
}

type chunkJob struct {
	id         format.ChunkID
	placements []placement
	data       []byte // sealed object, once fetched
	buf        *[]byte
}

// Restore writes backup m into t. Every chunk is authenticated and its hash
// checked before any of it is written. Into a target that is not fresh,
// only what differs is written (a delta restore): regions that already
// hold the right bytes are skipped, and counted in BytesSkipped.
func (r *Repository) Restore(ctx context.Context, m *format.Manifest, t Target, p *Progress) (RestoreStats, error) {
	started := r.now()
	var stats RestoreStats
	stats.Bytes = m.Size
	p = orDiscard(p)
	p.add(&p.Total, m.Size)
	tm, err := mapTarget(t)
	if err != nil {
		return stats, err
	}
	var offset int64
	for _, part := range m.Index {
		entries, err := r.indexPart(ctx, m, part)
		if err != nil {
			return stats, err
		}
		if err := r.restorePart(ctx, entries, offset, t, tm, p, &stats); err != nil {
			return stats, err
		}
		offset += part.Length
	}
	if err := t.Sync(); err != nil {
		return stats, fmt.Errorf("syncing target: %w", err)
	}
	stats.Duration = r.now().Sub(started)
	return stats, nil
}

// targetMap is what a restore knows of its target before writing to it:
// where it may hold data.
type targetMap struct {
	// fresh: the target reads as zeros everywhere.
	fresh bool
	// known: alloc lists every range that may hold data, sorted and
	// merged; the rest reads as zeros. Otherwise any byte may.
	known bool
	alloc []cairn.Extent
}

func mapTarget(t Target) (*targetMap, error) {
	if t.Fresh() {
		return &targetMap{fresh: true}, nil
	}
	at, ok := t.(AllocatedTarget)
	if !ok {
		return &targetMap{}, nil
	}
	alloc, known, err := at.Allocated()
	if err != nil {
		return nil, fmt.Errorf("reading the target's allocation map: %w", err)
	}
	if !known {
		return &targetMap{}, nil
	}
	return &targetMap{known: true, alloc: extents.Normalize(slices.Clone(alloc))}, nil
}

// dataIn returns the parts of [off, off+n) that may hold data, in order.
func (m *targetMap) dataIn(off, n int64) []cairn.Extent {
	if !m.known {
		return []cairn.Extent{{Offset: off, Length: n}}
	}
	end := off + n
	// The first extent that ends after off.
	i, _ := slices.BinarySearchFunc(m.alloc, off, func(e cairn.Extent, off int64) int { return cmp.Compare(e.End(), off+1) })
	var out []cairn.Extent
	for ; i < len(m.alloc) && m.alloc[i].Offset < end; i++ {
		lo, hi := max(off, m.alloc[i].Offset), min(end, m.alloc[i].End())
		if hi > lo {
			out = append(out, cairn.Extent{Offset: lo, Length: hi - lo})
		}
	}
	return out
}

func (r *Repository) restorePart(ctx context.Context, entries []format.Entry, base int64, t Target, tm *targetMap, p *Progress, stats *RestoreStats) error {
	fresh := tm.fresh
	byChunk := map[format.ChunkID]*chunkJob{}
	var jobs []*chunkJob
	var zeros []placement
	off := base
	for _, e := range entries {
		if e.Zero {
			zeros = append(zeros, placement{offset: off, length: e.Length})
		} else {
			j := byChunk[e.Chunk]
			if j == nil {
				j = &chunkJob{id: e.Chunk}
				byChunk[e.Chunk] = j
				jobs = append(jobs, j)
			}
			j.placements = append(j.placements, placement{offset: off, length: e.Length, chunkOffset: e.ChunkOffset})
		}
		off += e.Length
	}

	var mu sync.Mutex
	account := func(f func()) { mu.Lock(); f(); mu.Unlock() }

	// Zero ranges: nothing to do in a fresh target; elsewhere zero what is
	// not zero already.
	for _, z := range zeros {
		if fresh {
			account(func() { stats.BytesZero += z.length })
			p.add(&p.Zero, z.length)
			p.add(&p.Done, z.length)
		}
	}
	// Elsewhere, only where the target may hold data: each such part is
	// read, and zeroed unless it reads as zeros.
	if !fresh {
		err := forEachParallel(ctx, len(zeros), r.opts.Workers, func(ctx context.Context, i int) error {
			z := zeros[i]
			skipped := z.length
			for _, d := range tm.dataIn(z.offset, z.length) {
				buf := make([]byte, d.Length)
				same, err := readEqual(t, buf, d.Offset, func(b []byte) bool { return isZero(b) })
				if err != nil {
					return err
				}
				p.add(&p.Read, d.Length)
				if same {
					continue
				}
				if err := t.Zero(d.Offset, d.Length); err != nil {
					return fmt.Errorf("zeroing target at %d: %w", d.Offset, err)
				}
				skipped -= d.Length
				account(func() { stats.BytesZero += d.Length })
				p.add(&p.Zero, d.Length)
			}
			account(func() { stats.BytesSkipped += skipped })
			p.add(&p.Skipped, skipped)
			p.add(&p.Done, z.length)
			return nil
		})
		if err != nil {
			return err
		}
	}

	// Chunks in the order of their first use, so writes run mostly forward.
	slices.SortFunc(jobs, func(a, b *chunkJob) int { return cmp.Compare(a.placements[0].offset, b.placements[0].offset) })

	parent := ctx
	g, ctx := errgroup.WithContext(ctx)

	workers, transfers := r.opts.Workers, r.opts.Transfers
	check := make(chan *chunkJob, workers)
	fetch := make(chan *chunkJob, transfers)
	decode := make(chan *chunkJob, workers)
	bufPool := sync.Pool{New: func() any { b := make([]byte, 0, r.cfg.ChunkSize+format.Overhead+1024); return &b }}
	plainPool := sync.Pool{New: func() any { b := make([]byte, 0, r.cfg.ChunkSize); return &b }}

	g.Go(func() error {
		defer close(check)
		for _, j := range jobs {
			select {
			case check <- j:
			case <-ctx.Done():
				return nil
			}
		}
		return nil
	})
	// holds reports whether the target holds j's bytes at pl already. Only
	// a placement from the chunk's start is compared with the chunk's name,
	// and only where the target may hold data: a chunk never reads as
	// zeros (zero regions are zero entries).
	holds := func(j *chunkJob, pl placement, hasher interface{ Sum([]byte) [32]byte }) (bool, error) {
		if pl.chunkOffset != 0 {
			return false, nil
		}
		data := tm.dataIn(pl.offset, pl.length)
		if len(data) == 0 {
			return false, nil
		}
		same, read, err := readMatches(t, pl.offset, pl.length, data, func(b []byte) bool { return format.ChunkID(hasher.Sum(b)) == j.id })
		p.add(&p.Read, read)
		return same, err
	}
	// Stage 1 (delta restores only): drop placements the target already has.
	goStage(g, workers, atNice(r.opts.Nice, func() error {
		hasher := r.mk.NewHasher()
		for j := range check {
			if ctx.Err() != nil {
				continue
			}
			if !fresh {
				kept := j.placements[:0]
				for _, pl := range j.placements {
					same, err := holds(j, pl, hasher)
					if err != nil {
						return err
					}
					if same {
						account(func() { stats.BytesSkipped += pl.length })
						p.add(&p.Skipped, pl.length)
						p.add(&p.Done, pl.length)
						continue
					}
					kept = append(kept, pl)
				}
				j.placements = kept
				if len(kept) == 0 {
					continue
				}
			}
			select {
			case fetch <- j:
			case <-ctx.Done():
			}
		}
		return nil
	}), func() { close(fetch) })
	// Stage 2: fetch from the store.
	goStage(g, transfers, func() error {
		for j := range fetch {
			if ctx.Err() != nil {
				continue
			}
			j.buf = bufPool.Get().(*[]byte)
			data, err := objstore.ReadInto(ctx, r.be, j.id.ObjectName(), *j.buf)
			if err != nil {
				bufPool.Put(j.buf)
				if errors.Is(err, cairn.ErrNotFound) {
					err = fmt.Errorf("chunk %s is missing from the repository: %w", j.id, cairn.ErrCorrupt)
				}
				return fmt.Errorf("fetching chunk: %w", err)
			}
			*j.buf = data
			j.data = data
			p.add(&p.Fetched, int64(len(data)))
			select {
			case decode <- j:
			case <-ctx.Done():
				bufPool.Put(j.buf)
			}
		}
		return nil
	}, func() { close(decode) })
	// Stage 3: authenticate, decompress, verify. Stage 4: write; apart, so
	// a core never waits on the target.
	type plainChunk struct {
		j     *chunkJob
		plain []byte
		buf   *[]byte
	}
	write := make(chan plainChunk, max(2, transfers))
	goStage(g, workers, atNice(r.opts.Nice, func() error {
		hasher := r.mk.NewHasher()
		for j := range decode {
			if ctx.Err() != nil {
				bufPool.Put(j.buf)
				continue
			}
			pbuf := plainPool.Get().(*[]byte)
			plain, err := r.openChunk(j, hasher, (*pbuf)[:0])
			// Damage on the way from the store goes away when read
			// again; damage at rest does not.
			for attempt := 1; err != nil && errors.Is(err, cairn.ErrCorrupt) && attempt < fetchAttempts && ctx.Err() == nil; attempt++ {
				data, ferr := objstore.ReadInto(ctx, r.be, j.id.ObjectName(), *j.buf)
				if ferr != nil {
					err = ferr
					break
				}
				*j.buf, j.data = data, data
				plain, err = r.openChunk(j, hasher, (*pbuf)[:0])
			}
			if err != nil {
				plainPool.Put(pbuf)
				bufPool.Put(j.buf)
				return err
			}
			*pbuf = plain
			select {
			case write <- plainChunk{j, plain, pbuf}:
			case <-ctx.Done():
				plainPool.Put(pbuf)
			}
			bufPool.Put(j.buf)
		}
		return nil
	}), func() { close(write) })
	// Writers: as many as transfers, so the target sees a queue, not a
	// trickle.
	goStage(g, max(2, transfers), func() error {
		for c := range write {
			var err error
			if ctx.Err() == nil {
				err = writePlacements(c.j, c.plain, t, p, stats, account)
			}
			plainPool.Put(c.buf)
			if err != nil {
				return err
			}
		}
		return nil
	}, nil)
	if err := g.Wait(); err != nil {
		return err
	}
	return parent.Err()
}

// openChunk authenticates, decompresses and verifies a fetched chunk.
func (r *Repository) openChunk(j *chunkJob, hasher interface{ Sum([]byte) [32]byte }, dst []byte) ([]byte, error) {
	plain, err := r.sealer.Open(dst, format.TypeChunk, j.id.ObjectName(), j.data, r.chunkLimit())
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", j.id, err)
	}
	if format.ChunkID(hasher.Sum(plain)) != j.id {
		return nil, fmt.Errorf("chunk %s: content does not match its name: %w", j.id, cairn.ErrCorrupt)
	}
	for _, pl := range j.placements {
		if pl.chunkOffset+pl.length > int64(len(plain)) {
			return nil, fmt.Errorf("chunk %s has %d bytes, the index uses [%d,%d): %w", j.id, len(plain), pl.chunkOffset, pl.chunkOffset+pl.length, cairn.ErrCorrupt)
		}
	}
	return plain, nil
}

// writePlacements writes a verified chunk wherever the index uses it.
func writePlacements(j *chunkJob, plain []byte, t Target, p *Progress, stats *RestoreStats, account func(func())) error {
	for _, pl := range j.placements {
		if _, err := t.WriteAt(plain[pl.chunkOffset:pl.chunkOffset+pl.length], pl.offset); err != nil {
			return fmt.Errorf("writing target at %d: %w", pl.offset, err)
		}
		account(func() { stats.BytesWritten += pl.length })
		p.add(&p.Done, pl.length)
	}
	account(func() {
		stats.ChunksFetched++
		stats.BytesFetched += int64(len(j.data))
	})
	return nil
}

// readMatches reads the n bytes of t at off, of which only the parts in
// data may hold anything but zeros (only those are read), and applies same
// to them. It returns the number of bytes read.
func readMatches(t Target, off, n int64, data []cairn.Extent, same func([]byte) bool) (bool, int64, error) {
	buf := make([]byte, n)
	var read int64
	for _, d := range data {
		ok, err := readEqual(t, buf[d.Offset-off:d.End()-off], d.Offset, func([]byte) bool { return true })
		if err != nil || !ok {
			return false, read, err
		}
		read += d.Length
	}
	return same(buf), read, nil
}

// readEqual reads len(buf) bytes of t at off and applies same to them. A
// target shorter than needed reads as not the same; any other read error
// ends the restore (a target that cannot be read is not written blindly).
func readEqual(t Target, buf []byte, off int64, same func([]byte) bool) (bool, error) {
	n, err := t.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("reading target at %d: %w", off, err)
	}
	if n < len(buf) {
		return false, nil
	}
	return same(buf), nil
}
