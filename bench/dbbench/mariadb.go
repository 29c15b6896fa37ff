package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"golang.org/x/sync/errgroup"

	"github.com/cairnproject/cairn/internal/wire"
)

// commitLoop inserts one row per autocommitted statement, as fast as the
// server takes them, and keeps each statement's start and latency.
type commitLoop struct {
	mu    sync.Mutex
	start []time.Time
	lat   []time.Duration
}

func (l *commitLoop) run(ctx context.Context, db *sql.DB) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	for ctx.Err() == nil {
		began := time.Now()
		if _, err := conn.ExecContext(ctx, "INSERT INTO ticks (at) VALUES (now(6))"); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("insert loop: %w", err)
		}
		l.mu.Lock()
		l.start, l.lat = append(l.start, began), append(l.lat, time.Since(began))
		l.mu.Unlock()
	}
	return nil
}

// worst returns the longest latency of the statements that overlapped
// [from, to), and how many there were.
func (l *commitLoop) worst(from, to time.Time) (time.Duration, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var w time.Duration
	n := 0
	for i, s := range l.start {
		if s.Add(l.lat[i]).Before(from) || !s.Before(to) {
			continue
		}
		n++
		w = max(w, l.lat[i])
	}
	return w, n
}

// percentile returns the p-th percentile latency of statements started
// in [from, to).
func (l *commitLoop) percentile(from, to time.Time, p float64) time.Duration {
	l.mu.Lock()
	var v []time.Duration
	for i, s := range l.start {
		if !s.Before(from) && s.Before(to) {
			v = append(v, l.lat[i])
		}
	}
	l.mu.Unlock()
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[int(float64(len(v)-1)*p)]
}

func openMaria(inst wire.Instance) (*sql.DB, error) {
	host, port, err := address(inst)
	if err != nil {
		return nil, err
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.DBName = "bench", "bench-pw", "bench"
	cfg.Net, cfg.Addr = "tcp", fmt.Sprintf("%s:%d", host, port)
	cn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(cn), nil
}

func mariaChecksum(ctx context.Context, db *sql.DB) (string, error) {
	var n int64
	var table string
	var sum sql.NullInt64
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
		return "", err
	}
	if err := db.QueryRowContext(ctx, "CHECKSUM TABLE t EXTENDED").Scan(&table, &sum); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d/%d", n, sum.Int64), nil
}

// mariaPart: how long commits stall while a snapshot backup holds
// BACKUP STAGE BLOCK_COMMIT, against mariadb-backup's full backup of the
// same server in the same run (which takes the same stage), and a
// restore checked row by row.
func mariaPart(ctx context.Context, c config, r *results) error {
	inst, err := c.api.createInstance(ctx, instanceRequest{Name: "maria", Type: "mariadb", Version: "10.11",
		SizeGiB: 4, Database: "bench", User: "bench", Pw: "bench-pw"})
	if err != nil {
		return err
	}
	db, err := openMaria(inst)
	if err != nil {
		return err
	}
	defer db.Close()
	for _, q := range []string{
		"CREATE TABLE t (id bigint PRIMARY KEY AUTO_INCREMENT, v char(32), pad varchar(60), n int) ENGINE=InnoDB",
		"CREATE TABLE ticks (id bigint PRIMARY KEY AUTO_INCREMENT, at datetime(6)) ENGINE=InnoDB",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	for done := 0; done < c.mariaRows; done += 250000 {
		n := min(250000, c.mariaRows-done)
		if _, err := db.ExecContext(ctx, fmt.Sprintf(
			"INSERT INTO t (v, pad, n) SELECT md5(seq), repeat(char(65 + seq %% 26), 60), seq FROM seq_%d_to_%d", done+1, done+n)); err != nil {
			return err
		}
	}
	var datadir, socket string
	if err := db.QueryRowContext(ctx, "SELECT @@datadir, @@socket").Scan(&datadir, &socket); err != nil {
		return err
	}
	dsize, err := duBytes(ctx, datadir)
	if err != nil {
		return err
	}
	r.note("MariaDB: %d rows in t, data directory %.0f MiB", c.mariaRows, dsize/(1<<20))
	want, err := mariaChecksum(ctx, db)
	if err != nil {
		return err
	}

	loop := &commitLoop{}
	lctx, stopLoop := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(lctx)
	g.Go(func() error { return loop.run(gctx, db) })
	defer func() { stopLoop(); _ = g.Wait() }()
	settle := func() error { return sleep(ctx, 2*time.Second) }

	var last wire.DatabaseBackup
	var scratch string
	for rep := 1; rep <= c.reps; rep++ {
		// Quiet stretch first: the loop's ordinary latency.
		calm := time.Now()
		if err := settle(); err != nil {
			return err
		}
		r.add("commit p99, no backup", "insert loop", "ms", ms(loop.percentile(calm, time.Now(), 0.99)))

		container := fmt.Sprintf("bench-maria-%d-%d", time.Now().Unix(), rep)
		if err := c.api.prepareContainer(ctx, container, &scratch); err != nil {
			return err
		}
		// The page cache is dropped before the window opens: its sync
		// stalls commits too, and that is not the backup's doing.
		if err := dropCaches(ctx); err != nil {
			return err
		}
		from := time.Now()
		last, err = c.api.backup(ctx, backupRequest{Name: fmt.Sprintf("maria-%d", rep), Instance: inst.ID, Container: container})
		if err != nil {
			return err
		}
		secs := time.Since(from).Seconds()
		w, n := loop.worst(from, time.Now())
		if n == 0 {
			return fmt.Errorf("no insert ran during the backup")
		}
		r.add("mariadb full backup", "cairn", "s", secs)
		r.add("worst commit during backup", "cairn", "ms", ms(w))

		dir := filepath.Join(c.base, "mariabackup")
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		if err := dropCaches(ctx); err != nil {
			return err
		}
		from = time.Now()
		if _, err := runCmd(ctx, nil, "mariadb-backup", "--backup", "--target-dir="+dir, "--user=root",
			"--socket="+socket, "--datadir="+datadir, "--parallel=2"); err != nil {
			return err
		}
		secs = time.Since(from).Seconds()
		w, _ = loop.worst(from, time.Now())
		r.add("mariadb full backup", "mariadb-backup", "s", secs)
		r.add("worst commit during backup", "mariadb-backup", "ms", ms(w))
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	stopLoop()
	if err := g.Wait(); err != nil {
		return err
	}

	// The last backup restores, its table whole (the loop's table grew
	// on, so only t is compared).
	restored, err := c.api.createInstance(ctx, instanceRequest{Name: "maria-restored", Type: "mariadb", Version: "10.11",
		SizeGiB: 4, BackupRef: last.ID})
	if err != nil {
		return err
	}
	rdb, err := openMaria(restored)
	if err != nil {
		return err
	}
	got, err := mariaChecksum(ctx, rdb)
	rdb.Close()
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("MariaDB restore has %s, want %s", got, want)
	}
	r.note("MariaDB restore from the last snapshot backup: table t matches (%s)", got)
	if err := c.api.deleteInstance(ctx, restored.ID); err != nil {
		return err
	}
	return c.api.deleteInstance(ctx, inst.ID)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
