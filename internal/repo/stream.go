package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/restic/chunker"
	"github.com/zeebo/blake3"
	"golang.org/x/sync/errgroup"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/repo/format"
)

// Stream backups.
//
// A stream (a database dump, a tar stream of a data directory, a log
// segment) has no size known in advance and no offsets that stay put: a
// row inserted early in a dump shifts every byte after it. So a stream is
// cut where its content says (content-defined chunking), not at fixed
// offsets: two dumps that differ by a few rows share every chunk but the
// few around the changes. Everything else is a volume backup's: the same
// chunk store, names, envelope, dedup against every stored chunk, backup
// session and garbage-collection protocol; the index maps the stream's
// bytes in order to whole chunks.
//
// The chunk sizes suit database streams, which are large (GiB) and change
// in scattered places. An average near 1.5 MiB (512 KiB + 2^20 expected
// bytes to a cut; about 2 MiB measured on pgbench dumps, whose runs of
// spaces offer fewer cut points) keeps a change from costing more than a
// few MiB of new data, while a GiB of stream is still 500 to 700
// objects, not tens of thousands: stores charge per request, and small
// objects waste their latency. The 512 KiB minimum bounds the objects per byte and the index,
// the 8 MiB maximum bounds a chunk's memory in the pipelines and the cost
// of a long run without a cut (zeros, or data the fingerprint never cuts).
// A 16 MiB log segment becomes about 10 chunks. These are the defaults of
// restic's chunker, proven on large repositories.
const (
	// StreamMinChunk is the smallest chunk the stream chunker cuts (but
	// the last of a stream).
	StreamMinChunk = 512 << 10
	// StreamMaxChunk is the largest chunk the stream chunker cuts.
	StreamMaxChunk = 8 << 20
	// StreamAverageBits: a cut comes where the fingerprint's low bits are
	// zero, on average every 2^StreamAverageBits bytes after the minimum.
	StreamAverageBits = 20
)

// streamProbeChunks is how many chunks of a stream are looked up in the
// store one by one (a Stat each) before the backup lists the store's
// chunks instead, as a volume backup does at its start. A short stream (a
// 16 MiB log segment has at most 32 chunks) never lists a large
// repository; a long one lists it once.
const streamProbeChunks = 32

// polynomialContext is the BLAKE3 key-derivation context of the stream
// chunker's polynomial (docs/format.md).
const polynomialContext = "cairn repository 2025 stream chunker polynomial v1"

// chunkLimit is the most bytes a stored chunk may hold: the repository's
// chunk size, or the stream chunker's largest chunk when that is larger.
// Opening a chunk that decodes to more fails (docs/format.md, "Sealed
// objects").
func (r *Repository) chunkLimit() int { return int(max(r.cfg.ChunkSize, StreamMaxChunk)) }

// StreamChunker returns the chunker parameters stream backups use.
func StreamChunker() format.ChunkerParams {
	return format.ChunkerParams{
		Algorithm:   format.ChunkerRabinKeyed,
		MinSize:     StreamMinChunk,
		MaxSize:     StreamMaxChunk,
		AverageBits: StreamAverageBits,
	}
}

// chunkerPolynomial derives the repository's chunker polynomial from its
// master key. A public polynomial would let anyone who sees the sizes of
// stored chunks test whether a known file (a given dump) is in the
// repository: the cut points of known content would be computable. Derived
// from the key, the polynomial is as secret as the data, never stored, and
// the same for every deployment that holds the key, so backups of one
// stream dedup whoever takes them.
func chunkerPolynomial(mk interface{ Marshal() []byte }) (chunker.Pol, error) {
	h := blake3.NewDeriveKey(polynomialContext)
	_, _ = h.Write(mk.Marshal())
	pol, err := chunker.DerivePolynomial(h.Digest())
	if err != nil {
		return 0, fmt.Errorf("deriving the chunker polynomial: %w", err)
	}
	return pol, nil
}

// StreamOptions describe one stream backup.
type StreamOptions struct {
	// Name identifies the stream across backups (a database and the tool
	// that dumped it, say "db1/pg_dump"); it is recorded as the
	// manifest's source.
	Name string
	Tags map[string]string
	// Compression overrides the repository's default level.
	Compression *format.Level
	// DataTime is the time of the data (when the dump started); the
	// backup's start when zero.
	DataTime time.Time
	Progress *Progress
}

// BackupStream reads rd to its end, stores it as a stream backup and
// returns its manifest. Nothing is visible until the manifest is written,
// its last step: a read that fails (the tool writing the stream died)
// fails the backup, and what it stored is left for gc, as for a volume
// backup. A reader that ends early without an error cannot be told from a
// complete stream: a caller running a tool wraps its output so that the
// tool's failure is a read error (for instance, at EOF return the error of
// the process's Wait).
//
// rd is read from one goroutine, in order. When ctx ends, BackupStream
// stops at the next Read; a Read that blocks holds it until it returns
// (closing a pipe's reader ends one).
func (r *Repository) BackupStream(ctx context.Context, rd io.Reader, opts StreamOptions) (*format.Manifest, error) {
	started := r.now()
	level := r.cfg.Compression
	if opts.Compression != nil {
		level = *opts.Compression
	}
	pol, err := chunkerPolynomial(r.mk)
	if err != nil {
		return nil, err
	}
	id := cairn.NewID()
	sess, err := r.startSession(ctx, id)
	if err != nil {
		return nil, err
	}
	defer sess.close(context.WithoutCancel(ctx))

	cut := r.streamChunker
	b := &backupRun{
		r:         r,
		ctx:       ctx,
		sess:      sess,
		level:     level,
		chunkSize: cut.MaxSize,
		p:         orDiscard(opts.Progress),
		lookup:    &chunkLookup{r: r},
	}
	sum, size, err := b.runStream(rd, pol, cut)
	if err != nil {
		return nil, err
	}

	if err := sess.check(); err != nil {
		return nil, err
	}
	m := &format.Manifest{
		Version:     format.ManifestVersionStream,
		ID:          id,
		Kind:        format.KindStream,
		Session:     sess.id,
		Time:        started.UTC(),
		DataTime:    opts.DataTime.UTC(),
		Source:      opts.Name,
		Hostname:    r.opts.Hostname,
		Size:        size,
		ChunkSize:   cut.MaxSize,
		Compression: level,
		Tags:        opts.Tags,
		Stream:      &format.StreamInfo{Hash: sum, Chunker: cut},
	}
	if m.DataTime.IsZero() {
		m.DataTime = m.Time
	}
	if err := r.writeIndex(ctx, m, b.entries); err != nil {
		return nil, err
	}
	b.stats.Duration = format.Duration(r.now().Sub(started))
	m.Stats = b.stats
	if err := sess.check(); err != nil {
		return nil, err
	}
	if err := r.putJSON(ctx, format.TypeManifest, manifestName(id), m, objstore.PutOptions{}); err != nil {
		return nil, fmt.Errorf("writing manifest: %w", err)
	}
	return m, nil
}

// streamChunk is one chunk cut from a stream, on its way to a worker.
type streamChunk struct {
	job regionJob
	buf *[]byte
}

// runStream cuts rd into chunks in one goroutine and hashes the whole
// stream in another, in order, then hands the chunks to the pipeline of
// volume backups: Workers goroutines hash, dedup, compress and seal,
// Transfers goroutines upload. Each chunk gets its index entry when it is
// cut, so the index keeps the stream's order whatever order the workers
// finish in. The cutting (a Rabin fingerprint, byte by byte) is the one
// stage that cannot run in parallel, so it does nothing else. At most
// ReadAhead chunks wait for a worker: memory is bounded by ReadAhead +
// 2×Workers + 2×Transfers + 3 buffers of the largest chunk (measured: 256
// MiB of a dump backed up in under 120 MiB of RSS). It returns the
// stream's hash and length.
func (b *backupRun) runStream(rd io.Reader, pol chunker.Pol, params format.ChunkerParams) (format.Hash, int64, error) {
	g, ctx := errgroup.WithContext(b.ctx)
	workers := b.r.opts.Workers
	transfers := b.r.opts.Transfers

	maxSize := params.MaxSize
	plainPool := sync.Pool{New: func() any { buf := make([]byte, 0, maxSize); return &buf }}
	sealPool := sync.Pool{New: func() any {
		buf := make([]byte, 0, maxSize+maxSize/64+format.Overhead+1024)
		return &buf
	}}
	cuts := make(chan streamChunk, 1)
	work := make(chan streamChunk, b.r.opts.ReadAhead)
	uploads := make(chan sealedChunk, transfers)

	var size int64
	g.Go(func() error {
		defer close(cuts)
		cut := chunker.NewWithBoundaries(&ctxReader{ctx: ctx, r: rd}, pol, uint(params.MinSize), uint(params.MaxSize))
		cut.SetAverageBits(params.AverageBits)
		for {
			bufp := plainPool.Get().(*[]byte)
			c, err := cut.Next((*bufp)[:0])
			if errors.Is(err, io.EOF) {
				plainPool.Put(bufp)
				return nil
			}
			if err != nil {
				plainPool.Put(bufp)
				if ctx.Err() != nil {
					return nil // the pipeline failed, or ctx ended: that error stands
				}
				return fmt.Errorf("reading the stream: %w", err)
			}
			*bufp = c.Data
			n := int64(len(c.Data))
			b.mu.Lock()
			index := len(b.entries)
			b.entries = append(b.entries, format.Entry{Length: n})
			b.mu.Unlock()
			b.p.add(&b.p.Total, n)
			b.p.add(&b.p.Read, n)
			job := regionJob{index: index, offset: size, length: n}
			size += n
			select {
			case cuts <- streamChunk{job, bufp}:
			case <-ctx.Done():
				plainPool.Put(bufp)
				return nil
			}
		}
	})
	var sum format.Hash
	g.Go(func() error {
		defer close(work)
		whole := blake3.New()
		for sc := range cuts {
			if ctx.Err() != nil {
				plainPool.Put(sc.buf)
				continue
			}
			_, _ = whole.Write(*sc.buf)
			select {
			case work <- sc:
			case <-ctx.Done():
				plainPool.Put(sc.buf)
			}
		}
		whole.Sum(sum[:0])
		return nil
	})
	goStage(g, workers, atNice(b.r.opts.Nice, func() error {
		hasher := b.r.mk.NewHasher()
		for sc := range work {
			var err error
			if ctx.Err() == nil {
				err = b.process(ctx, sc.job, *sc.buf, hasher, &sealPool, uploads)
			}
			plainPool.Put(sc.buf)
			if err != nil {
				return err
			}
		}
		return nil
	}), func() { close(uploads) })
	b.goUploads(ctx, g, transfers, uploads, &sealPool)
	if err := g.Wait(); err != nil {
		return sum, 0, err
	}
	if err := b.ctx.Err(); err != nil {
		return sum, 0, err
	}
	return sum, size, nil
}

// ctxReader fails its reads once ctx has ended, so the chunker stops at
// the next read.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// chunkLookup answers whether a chunk is stored, for a backup that did not
// list the store's chunks at its start (a stream backup): the first
// streamProbeChunks questions with a Stat each, every later one from a
// listing made when the first of them comes. Either way the question is
// asked after the backup's session started, which is what the
// garbage-collection protocol needs of a listing.
type chunkLookup struct {
	r *Repository

	mu     sync.Mutex
	probes int
	listed bool
	set    chunkSet
}

func (l *chunkLookup) stored(ctx context.Context, id format.ChunkID) (bool, error) {
	l.mu.Lock()
	if !l.listed && l.probes < streamProbeChunks {
		l.probes++
		l.mu.Unlock()
		_, err := l.r.be.Stat(ctx, id.ObjectName())
		if errors.Is(err, cairn.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("looking up chunk %s: %w", id, err)
		}
		return true, nil
	}
	// The workers that come while the listing runs wait for it.
	defer l.mu.Unlock()
	if !l.listed {
		set, err := l.r.storedChunkSet(ctx)
		if err != nil {
			return false, err
		}
		l.set, l.listed = set, true
	}
	return l.set.contains(id), nil
}
