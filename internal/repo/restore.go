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
	var offset int64
	for _, part := range m.Index {
		entries, err := r.indexPart(ctx, m, part)
		if err != nil {
			return stats, err
		}
		if err := r.restorePart(ctx, entries, offset, t, p, &stats); err != nil {
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

func (r *Repository) restorePart(ctx context.Context, entries []format.Entry, base int64, t Target, p *Progress, stats *RestoreStats) error {
	fresh := t.Fresh()
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
	if !fresh {
		err := forEachParallel(ctx, len(zeros), r.opts.Workers, func(ctx context.Context, i int) error {
			z := zeros[i]
			buf := make([]byte, z.length)
			same, err := readEqual(t, buf, z.offset, func(b []byte) bool { return isZero(b) })
			if err != nil {
				return err
			}
			p.add(&p.Read, z.length)
			if same {
				account(func() { stats.BytesSkipped += z.length })
				p.add(&p.Skipped, z.length)
			} else {
				if err := t.Zero(z.offset, z.length); err != nil {
					return fmt.Errorf("zeroing target at %d: %w", z.offset, err)
				}
				account(func() { stats.BytesZero += z.length })
				p.add(&p.Zero, z.length)
			}
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
	// Stage 1 (delta restores only): drop placements the target already has.
	goStage(g, workers, func() error {
		hasher := r.mk.NewHasher()
		for j := range check {
			if ctx.Err() != nil {
				continue
			}
			if !fresh {
				kept := j.placements[:0]
				for _, pl := range j.placements {
					if pl.chunkOffset == 0 {
						buf := make([]byte, pl.length)
						same, err := readEqual(t, buf, pl.offset, func(b []byte) bool { return format.ChunkID(hasher.Sum(b)) == j.id })
						if err != nil {
							return err
						}
						p.add(&p.Read, pl.length)
						if same {
							account(func() { stats.BytesSkipped += pl.length })
							p.add(&p.Skipped, pl.length)
							p.add(&p.Done, pl.length)
							continue
						}
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
	}, func() { close(fetch) })
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
	goStage(g, workers, func() error {
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
	}, func() { close(write) })
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
	plain, err := r.sealer.Open(dst, format.TypeChunk, j.id.ObjectName(), j.data, int(r.cfg.ChunkSize))
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

// readEqual reads len(buf) bytes of t at off and applies same to them. A
// target shorter than needed reads as not the same.
func readEqual(t Target, buf []byte, off int64, same func([]byte) bool) (bool, error) {
	n, err := t.ReadAt(buf, off)
	if errors.Is(err, io.EOF) || n < len(buf) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading target at %d: %w", off, err)
	}
	return same(buf), nil
}
