package mariadb

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// BackupPhysical implements dbagent.Instance: mariadb-backup streams an
// xbstream to w; with a parent it copies only the pages changed since the
// parent's to_lsn. Its metadata (the LSNs, the binary log position it
// read while commits were blocked) goes to a scratch directory in the run
// directory; no data is copied to disk.
func (i *Instance) BackupPhysical(ctx context.Context, w io.Writer, label string, parent *dbagent.Record) (dbagent.Record, error) {
	rec := dbagent.Record{Datastore: i.e.ds, Method: dbagent.Physical, Label: label, Started: time.Now()}
	var fromLSN uint64
	if parent != nil {
		if parent.Method != dbagent.Physical || parent.MariaDB == nil || parent.Datastore.Type != dbagent.MariaDB || parent.MariaDB.ToLSN == 0 {
			return rec, fmt.Errorf("incremental backup: the parent is not a MariaDB physical backup: %w", cairn.ErrInvalid)
		}
		fromLSN = parent.MariaDB.ToLSN
	}
	scratch, err := os.MkdirTemp(i.cfg.RunDir, "backup-")
	if err != nil {
		return rec, fmt.Errorf("physical backup: %w", err)
	}
	defer os.RemoveAll(scratch)
	args := []string{"--backup", "--stream=xbstream", "--target-dir=" + scratch, "--extra-lsndir=" + scratch,
		"--socket=" + i.socket(), "--user=" + i.e.admin, "--datadir=" + i.cfg.DataDir}
	if parent != nil {
		args = append(args, fmt.Sprintf("--incremental-lsn=%d", fromLSN))
	}
	cw := &dbagent.CountingWriter{W: w}
	cmd := i.e.tool(ctx, "mariadb-backup", args...)
	cmd.Stdout = cw
	if _, err := dbagent.RunTool(cmd); err != nil {
		return rec, fmt.Errorf("physical backup: %w", err)
	}
	p, err := readBackupMeta(scratch)
	if err != nil {
		return rec, fmt.Errorf("physical backup: %w", err)
	}
	if p.Incremental != (parent != nil) || parent != nil && p.FromLSN != fromLSN {
		return rec, fmt.Errorf("physical backup: mariadb-backup made a backup from LSN %d, incremental %v: %w", p.FromLSN, p.Incremental, cairn.ErrCorrupt)
	}
	rec.Finished = time.Now()
	rec.Time = rec.Finished
	rec.Bytes = cw.N
	if p.BinlogGeneration, err = readGeneration(i.cfg.DataDir); err != nil {
		return rec, fmt.Errorf("physical backup: %w", err)
	}
	rec.MariaDB = p
	return rec, nil
}

// readBackupMeta reads the LSNs and the binary log position of a backup
// from the xtrabackup_checkpoints and xtrabackup_info files in dir.
func readBackupMeta(dir string) (*dbagent.MariaDBPoint, error) {
	cb, err := os.ReadFile(filepath.Join(dir, "xtrabackup_checkpoints"))
	if err != nil {
		return nil, fmt.Errorf("backup metadata: %v: %w", err, cairn.ErrCorrupt)
	}
	c, err := parseCheckpoints(string(cb))
	if err != nil {
		return nil, err
	}
	ib, err := os.ReadFile(filepath.Join(dir, "xtrabackup_info"))
	if err != nil {
		return nil, fmt.Errorf("backup metadata: %v: %w", err, cairn.ErrCorrupt)
	}
	file, pos, gtid, err := parseBackupInfo(string(ib))
	if err != nil {
		return nil, err
	}
	return &dbagent.MariaDBPoint{
		BinlogFile: file, BinlogPos: pos, GTIDBinlogPos: gtid,
		FromLSN: c.FromLSN, ToLSN: c.ToLSN, LastLSN: c.LastLSN, Incremental: c.Type == "incremental",
	}, nil
}

// headTail keeps the first and the last bytes written through it.
type headTail struct {
	w          io.Writer
	head, tail []byte
	max        int
}

func (h *headTail) Write(p []byte) (int, error) {
	if room := h.max - len(h.head); room > 0 {
		h.head = append(h.head, p[:min(room, len(p))]...)
	}
	h.tail = append(h.tail, p...)
	if len(h.tail) > 2*h.max {
		h.tail = append(h.tail[:0], h.tail[len(h.tail)-h.max:]...)
	}
	return h.w.Write(p)
}

// BackupLogical implements dbagent.Instance: mariadb-dump of the user
// databases in one consistent transaction, with routines, events and
// triggers, the accounts (CREATE USER IF NOT EXISTS and their grants),
// and the binary log coordinates and GTID position of its snapshot, which
// the record keeps.
func (i *Instance) BackupLogical(ctx context.Context, w io.Writer, label string) (dbagent.Record, error) {
	rec := dbagent.Record{Datastore: i.e.ds, Method: dbagent.Logical, Label: label, Started: time.Now()}
	db := i.openDB("")
	dbs, err := userDatabases(ctx, db)
	db.Close()
	if err != nil {
		return rec, err
	}
	args := []string{"--socket=" + i.socket(), "--user=" + i.e.admin,
		"--single-transaction", "--routines", "--events", "--triggers", "--hex-blob",
		"--master-data=2", "--gtid", "--system=users", "--insert-ignore", "--default-character-set=utf8mb4"}
	if len(dbs) > 0 {
		args = append(append(args, "--databases"), dbs...)
	}
	cw := &dbagent.CountingWriter{W: w}
	ht := &headTail{w: cw, max: 64 << 10}
	cmd := i.e.tool(ctx, "mariadb-dump", args...)
	cmd.Stdout = ht
	if _, err := dbagent.RunTool(cmd); err != nil {
		return rec, fmt.Errorf("logical backup: %w", err)
	}
	tail := ht.tail
	if len(tail) > ht.max {
		tail = tail[len(tail)-ht.max:]
	}
	file, pos, gtid, err := parseDumpPoint(string(ht.head), string(tail))
	if err != nil {
		return rec, fmt.Errorf("logical backup: %w", err)
	}
	rec.Finished = time.Now()
	rec.Time = rec.Finished
	rec.Bytes = cw.N
	rec.MariaDB = &dbagent.MariaDBPoint{BinlogFile: file, BinlogPos: pos, GTIDBinlogPos: gtid}
	return rec, nil
}

// RestoreLogical implements dbagent.Instance: the dump through the mariadb
// client, in binary mode (the dump's bytes as they are).
func (i *Instance) RestoreLogical(ctx context.Context, r io.Reader) error {
	cmd := i.e.tool(ctx, "mariadb", "--socket="+i.socket(), "--user="+i.e.admin, "--binary-mode", "--batch")
	cmd.Stdin = r
	if _, err := dbagent.RunTool(cmd); err != nil {
		return fmt.Errorf("logical restore: %w", err)
	}
	return nil
}
