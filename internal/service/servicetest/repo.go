package servicetest

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/volbackup"
)

// Store is an in-memory repository of one container: it outlives the
// handles opened on it (Open), as a store outlives the processes using
// it. Its backups hold copies of the fake engine's snapshots.
type Store struct {
	eng    *Engine
	faults *Faults

	mu      sync.Mutex
	tick    time.Time
	backups map[cairn.ID]*fakeBackup
	open    int // handles not closed
	archive *fakeLogs
}

type fakeBackup struct {
	m    *format.Manifest
	data pages
	// damaged: a chunk of it is corrupt at rest (Damage).
	damaged bool
	// stream is a stream backup's bytes.
	stream []byte
}

// NewStore returns an empty repository whose backups read eng's
// snapshots, and whose calls faults governs (nil: none fail).
func NewStore(eng *Engine, faults *Faults) *Store {
	if faults == nil {
		faults = NewFaults()
	}
	return &Store{eng: eng, faults: faults, tick: time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC),
		backups: map[cairn.ID]*fakeBackup{}}
}

// Damage corrupts backup id at rest, as a flipped bit in one of its
// chunks would: VerifyBackup reports it and Restore fails with
// cairn.ErrCorrupt.
func (s *Store) Damage(id cairn.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.backups[id]; b != nil {
		b.damaged = true
	}
}

// Open returns a new handle on the repository.
func (s *Store) Open() *Repository {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open++
	return &Repository{s: s}
}

// OpenHandles is how many handles are open (not closed).
func (s *Store) OpenHandles() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

// Manifests lists the backups without going through Faults, for a
// test's checks.
func (s *Store) Manifests() []*format.Manifest {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*format.Manifest, 0, len(s.backups))
	for _, b := range s.backups {
		out = append(out, cloneManifest(b.m))
	}
	slices.SortFunc(out, func(a, b *format.Manifest) int { return a.Time.Compare(b.Time) })
	return out
}

func cloneManifest(m *format.Manifest) *format.Manifest {
	c := *m
	c.Tags = maps.Clone(m.Tags)
	c.Index = slices.Clone(m.Index)
	if m.Parent != nil {
		p := *m.Parent
		c.Parent = &p
	}
	return &c
}

// Repository is a handle on a Store: a service.Repository.
type Repository struct {
	s *Store

	mu     sync.Mutex
	closed bool
}

var _ service.Repository = (*Repository)(nil)

// begin starts a call: the faults, then the handle's state.
func (r *Repository) begin(ctx context.Context, method string) (Call, error) {
	c, err := r.s.faults.Begin(ctx, "Repository."+method)
	if err != nil {
		return c, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return c, fmt.Errorf("repository %s after Close: %w", method, cairn.ErrInvalid)
	}
	return c, nil
}

// Backups implements service.Repository.
func (r *Repository) Backups(ctx context.Context) (*repo.BackupList, error) {
	c, err := r.begin(ctx, "Backups")
	if err != nil {
		return nil, err
	}
	return &repo.BackupList{Backups: r.s.Manifests(), Damaged: map[string]error{}}, c.End(ctx)
}

// Manifest implements service.Repository.
func (r *Repository) Manifest(ctx context.Context, id cairn.ID) (*format.Manifest, error) {
	c, err := r.begin(ctx, "Manifest")
	if err != nil {
		return nil, err
	}
	r.s.mu.Lock()
	b, ok := r.s.backups[id]
	r.s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("backup %s: %w", id.Short(), cairn.ErrNotFound)
	}
	return cloneManifest(b.m), c.End(ctx)
}

// BackupSnapshot implements service.Repository.
func (r *Repository) BackupSnapshot(ctx context.Context, snapshot cairn.ID, opts repo.BackupOptions) (*volbackup.Result, error) {
	c, err := r.begin(ctx, "BackupSnapshot")
	if err != nil {
		return nil, err
	}
	info, data, err := r.s.eng.snapshotData(snapshot)
	if err != nil {
		return nil, err
	}
	source := volbackup.SourceName(info.Volume)
	res := &volbackup.Result{Snapshot: snapshot}
	r.s.mu.Lock()
	var parent *fakeBackup
	switch {
	case opts.NoParent:
	case opts.Parent != nil:
		if parent = r.s.backups[*opts.Parent]; parent == nil {
			r.s.mu.Unlock()
			return nil, fmt.Errorf("parent backup %s: %w", opts.Parent.Short(), cairn.ErrNotFound)
		}
	default:
		for _, b := range r.s.backups {
			if b.m.Source == source && (parent == nil || b.m.Time.After(parent.m.Time)) {
				parent = b
			}
		}
	}
	r.s.mu.Unlock()
	changed := int64(len(data)) * pageSize
	if parent == nil {
		res.Reason = "no parent backup"
	} else if from, err := cairn.ParseID(parent.m.Tags[volbackup.TagSnapshot]); err != nil {
		res.Reason = "the parent backup names no snapshot"
	} else if _, pdata, err := r.s.eng.snapshotData(from); err != nil {
		res.Reason = "the parent backup's snapshot " + from.Short() + " no longer exists"
	} else {
		res.Tracked = true
		changed = 0
		for k := range mergedKeys(data, pdata) {
			if data[k] == nil || pdata[k] == nil || *data[k] != *pdata[k] {
				changed += pageSize
			}
		}
		res.ChangedBytes = changed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	tags := maps.Clone(opts.Tags)
	if tags == nil {
		tags = map[string]string{}
	}
	tags[volbackup.TagVolume] = info.Volume.String()
	tags[volbackup.TagSnapshot] = snapshot.String()
	dataTime := opts.DataTime
	if dataTime.IsZero() {
		dataTime = info.Created
	}
	if opts.Progress != nil {
		opts.Progress.Total.Add(info.Size)
		opts.Progress.Done.Add(info.Size)
	}
	r.s.mu.Lock()
	r.s.tick = r.s.tick.Add(time.Microsecond)
	m := &format.Manifest{Version: 1, ID: cairn.NewID(), Time: r.s.tick, DataTime: dataTime.UTC(),
		Source: source, Size: info.Size, ChunkSize: 4 << 20, Tags: tags,
		Index: []format.IndexPart{{Name: "index/fake", Entries: int((info.Size + 4<<20 - 1) / (4 << 20)), Length: info.Size}},
		Stats: format.BackupStats{BytesRead: changed, BytesZero: info.Size - int64(len(data))*pageSize,
			BytesNew: changed, BytesStored: changed, ChunksNew: int(changed / pageSize)}}
	if parent != nil {
		id := parent.m.ID
		m.Parent = &id
	}
	r.s.backups[m.ID] = &fakeBackup{m: m, data: clonePages(data)}
	r.s.mu.Unlock()
	res.Manifest = cloneManifest(m)
	return res, c.End(ctx)
}

// BackupStream implements service.Repository: the stream is kept whole.
func (r *Repository) BackupStream(ctx context.Context, rd io.Reader, opts repo.StreamOptions) (*format.Manifest, error) {
	c, err := r.begin(ctx, "BackupStream")
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(rd)
	if err != nil {
		return nil, fmt.Errorf("reading the stream: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.s.mu.Lock()
	r.s.tick = r.s.tick.Add(time.Microsecond)
	dataTime := opts.DataTime
	if dataTime.IsZero() {
		dataTime = r.s.tick
	}
	m := &format.Manifest{Version: 2, Kind: format.KindStream, ID: cairn.NewID(), Time: r.s.tick, DataTime: dataTime.UTC(),
		Source: opts.Name, Size: int64(len(data)), Tags: maps.Clone(opts.Tags), Stream: &format.StreamInfo{},
		Stats: format.BackupStats{BytesRead: int64(len(data)), BytesNew: int64(len(data)), BytesStored: int64(len(data))}}
	r.s.backups[m.ID] = &fakeBackup{m: m, stream: data}
	r.s.mu.Unlock()
	return cloneManifest(m), c.End(ctx)
}

// RestoreStream implements service.Repository.
func (r *Repository) RestoreStream(ctx context.Context, m *format.Manifest, w io.Writer, p *repo.Progress) (repo.RestoreStats, error) {
	c, err := r.begin(ctx, "RestoreStream")
	if err != nil {
		return repo.RestoreStats{}, err
	}
	r.s.mu.Lock()
	b, ok := r.s.backups[m.ID]
	r.s.mu.Unlock()
	if !ok {
		return repo.RestoreStats{}, fmt.Errorf("backup %s: %w", m.ID.Short(), cairn.ErrNotFound)
	}
	if !b.m.IsStream() {
		return repo.RestoreStats{}, fmt.Errorf("backup %s is a volume backup: %w", m.ID.Short(), cairn.ErrInvalid)
	}
	n, err := w.Write(b.stream)
	if err != nil {
		return repo.RestoreStats{}, fmt.Errorf("writing the stream: %w", err)
	}
	return repo.RestoreStats{Bytes: int64(n), BytesWritten: int64(n)}, c.End(ctx)
}

func mergedKeys(a, b pages) map[int64]bool {
	out := make(map[int64]bool, len(a)+len(b))
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// Restore implements service.Repository: the target's first m.Size
// bytes end up those of the backup.
func (r *Repository) Restore(ctx context.Context, m *format.Manifest, t repo.Target, p *repo.Progress) (repo.RestoreStats, error) {
	c, err := r.begin(ctx, "Restore")
	if err != nil {
		return repo.RestoreStats{}, err
	}
	r.s.mu.Lock()
	b, ok := r.s.backups[m.ID]
	r.s.mu.Unlock()
	if !ok {
		return repo.RestoreStats{}, fmt.Errorf("backup %s: %w", m.ID.Short(), cairn.ErrNotFound)
	}
	if b.damaged {
		return repo.RestoreStats{}, fmt.Errorf("backup %s: a chunk fails its authentication: %w", m.ID.Short(), cairn.ErrCorrupt)
	}
	stats := repo.RestoreStats{Bytes: b.m.Size}
	if p != nil {
		p.Total.Add(b.m.Size)
	}
	if !t.Fresh() {
		if err := t.Zero(0, b.m.Size); err != nil {
			return stats, fmt.Errorf("zeroing the target: %w", err)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(b.data)) {
		if err := ctx.Err(); err != nil {
			return stats, err
		}
		if _, err := t.WriteAt(b.data[k][:], k*pageSize); err != nil {
			return stats, fmt.Errorf("writing the target: %w", err)
		}
		stats.BytesWritten += pageSize
	}
	if err := t.Sync(); err != nil {
		return stats, fmt.Errorf("syncing target: %w", err)
	}
	if p != nil {
		p.Done.Add(b.m.Size)
	}
	return stats, c.End(ctx)
}

// VerifyBackup implements service.Repository: one chunk per page of
// data, one problem for a damaged backup.
func (r *Repository) VerifyBackup(ctx context.Context, m *format.Manifest, opts repo.VerifyOptions) (repo.VerifyReport, error) {
	c, err := r.begin(ctx, "VerifyBackup")
	if err != nil {
		return repo.VerifyReport{}, err
	}
	r.s.mu.Lock()
	b, ok := r.s.backups[m.ID]
	var rep repo.VerifyReport
	if ok {
		rep.Chunks, rep.ChunksRead, rep.BytesRead = len(b.data), len(b.data), int64(len(b.data))*pageSize
		if b.damaged {
			rep.Problems = []repo.Problem{{Kind: repo.ProblemCorruptChunk, Object: "chunks/fake", Detail: "authentication failed", Backups: []cairn.ID{m.ID}}}
		}
	}
	r.s.mu.Unlock()
	if !ok {
		return rep, fmt.Errorf("backup %s: %w", m.ID.Short(), cairn.ErrNotFound)
	}
	return rep, c.End(ctx)
}

// Forget implements service.Repository.
func (r *Repository) Forget(ctx context.Context, ids []cairn.ID) error {
	c, err := r.begin(ctx, "Forget")
	if err != nil {
		return err
	}
	r.s.mu.Lock()
	for _, id := range ids {
		if _, ok := r.s.backups[id]; !ok {
			r.s.mu.Unlock()
			return fmt.Errorf("backup %s: %w", id.Short(), cairn.ErrNotFound)
		}
		delete(r.s.backups, id)
	}
	r.s.mu.Unlock()
	return c.End(ctx)
}

// GC implements service.Repository; the fake holds no data outside its
// backups, so there is nothing to free.
func (r *Repository) GC(ctx context.Context, opts repo.GCOptions) (repo.GCStats, error) {
	c, err := r.begin(ctx, "GC")
	if err != nil {
		return repo.GCStats{}, err
	}
	r.s.mu.Lock()
	n := len(r.s.backups)
	r.s.mu.Unlock()
	return repo.GCStats{Backups: n}, c.End(ctx)
}

// Close implements service.Repository.
func (r *Repository) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("repository closed twice: %w", cairn.ErrInvalid)
	}
	r.closed = true
	r.s.mu.Lock()
	r.s.open--
	r.s.mu.Unlock()
	return nil
}
