package mariadb

import (
	"context"
	"database/sql"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbagent/dbagenttest"
	"github.com/cairnproject/cairn/internal/testenv"
)

// engine returns the engine of the installed MariaDB 10.11, or skips.
func engine(t *testing.T) *Engine {
	t.Helper()
	list, err := Find(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, ds := range list {
		if ds.Version == "10.11" {
			for _, tool := range []string{"mariadb-install-db", "mariadb", "mariadb-dump", "mariadb-backup", "mbstream"} {
				if _, err := exec.LookPath(filepath.Join(ds.Bin, tool)); err != nil {
					testenv.SkipOrFail(t, tool+" is not installed (Debian packages mariadb-server, mariadb-backup, mariadb-client; test.sh installs them)")
				}
			}
			e, err := New(ds)
			if err != nil {
				t.Fatal(err)
			}
			return e
		}
	}
	testenv.SkipOrFail(t, "MariaDB 10.11 is not installed (Debian packages mariadb-server, mariadb-backup, mariadb-client; test.sh installs them)")
	return nil
}

// testSettings keep the test servers small.
var testSettings = map[string]string{"innodb-buffer-pool-size": "64M", "innodb-log-file-size": "16M", "max-connections": "40"}

func openAdmin(inst dbagent.Instance, db string) *sql.DB {
	return inst.(*Instance).openDB(db)
}

// lastSeq returns the sequence number of the session's last GTID.
func lastSeq(ctx context.Context, conn *sql.Conn) (uint64, error) {
	var last string
	if err := conn.QueryRowContext(ctx, "SELECT @@last_gtid").Scan(&last); err != nil {
		return 0, err
	}
	list, err := parseGTIDList(last)
	if err != nil || len(list) != 1 || list[0].Domain != 0 {
		return 0, fmt.Errorf("@@last_gtid %q: %v", last, err)
	}
	return list[0].Seq, nil
}

// seqOf returns domain 0's sequence number in a GTID position.
func seqOf(pos string) uint64 {
	list, err := parseGTIDList(pos)
	if err != nil {
		panic(err)
	}
	for _, g := range list {
		if g.Domain == 0 {
			return g.Seq
		}
	}
	return 0
}

func harness(t *testing.T) *dbagenttest.Harness {
	return &dbagenttest.Harness{
		Engine:   engine(t),
		Find:     Find,
		Settings: testSettings,
		Volumes:  dbagenttest.LoopVolumes{},
		Open: func(ctx context.Context, inst dbagent.Instance, db string) (*sql.DB, error) {
			return openAdmin(inst, db), nil
		},
		Login: func(ctx context.Context, inst dbagent.Instance, user, password, db string) error {
			c := mysql.NewConfig()
			c.User, c.Passwd, c.Net, c.DBName = user, password, "tcp", db
			c.Addr = inst.Config().Address + ":" + strconv.Itoa(inst.Config().Port)
			connector, err := mysql.NewConnector(c)
			if err != nil {
				return err
			}
			sdb := sql.OpenDB(connector)
			defer sdb.Close()
			if _, err := sdb.ExecContext(ctx, "CREATE TABLE login_probe (x INT)"); err != nil {
				return err
			}
			_, err = sdb.ExecContext(ctx, "DROP TABLE login_probe")
			return err
		},
		// The commit's GTID sequence number is exact: Before = After - 1.
		Commit: func(ctx context.Context, conn *sql.Conn, stmt string) (dbagenttest.Bounds, error) {
			tx, err := conn.BeginTx(ctx, nil)
			if err != nil {
				return dbagenttest.Bounds{}, err
			}
			defer tx.Rollback()
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return dbagenttest.Bounds{}, err
			}
			if err := tx.Commit(); err != nil {
				return dbagenttest.Bounds{}, err
			}
			seq, err := lastSeq(ctx, conn)
			return dbagenttest.Bounds{Before: seq - 1, After: seq}, err
		},
		// Every kind of backup records the GTID position of its point.
		Covered: func(b dbagenttest.Bounds, rec dbagent.Record) (in, out bool) {
			s := seqOf(rec.MariaDB.GTIDBinlogPos)
			return b.After <= s, b.After > s
		},
		Block:         lockTable,
		CheckRestored: checkRestoredGTID,
		Charset:       dbagent.Database{CharacterSet: "utf8mb4", Collate: "utf8mb4_bin"},
		Incremental:   true,
		Extra: []dbagenttest.ExtraTest{
			{Name: "QuiesceBlocksCommits", Run: testQuiesceBlocksCommits},
			{Name: "BinlogState", Run: testBinlogState},
			{Name: "StreamBinlog", Run: testStreamBinlog},
			{Name: "PointInTime", Run: testPointInTime},
		},
	}
}

// lockTable holds LOCK TABLES ... WRITE on a connection of its own, which
// BACKUP STAGE waits for.
func lockTable(t *testing.T, ctx context.Context, inst dbagent.Instance, db *sql.DB) func() {
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "LOCK TABLES static_rows WRITE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() {
		once.Do(func() {
			if _, err := conn.ExecContext(context.Background(), "UNLOCK TABLES"); err != nil {
				t.Errorf("UNLOCK TABLES: %v", err)
			}
			conn.Close()
		})
	}
	t.Cleanup(release)
	return release
}

// checkRestoredGTID: a restored snapshot holds the binary log of its
// source up to the recorded position, and nothing after it.
func checkRestoredGTID(t *testing.T, ctx context.Context, db *sql.DB, rec dbagent.Record) {
	if rec.Method != dbagent.Snapshot {
		return
	}
	var pos string
	if err := db.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
		t.Fatal(err)
	}
	if pos != rec.MariaDB.GTIDBinlogPos {
		t.Errorf("restored server's GTID position %q, want the recorded %q", pos, rec.MariaDB.GTIDBinlogPos)
	}
}

// testQuiesceBlocksCommits: while the quiesce is held a commit from
// another connection waits for the backup lock (so the lock is really
// held by the quiesce's connection), and goes through once released.
func testQuiesceBlocksCommits(t *testing.T, env *dbagenttest.Env) {
	ctx := t.Context()
	src := env.Source(t, false)
	q, err := src.Inst.Quiesce(ctx, dbagent.QuiesceOptions{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := src.DB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var id int64
	if err := conn.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := env.Harness().Commit(ctx, conn, "INSERT INTO writes (id, payload) VALUES (1, 'row-1')")
		done <- err
	}()
	// Wait until the commit waits for the backup lock.
	admin := openAdmin(src.Inst, "")
	defer admin.Close()
	for {
		var state sql.NullString
		err := admin.QueryRowContext(ctx, "SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = ?", id).Scan(&state)
		if err != nil {
			t.Fatal(err)
		}
		if state.String == "Waiting for backup lock" {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("a commit went through while commits were blocked (err %v)", err)
		case <-time.After(time.Millisecond):
		}
	}
	rec, err := q.Release(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the blocked commit failed after release: %v", err)
	}
	t.Logf("commits blocked for %v (acquire %v)", rec.Quiesce.Held, rec.Quiesce.Acquire)
}

func TestSuite(t *testing.T) {
	dbagenttest.Run(t, harness(t))
}
