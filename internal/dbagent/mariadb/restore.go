package mariadb

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

// checkRecord checks that rec is a MariaDB backup of this engine's major
// version taken by method.
func (e *Engine) checkRecord(rec dbagent.Record, method dbagent.Method) error {
	if rec.Method != method || rec.Datastore.Type != dbagent.MariaDB || rec.MariaDB == nil {
		return fmt.Errorf("restoring a %s %s backup as a MariaDB %s backup: %w", rec.Datastore.Type, rec.Method, method, cairn.ErrInvalid)
	}
	if rec.Datastore.Version != e.ds.Version {
		return fmt.Errorf("restoring a MariaDB %s backup with MariaDB %s: %w", rec.Datastore.Version, e.ds.Version, cairn.ErrUnsupported)
	}
	return nil
}

// RestoreSnapshot implements dbagent.Engine: the snapshot is the data
// directory as a crash would have left it while commits were blocked;
// InnoDB's crash recovery and the binary log's bring it to the recorded
// position when it starts. The overlay must be empty.
func (e *Engine) RestoreSnapshot(ctx context.Context, cfg dbagent.Config, rec dbagent.Record, overlay io.Reader) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := e.checkRecord(rec, dbagent.Snapshot); err != nil {
		return err
	}
	if fi, err := os.Stat(filepath.Join(cfg.DataDir, "mysql")); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s is not a MariaDB data directory: %w", cfg.DataDir, cairn.ErrCorrupt)
	}
	err := dbagent.ExtractTar(overlay, cfg.DataDir, func(name string, _ *tar.Header) error {
		return fmt.Errorf("snapshot overlay: unexpected entry %s: %w", name, cairn.ErrCorrupt)
	})
	if err != nil {
		return fmt.Errorf("restoring a snapshot: %w", err)
	}
	return e.own(cfg.DataDir)
}

func (e *Engine) own(dir string) error {
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	return e.user.OwnTree(dir)
}

// checkChain checks that chain is a full backup and its incrementals, each
// starting where the one before ended.
func (e *Engine) checkChain(chain []dbagent.Part) error {
	if len(chain) == 0 {
		return fmt.Errorf("restoring an empty chain: %w", cairn.ErrInvalid)
	}
	for k, p := range chain {
		if err := e.checkRecord(p.Record, dbagent.Physical); err != nil {
			return err
		}
		m := p.Record.MariaDB
		if k == 0 && m.Incremental {
			return fmt.Errorf("restoring a chain that starts with an incremental backup: %w", cairn.ErrInvalid)
		}
		if k > 0 && (!m.Incremental || m.FromLSN != chain[k-1].Record.MariaDB.ToLSN) {
			return fmt.Errorf("restoring a chain: part %d starts at LSN %d, the part before ends at %d: %w",
				k, m.FromLSN, chain[k-1].Record.MariaDB.ToLSN, cairn.ErrInvalid)
		}
	}
	return nil
}

// backupFiles are mariadb-backup's own files in a prepared backup.
var backupFiles = []string{"backup-my.cnf", "xtrabackup_checkpoints", "xtrabackup_info",
	"xtrabackup_binlog_info", "xtrabackup_binlog_pos_innodb", "mariadb_backup_checkpoints",
	"mariadb_backup_info", "mariadb_backup_binlog_info"}

// RestorePhysical implements dbagent.Engine: the full backup is extracted
// into the data directory (mbstream) and prepared, then each incremental
// is extracted into a scratch directory beside it and applied. Each
// part's own metadata must match its record.
func (e *Engine) RestorePhysical(ctx context.Context, cfg dbagent.Config, chain []dbagent.Part) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := e.checkChain(chain); err != nil {
		return err
	}
	if err := e.user.MakeDir(cfg.DataDir, true); err != nil {
		return err
	}
	if err := e.extract(ctx, chain[0], cfg.DataDir); err != nil {
		return err
	}
	if err := e.prepare(ctx, "--target-dir="+cfg.DataDir); err != nil {
		return err
	}
	for _, part := range chain[1:] {
		dir, err := os.MkdirTemp(filepath.Dir(cfg.DataDir), ".cairn-incremental-")
		if err != nil {
			return fmt.Errorf("restoring a physical backup: %w", err)
		}
		err = e.extract(ctx, part, dir)
		if err == nil {
			err = e.prepare(ctx, "--target-dir="+cfg.DataDir, "--incremental-dir="+dir)
		}
		if rerr := os.RemoveAll(dir); err == nil {
			err = rerr
		}
		if err != nil {
			return err
		}
	}
	for _, name := range backupFiles {
		if err := os.Remove(filepath.Join(cfg.DataDir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restoring a physical backup: %w", err)
		}
	}
	return e.own(cfg.DataDir)
}

// extract unpacks part's xbstream into dir and checks its metadata
// against the record.
func (e *Engine) extract(ctx context.Context, part dbagent.Part, dir string) error {
	rc, err := part.Open(ctx)
	if err != nil {
		return fmt.Errorf("restoring a physical backup: %w", err)
	}
	defer rc.Close()
	cmd := e.tool(ctx, "mbstream", "-x", "-C", dir)
	// mbstream takes no --no-defaults.
	cmd.Args = []string{cmd.Args[0], "-x", "-C", dir}
	cmd.Stdin = rc
	if _, err := dbagent.RunTool(cmd); err != nil {
		return fmt.Errorf("restoring a physical backup: %w", err)
	}
	got, err := readBackupMeta(dir)
	if err != nil {
		return fmt.Errorf("restoring a physical backup: %w", err)
	}
	want := part.Record.MariaDB
	if got.FromLSN != want.FromLSN || got.ToLSN != want.ToLSN || got.Incremental != want.Incremental ||
		got.BinlogFile != want.BinlogFile || got.BinlogPos != want.BinlogPos {
		return fmt.Errorf("restoring a physical backup: the stream holds LSNs %d to %d at %s:%d, the record %d to %d at %s:%d: %w",
			got.FromLSN, got.ToLSN, got.BinlogFile, got.BinlogPos, want.FromLSN, want.ToLSN, want.BinlogFile, want.BinlogPos, cairn.ErrCorrupt)
	}
	return nil
}

func (e *Engine) prepare(ctx context.Context, args ...string) error {
	cmd := e.tool(ctx, "mariadb-backup", append([]string{"--prepare"}, args...)...)
	if _, err := dbagent.RunTool(cmd); err != nil {
		return fmt.Errorf("restoring a physical backup: %s: %w", strings.Join(args, " "), err)
	}
	return nil
}
