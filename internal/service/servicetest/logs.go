package servicetest

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
)

// The fake's log archives: descriptions and pieces in memory, kept by
// the Store like its backups.

type fakeLogs struct {
	infos  map[cairn.ID]format.ArchiveInfo
	pieces map[string]fakePiece // by object name
}

type fakePiece struct {
	ref  repo.LogRef
	h    format.LogPiece
	data []byte
}

func (s *Store) logs() *fakeLogs {
	if s.archive == nil {
		s.archive = &fakeLogs{infos: map[cairn.ID]format.ArchiveInfo{}, pieces: map[string]fakePiece{}}
	}
	return s.archive
}

// ArchiveInfo implements service.Repository.
func (r *Repository) ArchiveInfo(ctx context.Context, id cairn.ID) (*format.ArchiveInfo, error) {
	c, err := r.begin(ctx, "ArchiveInfo")
	if err != nil {
		return nil, err
	}
	r.s.mu.Lock()
	a, ok := r.s.logs().infos[id]
	r.s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("archive %s: %w", id.Short(), cairn.ErrNotFound)
	}
	a.Tags = maps.Clone(a.Tags)
	return &a, c.End(ctx)
}

// PutArchiveInfo implements service.Repository.
func (r *Repository) PutArchiveInfo(ctx context.Context, a format.ArchiveInfo) error {
	c, err := r.begin(ctx, "PutArchiveInfo")
	if err != nil {
		return err
	}
	if a.ID.IsZero() || a.Datastore == "" {
		return fmt.Errorf("archive info without id or datastore: %w", cairn.ErrInvalid)
	}
	a.Version = 1
	a.Tags = maps.Clone(a.Tags)
	r.s.mu.Lock()
	r.s.logs().infos[a.ID] = a
	r.s.mu.Unlock()
	return c.End(ctx)
}

// LogPieces implements service.Repository.
func (r *Repository) LogPieces(ctx context.Context, id cairn.ID) ([]repo.LogRef, []string, error) {
	c, err := r.begin(ctx, "LogPieces")
	if err != nil {
		return nil, nil, err
	}
	var out []repo.LogRef
	r.s.mu.Lock()
	for _, p := range r.s.logs().pieces {
		if p.ref.Archive == id {
			out = append(out, p.ref)
		}
	}
	r.s.mu.Unlock()
	repo.SortLogRefs(out)
	return out, nil, c.End(ctx)
}

// ReadLogPiece implements service.Repository.
func (r *Repository) ReadLogPiece(ctx context.Context, p repo.LogRef) (format.LogPiece, []byte, error) {
	c, err := r.begin(ctx, "ReadLogPiece")
	if err != nil {
		return format.LogPiece{}, nil, err
	}
	r.s.mu.Lock()
	fp, ok := r.s.logs().pieces[p.Name()]
	r.s.mu.Unlock()
	if !ok {
		return format.LogPiece{}, nil, fmt.Errorf("log piece %s: %w", p.Name(), cairn.ErrNotFound)
	}
	return fp.h, bytes.Clone(fp.data), c.End(ctx)
}

// PutLogPiece implements service.Repository.
func (r *Repository) PutLogPiece(ctx context.Context, h format.LogPiece, data []byte) (int, error) {
	c, err := r.begin(ctx, "PutLogPiece")
	if err != nil {
		return 0, err
	}
	h.Version = 1
	if _, err := format.EncodeLogPiece(h, data); err != nil {
		return 0, err
	}
	ref := repo.LogRef{Archive: h.Archive, Log: h.Log, Start: h.Start, End: h.End, Size: int64(len(data))}
	r.s.mu.Lock()
	r.s.logs().pieces[ref.Name()] = fakePiece{ref: ref, h: h, data: bytes.Clone(data)}
	r.s.mu.Unlock()
	return len(data), c.End(ctx)
}

// WALIdentity implements service.InstanceHost: the fake's servers have
// no WAL to archive.
func (h *InstanceHost) WALIdentity(ctx context.Context, id string) (dbagent.WALIdentity, error) {
	return dbagent.WALIdentity{}, fmt.Errorf("instance %s: the fake host has no WAL: %w", id, cairn.ErrUnsupported)
}

// StreamWAL implements service.InstanceHost (see WALIdentity).
func (h *InstanceHost) StreamWAL(ctx context.Context, id string, _ uint32, _ dbagent.LSN, _ func(dbagent.WALMessage) error) (*dbagent.TimelineEnd, error) {
	return nil, fmt.Errorf("instance %s: the fake host has no WAL: %w", id, cairn.ErrUnsupported)
}

// ConfirmWAL implements service.InstanceHost.
func (h *InstanceHost) ConfirmWAL(string, dbagent.LSN) {}

// TimelineHistory implements service.InstanceHost (see WALIdentity).
func (h *InstanceHost) TimelineHistory(ctx context.Context, id string, _ uint32) ([]byte, error) {
	return nil, fmt.Errorf("instance %s: the fake host has no WAL: %w", id, cairn.ErrUnsupported)
}

// WALSlot implements service.InstanceHost (see WALIdentity).
func (h *InstanceHost) WALSlot(ctx context.Context, id string) (dbagent.WALSlot, error) {
	return dbagent.WALSlot{}, fmt.Errorf("instance %s: the fake host has no WAL: %w", id, cairn.ErrUnsupported)
}

// The fake host's binary logs: an instance has one once a test writes to
// it (WriteBinlog), in files named mysql-bin.000001 on, which the test
// rotates (RotateBinlog) and purges (PurgeBinlog). Without one,
// BinlogState and StreamBinlog fail with cairn.ErrUnsupported, as for a
// datastore without a binary log. Like the WAL's, they do not go
// through Faults: an archiver calls them in the background, beside the
// tasks whose calls the tests count, fail and hold; a test that needs
// them to fail wraps the host.

type fakeBinlog struct {
	// files are every file the log had, oldest first; the server writes
	// the last, and no longer has those before purged.
	files   []fakeBinlogFile
	purged  int
	gtid    string
	changed chan struct{} // closed and replaced at every change
}

type fakeBinlogFile struct {
	name string
	data []byte
}

// binlogPiece is the most bytes one message of the fake's stream holds.
const binlogPiece = 64 << 10

// binlog returns instance id's binary log, made when create is set; the
// caller holds h.mu.
func (h *InstanceHost) binlog(id string, create bool) *fakeBinlog {
	b := h.binlogs[id]
	if b == nil && create {
		if h.binlogs == nil {
			h.binlogs = map[string]*fakeBinlog{}
		}
		b = &fakeBinlog{files: []fakeBinlogFile{{name: "mysql-bin.000001"}}, changed: make(chan struct{})}
		h.binlogs[id] = b
	}
	return b
}

// changeBinlog edits instance id's binary log, made if need be, and wakes
// its streams.
func (h *InstanceHost) changeBinlog(id string, fn func(b *fakeBinlog)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.binlog(id, true)
	fn(b)
	close(b.changed)
	b.changed = make(chan struct{})
}

// WriteBinlog appends data to the file instance id's server writes (the
// first file's data should start with the binary log's magic if the
// reader checks it) and makes gtid, when not "", its GTID position.
func (h *InstanceHost) WriteBinlog(id string, data []byte, gtid string) {
	h.changeBinlog(id, func(b *fakeBinlog) {
		last := &b.files[len(b.files)-1]
		last.data = append(last.data, data...)
		if gtid != "" {
			b.gtid = gtid
		}
	})
}

// RotateBinlog starts instance id's next binary log file, empty, and
// returns its name.
func (h *InstanceHost) RotateBinlog(id string) string {
	var name string
	h.changeBinlog(id, func(b *fakeBinlog) {
		name = fmt.Sprintf("mysql-bin.%06d", len(b.files)+1)
		b.files = append(b.files, fakeBinlogFile{name: name})
	})
	return name
}

// PurgeBinlog removes instance id's binary log files before file, as
// PURGE BINARY LOGS TO does (a file it does not have: all but the last):
// a stream asked for them fails with cairn.ErrGone.
func (h *InstanceHost) PurgeBinlog(id, file string) {
	h.changeBinlog(id, func(b *fakeBinlog) {
		for i := b.purged; i < len(b.files)-1 && b.files[i].name != file; i++ {
			b.purged = i + 1
		}
	})
}

// BinlogState implements service.InstanceHost.
func (h *InstanceHost) BinlogState(_ context.Context, id string) (dbagent.BinlogState, error) {
	h.mu.Lock()
	b := h.binlog(id, false)
	if b == nil {
		h.mu.Unlock()
		return dbagent.BinlogState{}, fmt.Errorf("instance %s: the fake host has no binary log for it: %w", id, cairn.ErrUnsupported)
	}
	st := dbagent.BinlogState{ServerID: "1", GTIDBinlogPos: b.gtid, Time: time.Now().UTC()}
	for _, f := range b.files[b.purged:] {
		st.Files = append(st.Files, dbagent.BinlogFile{Name: f.name, Size: uint64(len(f.data))})
	}
	last := b.files[len(b.files)-1]
	st.File, st.Pos = last.name, uint64(len(last.data))
	h.mu.Unlock()
	return st, nil
}

// StreamBinlog implements service.InstanceHost: it sends the files from
// file on, in messages of up to 64 KiB, and a status each time it has
// sent all there is, then waits for more, until ctx ends or fn fails.
func (h *InstanceHost) StreamBinlog(ctx context.Context, id, file string, fn func(dbagent.BinlogMessage) error) error {
	h.mu.Lock()
	b := h.binlog(id, false)
	if b == nil {
		h.mu.Unlock()
		return fmt.Errorf("instance %s: the fake host has no binary log for it: %w", id, cairn.ErrUnsupported)
	}
	i := b.purged
	for i < len(b.files) && b.files[i].name != file {
		i++
	}
	found := i < len(b.files)
	h.mu.Unlock()
	if !found {
		return fmt.Errorf("instance %s: could not find binary log file %s: %w", id, file, cairn.ErrGone)
	}
	pos := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h.mu.Lock()
		f, rotated, changed := b.files[i], i < len(b.files)-1, b.changed
		last := b.files[len(b.files)-1]
		h.mu.Unlock()
		for pos < len(f.data) {
			n := min(len(f.data)-pos, binlogPiece)
			m := dbagent.BinlogMessage{File: f.name, Start: uint64(pos), Data: bytes.Clone(f.data[pos : pos+n])}
			if err := fn(m); err != nil {
				return err
			}
			pos += n
		}
		if rotated {
			i, pos = i+1, 0
			continue
		}
		if err := fn(dbagent.BinlogMessage{ServerFile: last.name, ServerPos: uint64(len(last.data)), ServerTime: time.Now().UTC()}); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// DeleteLogPiece removes a piece behind the service's back, as damage
// or an operator would.
func (s *Store) DeleteLogPiece(p repo.LogRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.logs().pieces, p.Name())
}

// DeleteLogPieces implements service.Repository.
func (r *Repository) DeleteLogPieces(ctx context.Context, pieces []repo.LogRef) error {
	c, err := r.begin(ctx, "DeleteLogPieces")
	if err != nil {
		return err
	}
	r.s.mu.Lock()
	for _, p := range pieces {
		delete(r.s.logs().pieces, p.Name())
	}
	r.s.mu.Unlock()
	return c.End(ctx)
}
