package servicetest

import (
	"bytes"
	"context"
	"fmt"
	"maps"

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
