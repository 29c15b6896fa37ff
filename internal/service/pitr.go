package service

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbhost"
)

// Restores to a point in time: a new instance from a backup of a source
// instance, with the source's archived WAL replayed up to the time.

// archiveViewOf returns the archive of a source instance: its running
// archiver's view, or, when none runs (the instance is gone, or the
// service just started), what the store holds. segSize is the WAL
// segment size of the source's backups (the store does not keep it).
func (s *Service) archiveViewOf(ctx context.Context, source string, segSize uint64) (archiveView, cairn.ID, Repository, error) {
	id, err := ArchiveID(source)
	if err != nil {
		return archiveView{}, id, nil, fmt.Errorf("instance %s has no archive: %w", source, cairn.ErrInvalid)
	}
	container := s.defCont
	if ar := s.archiverOf(source); ar != nil {
		container = ar.container
	}
	r, err := s.repoFor(ctx, container)
	if err != nil {
		return archiveView{}, id, nil, err
	}
	v, err := loadArchive(ctx, r, id)
	if err != nil {
		return archiveView{}, id, nil, err
	}
	v.segSize = segSize
	return v, id, r, nil
}

// planPointInTime checks that t lies in the recoverable window of the
// source instance's archive and returns the backup to start from: the
// one named (it must end by t and be rolled forward by the archive), or
// else the latest that does. Outside the window the error names it.
func (s *Service) planPointInTime(ctx context.Context, source, backupID string, t time.Time) (cairn.DatabaseBackup, error) {
	backups, err := s.completedBackups(ctx, source)
	if err != nil {
		return cairn.DatabaseBackup{}, err
	}
	var seg uint64
	for _, b := range backups {
		if rec, err := dbRecord(b); err == nil && rec.PostgreSQL != nil && rec.PostgreSQL.WALSegmentSize > 0 {
			seg = uint64(rec.PostgreSQL.WALSegmentSize)
			break
		}
	}
	if seg == 0 {
		return cairn.DatabaseBackup{}, errorf(cairn.ErrInvalid, "instance %s has no PostgreSQL backup to restore to a point in time from", source)
	}
	v, _, _, err := s.archiveViewOf(ctx, source, seg)
	if err != nil {
		return cairn.DatabaseBackup{}, err
	}
	from, to := v.window(backups)
	if from.IsZero() {
		return cairn.DatabaseBackup{}, errorf(cairn.ErrInvalid, "instance %s has no recoverable window: no backup its WAL archive rolls forward", source)
	}
	window := fmt.Sprintf("%s to %s", from.UTC().Format(time.RFC3339Nano), to.UTC().Format(time.RFC3339Nano))
	if t.Before(from) || t.After(to) {
		return cairn.DatabaseBackup{}, errorf(cairn.ErrInvalid, "point_in_time %s is outside instance %s's recoverable window, %s",
			t.UTC().Format(time.RFC3339Nano), source, window)
	}
	var best cairn.DatabaseBackup
	for _, b := range backups {
		if !v.rollsForward(b) || b.DataTimestamp.After(t) || backupID != "" && b.ID != backupID {
			continue
		}
		if best.ID == "" || b.DataTimestamp.After(best.DataTimestamp) {
			best = b
		}
	}
	if best.ID == "" {
		if backupID != "" {
			return cairn.DatabaseBackup{}, errorf(cairn.ErrInvalid, "backup %s cannot reach point_in_time %s (it is logical, ends after it, or the archive does not roll it forward); the recoverable window is %s",
				backupID, t.UTC().Format(time.RFC3339Nano), window)
		}
		return cairn.DatabaseBackup{}, errorf(cairn.ErrInvalid, "no backup of instance %s reaches point_in_time %s; the recoverable window is %s",
			source, t.UTC().Format(time.RFC3339Nano), window)
	}
	return best, nil
}

// recoveryStream writes the WAL files a recovery of b's data to t needs
// to w, and returns the spec's recovery: the timeline to follow, and the
// time (zero when no transaction of the archive ended after t: the
// recovery then replays all it is given).
func (s *Service) recoveryPlan(ctx context.Context, source string, b cairn.DatabaseBackup, t time.Time) (*dbhost.Recovery, func(ctx context.Context, w io.Writer) error, error) {
	rec, err := dbRecord(b)
	if err != nil {
		return nil, nil, err
	}
	p := rec.PostgreSQL
	if p == nil || p.WALSegmentSize <= 0 {
		return nil, nil, fmt.Errorf("backup %s: not a PostgreSQL backup: %w", b.ID, cairn.ErrInvalid)
	}
	seg := uint64(p.WALSegmentSize)
	v, id, r, err := s.archiveViewOf(ctx, source, seg)
	if err != nil {
		return nil, nil, err
	}
	chain, err := v.walChain(p.Timeline, uint64(p.StartLSN))
	if err != nil {
		return nil, nil, fmt.Errorf("the WAL from backup %s: %w", b.ID, err)
	}
	rc := &dbhost.Recovery{Timeline: chain[len(chain)-1].tli}
	if t.Before(v.lastTxn) {
		rc.Time = t
	}
	write := func(ctx context.Context, w io.Writer) error {
		_, err := walFiles(ctx, r, id, seg, chain, t, func(f walFile) error {
			return dbhost.WriteWALFile(w, f.Name, f.Data)
		})
		if err != nil {
			return err
		}
		return dbhost.WriteWALEnd(w)
	}
	return rc, write, nil
}
