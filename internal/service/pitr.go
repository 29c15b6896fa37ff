package service

import (
	"context"
	"fmt"
	"github.com/cairnproject/cairn/internal/binlog"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/repo"
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
// segment size of the source's backups (the store does not keep it); 0
// loads a MariaDB archive. tli is the timeline (PostgreSQL) or binary
// log generation (MariaDB) to read the archive along: the one the
// server is on; 0 for the one the running archiver follows, else the
// archive's newest.
func (s *Service) archiveViewOf(ctx context.Context, source string, segSize uint64, tli uint32) (archiveView, cairn.ID, Repository, error) {
	id, err := ArchiveID(source)
	if err != nil {
		return archiveView{}, id, nil, fmt.Errorf("instance %s has no archive: %w", source, cairn.ErrInvalid)
	}
	container := s.defCont
	if ar := s.archiverOf(source); ar != nil {
		container = ar.container
		if v := ar.view(); tli == 0 && v.loaded && v.state == "streaming" && v.mariadb == (segSize == 0) {
			tli = v.timeline
		}
	}
	r, err := s.repoFor(ctx, container)
	if err != nil {
		return archiveView{}, id, nil, err
	}
	if segSize == 0 {
		v, err := loadBinlogArchive(ctx, r, id, tli)
		return v, id, r, err
	}
	v, err := loadArchive(ctx, r, id, tli)
	if err != nil {
		return archiveView{}, id, nil, err
	}
	v.segSize = segSize
	return v, id, r, nil
}

// serverTimeline is the timeline (PostgreSQL) or binary log generation
// (MariaDB) instance inst's server is on: the one its archiver streams;
// else, when its last recover was undone, the one that recover began on
// (the undo put the volume back there); else 0, the archive's newest.
func (s *Service) serverTimeline(inst cairn.Instance) uint32 {
	if ar := s.archiverOf(inst.ID); ar != nil {
		if v := ar.view(); v.loaded && v.state == "streaming" {
			return v.timeline
		}
	}
	if rc := inst.Recovery; rc != nil && rc.Status == cairn.RecoveryUndone {
		return rc.ArchiveTimeline
	}
	return 0
}

// planPointInTime checks that t lies in the recoverable window of the
// source instance's archive and returns the backup to start from: the
// one named (it must end by t and be rolled forward by the archive), or
// else the latest that does. Outside the window the error names it.
//
// Only the caller's backups count: the source may be an instance gone
// from the catalog whose backups stay (or were adopted from the store).
//
// tli is the timeline or generation to read the archive along
// (archiveViewOf).
func (s *Service) planPointInTime(ctx context.Context, c Caller, source, backupID string, t time.Time, tli uint32) (cairn.DatabaseBackup, error) {
	all, err := s.completedBackups(ctx, source)
	if err != nil {
		return cairn.DatabaseBackup{}, err
	}
	var backups []cairn.DatabaseBackup
	for _, b := range all {
		if c.may(b.ProjectID) {
			backups = append(backups, b)
		}
	}
	if len(all) > 0 && len(backups) == 0 {
		return cairn.DatabaseBackup{}, errorf(cairn.ErrNotFound, "instance %s not found", source)
	}
	var seg uint64
	mariadb := false
	for _, b := range backups {
		rec, err := dbRecord(b)
		if err != nil {
			continue
		}
		if rec.PostgreSQL != nil && rec.PostgreSQL.WALSegmentSize > 0 {
			seg = uint64(rec.PostgreSQL.WALSegmentSize)
			break
		}
		if rec.MariaDB != nil && rec.MariaDB.BinlogFile != "" {
			mariadb = true
			break
		}
	}
	if seg == 0 && !mariadb {
		return cairn.DatabaseBackup{}, errorf(cairn.ErrInvalid, "instance %s has no snapshot or physical backup to restore to a point in time from", source)
	}
	v, _, _, err := s.archiveViewOf(ctx, source, seg, tli)
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
//
// inPlace says the recovery is of the source itself (a recover in
// place), not of a new instance: a MariaDB server then goes on with a
// new generation of its binary log. tli is the timeline or generation to
// follow (archiveViewOf).
func (s *Service) recoveryPlan(ctx context.Context, source string, b cairn.DatabaseBackup, t time.Time, inPlace bool,
	tli uint32) (*dbhost.Recovery, func(ctx context.Context, w io.Writer) error, error) {
	rec, err := dbRecord(b)
	if err != nil {
		return nil, nil, err
	}
	if rec.MariaDB != nil {
		return s.binlogRecoveryPlan(ctx, source, b, rec, t, inPlace, tli)
	}
	p := rec.PostgreSQL
	if p == nil || p.WALSegmentSize <= 0 {
		return nil, nil, fmt.Errorf("backup %s: not a PostgreSQL backup: %w", b.ID, cairn.ErrInvalid)
	}
	seg := uint64(p.WALSegmentSize)
	v, id, r, err := s.archiveViewOf(ctx, source, seg, tli)
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

// binlogRecoveryPlan is recoveryPlan for a MariaDB backup: the archived
// binary log files from the backup's, the last cut before the first
// transaction that committed after t's second (the binary log stamps
// events to the second), and where the replay starts.
func (s *Service) binlogRecoveryPlan(ctx context.Context, source string, b cairn.DatabaseBackup, rec dbagent.Record,
	t time.Time, inPlace bool, tli uint32) (*dbhost.Recovery, func(ctx context.Context, w io.Writer) error, error) {
	p := rec.MariaDB
	if p.BinlogFile == "" {
		return nil, nil, fmt.Errorf("backup %s has no binary log coordinates: %w", b.ID, cairn.ErrInvalid)
	}
	v, id, r, err := s.archiveViewOf(ctx, source, 0, tli)
	if err != nil {
		return nil, nil, err
	}
	chain, err := v.binlogChain(p.BinlogFile, p.BinlogPos)
	if err != nil {
		return nil, nil, fmt.Errorf("the binary log from backup %s: %w", b.ID, err)
	}
	// A new instance starts its own archive at generation 1; a server
	// recovered in place takes one its archive has never held.
	gen := uint32(1)
	if inPlace {
		gen = max(v.binMaxGen, v.timeline) + 1
	}
	rc := &dbhost.Recovery{Binlog: &dbagent.BinlogStart{File: p.BinlogFile, Pos: p.BinlogPos, GTID: p.GTIDBinlogPos, Generation: gen}}
	write := func(ctx context.Context, w io.Writer) error {
		err := binlogFiles(ctx, r, id, v.timeline, chain, p.BinlogPos, t, func(name string, data []byte) error {
			return dbhost.WriteWALFile(w, name, data)
		})
		if err != nil {
			return err
		}
		return dbhost.WriteWALEnd(w)
	}
	return rc, write, nil
}

// binlogFiles reads the chain's files from r and hands fn each whole,
// in order, from the first; it stops with the file holding the first
// transaction after start (a position in the first file) that committed
// after until's second, cut where that transaction begins. Every file
// it hands on but the last must end at an event boundary: a file whose
// end the archive lost fails.
func binlogFiles(ctx context.Context, r Repository, id cairn.ID, gen uint32, chain []binlogSpan, start uint64, until time.Time,
	fn func(name string, data []byte) error) error {
	pieces, _, err := r.LogPieces(ctx, id)
	if err != nil {
		return err
	}
	byLog := map[string][]repo.LogRef{}
	for _, p := range pieces {
		byLog[p.Log] = append(byLog[p.Log], p)
	}
	second := until.Truncate(time.Second)
	for i, sp := range chain {
		data := make([]byte, 0, sp.end)
		for _, p := range byLog[binlogLog(gen, sp.file)] {
			pos := uint64(len(data))
			if p.End <= pos || p.Start > pos {
				continue // an overlap already read
			}
			_, body, err := r.ReadLogPiece(ctx, p)
			if err != nil {
				return err
			}
			data = append(data, body[pos-p.Start:]...)
		}
		if uint64(len(data)) < sp.end {
			return fmt.Errorf("the archive lacks binary log %s from %d: %w", sp.file, len(data), cairn.ErrInvalid)
		}
		dec := binlog.NewDecoder()
		events, err := dec.Write(data)
		if err != nil {
			return fmt.Errorf("archived binary log %s: %w: %w", sp.file, err, cairn.ErrCorrupt)
		}
		if !dec.Boundary() {
			return fmt.Errorf("archived binary log %s ends inside an event at %d: %w", sp.file, len(data), cairn.ErrCorrupt)
		}
		cut := -1
		// Where the transaction being read began: every transaction
		// begins with its GTID event.
		txn := uint64(len(binlog.Magic))
		if i == 0 {
			txn = start
		}
		for _, e := range events {
			if i == 0 && e.Pos < start {
				continue
			}
			if e.GTID != nil {
				txn = e.Pos
			}
			if e.Commit && e.Time.After(second) {
				cut = int(txn)
				break
			}
		}
		if cut >= 0 {
			return fn(sp.file, data[:cut])
		}
		if err := fn(sp.file, data); err != nil {
			return err
		}
	}
	return nil
}
