package service

import (
	"context"
	"fmt"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/repo"
)

// Trimming an instance's archive: the WAL or binary log that no
// remaining backup of the instance needs goes with the backups that
// needed it. A restore or recover replays the log from a backup's start
// on its timeline (PostgreSQL: from the start of the segment holding
// it) or generation (MariaDB: from the start of its file) forward, never
// before it; so the log before that, on the oldest remaining backup's
// timeline or generation and on every earlier one, is needed by none.
// The history files stay. Nothing goes while the instance has no backup
// with a point to roll forward from: what is left then is all that a
// restore to a point in the log could ever start from.

// archiveCut is where the oldest backup's log starts: on timeline (or
// generation) tli, at byte start of the WAL (the first byte of the
// segment holding the backup's start), or at binary log file seq.
type archiveCut struct {
	tli     uint32
	start   uint64 // PostgreSQL: the first byte of the start's segment
	seq     uint64 // MariaDB: the backup's binary log file's number
	mariadb bool
}

// archiveCutOf returns the cut the instance's completed backups allow;
// ok is false when none has a point in the log (none was taken, all are
// logical, or a record cannot be read: then nothing is trimmed).
func archiveCutOf(backups []cairn.DatabaseBackup) (archiveCut, bool) {
	var cut archiveCut
	found := false
	for _, b := range backups {
		if b.Strategy == cairn.StrategyLogical {
			continue
		}
		rec, err := dbRecord(b)
		if err != nil {
			return archiveCut{}, false
		}
		var c archiveCut
		switch {
		case rec.PostgreSQL != nil && rec.PostgreSQL.StartLSN > 0:
			// A replay starts at the start's segment (walChain): the cut
			// is that segment's first byte. A record without the segment
			// size is cut at the largest a server may have, 1 GiB.
			seg := uint64(rec.PostgreSQL.WALSegmentSize)
			if seg == 0 {
				seg = 1 << 30
			}
			start := uint64(rec.PostgreSQL.StartLSN)
			c = archiveCut{tli: rec.PostgreSQL.Timeline, start: start - start%seg}
		case rec.MariaDB != nil && rec.MariaDB.BinlogFile != "":
			seq, ok := binlogSeq(rec.MariaDB.BinlogFile)
			if !ok {
				return archiveCut{}, false
			}
			c = archiveCut{tli: max(rec.MariaDB.BinlogGeneration, 1), seq: seq, mariadb: true}
		default:
			// A snapshot or physical backup without its point: keep all.
			return archiveCut{}, false
		}
		if !found || c.before(cut) {
			cut, found = c, true
		}
	}
	return cut, found
}

// before orders cuts: the earlier place in the log.
func (c archiveCut) before(o archiveCut) bool {
	if c.tli != o.tli {
		return c.tli < o.tli
	}
	if c.mariadb {
		return c.seq < o.seq
	}
	return c.start < o.start
}

// needless reports whether a piece of log lies wholly before the cut.
func (c archiveCut) needless(p repo.LogRef) bool {
	if c.mariadb {
		gen, file, ok := parseBinlogLog(p.Log)
		if !ok {
			return false
		}
		seq, _ := binlogSeq(file)
		return gen < c.tli || gen == c.tli && seq < c.seq
	}
	tli, ok := parseWALLog(p.Log)
	if !ok {
		return false // a history file, or not the archive's
	}
	return tli < c.tli || tli == c.tli && p.End <= c.start
}

// trimArchive deletes the pieces of an instance's archive that no
// completed backup of it needs, once backup deleted (of the instance)
// is gone, and returns how many and their stored bytes. Nothing goes
// while a restore or recover may be replaying the archive: the instance
// itself recovering, or another instance being made from one of its
// backups (a restore, a drill), the deleted one included.
func (s *Service) trimArchive(ctx context.Context, instanceID, deleted string) (int, int64, error) {
	id, err := ArchiveID(instanceID)
	if err != nil {
		return 0, 0, nil // not an instance with an archive
	}
	var backups []cairn.DatabaseBackup
	busy := false
	err = s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		all, err := tx.DatabaseBackups(ctx, catalog.Filter{InstanceID: instanceID})
		if err != nil {
			return err
		}
		ofInstance := map[string]bool{deleted: true}
		for _, b := range all {
			ofInstance[b.ID] = true
			if b.Status == cairn.DatabaseBackupCompleted {
				backups = append(backups, b)
			}
		}
		insts, err := tx.Instances(ctx, catalog.Filter{})
		if err != nil {
			return err
		}
		for _, in := range insts {
			if in.ID == instanceID && in.Status == cairn.InstanceRecover ||
				in.Status == cairn.InstanceBuild && ofInstance[in.BackupID] {
				busy = true
			}
		}
		return nil
	})
	if err != nil || busy {
		return 0, 0, err
	}
	cut, ok := archiveCutOf(backups)
	if !ok {
		return 0, 0, nil
	}
	r, err := s.repoFor(ctx, s.defCont)
	if err != nil {
		return 0, 0, err
	}
	pieces, _, err := r.LogPieces(ctx, id)
	if err != nil {
		return 0, 0, fmt.Errorf("archive of instance %s: %w", instanceID, err)
	}
	var gone []repo.LogRef
	var size int64
	for _, p := range pieces {
		if cut.needless(p) {
			gone = append(gone, p)
			size += p.Size
		}
	}
	if len(gone) == 0 {
		return 0, 0, nil
	}
	if err := r.DeleteLogPieces(ctx, gone); err != nil {
		return 0, 0, fmt.Errorf("trimming the archive of instance %s: %w", instanceID, err)
	}
	// A running archiver finds the archive's new start at its next
	// relist (it runs between the archiver's stores, so it tells pieces
	// gone from the start from holes).
	return len(gone), size, nil
}
