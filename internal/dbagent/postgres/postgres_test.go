package postgres

import (
	"archive/tar"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbagent/dbagenttest"
	"github.com/cairnproject/cairn/internal/testenv"
)

// engine returns the engine of the installed PostgreSQL 15, or skips.
func engine(t *testing.T) *Engine {
	t.Helper()
	list, err := Find(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, ds := range list {
		if ds.Version == "15" {
			e, err := New(ds)
			if err != nil {
				t.Fatal(err)
			}
			return e
		}
	}
	testenv.SkipOrFail(t, "PostgreSQL 15 is not installed (Debian package postgresql-15; test.sh installs it)")
	return nil
}

// testSettings keep the test servers small.
var testSettings = map[string]string{"shared_buffers": "16MB", "max_connections": "40"}

func connConfig(inst dbagent.Instance, db string) *pgx.ConnConfig {
	cfg, err := pgx.ParseConfig("")
	if err != nil {
		panic(err)
	}
	c := inst.Config()
	cfg.Host, cfg.Port, cfg.User, cfg.Password, cfg.TLSConfig, cfg.Fallbacks = c.RunDir, uint16(c.Port), superuser, "", nil, nil
	if db == "" {
		db = "postgres"
	}
	cfg.Database = db
	return cfg
}

func harness(t *testing.T) *dbagenttest.Harness {
	return &dbagenttest.Harness{
		Engine:   engine(t),
		Find:     Find,
		Settings: testSettings,
		Volumes:  dbagenttest.LoopVolumes{},
		Open: func(ctx context.Context, inst dbagent.Instance, db string) (*sql.DB, error) {
			return stdlib.OpenDB(*connConfig(inst, db)), nil
		},
		Login: func(ctx context.Context, inst dbagent.Instance, user, password, db string) error {
			cfg := connConfig(inst, db)
			cfg.Host, cfg.User, cfg.Password = inst.Config().Address, user, password
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			_, err = conn.Exec(ctx, "CREATE TABLE login_probe (x int); DROP TABLE login_probe")
			return err
		},
		Commit: func(ctx context.Context, conn *sql.Conn, stmt string) (dbagenttest.Bounds, error) {
			var b dbagenttest.Bounds
			tx, err := conn.BeginTx(ctx, nil)
			if err != nil {
				return b, err
			}
			defer tx.Rollback()
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return b, err
			}
			var before, after string
			if err := tx.QueryRowContext(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&before); err != nil {
				return b, err
			}
			if err := tx.Commit(); err != nil {
				return b, err
			}
			if err := conn.QueryRowContext(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&after); err != nil {
				return b, err
			}
			lb, err1 := dbagent.ParseLSN(before)
			la, err2 := dbagent.ParseLSN(after)
			if err1 != nil || err2 != nil {
				return b, fmt.Errorf("lsns %q %q", before, after)
			}
			return dbagenttest.Bounds{Before: uint64(lb), After: uint64(la)}, nil
		},
		// The commit record ends after Before and at or before After. A
		// snapshot or physical restore replays exactly to StopLSN; a
		// logical one sees a state between StartLSN and StopLSN. For the
		// logical one, WAL order is not visibility order: a commit is
		// written to the WAL before it becomes visible, so a StartLSN read
		// right after the record (After == StartLSN) may come before the
		// commit is visible to pg_dump's snapshot (a CI run saw it). With
		// WAL after the record (the writer's next transaction, begun once
		// the commit returned), the commit was visible by then.
		Covered: func(b dbagenttest.Bounds, rec dbagent.Record) (in, out bool) {
			p := rec.PostgreSQL
			if rec.Method == dbagent.Logical {
				return b.After < uint64(p.StartLSN), b.Before >= uint64(p.StopLSN)
			}
			return b.After <= uint64(p.StopLSN), b.Before >= uint64(p.StopLSN)
		},
		Block:         stopCheckpointer,
		Leftover:      leftover,
		CheckRestored: checkRestoredLSN,
		Charset:       dbagent.Database{CharacterSet: "UTF8", Collate: "C"},
		Extra: []dbagenttest.ExtraTest{
			{Name: "SnapshotNeedsItsWAL", Run: testSnapshotNeedsWAL},
			{Name: "PhysicalRecordMismatch", Run: testPhysicalRecordMismatch},
			{Name: "Tablespaces", Run: testTablespaces},
			{Name: "PhysicalBackupHoldsItsWAL", Run: testPhysicalHoldsWAL},
			{Name: "StreamWAL", Run: testStreamWAL},
			{Name: "StreamWALSlowReader", Run: testStreamWALSlowReader},
			{Name: "PointInTime", Run: testPointInTime},
			{Name: "CheckFindsCorruption", Run: testCheckFindsCorruption},
			{Name: "ServerSettings", Run: testServerSettings},
		},
	}
}

// testServerSettings: the server runs with the settings the agent gives
// it, whatever its configuration file says: those its backups and
// restores depend on.
func testServerSettings(t *testing.T, env *dbagenttest.Env) {
	src := env.Source(t, false)
	for _, want := range [][2]string{
		{"fsync", "on"},
		{"full_page_writes", "on"},
		{"wal_level", "replica"},
		{"wal_recycle", "off"},
		{"recovery_init_sync_method", "syncfs"},
		{"max_slot_wal_keep_size", DefaultSlotKeep},
	} {
		var got string
		if err := src.DB.QueryRowContext(t.Context(), "SELECT current_setting($1)", want[0]).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want[1] {
			t.Errorf("%s = %q, want %q", want[0], got, want[1])
		}
	}
}

// testPhysicalHoldsWAL: while pg_basebackup runs, a temporary slot
// reserves WAL from at or before the backup's start, so -X fetch finds it
// at the end however busy the server; after the backup the slot is gone.
func testPhysicalHoldsWAL(t *testing.T, env *dbagenttest.Env) {
	ctx := t.Context()
	src := env.Source(t, false)
	w := &slotWatcher{ctx: ctx, db: src.DB}
	rec, err := src.Inst.BackupPhysical(ctx, w, "held", nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.err != nil || len(w.slots) != 1 {
		t.Fatalf("slots while the backup wrote: %v (%v), want one", w.slots, w.err)
	}
	reserved, err := dbagent.ParseLSN(w.slots[0])
	if err != nil || reserved > rec.PostgreSQL.StartLSN {
		t.Fatalf("the slot reserves WAL from %s, after the backup's start %s (%v)", w.slots[0], rec.PostgreSQL.StartLSN, err)
	}
	var left int
	if err := src.DB.QueryRowContext(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'cairn\\_basebackup\\_%'").Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d slots left after the backup (%v)", left, err)
	}
}

// slotWatcher is a backup's writer that, on the first write, reads the
// restart LSNs of the slots holding a physical backup's WAL.
type slotWatcher struct {
	ctx   context.Context
	db    *sql.DB
	once  sync.Once
	slots []string
	err   error
}

func (w *slotWatcher) Write(p []byte) (int, error) {
	w.once.Do(func() {
		rows, err := w.db.QueryContext(w.ctx, "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name LIKE 'cairn\\_basebackup\\_%' AND temporary")
		if err != nil {
			w.err = err
			return
		}
		defer rows.Close()
		for rows.Next() {
			var lsn string
			if w.err = rows.Scan(&lsn); w.err != nil {
				return
			}
			w.slots = append(w.slots, lsn)
		}
		w.err = rows.Err()
	})
	return len(p), nil
}

// leftover reports quiesce sessions and their slots still on the server.
func leftover(ctx context.Context, db *sql.DB) (string, error) {
	var sessions, slots int
	err := db.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cairn-quiesce'),
		(SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'cairn\_quiesce\_%')`).Scan(&sessions, &slots)
	if err != nil || sessions+slots == 0 {
		return "", err
	}
	return fmt.Sprintf("%d quiesce sessions and %d replication slots", sessions, slots), nil
}

// stopCheckpointer stops the server's checkpointer (SIGSTOP), so the
// fast checkpoint pg_backup_start waits for never comes.
func stopCheckpointer(t *testing.T, ctx context.Context, inst dbagent.Instance, db *sql.DB) func() {
	var pid int
	if err := db.QueryRowContext(ctx, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	resume := func() {
		once.Do(func() {
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("resuming the checkpointer: %v", err)
			}
		})
	}
	t.Cleanup(resume)
	// Wait until it is stopped.
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		if _, rest, ok := strings.Cut(string(b), ") "); ok && strings.HasPrefix(rest, "T") {
			return resume
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// checkRestoredLSN: a server restored from a snapshot or physical backup
// ended recovery exactly at the backup's stop LSN, where its end-of-
// recovery checkpoint starts.
func checkRestoredLSN(t *testing.T, ctx context.Context, db *sql.DB, rec dbagent.Record) {
	if rec.Method == dbagent.Logical {
		return
	}
	var redo string
	var tli uint32
	if err := db.QueryRowContext(ctx, "SELECT redo_lsn::text, timeline_id FROM pg_control_checkpoint()").Scan(&redo, &tli); err != nil {
		t.Fatal(err)
	}
	if redo != rec.PostgreSQL.StopLSN.String() || tli != rec.PostgreSQL.Timeline {
		t.Errorf("restored server's checkpoint redo %s on timeline %d, want the backup's stop %s on %d",
			redo, tli, rec.PostgreSQL.StopLSN, rec.PostgreSQL.Timeline)
	}
}

func TestSuite(t *testing.T) {
	dbagenttest.Run(t, harness(t))
}

// overlayWith returns a tar of the named files.
func overlayWith(t *testing.T, files map[string][]byte) *bytes.Reader {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(content)), Mode: 0o600}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(content); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(b.Bytes())
}

// readOverlay returns the files of an overlay.
func readOverlay(t *testing.T, overlay []byte) map[string][]byte {
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(overlay))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[hdr.Name] = b
	}
}

// testSnapshotNeedsWAL shows why a snapshot backup stores the WAL from
// its start to its stop with the label: the snapshot was taken before
// pg_backup_stop wrote the end-of-backup record, so its own pg_wal ends
// too early, and PostgreSQL refuses to start from the label with it
// alone. RestoreSnapshot refuses such an overlay, and any other it did
// not write.
func testSnapshotNeedsWAL(t *testing.T, env *dbagenttest.Env) {
	ctx := t.Context()
	h := env.Harness()
	src := env.Source(t, true)
	w := dbagenttest.StartWriter(t, ctx, h, src.DB, "writes")
	if err := w.WaitFor(ctx, 20); err != nil {
		t.Fatal(err)
	}
	q, err := src.Inst.Quiesce(ctx, dbagent.QuiesceOptions{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	mount := h.Volumes.Snapshot(t, ctx, filepath.Dir(src.Inst.Config().DataDir))
	// WAL written after the snapshot, before the backup's end.
	if err := w.WaitFor(ctx, w.Committed()+20); err != nil {
		t.Fatal(err)
	}
	var overlay bytes.Buffer
	rec, err := q.Release(ctx, &overlay)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	files := readOverlay(t, overlay.Bytes())
	p := rec.PostgreSQL
	last := walDir + "/" + walFile(p.Timeline, p.StopLSN, p.WALSegmentSize)
	if string(files[labelName]) != p.BackupLabel || files[last] == nil && p.StopLSN%dbagent.LSN(p.WALSegmentSize) != 0 {
		t.Fatalf("overlay holds %d files; label %q, last segment %s", len(files), files[labelName], last)
	}
	cfg := env.Config(t, filepath.Join(mount, "data"))
	label := []byte(p.BackupLabel)
	refused := []struct {
		name  string
		files map[string][]byte
	}{
		{"label without WAL", map[string][]byte{labelName: label}},
		{"WAL without label", map[string][]byte{last: files[last]}},
		{"other label", map[string][]byte{labelName: bytes.Replace(label, []byte("LABEL: "), []byte("LABEL: x"), 1), last: files[last]}},
		{"escaping name", map[string][]byte{labelName: label, "../escaped": []byte("x")}},
		{"configuration", map[string][]byte{labelName: label, "postgresql.auto.conf": []byte("port = 1")}},
		{"segment out of range", map[string][]byte{labelName: label, walDir + "/" + walFile(p.Timeline, p.StopLSN+dbagent.LSN(p.WALSegmentSize), p.WALSegmentSize): {0}}},
	}
	before := treeDigest(t, cfg.DataDir)
	for _, r := range refused {
		if err := env.Harness().Engine.RestoreSnapshot(ctx, cfg, rec, overlayWith(t, r.files)); !errors.Is(err, cairn.ErrCorrupt) {
			t.Errorf("%s: RestoreSnapshot = %v, want ErrCorrupt", r.name, err)
		}
		// A refused overlay leaves the snapshot as it was.
		if diff := diffDigests(before, treeDigest(t, cfg.DataDir)); diff != "" {
			t.Fatalf("%s: the refused RestoreSnapshot changed the snapshot: %s", r.name, diff)
		}
	}
	if _, err := os.Stat(filepath.Join(mount, "escaped")); err == nil {
		t.Error("an overlay entry was written outside the data directory")
	}
	// PostgreSQL itself: the label and the snapshot's own WAL do not start.
	// (The snapshot's postmaster.pid names the running source's postmaster.)
	if err := os.Remove(filepath.Join(cfg.DataDir, "postmaster.pid")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, labelName), label, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := env.Harness().Engine.(*Engine).user.OwnTree(cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	inst := env.Open(t, cfg)
	srv := dbagenttest.StartNoWait(t, inst)
	if err := inst.Ready(ctx, srv.Proc.Server()); err == nil {
		t.Fatal("the snapshot started from its label without the WAL written after it")
	}
	log, err := os.ReadFile(srv.Log)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(log, []byte("WAL ends before end of online backup"))
	if i < 0 {
		t.Fatalf("server log does not say the WAL ends before the backup's end:\n%s", log)
	}
	start := bytes.LastIndexByte(log[:i], '\n') + 1
	end := bytes.IndexByte(log[i:], '\n')
	t.Logf("label without the WAL after the snapshot: %s", log[start:i+max(end, 0)])
}

// treeDigest returns each path under dir with, for a file, its size,
// modification time and inode: a file written, replaced or removed
// changes it.
func treeDigest(t *testing.T, dir string) map[string]string {
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			out[rel] = fi.Mode().String() // the staging directory comes and goes
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		out[rel] = fmt.Sprintf("%v %d %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano(), st.Ino)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffDigests(a, b map[string]string) string {
	var diff []string
	for k, v := range a {
		if b[k] != v {
			diff = append(diff, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			diff = append(diff, "+"+k)
		}
	}
	sort.Strings(diff)
	return strings.Join(diff, ", ")
}

// testPhysicalRecordMismatch: a physical backup restored with the record
// of another backup is refused, not started at the wrong point.
func testPhysicalRecordMismatch(t *testing.T, env *dbagenttest.Env) {
	ctx := t.Context()
	src := env.Source(t, false)
	one := dbagenttest.BackupFile(t, "one", func(w io.Writer) (dbagent.Record, error) {
		return src.Inst.BackupPhysical(ctx, w, "one", nil)
	})
	two := dbagenttest.BackupFile(t, "two", func(w io.Writer) (dbagent.Record, error) {
		return src.Inst.BackupPhysical(ctx, w, "two", nil)
	})
	part := dbagent.Part{Record: one.Record, Open: two.Open}
	cfg := env.Config(t, filepath.Join(dbagenttest.ReachableTempDir(t), "data"))
	if err := env.Harness().Engine.RestorePhysical(ctx, cfg, []dbagent.Part{part}); !errors.Is(err, cairn.ErrCorrupt) {
		t.Errorf("RestorePhysical with another backup's record = %v, want ErrCorrupt", err)
	}
	cfg2 := env.Config(t, filepath.Join(dbagenttest.ReachableTempDir(t), "data"))
	if err := env.Harness().Engine.RestorePhysical(ctx, cfg2, []dbagent.Part{part, part}); !errors.Is(err, cairn.ErrUnsupported) {
		t.Errorf("RestorePhysical of two parts = %v, want ErrUnsupported", err)
	}
}

// testTablespaces: a tablespace lives off the data directory, so neither a
// snapshot of the data directory's volume nor one tar on a stream can hold
// it: Quiesce refuses, and BackupPhysical fails with pg_basebackup's own
// words.
func testTablespaces(t *testing.T, env *dbagenttest.Env) {
	ctx := t.Context()
	src := env.Source(t, false)
	dir := filepath.Join(dbagenttest.ReachableTempDir(t), "ts")
	if err := env.Harness().Engine.(*Engine).user.MakeDir(dir, true); err != nil {
		t.Fatal(err)
	}
	if _, err := src.DB.ExecContext(ctx, "CREATE TABLESPACE elsewhere LOCATION "+literal(dir)); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Inst.Quiesce(ctx, dbagent.QuiesceOptions{Timeout: time.Minute}); !errors.Is(err, cairn.ErrUnsupported) {
		t.Errorf("Quiesce with a tablespace = %v, want ErrUnsupported", err)
	}
	left, err := leftover(ctx, src.DB)
	if err != nil || left != "" {
		t.Errorf("the refused quiesce left %s (%v)", left, err)
	}
	_, err = src.Inst.BackupPhysical(ctx, io.Discard, "", nil)
	if err == nil || !strings.Contains(err.Error(), "pg_basebackup: exit status 1:") || !strings.Contains(err.Error(), "tablespace") {
		t.Errorf("BackupPhysical with a tablespace = %v, want pg_basebackup's error", err)
	}
	t.Logf("BackupPhysical with a tablespace: %v", err)
}

// testCheckFindsCorruption: a heap page whose line pointers were
// overwritten on disk while the server was down is found by the check:
// a report that did not pass, with pg_amcheck's words, and no error.
func testCheckFindsCorruption(t *testing.T, s *dbagenttest.Env) {
	src := s.Source(t, false)
	ctx := t.Context()
	var rel string
	if err := src.DB.QueryRowContext(ctx, "SELECT pg_relation_filepath('static_rows')").Scan(&rel); err != nil {
		t.Fatal(err)
	}
	if _, err := src.DB.ExecContext(ctx, "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	if rep, err := src.Inst.Check(ctx, dbagent.CheckRequest{}); err != nil || !rep.Passed {
		t.Fatalf("the check before the damage: %+v, %v", rep, err)
	}
	if err := src.Inst.Stop(ctx, src.Srv.Proc.Server()); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(src.Inst.Config().DataDir, rel), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Page 0's first 16 line pointers, just after its 24-byte header.
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xff}, 64), 24); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	dbagenttest.Start(t, src.Inst)
	rep, err := src.Inst.Check(ctx, dbagent.CheckRequest{Database: "app", Query: "SELECT 1"})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if rep.Passed || !strings.Contains(rep.Detail, "pg_amcheck found corruption") || !strings.Contains(rep.Detail, "static_rows") {
		t.Fatalf("the check of a damaged page: %+v", rep)
	}
}
