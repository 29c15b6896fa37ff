package main

import (
	"database/sql"
	"fmt"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/cairnproject/cairn/internal/dbagent/dbagenttest"
	"github.com/cairnproject/cairn/internal/dbagent/mariadb"
	"github.com/cairnproject/cairn/internal/testenv"
)

// TestSnapshotQuiesceTimeout: a MariaDB instance whose quiesce is held
// off (a session holds LOCK TABLES ... WRITE, which BACKUP STAGE
// BLOCK_COMMIT waits for) fails its snapshot backup after the service's
// --quiesce-timeout, with a reason; commits on the other tables go on
// meanwhile, blocked no longer than the bound; nothing stays held (the
// instance is ACTIVE, and once the lock is gone a backup completes and
// restores the rows); and once everything is deleted no snapshot or
// volume is left and `repo check --read-data` is clean.
func TestSnapshotQuiesceTimeout(t *testing.T) {
	t.Parallel()
	needInstances(t)
	if _, err := exec.LookPath(mariadb.Server); err != nil {
		testenv.SkipOrFail(t, "MariaDB is missing (test.sh installs mariadb-server)")
	}
	data := dbagenttest.ReachableTempDir(t)
	logHostOnFailure(t, data)
	const bound = 2 * time.Second
	p := startService(t, data, "--quiesce-timeout", bound.String())
	in := p.createInstance("mdb", "mariadb", "10.11")
	id := in["id"].(string)
	a := in["addresses"].([]any)[0].(map[string]any)
	db, err := sql.Open("mysql", fmt.Sprintf("bob:pw-12345@tcp(%v:%v)/app", a["address"], a["port"]))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := t.Context()
	for _, q := range []string{"CREATE TABLE locked (id INT PRIMARY KEY)", "CREATE TABLE free (id INT PRIMARY KEY)", "INSERT INTO locked VALUES (1)"} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	lock, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.ExecContext(ctx, "LOCK TABLES locked WRITE"); err != nil {
		t.Fatal(err)
	}

	// Commits on another table go on, one after the other, while the
	// backup tries its quiesce; the slowest is kept.
	var worst atomic.Int64
	stop := make(chan struct{})
	committed := make(chan error, 1)
	go func() {
		for n := 1; ; n++ {
			select {
			case <-stop:
				committed <- nil
				return
			default:
			}
			began := time.Now()
			if _, err := db.ExecContext(ctx, "INSERT INTO free VALUES (?)", n); err != nil {
				committed <- err
				return
			}
			if d := int64(time.Since(began)); d > worst.Load() {
				worst.Store(d)
			}
		}
	}()
	var b struct {
		Backup map[string]any `json:"backup"`
	}
	if code := p.callDB("POST", "/backups", map[string]any{"backup": map[string]any{"name": "held-off", "instance": id, "strategy": "snapshot"}}, &b); code != 202 {
		t.Fatalf("backup create: %d %v", code, b)
	}
	insts, backups := p.dbSettled()
	close(stop)
	if err := <-committed; err != nil {
		t.Fatalf("a commit beside the held-off backup: %v", err)
	}
	failed := byID(t, backups, b.Backup["id"].(string))
	if reason, _ := failed["fail_reason"].(string); failed["status"] != "FAILED" || !strings.Contains(reason, "quiesce") {
		t.Fatalf("backup whose quiesce was held off: %v", failed)
	}
	if in := byID(t, insts, id); in["status"] != "ACTIVE" {
		t.Fatalf("instance after the failed backup: %v", in)
	}
	if w := time.Duration(worst.Load()); w > bound+10*time.Second {
		t.Fatalf("a commit waited %v beside the held-off backup; the bound is %v", w, bound)
	} else {
		t.Logf("backup failed: %v; slowest commit beside it %v", failed["fail_reason"], w)
	}

	// Nothing stays held: with the lock gone a backup completes, and its
	// restore has the rows.
	if _, err := lock.ExecContext(ctx, "UNLOCK TABLES"); err != nil {
		t.Fatal(err)
	}
	lock.Close()
	var want int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM free").Scan(&want); err != nil {
		t.Fatal(err)
	}
	if code := p.callDB("POST", "/backups", map[string]any{"backup": map[string]any{"name": "after", "instance": id, "strategy": "snapshot"}}, &b); code != 202 {
		t.Fatalf("backup create: %d %v", code, b)
	}
	_, backups = p.dbSettled()
	if done := byID(t, backups, b.Backup["id"].(string)); done["status"] != "COMPLETED" {
		t.Fatalf("backup after the lock was released: %v", done)
	}
	var r struct {
		Instance map[string]any `json:"instance"`
	}
	if code := p.callDB("POST", "/instances", map[string]any{"instance": map[string]any{
		"name": "restored", "datastore": map[string]any{"type": "mariadb", "version": "10.11"}, "volume": map[string]any{"size": 1},
		"restorePoint": map[string]any{"backupRef": b.Backup["id"]}}}, &r); code != 202 {
		t.Fatalf("restore: %d %v", code, r)
	}
	insts, _ = p.dbSettled()
	rin := byID(t, insts, r.Instance["id"].(string))
	if rin["status"] != "ACTIVE" {
		t.Fatalf("restored instance: %v", rin)
	}
	ra := rin["addresses"].([]any)[0].(map[string]any)
	rdb, err := sql.Open("mysql", fmt.Sprintf("bob:pw-12345@tcp(%v:%v)/app", ra["address"], ra["port"]))
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	var got int
	if err := rdb.QueryRowContext(ctx, "SELECT count(*) FROM free").Scan(&got); err != nil || got != want {
		t.Fatalf("restored %d rows (%v), want %d", got, err, want)
	}
	rdb.Close()
	db.Close()

	p.deleteAll()
	p.stop()
	repoCheck(t, data)
	noEngineLeftovers(t, data)
}
