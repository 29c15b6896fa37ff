package postgres

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/jackc/pgx/v5"
)

var _ dbagent.PointInTime = (*Engine)(nil)

// recoverySettings are what PrepareRecovery adds to postgresql.auto.conf
// and FinishRecovery takes out again.
var recoverySettings = []string{"restore_command", "recovery_target_time", "recovery_target_inclusive",
	"recovery_target_timeline", "recovery_target_action"}

// recoveryMark begins the lines PrepareRecovery writes, so they can be
// found again.
const recoveryMark = "# cairn recovery: removed once the server has promoted\n"

// restoreCommand is the shell command that hands the server the WAL
// file %f from dir as %p. The files may still be arriving while the
// server replays (dbagent.LogsEnd), so a file not there yet is waited
// for, looked for every 20 ms, until the markers say it will not come:
// then, and only then, the command answers "not there" (exit 1), which
// the server reads as the end of the archive. Every other failure, a
// stream that failed (dbagent.LogsFailed), a copy that failed (a full
// disk) or a directory the server's user cannot reach (where it would
// wait forever for files it cannot see), exits above 125, which
// PostgreSQL takes as fatal: the recovery
// stops rather than ending early at the last file it got. The markers
// are looked at before the file, as they are made after the files.
func restoreCommand(dir string) string {
	return `d="` + dir + `"; f="%f"; while :; do ` + strings.Join([]string{
		`if [ ! -d "$d" ] || [ ! -x "$d" ]; then exit 202; fi`,
		`if [ -e "$d/` + dbagent.LogsFailed + `" ]; then exit 200; fi`,
		`last=0`,
		`if [ -e "$d/` + dbagent.LogsEnd + `" ]; then last=1; fi`,
		`case "$f" in *.history) if [ -e "$d/` + dbagent.LogsHistories + `" ]; then last=1; fi;; esac`,
		`if [ -e "$d/$f" ]; then cp "$d/$f" "%p" || exit 201; exit 0; fi`,
		`if [ $last = 1 ]; then exit 1; fi`,
		`sleep 0.02`,
	}, "; ") + "; done"
}

// PrepareRecovery implements dbagent.PointInTime: recovery.signal, and
// the recovery settings in postgresql.auto.conf: restore_command copies
// from t.Dir (waiting for files still to come: restoreCommand), the
// target time (inclusive: transactions that ended at it
// are in) and timeline, and a pause at the target, where FinishRecovery
// promotes. The snapshot's or
// backup's own WAL stays in pg_wal; restore_command is tried first.
func (e *Engine) PrepareRecovery(ctx context.Context, cfg dbagent.Config, t dbagent.RecoveryTarget) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if !filepath.IsAbs(t.Dir) || strings.ContainsAny(t.Dir, "'\"\\\n%") {
		return fmt.Errorf("recovery: WAL directory %q: %w", t.Dir, cairn.ErrInvalid)
	}
	if t.Timeline == 0 {
		return fmt.Errorf("recovery: no timeline: %w", cairn.ErrInvalid)
	}
	if err := e.checkVersion(cfg.DataDir); err != nil {
		return err
	}
	if err := clearRecovery(cfg.DataDir); err != nil {
		return err
	}
	lines := []string{
		"restore_command = '" + restoreCommand(t.Dir) + "'",
		fmt.Sprintf("recovery_target_timeline = '%d'", t.Timeline),
	}
	if !t.Time.IsZero() {
		lines = append(lines,
			fmt.Sprintf("recovery_target_time = '%s'", t.Time.UTC().Format("2006-01-02 15:04:05.999999+00")),
			"recovery_target_inclusive = on",
			// Paused at the target, the server takes the promotion
			// FinishRecovery asked for while it replayed: a promotion
			// the server is asked for ends recovery with an
			// end-of-recovery record and a checkpoint in the
			// background, where recovery_target_action 'promote' waits
			// for a whole checkpoint of every page the replay dirtied
			// before the server takes a write (5.5 s of a 22 s recover,
			// on a volume, in bench/db-bench.sh rto).
			"recovery_target_action = 'pause'")
	}
	auto := filepath.Join(cfg.DataDir, "postgresql.auto.conf")
	f, err := os.OpenFile(auto, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	_, err = f.WriteString(recoveryMark + strings.Join(lines, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "recovery.signal"), nil, 0o600); err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	if err := os.Remove(filepath.Join(cfg.DataDir, "standby.signal")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("recovery: %w", err)
	}
	if err := os.Chmod(t.Dir, 0o700); err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	if err := e.user.OwnTree(t.Dir); err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	return e.own(cfg.DataDir)
}

// clearRecovery removes what PrepareRecovery wrote to
// postgresql.auto.conf (the lines after its mark).
func clearRecovery(dataDir string) error {
	auto := filepath.Join(dataDir, "postgresql.auto.conf")
	b, err := os.ReadFile(auto)
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	before, _, found := strings.Cut(string(b), recoveryMark)
	if !found {
		return nil
	}
	if err := os.WriteFile(auto, []byte(before), 0o600); err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	return nil
}

// FinishRecovery implements dbagent.PointInTime: it waits until the
// server has left recovery, then takes the recovery settings out (ALTER
// SYSTEM rewrites the file the server owns now).
//
// The server is asked to promote (pg_promote) as soon as it takes
// connections, while it still replays: a server in archive recovery
// that is not a standby looks for a promotion only once it has paused
// at its target (PostgreSQL 15's recoveryPausesHere checks before it
// first sleeps), so the promotion neither ends the replay early nor
// waits. Asked only once paused, it would wait up to a second, which
// is how long the paused server sleeps between looks and no signal
// wakes it (a resume does, but a resume that comes first ends the
// recovery with a checkpoint of every page the replay dirtied before
// the server takes a write: 4 s in the bench). A log that ends before
// the target still fails the start ("recovery ended before configured
// recovery target was reached"), promotion asked or not; a server
// restarted meanwhile forgets the request (the postmaster removes the
// signal file), so it is asked again, once per server start.
func (e *Engine) FinishRecovery(ctx context.Context, cfg dbagent.Config, srv dbagent.Server) error {
	inst, err := e.Instance(cfg)
	if err != nil {
		return err
	}
	i := inst.(*Instance)
	var conn *pgx.Conn // kept between looks; nil after a failure
	defer func() {
		if conn != nil {
			_ = conn.Close(context.WithoutCancel(ctx))
		}
	}()
	var askedOf time.Time // the start time of the server asked to promote
	for {
		select {
		case <-srv.Exited:
			return fmt.Errorf("the server exited while recovering (the log given does not reach the target?): %w", cairn.ErrInvalid)
		case <-ctx.Done():
			return fmt.Errorf("waiting for the recovery: %w", ctx.Err())
		default:
		}
		if conn == nil {
			conn, _ = i.connect(ctx, "postgres", "cairn-recovery") // not yet taking connections: looked at again
		}
		if conn != nil {
			var in bool
			var started time.Time
			err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery(), pg_postmaster_start_time()").Scan(&in, &started)
			if err == nil && in && !started.Equal(askedOf) {
				var asked bool
				if err = conn.QueryRow(ctx, "SELECT pg_promote(false)").Scan(&asked); err == nil && !asked {
					return fmt.Errorf("promoting the recovered server: the server refused: %w", cairn.ErrUnavailable)
				}
				if err == nil {
					askedOf = started
				}
			}
			if err == nil && !in {
				for _, s := range recoverySettings {
					if _, err = conn.Exec(ctx, "ALTER SYSTEM RESET "+s); err != nil {
						break
					}
				}
				if err == nil {
					_, err = conn.Exec(ctx, "SELECT pg_reload_conf()")
				}
				if err != nil {
					return fmt.Errorf("clearing the recovery settings: %w", err)
				}
				return nil
			}
			if err != nil {
				_ = conn.Close(ctx)
				conn = nil
			}
		}
		// Polled: the replay ends when the log does, and nothing tells.
		// A look is one query on a session kept open; a connection
		// refused (the server still starting) is a backend started and
		// ended, so those are tried less often.
		wait := 20 * time.Millisecond
		if conn == nil {
			wait = 100 * time.Millisecond
		}
		select {
		case <-srv.Exited:
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}
