package repo

import (
	"bytes"
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

// Source is what a backup reads: an image file, a block device, a volume
// snapshot.
type Source interface {
	io.ReaderAt
	// Size is the number of bytes to back up.
	Size() int64
	// Allocated returns the sorted extents that may hold data; the rest
	// reads as zeros. ok is false when the source cannot tell.
	Allocated() (list []cairn.Extent, ok bool, err error)
}

// BackupOptions describe one backup.
type BackupOptions struct {
	// SourceName identifies the source across backups (an absolute path, a
	// volume ID); the default parent is the latest backup of the same name.
	SourceName string
	Tags       map[string]string
	// Parent, when set, is the backup to compare with instead of the
	// latest of the same source.
	Parent *cairn.ID
	// NoParent reads and compares against nothing but the stored chunks.
	NoParent bool
	// Changed, when set, lists the only byte ranges that may differ from
	// the parent; every other chunk is taken from the parent's index
	// without reading the source. A wrong list makes a wrong backup.
	Changed *extents.List
	// Delta, with Changed, reads only the changed bytes of a region that
	// changed a little and stores them packed with those of other regions;
	// the region's index entries point into the parent's chunks for the
	// rest. Only for sources whose Changed list is exact (a volume
	// engine's), and within limits that keep restores one pass: see
	// delta.go.
	Delta bool
	// Compression overrides the repository's default level.
	Compression *format.Level
	// DataTime is the time of the data (a snapshot's creation time); the
	// backup's start when zero.
	DataTime time.Time
	Progress *Progress
}

// regionJob is one chunk-sized region of the source to read.
type regionJob struct {
	index  int
	offset int64
	length int64
}

// sealedChunk is a chunk ready to upload.
type sealedChunk struct {
	id     format.ChunkID
	data   []byte
	buf    *[]byte
	length int64
}

// Backup backs up src and returns the new backup's manifest. Nothing is
// visible until the manifest is written, its last step.
func (r *Repository) Backup(ctx context.Context, src Source, opts BackupOptions) (*format.Manifest, error) {
	started := r.now()
	size := src.Size()
	if size < 0 {
		return nil, fmt.Errorf("source size %d: %w", size, cairn.ErrInvalid)
	}
	level := r.cfg.Compression
	if opts.Compression != nil {
		level = *opts.Compression
	}
	chunkSize := r.cfg.ChunkSize
	nregions := int((size + chunkSize - 1) / chunkSize)

	parent, parentEntries, err := r.backupParent(ctx, opts)
	if err != nil {
		return nil, err
	}
	if opts.Changed != nil {
		if parent == nil {
			return nil, fmt.Errorf("changed extents need a parent backup of %q and there is none: %w", opts.SourceName, cairn.ErrInvalid)
		}
		if opts.Changed.Size >= 0 && opts.Changed.Size != size {
			return nil, fmt.Errorf("changed extents are for a source of %d bytes, the source has %d: %w", opts.Changed.Size, size, cairn.ErrInvalid)
		}
		if n := len(opts.Changed.Extents); n > 0 && opts.Changed.Extents[n-1].End() > size {
			return nil, fmt.Errorf("changed extent %v ends beyond the source's %d bytes: %w", opts.Changed.Extents[n-1], size, cairn.ErrInvalid)
		}
	}

	id := cairn.NewID()
	sess, err := r.startSession(ctx, id)
	if err != nil {
		return nil, err
	}
	defer sess.close(context.WithoutCancel(ctx))

	known, err := r.storedChunkSet(ctx)
	if err != nil {
		return nil, err
	}

	var pr *parentRegions
	if parent != nil && parentEntries != nil {
		var ok bool
		if pr, ok = splitRegions(parentEntries, chunkSize, parent.Size); !ok {
			if opts.Changed != nil {
				return nil, fmt.Errorf("parent %s: its index does not cover its %d bytes: %w", parent.ID.Short(), parent.Size, cairn.ErrCorrupt)
			}
			pr = nil
		}
	}

	p := orDiscard(opts.Progress)
	p.add(&p.Total, size)
	b := &backupRun{
		r:         r,
		ctx:       ctx,
		src:       src,
		sess:      sess,
		level:     level,
		known:     known,
		entries:   make([]format.Entry, nregions),
		frag:      map[int][]format.Entry{},
		parent:    pr,
		size:      size,
		p:         p,
		chunkSize: chunkSize,
	}

	// Plan: which regions are holes, which come unchanged from the parent,
	// which must be read.
	holes := make([]bool, nregions)
	if alloc, ok, err := src.Allocated(); err != nil {
		return nil, fmt.Errorf("reading the source's allocation map: %w", err)
	} else if ok {
		holes = holeRegions(alloc, nregions, chunkSize, size)
	}
	var changed map[int64]bool
	var changedList []cairn.Extent
	if opts.Changed != nil {
		changedList = extents.Normalize(opts.Changed.Extents)
		changed = map[int64]bool{}
		for _, blk := range extents.Blocks(changedList, chunkSize, int64(nregions)) {
			changed[blk] = true
		}
	}
	var jobs []regionJob
	var deltas []*deltaPlan
	ci := 0 // changedList position, for delta planning
	for i := range nregions {
		off := int64(i) * chunkSize
		length := min(chunkSize, size-off)
		full := regionJob{index: i, offset: off, length: length}
		sameShape := pr.region(i) != nil && pr.regionLength(i) == length
		switch {
		case holes[i]:
			b.entries[i] = format.Entry{Length: length, Zero: true}
			b.stats.BytesZero += length
			p.add(&p.Zero, length)
			p.add(&p.Done, length)
		case changed != nil && !changed[int64(i)] && sameShape:
			pe := pr.region(i)
			ok, err := b.claimEntries(ctx, pe)
			if err != nil {
				return nil, err
			}
			if !ok {
				// A chunk of the parent's may have been collected: read
				// the region again.
				jobs = append(jobs, full)
				continue
			}
			for _, e := range pe {
				if !e.Zero {
					b.stats.ChunksReused++
				}
			}
			if len(pe) == 1 {
				b.entries[i] = pe[0]
			} else {
				b.entries[i] = format.Entry{Length: length}
				b.frag[i] = slices.Clone(pe)
			}
			b.stats.BytesUnchanged += length
			p.add(&p.Unchanged, length)
			p.add(&p.Done, length)
		case opts.Delta && changed != nil && sameShape:
			for ci < len(changedList) && changedList[ci].End() <= off {
				ci++
			}
			var in []cairn.Extent
			var n int64
			for k := ci; k < len(changedList) && changedList[k].Offset < off+length; k++ {
				e := changedList[k]
				lo, hi := max(e.Offset, off), min(e.End(), off+length)
				in = append(in, cairn.Extent{Offset: lo, Length: hi - lo})
				n += hi - lo
			}
			if n*deltaMaxShare > length {
				jobs = append(jobs, full)
				continue
			}
			plan, ok := planDelta(i, off, pr.region(i), in)
			if !ok {
				jobs = append(jobs, full)
				continue
			}
			kept, err := b.claimEntries(ctx, plan.entries)
			if err != nil {
				return nil, err
			}
			if !kept {
				jobs = append(jobs, full)
				continue
			}
			deltas = append(deltas, plan)
		default:
			jobs = append(jobs, full)
		}
	}

	if err := b.runDelta(deltas); err != nil {
		return nil, err
	}
	if err := b.run(jobs); err != nil {
		return nil, err
	}

	if err := sess.check(); err != nil {
		return nil, err
	}
	m := &format.Manifest{
		Version:     1,
		ID:          id,
		Kind:        format.KindVolume,
		Session:     sess.id,
		Time:        started.UTC(),
		DataTime:    opts.DataTime.UTC(),
		Source:      opts.SourceName,
		Hostname:    r.opts.Hostname,
		Size:        size,
		ChunkSize:   chunkSize,
		Compression: level,
		Tags:        opts.Tags,
	}
	if m.DataTime.IsZero() {
		m.DataTime = m.Time
	}
	if parent != nil {
		pid := parent.ID
		m.Parent = &pid
	}
	if err := r.writeIndex(ctx, m, b.flatEntries()); err != nil {
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

// backupParent finds the parent backup and returns its index, or nils.
// An automatically chosen parent that is forgotten while it is being read
// is replaced by the next newest.
func (r *Repository) backupParent(ctx context.Context, opts BackupOptions) (*format.Manifest, []format.Entry, error) {
	if opts.NoParent {
		return nil, nil, nil
	}
	if opts.Parent != nil {
		m, err := r.Manifest(ctx, *opts.Parent)
		if err != nil {
			return nil, nil, fmt.Errorf("parent: %w", err)
		}
		if m.IsStream() {
			return nil, nil, fmt.Errorf("parent %s is a stream backup, not a volume's: %w", m.ID.Short(), cairn.ErrInvalid)
		}
		return r.parentIndex(ctx, m, opts)
	}
	for attempt := 0; ; attempt++ {
		parent, err := r.Latest(ctx, opts.SourceName)
		if err != nil {
			return nil, nil, err
		}
		if parent == nil {
			return nil, nil, nil
		}
		p, entries, err := r.parentIndex(ctx, parent, opts)
		if errors.Is(err, cairn.ErrNotFound) && attempt < 3 {
			if ok, serr := objstore.Exists(ctx, r.be, manifestName(parent.ID)); serr == nil && !ok {
				continue // forgotten meanwhile
			}
		}
		return p, entries, err
	}
}

func (r *Repository) parentIndex(ctx context.Context, parent *format.Manifest, opts BackupOptions) (*format.Manifest, []format.Entry, error) {
	if parent.ChunkSize != r.cfg.ChunkSize {
		if opts.Changed != nil {
			return nil, nil, fmt.Errorf("parent %s has chunk size %d, the repository %d: changed extents cannot be used: %w",
				parent.ID.Short(), parent.ChunkSize, r.cfg.ChunkSize, cairn.ErrInvalid)
		}
		return nil, nil, nil
	}
	entries, err := r.Index(ctx, parent)
	if err != nil {
		return nil, nil, fmt.Errorf("parent: %w", err)
	}
	return parent, entries, nil
}

// holeRegions marks regions that lie wholly outside the allocated extents.
func holeRegions(alloc []cairn.Extent, n int, chunkSize, size int64) []bool {
	holes := make([]bool, n)
	for i := range holes {
		holes[i] = true
	}
	for _, blk := range extents.Blocks(extents.Normalize(alloc), chunkSize, int64(n)) {
		holes[blk] = false
	}
	return holes
}

// storedChunks lists every chunk in the store.
func (r *Repository) storedChunks(ctx context.Context) (map[format.ChunkID]int64, error) {
	known := map[format.ChunkID]int64{}
	err := r.be.List(ctx, format.ChunksPrefix, func(info objstore.ObjectInfo) error {
		if id, ok := format.ChunkIDFromObjectName(info.Name); ok {
			known[id] = info.Size
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing chunks: %w", err)
	}
	return known, nil
}

// chunkSet is an immutable set of chunk IDs: a sorted slice, 32 bytes per
// chunk, a quarter of what a map costs.
type chunkSet []format.ChunkID

func (s chunkSet) contains(id format.ChunkID) bool {
	_, found := slices.BinarySearchFunc(s, id, compareIDs)
	return found
}

func compareIDs(a, b format.ChunkID) int { return bytes.Compare(a[:], b[:]) }

// storedChunkSet lists every chunk in the store as a chunkSet.
func (r *Repository) storedChunkSet(ctx context.Context) (chunkSet, error) {
	var set chunkSet
	err := r.be.List(ctx, format.ChunksPrefix, func(info objstore.ObjectInfo) error {
		if id, ok := format.ChunkIDFromObjectName(info.Name); ok {
			set = append(set, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing chunks: %w", err)
	}
	slices.SortFunc(set, compareIDs)
	return slices.Clip(slices.Clone(slices.Compact(set))), nil
}

// writeIndex stores a backup's entries as index parts and records them in m.
func (r *Repository) writeIndex(ctx context.Context, m *format.Manifest, entries []format.Entry) error {
	for part := 0; part*format.MaxIndexPartEntries < len(entries) || part == 0; part++ {
		lo := part * format.MaxIndexPartEntries
		hi := min(lo+format.MaxIndexPartEntries, len(entries))
		var length int64
		for _, e := range entries[lo:hi] {
			length += e.Length
		}
		name := indexPartName(m.ID, part)
		if _, err := r.putSealed(ctx, format.TypeIndex, name, format.EncodeIndex(entries[lo:hi]), objstore.PutOptions{}); err != nil {
			return fmt.Errorf("writing index: %w", err)
		}
		m.Index = append(m.Index, format.IndexPart{Name: name, Entries: hi - lo, Length: length})
		if hi == len(entries) {
			break
		}
	}
	return nil
}

type backupRun struct {
	r         *Repository
	ctx       context.Context
	src       Source
	sess      *session
	level     format.Level
	chunkSize int64
	size      int64
	parent    *parentRegions
	p         *Progress

	mu    sync.Mutex
	known chunkSet // stored when the backup started
	// lookup, when set, answers instead of known which chunks are stored
	// (a stream backup, which does not list the store at its start).
	lookup  *chunkLookup
	entries []format.Entry
	// frag holds the entries of regions that need more than one: delta
	// regions, and unchanged regions whose parent had them.
	frag  map[int][]format.Entry
	stats format.BackupStats
}

// run reads, hashes, compresses, seals and uploads the regions in jobs:
// Workers goroutines do the CPU work (and the reads, so a block device
// sees parallel requests), Transfers goroutines talk to the store.
func (b *backupRun) run(jobs []regionJob) error {
	g, ctx := errgroup.WithContext(b.ctx)
	workers := b.r.opts.Workers
	transfers := b.r.opts.Transfers

	readPool := sync.Pool{New: func() any { buf := make([]byte, b.chunkSize); return &buf }}
	sealPool := sync.Pool{New: func() any {
		buf := make([]byte, 0, b.chunkSize+b.chunkSize/64+format.Overhead+1024)
		return &buf
	}}

	// Reading runs ahead of the CPU work so a core never waits on the disk;
	// readers take regions in order, so the source sees forward reads.
	type readRegion struct {
		job regionJob
		buf *[]byte
	}
	readers := max(1, b.r.opts.Readers)
	next := make(chan regionJob)
	work := make(chan readRegion, b.r.opts.ReadAhead)
	uploads := make(chan sealedChunk, transfers)

	g.Go(func() error {
		defer close(next)
		for _, job := range jobs {
			select {
			case next <- job:
			case <-ctx.Done():
				return nil
			}
		}
		return nil
	})
	goStage(g, readers, atNice(b.r.opts.Nice, func() error {
		for job := range next {
			if ctx.Err() != nil {
				continue
			}
			bufp := readPool.Get().(*[]byte)
			if err := b.read(job, (*bufp)[:job.length]); err != nil {
				readPool.Put(bufp)
				return err
			}
			select {
			case work <- readRegion{job, bufp}:
			case <-ctx.Done():
				readPool.Put(bufp)
			}
		}
		return nil
	}), func() { close(work) })
	goStage(g, workers, atNice(b.r.opts.Nice, func() error {
		hasher := b.r.mk.NewHasher()
		for rr := range work {
			var err error
			if ctx.Err() == nil {
				err = b.process(ctx, rr.job, (*rr.buf)[:rr.job.length], hasher, &sealPool, uploads)
			}
			readPool.Put(rr.buf)
			if err != nil {
				return err
			}
		}
		return nil
	}), func() { close(uploads) })
	b.goUploads(ctx, g, transfers, uploads, &sealPool)
	if err := g.Wait(); err != nil {
		return err
	}
	return b.ctx.Err()
}

func (b *backupRun) read(job regionJob, buf []byte) error {
	n, err := b.src.ReadAt(buf, job.offset)
	if err != nil && !(errors.Is(err, io.EOF) && int64(n) == job.length) {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("reading source at %d: the source shrank during the backup: %w", job.offset, cairn.ErrConflict)
		}
		return fmt.Errorf("reading source at %d: %w", job.offset, err)
	}
	b.p.add(&b.p.Read, job.length)
	return nil
}

func (b *backupRun) process(ctx context.Context, job regionJob, buf []byte, hasher interface {
	Sum([]byte) [32]byte
}, sealPool *sync.Pool, uploads chan<- sealedChunk) error {
	p := b.p
	if isZero(buf) {
		b.mu.Lock()
		b.entries[job.index] = format.Entry{Length: job.length, Zero: true}
		b.stats.BytesRead += job.length
		b.stats.BytesZero += job.length
		b.mu.Unlock()
		p.add(&p.Zero, job.length)
		p.add(&p.Done, job.length)
		return nil
	}
	id := format.ChunkID(hasher.Sum(buf))

	b.mu.Lock()
	b.entries[job.index] = format.Entry{Length: job.length, Chunk: id}
	b.stats.BytesRead += job.length
	b.mu.Unlock()

	if !b.sess.first(id) {
		// Another region of this backup carries the same bytes and has
		// decided for both.
		b.dedup(job.length, false)
		return nil
	}
	stored, err := b.stored(ctx, id)
	if err != nil {
		return err
	}
	upload, err := b.sess.claim(ctx, id, stored)
	if err != nil {
		return err
	}
	if !upload {
		pe := b.parent.region(job.index)
		unchanged := len(pe) == 1 && !pe[0].Zero && pe[0].Chunk == id
		b.dedup(job.length, unchanged)
		return nil
	}

	sbuf := sealPool.Get().(*[]byte)
	sealed, err := b.r.sealer.Seal((*sbuf)[:0], format.TypeChunk, id.ObjectName(), buf, b.level)
	if err != nil {
		sealPool.Put(sbuf)
		return err
	}
	*sbuf = sealed
	select {
	case uploads <- sealedChunk{id: id, data: sealed, buf: sbuf, length: job.length}:
	case <-ctx.Done():
		sealPool.Put(sbuf)
	}
	return nil
}

// stored reports whether chunk id was in the store when the backup looked.
func (b *backupRun) stored(ctx context.Context, id format.ChunkID) (bool, error) {
	if b.lookup != nil {
		return b.lookup.stored(ctx, id)
	}
	return b.known.contains(id), nil
}

func (b *backupRun) dedup(length int64, unchanged bool) {
	p := b.p
	b.mu.Lock()
	if unchanged {
		b.stats.BytesUnchanged += length
	} else {
		b.stats.BytesDedup += length
	}
	b.stats.ChunksReused++
	b.mu.Unlock()
	p.add(&p.Dedup, length)
	p.add(&p.Done, length)
}

// goUploads runs the upload stage in g: transfers goroutines store the
// sealed chunks of uploads, each buffer going back to sealPool, until
// uploads is closed or one of them fails.
func (b *backupRun) goUploads(ctx context.Context, g *errgroup.Group, transfers int, uploads <-chan sealedChunk, sealPool *sync.Pool) {
	goStage(g, transfers, func() error {
		for c := range uploads {
			var err error
			if ctx.Err() == nil {
				err = b.upload(ctx, c)
			}
			sealPool.Put(c.buf)
			if err != nil {
				return err
			}
		}
		return nil
	}, nil)
}

func (b *backupRun) upload(ctx context.Context, c sealedChunk) error {
	if err := b.r.be.Put(ctx, c.id.ObjectName(), c.data, objstore.PutOptions{}); err != nil {
		return fmt.Errorf("storing chunk: %w", err)
	}
	b.sess.uploaded(c.id)
	b.mu.Lock()
	b.stats.BytesNew += c.length
	b.stats.BytesStored += int64(len(c.data))
	b.stats.ChunksNew++
	b.mu.Unlock()
	p := b.p
	p.add(&p.New, c.length)
	p.add(&p.Stored, int64(len(c.data)))
	p.add(&p.Done, c.length)
	return nil
}
