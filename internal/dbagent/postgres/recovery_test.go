package postgres

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbagent/dbagenttest"
)

// testPointInTime restores a quiesced snapshot and replays the source's
// WAL to a time between two groups of commits: the first group is there,
// the second not, the server is on a new timeline and writable, and the
// recovery's settings are gone. Replayed to the end instead, both groups
// are there.
func testPointInTime(t *testing.T, env *dbagenttest.Env) {
	ctx := t.Context()
	e := env.Harness().Engine.(*Engine)
	src := env.Source(t, true)
	q, err := src.Inst.Quiesce(ctx, dbagent.QuiesceOptions{Label: "pitr", Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(src.Inst.Config().DataDir)
	mounts := []string{env.Harness().Volumes.(dbagenttest.LoopVolumes).Snapshot(t, ctx, dir),
		env.Harness().Volumes.(dbagenttest.LoopVolumes).Snapshot(t, ctx, dir),
		env.Harness().Volumes.(dbagenttest.LoopVolumes).Snapshot(t, ctx, dir),
		env.Harness().Volumes.(dbagenttest.LoopVolumes).Snapshot(t, ctx, dir)}
	var overlay bytes.Buffer
	rec, err := q.Release(ctx, &overlay)
	if err != nil {
		t.Fatal(err)
	}
	commit := func(from, n int) {
		for i := from; i < from+n; i++ {
			if _, err := src.DB.ExecContext(ctx, "INSERT INTO writes (id, payload) VALUES ($1, 'pitr')", i); err != nil {
				t.Fatal(err)
			}
		}
	}
	commit(1000, 20)
	var target time.Time
	if err := src.DB.QueryRowContext(ctx, "SELECT clock_timestamp()").Scan(&target); err != nil {
		t.Fatal(err)
	}
	commit(2000, 20)
	if _, err := src.DB.ExecContext(ctx, "SELECT pg_switch_wal()"); err != nil {
		t.Fatal(err)
	}
	// The archive, as the service would stage it: the source's segments
	// from the backup's on.
	wal := dbagenttest.ReachableTempDir(t)
	first := walFile(rec.PostgreSQL.Timeline, rec.PostgreSQL.StartLSN, rec.PostgreSQL.WALSegmentSize)
	entries, err := os.ReadDir(filepath.Join(src.Inst.Config().DataDir, walDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range entries {
		if walFileName.MatchString(en.Name()) && en.Name() >= first {
			names = append(names, en.Name())
		}
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(src.Inst.Config().DataDir, walDir, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(wal, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// All of it is there (dbagent.LogsEnd).
	for _, m := range []string{dbagent.LogsHistories, dbagent.LogsEnd} {
		if err := os.WriteFile(filepath.Join(wal, m), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	for i, tc := range []struct {
		name   string
		target time.Time
		want   int // rows of the two groups
	}{
		{"to a time", target, 20},
		{"to the end", time.Time{}, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := env.Config(t, filepath.Join(mounts[i], "data"))
			if err := e.RestoreSnapshot(ctx, cfg, rec, bytes.NewReader(overlay.Bytes())); err != nil {
				t.Fatal(err)
			}
			if err := e.PrepareRecovery(ctx, cfg, dbagent.RecoveryTarget{Time: tc.target, Timeline: 1, Dir: wal}); err != nil {
				t.Fatal(err)
			}
			inst := env.Open(t, cfg)
			srv := dbagenttest.StartNoWait(t, inst)
			if err := e.FinishRecovery(ctx, cfg, srv.Proc.Server()); err != nil {
				t.Fatal(err)
			}
			db := env.DB(t, inst, "app")
			var n int
			if err := db.QueryRowContext(ctx, "SELECT count(*) FROM writes WHERE payload = 'pitr'").Scan(&n); err != nil {
				t.Fatal(err)
			}
			var below int
			if err := db.QueryRowContext(ctx, "SELECT count(*) FROM writes WHERE payload = 'pitr' AND id < 2000").Scan(&below); err != nil {
				t.Fatal(err)
			}
			if n != tc.want || below != 20 {
				t.Fatalf("%d rows of the groups (%d of the first), want %d (20)", n, below, tc.want)
			}
			if _, err := db.ExecContext(ctx, "INSERT INTO writes (id, payload) VALUES (9999, 'after')"); err != nil {
				t.Fatalf("the recovered server takes no write: %v", err)
			}
			var tli int
			var restore string
			// The timeline the server writes on (the promotion's checkpoint
			// runs in the background, so pg_control may not show it yet).
			if err := db.QueryRowContext(ctx, "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int").Scan(&tli); err != nil {
				t.Fatal(err)
			}
			if err := db.QueryRowContext(ctx, "SHOW restore_command").Scan(&restore); err != nil {
				t.Fatal(err)
			}
			if tli < 2 || restore != "" {
				t.Fatalf("timeline %d, restore_command %q after the recovery", tli, restore)
			}
		})
	}

	// A stream that failed (dbagent.LogsFailed) stops the recovery, even
	// with files there: it never promotes at the last file it got.
	t.Run("a failed stream", func(t *testing.T) {
		failed := dbagenttest.ReachableTempDir(t)
		for _, n := range names[:1] {
			b, err := os.ReadFile(filepath.Join(wal, n))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(failed, n), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(failed, dbagent.LogsFailed), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		cfg := env.Config(t, filepath.Join(mounts[2], "data"))
		if err := e.RestoreSnapshot(ctx, cfg, rec, bytes.NewReader(overlay.Bytes())); err != nil {
			t.Fatal(err)
		}
		if err := e.PrepareRecovery(ctx, cfg, dbagent.RecoveryTarget{Timeline: 1, Dir: failed}); err != nil {
			t.Fatal(err)
		}
		srv := dbagenttest.StartNoWait(t, env.Open(t, cfg))
		if err := e.FinishRecovery(ctx, cfg, srv.Proc.Server()); err == nil {
			t.Fatal("a recovery whose stream failed finished")
		}
		<-srv.Proc.Server().Exited
	})

	// A directory the server's user cannot reach (a spool under a
	// private directory) stops the recovery: the server would otherwise
	// wait forever for files it cannot see.
	t.Run("a directory the server cannot reach", func(t *testing.T) {
		private := t.TempDir() // root's, 0700
		cfg := env.Config(t, filepath.Join(mounts[3], "data"))
		if err := e.RestoreSnapshot(ctx, cfg, rec, bytes.NewReader(overlay.Bytes())); err != nil {
			t.Fatal(err)
		}
		if err := e.PrepareRecovery(ctx, cfg, dbagent.RecoveryTarget{Timeline: 1, Dir: private}); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(private, 0, 0); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(private, 0o700); err != nil {
			t.Fatal(err)
		}
		srv := dbagenttest.StartNoWait(t, env.Open(t, cfg))
		if err := e.FinishRecovery(ctx, cfg, srv.Proc.Server()); err == nil {
			t.Fatal("a recovery from an unreachable directory finished")
		}
		<-srv.Proc.Server().Exited
	})
}
