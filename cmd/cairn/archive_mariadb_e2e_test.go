package main

import (
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/dbagent/dbagenttest"
	"github.com/cairnproject/cairn/internal/dbagent/mariadb"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/testenv"
)

// mariaDB opens a MariaDB instance's app database as bob over TCP, or,
// with admin, the server as its administrator over its unix socket.
func mariaDB(t *testing.T, in map[string]any, admin bool) *sql.DB {
	t.Helper()
	a := in["addresses"].([]any)[0].(map[string]any)
	dsn := fmt.Sprintf("bob:pw-12345@tcp(%v:%v)/app?parseTime=true", a["address"], a["port"])
	if admin {
		dsn = fmt.Sprintf("root@unix(/run/cairn-db/%v/mysqld.sock)/?parseTime=true", a["port"])
	}
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// mariaStamps makes an active MariaDB instance with database app and
// user bob, and in it the table stamps (id, pad) the tests commit rows
// into; it returns the instance and app opened as bob.
func (p *svcProc) mariaStamps(name string) (map[string]any, *sql.DB) {
	p.t.Helper()
	in := p.createInstance(name, "mariadb", "10.11")
	db := mariaDB(p.t, in, false)
	if _, err := db.ExecContext(p.t.Context(), "CREATE TABLE stamps (id INT PRIMARY KEY, pad TEXT)"); err != nil {
		p.t.Fatal(err)
	}
	return in, db
}

// mariaCommit commits rows [from, from+n), one transaction each, into
// stamps and returns the server's clock when the last one's statement
// began: the time its binary log events carry (both are the statement's
// start). A clock read after the commit could fall in the next second,
// which no event of the archive carries (a busy machine found that).
func mariaCommit(t *testing.T, db *sql.DB, from, n int) time.Time {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := db.ExecContext(t.Context(), "INSERT INTO stamps (id, pad) VALUES (?, NOW(6))", i); err != nil {
			t.Fatal(err)
		}
	}
	var at time.Time
	if err := db.QueryRowContext(t.Context(), "SELECT CAST(pad AS DATETIME(6)) FROM stamps WHERE id = ?", from+n-1).Scan(&at); err != nil {
		t.Fatal(err)
	}
	return at
}

// nextSecond waits until the server's clock is past the second of at:
// the binary log stamps events to the second, so commits made after
// this are told apart from those before.
func nextSecond(t *testing.T, db *sql.DB, at time.Time) {
	t.Helper()
	for {
		var now time.Time
		if err := db.QueryRowContext(t.Context(), "SELECT NOW(6)").Scan(&now); err != nil {
			t.Fatal(err)
		}
		if now.Truncate(time.Second).After(at.Truncate(time.Second)) {
			return
		}
		time.Sleep(time.Until(now.Truncate(time.Second).Add(time.Second)) + 10*time.Millisecond)
	}
}

func mariaIDs(t *testing.T, db *sql.DB) []int {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), "SELECT id FROM stamps ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []int
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestPointInTimeRestoreMariaDB: a MariaDB instance's binary log streams
// into the archive, across rotations and a service killed with -9; a
// snapshot backup opens the recoverable window; a new instance restored
// to a second between two groups of commits holds the rows committed by
// then and none after, and takes writes; a point outside the window is
// refused, naming it.
func TestPointInTimeRestoreMariaDB(t *testing.T) {
	t.Parallel()
	needInstances(t)
	needMariaDB(t)
	data := dbagenttest.ReachableTempDir(t)
	logHostOnFailure(t, data)
	p := startService(t, data)
	in, db := p.mariaStamps("mdb-pitr")
	id, admin := in["id"].(string), mariaDB(t, in, true)
	mariaCommit(t, db, 0, 20)
	backup := completedBackupOf(p, id, "snapshot")
	mariaCommit(t, db, 100, 10)
	// A rotation inside the window, then the service killed and
	// started again while commits go on.
	if _, err := admin.ExecContext(t.Context(), "FLUSH BINARY LOGS"); err != nil {
		t.Fatal(err)
	}
	p.waitArchived(id, mariaCommit(t, db, 110, 5).Truncate(time.Second))
	p.kill()
	target := mariaCommit(t, db, 115, 5)
	p = startService(t, data)
	nextSecond(t, db, target)
	if _, err := admin.ExecContext(t.Context(), "FLUSH BINARY LOGS"); err != nil {
		t.Fatal(err)
	}
	mariaCommit(t, db, 200, 20)
	if _, err := db.ExecContext(t.Context(), "DROP TABLE stamps"); err != nil {
		t.Fatal(err)
	}
	// A row after the drop, stamped as its commit is: once it is
	// archived, so is the drop before it.
	if _, err := db.ExecContext(t.Context(), "CREATE TABLE after_mistake (x INT, at DATETIME(6))"); err != nil {
		t.Fatal(err)
	}
	a := p.waitArchived(id, mariaAfterMistake(t, db, 1).Truncate(time.Second))
	if gaps, _ := a["gaps"].([]any); len(gaps) != 0 || !strings.Contains(fmt.Sprint(a["archived_position"]), "mysql-bin.") ||
		a["archived_gtid"] == "" || a["archived_lsn"] != nil {
		t.Fatalf("the archive: %v", a)
	}

	var refused map[string]any
	if code := p.callDB("POST", "/instances", map[string]any{"instance": map[string]any{
		"name": "too-early", "datastore": map[string]any{"type": "mariadb", "version": "10.11"},
		"restorePoint": map[string]any{"instance": id, "point_in_time": backupTime(t, backup).Add(-time.Hour).Format(time.RFC3339)}}}, &refused); code != 400 ||
		!strings.Contains(fmt.Sprint(refused), "recoverable window") {
		t.Fatalf("a point outside the window: %d %v", code, refused)
	}

	restored := p.restoreTo("mdb-pitr-restored", "mariadb", "10.11", id, target, backup["id"])
	rdb := mariaDB(t, restored, false)
	want := slices.Concat(idRange(0, 20), idRange(100, 20))
	if ids := mariaIDs(t, rdb); fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("restored rows %v, want %v", ids, want)
	}
	if _, err := rdb.ExecContext(t.Context(), "INSERT INTO stamps (id) VALUES (999)"); err != nil {
		t.Fatalf("the restored instance takes no write: %v", err)
	}
	// The restored instance archives a log of its own.
	p.waitArchived(restored["id"].(string), mariaCommit(t, rdb, 1000, 1).Truncate(time.Second))

	// The second file gone from the store: the archive shows the gap,
	// and a restore across it is refused.
	aid, err := service.ArchiveID(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(data, "backups", "volumebackups", "logs", aid.String(), "bl-00000001-mysql-bin.000002")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(pointTimeout); ; {
		a, w := p.archiveOf(id)
		if gaps, _ := a["gaps"].([]any); w == nil && len(gaps) == 1 && strings.Contains(fmt.Sprint(gaps), "mysql-bin.000003:0") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the archive never showed the missing file: %v, window %v", a, w)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var gapped map[string]any
	if code := p.callDB("POST", "/instances", map[string]any{"instance": map[string]any{
		"name": "across-a-gap", "datastore": map[string]any{"type": "mariadb", "version": "10.11"},
		"restorePoint": map[string]any{"instance": id, "point_in_time": target.UTC().Format(time.RFC3339Nano)}}}, &gapped); code != 400 {
		t.Fatalf("a restore across a missing file: %d %v", code, gapped)
	}
}

// TestRecoverInPlaceMariaDB: rows in three groups, a snapshot backup
// after the first, then a mistake (the table dropped). The instance
// recovered in place to a second between the second and third groups
// holds exactly the first two, on its own port, and takes writes; its
// binary log goes on in a new generation of the archive, apart from the
// old one's files of the same names. Undone, the instance is back as
// the mistake left it, and the archive goes on with the old generation
// where it ended.
func TestRecoverInPlaceMariaDB(t *testing.T) {
	t.Parallel()
	needInstances(t)
	needMariaDB(t)
	data := dbagenttest.ReachableTempDir(t)
	logHostOnFailure(t, data)
	p := startService(t, data)
	m := makeMariaMistake(t, p, "mdb-recover")
	in, id, target := m.in, m.id, m.target
	before, _ := p.archiveOf(id)

	got := p.recoverTo(id, target, "")
	if rc, _ := got["recovery"].(map[string]any); got["status"] != "ACTIVE" || rc["status"] != "COMPLETED" {
		t.Fatalf("after the recover: %v", got)
	}
	if fmt.Sprint(got["addresses"]) != fmt.Sprint(in["addresses"]) {
		t.Fatalf("the recovered instance listens on %v, not %v as before", got["addresses"], in["addresses"])
	}
	db := mariaDB(t, got, false)
	if ids := mariaIDs(t, db); fmt.Sprint(ids) != fmt.Sprint(m.want()) {
		t.Fatalf("rows after the recover %v, want %v", ids, m.want())
	}
	a := p.waitArchived(id, mariaCommit(t, db, 999, 1).Truncate(time.Second))
	if gaps, _ := a["gaps"].([]any); a["timeline"] != float64(2) || len(gaps) != 0 {
		t.Fatalf("the archive after the recover: %v (before: %v)", a, before)
	}
	db.Close()

	var undo struct {
		Recovery map[string]any `json:"recovery"`
	}
	if code := p.callDB("POST", "/instances/"+id+"/action", map[string]any{"undo_recover": map[string]any{}}, &undo); code != 202 ||
		undo.Recovery["status"] != "UNDOING" {
		t.Fatalf("undo: %d %v", code, undo)
	}
	insts, _ := p.dbSettled()
	got = byID(t, insts, id)
	if rc, _ := got["recovery"].(map[string]any); got["status"] != "ACTIVE" || rc["status"] != "UNDONE" {
		t.Fatalf("after the undo: %v", got)
	}
	db = mariaDB(t, got, false)
	var n int
	if err := db.QueryRowContext(t.Context(), "SELECT count(*) FROM after_mistake").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after the undo, the table made after the mistake: %d rows, %v (want the 1 the mistake left)", n, err)
	}
	if _, err := db.ExecContext(t.Context(), "SELECT 1 FROM stamps"); err == nil {
		t.Fatal("after the undo, the dropped table is back")
	}
	a = p.waitArchived(id, mariaAfterMistake(t, db, 2).Truncate(time.Second))
	if gaps, _ := a["gaps"].([]any); a["timeline"] != float64(1) || len(gaps) != 0 {
		t.Fatalf("the archive after the undo: %v", a)
	}
}

func needMariaDB(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(mariadb.Server); err != nil {
		testenv.SkipOrFail(t, "MariaDB is missing (test.sh installs mariadb-server)")
	}
}

// makeMariaMistake is the mistake scenario on a MariaDB instance: rows
// 0-19, a snapshot backup, rows 100-119, the target (the server's clock
// then), rows 200-219 in a later second, then the mistake (stamps
// dropped, after_mistake made with a row), all archived.
func makeMariaMistake(t *testing.T, p *svcProc, name string) mistake {
	t.Helper()
	var m mistake
	var db *sql.DB
	m.in, db = p.mariaStamps(name)
	m.id = m.in["id"].(string)
	defer db.Close()
	mariaCommit(t, db, 0, 20)
	m.backup = completedBackupOf(p, m.id, "snapshot")
	m.target = mariaCommit(t, db, 100, 20)
	nextSecond(t, db, m.target)
	mariaCommit(t, db, 200, 20)
	if _, err := db.ExecContext(t.Context(), "DROP TABLE stamps"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(t.Context(), "CREATE TABLE after_mistake (x INT, at DATETIME(6))"); err != nil {
		t.Fatal(err)
	}
	m.at = mariaAfterMistake(t, db, 1)
	p.waitArchived(m.id, m.at.Truncate(time.Second))
	return m
}

// TestRecoverKill9MariaDB: TestRecoverKill9's rounds on a MariaDB
// instance.
func TestRecoverKill9MariaDB(t *testing.T) {
	t.Parallel()
	needInstances(t)
	needMariaDB(t)
	data := dbagenttest.ReachableTempDir(t)
	logHostOnFailure(t, data)
	p := startService(t, data)
	m := makeMariaMistake(t, p, "mdb-recover-kill")
	p.stop()
	recoverKill9(t, data, m.id, m.target, fmt.Sprint(m.want()), func(p *svcProc) []int {
		db := mariaDB(t, p.waitHealthy(m.id), false)
		defer db.Close()
		var n int
		if err := db.QueryRowContext(t.Context(), "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'app' AND table_name = 'stamps'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return nil
		}
		return mariaIDs(t, db)
	})
}

// mariaAfterMistake adds row x to table after_mistake (x INT, at
// DATETIME(6)) and returns the time of its statement (NOW(6) in it),
// which is the time the binary log stamps the statement's events with.
// A clock read after the commit can be a second later than those stamps
// on a busy machine, and then no archived transaction ever reaches it.
func mariaAfterMistake(t *testing.T, db *sql.DB, x int) time.Time {
	t.Helper()
	if _, err := db.ExecContext(t.Context(), "INSERT INTO after_mistake (x, at) VALUES (?, NOW(6))", x); err != nil {
		t.Fatal(err)
	}
	var at time.Time
	if err := db.QueryRowContext(t.Context(), "SELECT CAST(at AS DATETIME(6)) FROM after_mistake WHERE x = ?", x).Scan(&at); err != nil {
		t.Fatal(err)
	}
	return at
}

// TestRecoverFromRestorePointMariaDB: TestRecoverFromRestorePoint on a
// MariaDB instance: the recover reverts to a restore point taken after
// the backup and replays the binary log from its GTID position.
func TestRecoverFromRestorePointMariaDB(t *testing.T) {
	t.Parallel()
	needInstances(t)
	needMariaDB(t)
	data := dbagenttest.ReachableTempDir(t)
	logHostOnFailure(t, data)
	p := startService(t, data, "--restore-point-interval", "10s")
	in, db := p.mariaStamps("mdb-points")
	id := in["id"].(string)
	mariaCommit(t, db, 0, 20)
	backup := completedBackupOf(p, id, "snapshot")
	newest := p.waitRestorePoint(id, mariaCommit(t, db, 100, 20))
	target := mariaCommit(t, db, 200, 20)
	nextSecond(t, db, target)
	mariaCommit(t, db, 300, 20)
	if _, err := db.ExecContext(t.Context(), "DROP TABLE stamps"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(t.Context(), "CREATE TABLE after_mistake (x INT, at DATETIME(6))"); err != nil {
		t.Fatal(err)
	}
	p.waitArchived(id, mariaAfterMistake(t, db, 1).Truncate(time.Second))
	db.Close()

	got := p.recoverTo(id, target, "")
	checkFromRestorePoint(t, got, backup, newest, target)
	db = mariaDB(t, got, false)
	defer db.Close()
	want := append(append(idRange(0, 20), idRange(100, 20)...), idRange(200, 20)...)
	if ids := mariaIDs(t, db); fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("rows after the recover from a restore point %v, want %v", ids, want)
	}
	a := p.waitArchived(id, mariaCommit(t, db, 999, 1).Truncate(time.Second))
	if gaps, _ := a["gaps"].([]any); a["timeline"] != float64(2) || len(gaps) != 0 {
		t.Fatalf("the archive after the recover: %v", a)
	}
}

// TestBinlogArchiveTrimmed: two backups of a MariaDB instance with
// binary log rotations between them; deleting the older deletes the
// archive's files before the newer one's file and nothing after: the
// window starts at the newer backup, and a restore to a second after it
// holds exactly the rows committed by then.
func TestBinlogArchiveTrimmed(t *testing.T) {
	t.Parallel()
	needInstances(t)
	needMariaDB(t)
	data := dbagenttest.ReachableTempDir(t)
	logHostOnFailure(t, data)
	p := startService(t, data)
	in, db := p.mariaStamps("mdb-trim")
	id, admin := in["id"].(string), mariaDB(t, in, true)
	mariaCommit(t, db, 0, 10)
	b1 := completedBackupOf(p, id, "snapshot")
	for i := range 2 {
		mariaCommit(t, db, 10+10*i, 10)
		if _, err := admin.ExecContext(t.Context(), "FLUSH BINARY LOGS"); err != nil {
			t.Fatal(err)
		}
	}
	b2 := completedBackupOf(p, id, "snapshot")
	target := mariaCommit(t, db, 30, 10)
	nextSecond(t, db, target)
	p.waitArchived(id, mariaCommit(t, db, 40, 10).Truncate(time.Second))
	aid, err := service.ArchiveID(id)
	if err != nil {
		t.Fatal(err)
	}
	files := func() []string {
		entries, err := os.ReadDir(filepath.Join(data, "backups", "volumebackups", "logs", aid.String()))
		if err != nil {
			t.Fatal(err)
		}
		// (A file's pieces are files in a directory of its name, which the
		// local store leaves, empty, when they go.)
		var out []string
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), "bl-") {
				continue
			}
			pieces, err := os.ReadDir(filepath.Join(data, "backups", "volumebackups", "logs", aid.String(), e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if len(pieces) > 0 {
				out = append(out, e.Name())
			}
		}
		return out
	}
	before := files()
	p.callDB("DELETE", "/backups/"+b1["id"].(string), nil, nil)
	p.dbGone("backups", b1["id"].(string))
	p.dbSettled() // the trim follows the row's deletion, in the same task
	after := files()
	if len(after) >= len(before) || slices.Contains(after, "bl-00000001-mysql-bin.000001") {
		t.Fatalf("the archive's files before b1's deletion %v, after %v", before, after)
	}
	if _, w := p.archiveOf(id); w == nil || w["from"] != b2["data_timestamp"] {
		t.Fatalf("the window after b1's deletion: %v, want from b2's %s", w, b2["data_timestamp"])
	}
	restored := p.restoreTo("mdb-trim-pitr", "mariadb", "10.11", id, target, b2["id"])
	if ids := mariaIDs(t, mariaDB(t, restored, false)); fmt.Sprint(ids) != fmt.Sprint(idRange(0, 40)) {
		t.Fatalf("restored rows %v, want 0 to 39", ids)
	}
	t.Logf("the archive's binary log files: %v before the trim, %v after", before, after)
}
