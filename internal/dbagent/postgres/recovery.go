package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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

// PrepareRecovery implements dbagent.PointInTime: recovery.signal, and
// the recovery settings in postgresql.auto.conf: restore_command copies
// from t.Dir, the target time (inclusive: transactions that ended at it
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
		fmt.Sprintf("restore_command = 'cp \"%s/%%f\" \"%%p\"'", t.Dir),
		fmt.Sprintf("recovery_target_timeline = '%d'", t.Timeline),
	}
	if !t.Time.IsZero() {
		lines = append(lines,
			fmt.Sprintf("recovery_target_time = '%s'", t.Time.UTC().Format("2006-01-02 15:04:05.999999+00")),
			"recovery_target_inclusive = on",
			// Paused at the target, FinishRecovery promotes the server
			// with pg_promote: a promotion the server is asked for ends
			// recovery with an end-of-recovery record and a checkpoint
			// in the background, where recovery_target_action 'promote'
			// waits for a whole checkpoint of every page the replay
			// dirtied before the server takes a write (5.5 s of a 22 s
			// recover, on a volume, in bench/db-bench.sh rto).
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
// server has left recovery (promoting it with pg_promote once it has
// paused at its target), then takes the recovery settings out (ALTER
// SYSTEM rewrites the file the server owns now).
func (e *Engine) FinishRecovery(ctx context.Context, cfg dbagent.Config, srv dbagent.Server) error {
	inst, err := e.Instance(cfg)
	if err != nil {
		return err
	}
	i := inst.(*Instance)
	for {
		select {
		case <-srv.Exited:
			return fmt.Errorf("the server exited while recovering (the log given does not reach the target?): %w", cairn.ErrInvalid)
		case <-ctx.Done():
			return fmt.Errorf("waiting for the recovery: %w", ctx.Err())
		default:
		}
		conn, err := i.connect(ctx, "postgres", "cairn-recovery")
		if err == nil {
			var in bool
			var pause string
			err = conn.QueryRow(ctx, "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '' END").Scan(&in, &pause)
			if err == nil && in && pause == "paused" {
				// At the target: promoted now, and waited for.
				if err = promote(ctx, conn, cfg.DataDir, srv); err != nil {
					_ = conn.Close(ctx)
					return fmt.Errorf("promoting the recovered server: %w", err)
				}
				in = false
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
				_ = conn.Close(ctx)
				if err != nil {
					return fmt.Errorf("clearing the recovery settings: %w", err)
				}
				return nil
			}
			_ = conn.Close(ctx)
		}
		select {
		case <-srv.Exited:
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// promoteTimeout bounds how long a promotion the server was asked for
// may take: pg_promote's own default wait, tenfold.
const promoteTimeout = 600 * time.Second

// promote asks a server paused at its recovery target to promote, and
// waits until it has left recovery.
//
// Paused at its target, PostgreSQL (15) sleeps on a condition variable
// for up to a second between looks at whether it was asked to promote,
// and neither pg_promote nor any signal wakes that sleep: only
// pg_wal_replay_resume does. Left alone, a promotion waits up to a
// second, a fifth of a whole recover in place. So promote makes sure
// the startup process knows of the promotion (it sends it the promote
// signal, SIGUSR2, itself, rather than wait for the postmaster to
// pass it on), then resumes the replay and pauses it again in one
// statement: woken, the startup process finds the pause still asked
// for, looks for a promotion and promotes, with the end-of-recovery
// record and the checkpoint in the background.
//
// Every step is a hastener, none is needed for a correct end: if the
// startup process looks at the pause between the resume and the pause
// again, it ends the recovery at the same target as a resume does, with
// a checkpoint before it takes writes; if it cannot be signalled (its
// PID is not the postmaster's child), the postmaster's own signal gets
// there within the second.
func promote(ctx context.Context, conn *pgx.Conn, dataDir string, srv dbagent.Server) error {
	var asked bool
	if err := conn.QueryRow(ctx, "SELECT pg_promote(false)").Scan(&asked); err != nil {
		return err
	}
	if !asked {
		return fmt.Errorf("the server refused to promote: %w", cairn.ErrUnavailable)
	}
	var startup int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE backend_type = 'startup'").Scan(&startup); err != nil {
		return err
	}
	if startup > 0 && parentPID(startup) == postmasterPID(dataDir) {
		if err := syscall.Kill(startup, syscall.SIGUSR2); err == nil {
			// An error means the server is promoting already, or has.
			_, _ = conn.Exec(ctx, "SELECT pg_wal_replay_resume(), pg_wal_replay_pause()")
		}
	}
	deadline := time.NewTimer(promoteTimeout)
	defer deadline.Stop()
	for {
		var in bool
		if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&in); err != nil {
			return err
		}
		if !in {
			return nil
		}
		select {
		case <-srv.Exited:
			return fmt.Errorf("the server exited while promoting: %w", cairn.ErrUnavailable)
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("the server did not leave recovery within %s of being asked to promote: %w", promoteTimeout, cairn.ErrUnavailable)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// postmasterPID is the PID in the first line of the data directory's
// postmaster.pid, 0 when there is none.
func postmasterPID(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// parentPID is the parent of process pid as /proc shows it, 0 when it
// cannot be read.
func parentPID(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}
