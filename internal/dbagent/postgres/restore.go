package postgres

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// checkPoint checks that rec is a PostgreSQL backup of this engine's
// major version, taken by method, and returns its point.
func (e *Engine) checkPoint(rec dbagent.Record, method dbagent.Method) (*dbagent.PostgresPoint, error) {
	if rec.Method != method || rec.Datastore.Type != dbagent.PostgreSQL || rec.PostgreSQL == nil {
		return nil, fmt.Errorf("restoring a %s %s backup as a PostgreSQL %s backup: %w", rec.Datastore.Type, rec.Method, method, cairn.ErrInvalid)
	}
	if rec.Datastore.Version != e.ds.Version {
		return nil, fmt.Errorf("restoring a PostgreSQL %s backup with PostgreSQL %s: %w", rec.Datastore.Version, e.ds.Version, cairn.ErrUnsupported)
	}
	p := rec.PostgreSQL
	if method != dbagent.Logical {
		seg := p.WALSegmentSize
		if seg < 1<<20 || seg > 1<<30 || seg&(seg-1) != 0 {
			return nil, fmt.Errorf("backup record: WAL segment size %d: %w", seg, cairn.ErrCorrupt)
		}
		if p.Timeline == 0 || p.StopLSN < p.StartLSN {
			return nil, fmt.Errorf("backup record: timeline %d, WAL %s to %s: %w", p.Timeline, p.StartLSN, p.StopLSN, cairn.ErrCorrupt)
		}
	}
	return p, nil
}

// checkVersion checks that dir is a data directory of this major version.
func (e *Engine) checkVersion(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "PG_VERSION"))
	if err != nil {
		return fmt.Errorf("%s is not a PostgreSQL data directory: %v: %w", dir, err, cairn.ErrCorrupt)
	}
	if v := strings.TrimSpace(string(b)); v != e.ds.Version {
		return fmt.Errorf("%s holds PostgreSQL %s, not %s: %w", dir, v, e.ds.Version, cairn.ErrUnsupported)
	}
	return nil
}

// RestoreSnapshot implements dbagent.Engine: the snapshot's postmaster.pid
// goes (it names a process of the host the snapshot was taken on), the
// label, tablespace map and WAL of the overlay come in, the last WAL
// segment padded with zeros after the stop LSN. The server then recovers
// from the label's checkpoint to the end-of-backup record and no further.
func (e *Engine) RestoreSnapshot(ctx context.Context, cfg dbagent.Config, rec dbagent.Record, overlay io.Reader) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	p, err := e.checkPoint(rec, dbagent.Snapshot)
	if err != nil {
		return err
	}
	label, err := parseBackupLabel(p.BackupLabel)
	if err != nil {
		return err
	}
	if label.StartLSN != p.StartLSN || label.Timeline != p.Timeline {
		return fmt.Errorf("backup record: label and point disagree: %w", cairn.ErrCorrupt)
	}
	if err := e.checkVersion(cfg.DataDir); err != nil {
		return err
	}
	// The overlay is checked whole in a staging directory before anything
	// of the snapshot changes: a refused overlay leaves it as it was.
	stage, err := os.MkdirTemp(cfg.DataDir, ".cairn-overlay-")
	if err != nil {
		return fmt.Errorf("restoring a snapshot: %w", err)
	}
	defer os.RemoveAll(stage)
	seg := p.WALSegmentSize
	first, last := walFile(p.Timeline, p.StartLSN, seg), walFile(p.Timeline, p.StopLSN, seg)
	got := map[string]bool{}
	err = dbagent.ExtractTar(overlay, stage, func(name string, hdr *tar.Header) error {
		segment, inWAL := strings.CutPrefix(name, walDir+"/")
		switch {
		case name == walDir && hdr.Typeflag == tar.TypeDir:
			return nil
		case (name == labelName || name == spcName) && hdr.Typeflag == tar.TypeReg && hdr.Size <= 1<<20:
			got[name] = true
			return nil
		case inWAL && hdr.Typeflag == tar.TypeReg && walFileName.MatchString(segment) &&
			segment >= first && segment <= last && hdr.Size <= seg:
			got[segment] = true
			return nil
		}
		return fmt.Errorf("snapshot overlay: unexpected entry %s: %w", name, cairn.ErrCorrupt)
	})
	if err != nil {
		return fmt.Errorf("restoring a snapshot: %w", err)
	}
	written, err := os.ReadFile(filepath.Join(stage, labelName))
	if err != nil || string(written) != p.BackupLabel {
		return fmt.Errorf("restoring a snapshot: the overlay's backup_label is missing or differs from the record's: %w", cairn.ErrCorrupt)
	}
	if (p.TablespaceMap != "") != got[spcName] {
		return fmt.Errorf("restoring a snapshot: the overlay's tablespace_map does not match the record: %w", cairn.ErrCorrupt)
	}
	moves := [][2]string{{labelName, labelName}}
	if got[spcName] {
		moves = append(moves, [2]string{spcName, spcName})
	}
	for s := int64(p.StartLSN) / seg; s <= int64(p.StopLSN)/seg; s++ {
		name := walFile(p.Timeline, dbagent.LSN(s*seg), seg)
		if !got[name] {
			return fmt.Errorf("restoring a snapshot: the overlay lacks WAL segment %s: %w", name, cairn.ErrCorrupt)
		}
		// Zeros after the stop LSN: replay ends there.
		if err := os.Truncate(filepath.Join(stage, walDir, name), seg); err != nil {
			return fmt.Errorf("restoring a snapshot: %w", err)
		}
		moves = append(moves, [2]string{filepath.Join(walDir, name), filepath.Join(walDir, name)})
	}
	for _, name := range []string{"postmaster.pid", "postmaster.opts", "recovery.signal", "standby.signal", labelName, spcName} {
		if err := os.Remove(filepath.Join(cfg.DataDir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restoring a snapshot: %w", err)
		}
	}
	for _, m := range moves {
		if err := os.Rename(filepath.Join(stage, m[0]), filepath.Join(cfg.DataDir, m[1])); err != nil {
			return fmt.Errorf("restoring a snapshot: %w", err)
		}
	}
	return e.own(cfg.DataDir)
}

func (e *Engine) own(dir string) error {
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	return e.user.OwnTree(dir)
}

// RestorePhysical implements dbagent.Engine: the pg_basebackup tar is
// extracted, its WAL cut at the backup's end point so the server
// recovers to exactly that point, and the directory given to postgres.
// PostgreSQL 15 has no incremental backups: the chain has one part.
func (e *Engine) RestorePhysical(ctx context.Context, cfg dbagent.Config, chain []dbagent.Part) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if len(chain) != 1 {
		return fmt.Errorf("restoring a PostgreSQL physical backup of %d parts: it has exactly one: %w", len(chain), cairn.ErrUnsupported)
	}
	p, err := e.checkPoint(chain[0].Record, dbagent.Physical)
	if err != nil {
		return err
	}
	if err := e.user.MakeDir(cfg.DataDir, true); err != nil {
		return err
	}
	rc, err := chain[0].Open(ctx)
	if err != nil {
		return fmt.Errorf("restoring a physical backup: %w", err)
	}
	defer rc.Close()
	err = dbagent.ExtractTar(rc, cfg.DataDir, func(name string, hdr *tar.Header) error {
		if name == "backup_manifest" {
			return dbagent.ErrSkip // describes the backup, not the data directory
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("restoring a physical backup: %w", err)
	}
	if err := e.checkVersion(cfg.DataDir); err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(cfg.DataDir, labelName))
	if err != nil {
		return fmt.Errorf("restoring a physical backup: no backup_label: %w", cairn.ErrCorrupt)
	}
	label, err := parseBackupLabel(string(b))
	if err != nil {
		return err
	}
	if label.StartLSN != p.StartLSN || label.Timeline != p.Timeline {
		return fmt.Errorf("restoring a physical backup: its label starts at %s, the record at %s: %w", label.StartLSN, p.StartLSN, cairn.ErrCorrupt)
	}
	if err := cutWAL(cfg.DataDir, p.Timeline, p.StopLSN, p.WALSegmentSize); err != nil {
		return err
	}
	return e.own(cfg.DataDir)
}

// cutWAL zeroes the WAL after stop, in the segment holding it, so
// recovery ends exactly at stop.
func cutWAL(dataDir string, timeline uint32, stop dbagent.LSN, seg int64) error {
	path := filepath.Join(dataDir, walDir, walFile(timeline, stop, seg))
	off := int64(stop) % seg
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) && off == 0 {
		return nil // the backup ended on a segment boundary: nothing follows it
	}
	if err != nil {
		return fmt.Errorf("restoring: the WAL segment holding the backup's end: %v: %w", err, cairn.ErrCorrupt)
	}
	if fi.Size() != seg {
		return fmt.Errorf("restoring: WAL segment %s has %d bytes, want %d: %w", path, fi.Size(), seg, cairn.ErrCorrupt)
	}
	if err := os.Truncate(path, off); err != nil {
		return fmt.Errorf("restoring: cutting the WAL: %w", err)
	}
	if err := os.Truncate(path, seg); err != nil {
		return fmt.Errorf("restoring: cutting the WAL: %w", err)
	}
	return nil
}
