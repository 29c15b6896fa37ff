package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/zeebo/blake3"
	"golang.org/x/sync/errgroup"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/repo/format"
)

// streamPiece is one index entry of a stream on its way from the store to
// the writer.
type streamPiece struct {
	seq    int
	entry  format.Entry
	sealed *[]byte // the fetched object
	plain  *[]byte // its verified content; nil for a zero entry
}

// RestoreStream writes stream backup m to w, in order: what BackupStream
// read, byte for byte (into pg_restore's stdin, say, or mbstream -x).
// Chunks are fetched and verified ahead of the writer by Transfers and
// Workers goroutines, at most 2×Transfers+Workers entries ahead of it, so
// memory stays bounded whatever the stream's length. Every chunk is
// authenticated and its hash checked before any of it is written, and the
// hash of everything written is compared with the stream's at the end: a
// mismatch, or a missing or damaged chunk, is cairn.ErrCorrupt. Bytes
// written before a failure stay written: a consumer must treat an error
// as a broken stream.
func (r *Repository) RestoreStream(ctx context.Context, m *format.Manifest, w io.Writer, p *Progress) (RestoreStats, error) {
	started := r.now()
	stats := RestoreStats{Bytes: m.Size}
	if !m.IsStream() || m.Stream == nil {
		return stats, fmt.Errorf("backup %s is a volume backup: restore it to a file or device: %w", m.ID.Short(), cairn.ErrInvalid)
	}
	p = orDiscard(p)
	p.add(&p.Total, m.Size)

	g, gctx := errgroup.WithContext(ctx)
	workers, transfers := r.opts.Workers, r.opts.Transfers
	window := 2*transfers + workers
	limit := r.chunkLimit()
	sealedPool := sync.Pool{New: func() any { b := make([]byte, 0, limit+format.Overhead+1024); return &b }}
	plainPool := sync.Pool{New: func() any { b := make([]byte, 0, limit); return &b }}

	// A slot is taken for each entry before it leaves the index and given
	// back once it is written. The writer needs the lowest entry in flight
	// next, and the entries enter in order, so it is always among those
	// holding a slot: the window cannot fill with entries that wait for it.
	slots := make(chan struct{}, window)
	fetch := make(chan *streamPiece, transfers)
	decode := make(chan *streamPiece, workers)
	// ready never blocks a sender: it holds at most window pieces. It has
	// two senders, the index reader (zero pieces) and the decode stage,
	// and is closed once both are done: a decode stage ended early by a
	// failed fetch must not close it under the reader still sending.
	ready := make(chan *streamPiece, window)
	var readySenders atomic.Int32
	readySenders.Store(2)
	readyDone := func() {
		if readySenders.Add(-1) == 0 {
			close(ready)
		}
	}

	g.Go(func() error {
		defer readyDone()
		defer close(fetch)
		seq := 0
		for _, part := range m.Index {
			entries, err := r.indexPart(gctx, m, part)
			if err != nil {
				return err
			}
			for _, e := range entries {
				select {
				case slots <- struct{}{}:
				case <-gctx.Done():
					return nil
				}
				piece := &streamPiece{seq: seq, entry: e}
				seq++
				to := fetch
				if e.Zero {
					to = ready
				}
				select {
				case to <- piece:
				case <-gctx.Done():
					return nil
				}
			}
		}
		return nil
	})
	goStage(g, transfers, func() error {
		for piece := range fetch {
			if gctx.Err() != nil {
				continue
			}
			piece.sealed = sealedPool.Get().(*[]byte)
			data, err := r.fetchChunk(gctx, piece.entry.Chunk, *piece.sealed)
			if err != nil {
				sealedPool.Put(piece.sealed)
				return err
			}
			*piece.sealed = data
			p.add(&p.Fetched, int64(len(data)))
			select {
			case decode <- piece:
			case <-gctx.Done():
				sealedPool.Put(piece.sealed)
			}
		}
		return nil
	}, func() { close(decode) })
	var mu sync.Mutex
	goStage(g, workers, atNice(r.opts.Nice, func() error {
		hasher := r.mk.NewHasher()
		for piece := range decode {
			if gctx.Err() != nil {
				sealedPool.Put(piece.sealed)
				continue
			}
			piece.plain = plainPool.Get().(*[]byte)
			plain, err := r.openStreamChunk(gctx, piece, hasher, (*piece.plain)[:0])
			fetched := len(*piece.sealed)
			sealedPool.Put(piece.sealed)
			if err != nil {
				plainPool.Put(piece.plain)
				return err
			}
			*piece.plain = plain
			mu.Lock()
			stats.ChunksFetched++
			stats.BytesFetched += int64(fetched)
			mu.Unlock()
			select {
			case ready <- piece:
			case <-gctx.Done():
				plainPool.Put(piece.plain)
			}
		}
		return nil
	}), readyDone)
	// The writer puts the pieces back in order, writes them and hashes
	// what it wrote.
	whole := blake3.New()
	var written, zeros int64
	g.Go(func() error {
		var zero []byte
		pending := map[int]*streamPiece{}
		next := 0
		for piece := range ready {
			pending[piece.seq] = piece
			for {
				pc, ok := pending[next]
				if !ok {
					break
				}
				delete(pending, next)
				next++
				var err error
				if gctx.Err() == nil {
					if pc.entry.Zero {
						if zero == nil {
							zero = make([]byte, 1<<20)
						}
						err = writeZeros(w, zero, pc.entry.Length, whole)
						zeros += pc.entry.Length
					} else {
						err = writeHashed(w, (*pc.plain)[pc.entry.ChunkOffset:pc.entry.ChunkOffset+pc.entry.Length], whole)
					}
				}
				if pc.plain != nil {
					plainPool.Put(pc.plain)
				}
				if err != nil {
					return err
				}
				written += pc.entry.Length
				p.add(&p.Done, pc.entry.Length)
				<-slots
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return stats, err
	}
	if err := ctx.Err(); err != nil {
		return stats, err
	}
	stats.BytesWritten, stats.BytesZero = written, zeros
	var sum format.Hash
	whole.Sum(sum[:0])
	if written != m.Size || sum != m.Stream.Hash {
		return stats, fmt.Errorf("backup %s: the restored stream (%d bytes, blake3 %s) does not match the backup's (%d bytes, blake3 %s): %w",
			m.ID.Short(), written, sum, m.Size, m.Stream.Hash, cairn.ErrCorrupt)
	}
	stats.Duration = r.now().Sub(started)
	return stats, nil
}

// fetchChunk reads a chunk's sealed object into buf. A chunk missing from
// the store is damage to the backups that use it.
func (r *Repository) fetchChunk(ctx context.Context, id format.ChunkID, buf []byte) ([]byte, error) {
	data, err := objstore.ReadInto(ctx, r.be, id.ObjectName(), buf)
	if errors.Is(err, cairn.ErrNotFound) {
		err = fmt.Errorf("chunk %s is missing from the repository: %w", id, cairn.ErrCorrupt)
	}
	if err != nil {
		return nil, fmt.Errorf("fetching chunk: %w", err)
	}
	return data, nil
}

// openStreamChunk authenticates, decompresses and verifies the chunk of a
// fetched piece into dst. Damage on the way from the store goes away when
// the chunk is read again; damage at rest does not: a chunk that fails is
// fetched again, up to fetchAttempts reads in all.
func (r *Repository) openStreamChunk(ctx context.Context, piece *streamPiece, hasher interface{ Sum([]byte) [32]byte }, dst []byte) ([]byte, error) {
	j := &chunkJob{id: piece.entry.Chunk, data: *piece.sealed,
		placements: []placement{{length: piece.entry.Length, chunkOffset: piece.entry.ChunkOffset}}}
	plain, err := r.openChunk(j, hasher, dst)
	for attempt := 1; err != nil && errors.Is(err, cairn.ErrCorrupt) && attempt < fetchAttempts; attempt++ {
		data, ferr := r.fetchChunk(ctx, j.id, *piece.sealed)
		if ferr != nil {
			return nil, ferr
		}
		*piece.sealed, j.data = data, data
		plain, err = r.openChunk(j, hasher, dst)
	}
	return plain, err
}

// writeHashed writes b to w and to the stream's hash.
func writeHashed(w io.Writer, b []byte, whole *blake3.Hasher) error {
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("writing the stream: %w", err)
	}
	_, _ = whole.Write(b)
	return nil
}

// writeZeros writes n zero bytes from zero, a buffer of zeros.
func writeZeros(w io.Writer, zero []byte, n int64, whole *blake3.Hasher) error {
	for n > 0 {
		k := min(n, int64(len(zero)))
		if err := writeHashed(w, zero[:k], whole); err != nil {
			return err
		}
		n -= k
	}
	return nil
}
