package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cairnproject/cairn/internal/wire"
)

// rtoPart: recover a running server in place to an instant shortly
// before the end of a pgbench run that began after its last backup.
// cairn: POST /instances/{id}/recover (the volume reverted to the
// backup's snapshot, the archive's WAL replayed), until the instance is
// ACTIVE and answers. The peer: the server stopped, then pgBackRest's
// restore --delta --type=time --target-action=promote, pg_ctl start,
// until it leaves recovery. Both replay the same span of WAL; the
// difference is how the base comes back. Each recovered server's
// newest pgbench_history row is checked to lie at or before the instant.
func rtoPart(ctx context.Context, c config, r *results) error {
	secs := c.pgbenchSecs
	peer := &pgBackRest{base: c.base + "/rto", port: c.peerPort + 8}
	peer.data, peer.conf = filepath.Join(peer.base, "data"), filepath.Join(peer.base, "pgbackrest.conf")
	defer peer.stop(context.Background(), peer.data)
	if err := peer.setup(ctx, c.scale); err != nil {
		return fmt.Errorf("the peer: %w", err)
	}
	inst, err := loadPGInstance(ctx, c, "rto", c.scale, sizeFor(c.scale))
	if err != nil {
		return err
	}
	t, err := instanceTarget(inst)
	if err != nil {
		return err
	}
	for rep := 1; rep <= c.reps; rep++ {
		// cairn.
		b, err := c.api.backup(ctx, backupRequest{Name: fmt.Sprintf("rto-%d", rep), Instance: inst.ID})
		if err != nil {
			return err
		}
		target, err := loadThenMark(ctx, r, "cairn", t, secs, c.pgbenchRate)
		if err != nil {
			return err
		}
		if err := waitArchiveAt(ctx, c, inst.ID, target); err != nil {
			return err
		}
		if err := dropCaches(ctx); err != nil {
			return err
		}
		var got wire.Instance
		began := time.Now()
		took, err := timed(ctx, func() error {
			var out struct {
				Recovery wire.Recovery `json:"recovery"`
			}
			if err := c.api.call(ctx, "POST", "/instances/"+inst.ID+"/recover", map[string]any{"recovery": map[string]any{
				"point_in_time": target.UTC().Format(time.RFC3339Nano), "backup": b.ID}}, &out); err != nil {
				return err
			}
			for {
				var in struct {
					Instance wire.Instance `json:"instance"`
				}
				if err := c.api.call(ctx, "GET", "/instances/"+inst.ID, nil, &in); err != nil {
					return err
				}
				got = in.Instance
				if got.Status == "ACTIVE" && got.Recovery != nil && got.Recovery.ID == out.Recovery.ID {
					if got.Recovery.Status != "COMPLETED" {
						return fmt.Errorf("recover: %s: %s", got.Recovery.Status, got.Recovery.FailReason)
					}
					_, err := t.psql(ctx, "SELECT 1")
					return err
				}
				if got.Status == "ERROR" {
					return fmt.Errorf("recover: instance in ERROR: %s", deref(got.FailReason))
				}
				if err := sleep(ctx, c.api.poll); err != nil {
					return err
				}
			}
		})
		if err != nil {
			return err
		}
		if err := checkNewest(ctx, t, target); err != nil {
			return fmt.Errorf("cairn: %w", err)
		}
		r.add("recover in place", "cairn", "s", took)
		names, phases, err := recoverPhaseTimes(c, inst.ID, began)
		for i, n := range names {
			r.add("  phase: "+n, "cairn", "s", phases[i])
		}
		if err != nil {
			r.note("cairn round %d: the phases from the logs: %v", rep, err)
		}
		if rc := got.Recovery; rc.RestorePoint != "" {
			r.note("cairn round %d: started from a restore point %.1f s before the instant (the backup was %.1f s before it)",
				rep, target.Sub(rc.BaseTime).Seconds(), target.Sub(*b.DataTimestamp).Seconds())
		} else {
			r.note("cairn round %d: started from the backup, %.1f s before the instant (no restore point between)", rep, target.Sub(rc.BaseTime).Seconds())
		}

		// The peer.
		if _, err := peer.br(ctx, "--type=full", "backup"); err != nil {
			return err
		}
		target, err = loadThenMark(ctx, r, "pgbackrest", peer.target(), secs, c.pgbenchRate)
		if err != nil {
			return err
		}
		// The segment holding the instant archived (check switches and
		// waits for it), then the server stopped, as a recover starts.
		if _, err := peer.target().psql(ctx, "SELECT pg_switch_wal()"); err != nil {
			return err
		}
		if _, err := peer.br(ctx, "check"); err != nil {
			return err
		}
		peer.stop(ctx, peer.data)
		if err := dropCaches(ctx); err != nil {
			return err
		}
		took, err = timed(ctx, func() error {
			if _, err := peer.br(ctx, "--delta", "--type=time", "--target="+target.UTC().Format("2006-01-02 15:04:05.999999+00"),
				"--target-action=promote", "restore"); err != nil {
				return err
			}
			if _, err := asPostgres(ctx, pgBin+"/pg_ctl", "-D", peer.data, "-l", filepath.Join(peer.base, "server.log"), "-w", "-t", "1200", "start"); err != nil {
				return err
			}
			return waitLeftRecovery(ctx, peer.target())
		})
		if err != nil {
			return err
		}
		if err := checkNewest(ctx, peer.target(), target); err != nil {
			return fmt.Errorf("the peer: %w", err)
		}
		r.add("recover in place", "pgbackrest", "s", took)
	}
	r.note("recover in place: pgbench -c 2 for %d s after each backup (-R %d, 0: full speed), to the instant %d s before its end; pgBackRest restores with --delta into the stopped server's directory", secs, c.pgbenchRate, rtoMarkBefore)
	return c.api.deleteInstance(ctx, inst.ID)
}

// rtoNewPart: restore a new instance as the source was at an instant
// shortly before the end of a pgbench run that began after its last
// backup, from the repository alone: the source instance is deleted
// first, and its snapshots with it (its backups and archive stay).
// cairn: POST /instances with restorePoint {instance, point_in_time},
// until the instance is ACTIVE and answers; it is the next round's
// source. The peer: pgBackRest's restore --type=time into an empty
// directory, pg_ctl start, until it leaves recovery. Each restored
// server's newest pgbench_history row is checked against the instant.
func rtoNewPart(ctx context.Context, c config, r *results) error {
	secs := c.pgbenchSecs
	peer := &pgBackRest{base: c.base + "/rtonew", port: c.peerPort + 10}
	peer.data, peer.conf = filepath.Join(peer.base, "data"), filepath.Join(peer.base, "pgbackrest.conf")
	defer peer.stop(context.Background(), peer.data)
	if err := peer.setup(ctx, c.scale); err != nil {
		return fmt.Errorf("the peer: %w", err)
	}
	src, err := loadPGInstance(ctx, c, "rtonew", c.scale, sizeFor(c.scale))
	if err != nil {
		return err
	}
	for rep := 1; rep <= c.reps; rep++ {
		// cairn.
		t, err := instanceTarget(src)
		if err != nil {
			return err
		}
		if _, err := c.api.backup(ctx, backupRequest{Name: fmt.Sprintf("rtonew-%d", rep), Instance: src.ID}); err != nil {
			return err
		}
		target, err := loadThenMark(ctx, r, "cairn", t, secs, c.pgbenchRate)
		if err != nil {
			return err
		}
		if err := waitArchiveAt(ctx, c, src.ID, target); err != nil {
			return err
		}
		if err := c.api.deleteInstance(ctx, src.ID); err != nil {
			return err
		}
		if err := dropCaches(ctx); err != nil {
			return err
		}
		var got wire.Instance
		took, err := timed(ctx, func() error {
			got, err = c.api.createInstance(ctx, instanceRequest{Name: fmt.Sprintf("rtonew-%d", rep), Type: "postgresql", Version: "15",
				SizeGiB: int(src.Volume.Size), Source: src.ID, PointInTime: target})
			if err != nil {
				return err
			}
			gt, err := instanceTarget(got)
			if err != nil {
				return err
			}
			_, err = gt.psql(ctx, "SELECT 1")
			return err
		})
		if err != nil {
			return err
		}
		gt, err := instanceTarget(got)
		if err != nil {
			return err
		}
		if err := checkNewest(ctx, gt, target); err != nil {
			return fmt.Errorf("cairn: %w", err)
		}
		r.add("restore at an instant, new instance", "cairn", "s", took)
		src = got

		// The peer.
		if _, err := peer.br(ctx, "--type=full", "backup"); err != nil {
			return err
		}
		target, err = loadThenMark(ctx, r, "pgbackrest", peer.target(), secs, c.pgbenchRate)
		if err != nil {
			return err
		}
		if _, err := peer.target().psql(ctx, "SELECT pg_switch_wal()"); err != nil {
			return err
		}
		if _, err := peer.br(ctx, "check"); err != nil {
			return err
		}
		dir := filepath.Join(peer.base, "restore")
		peer.stop(ctx, dir)
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		if _, err := runCmd(ctx, nil, "chown", "postgres:postgres", dir); err != nil {
			return err
		}
		rt := pgTarget{host: peer.base, port: peer.port + 1, user: "postgres", db: "postgres"}
		if err := dropCaches(ctx); err != nil {
			return err
		}
		took, err = timed(ctx, func() error {
			if _, err := peer.br(ctx, "--pg1-path="+dir, "--type=time", "--target="+target.UTC().Format("2006-01-02 15:04:05.999999+00"),
				"--target-action=promote", "restore"); err != nil {
				return err
			}
			if _, err := asPostgres(ctx, pgBin+"/pg_ctl", "-D", dir, "-l", filepath.Join(peer.base, "restore.log"), "-w", "-t", "1200",
				"-o", fmt.Sprintf("-p %d -c archive_mode=off", peer.port+1), "start"); err != nil {
				return err
			}
			return waitLeftRecovery(ctx, rt)
		})
		if err != nil {
			return err
		}
		err = checkNewest(ctx, rt, target)
		peer.stop(ctx, dir)
		if err != nil {
			return fmt.Errorf("the peer: %w", err)
		}
		r.add("restore at an instant, new instance", "pgbackrest", "s", took)
	}
	r.note("restore at an instant, new instance: pgbench -c 2 for %d s after each backup (-R %d, 0: full speed), to the instant %d s before its end; cairn from the repository alone (the source deleted, with its snapshots), pgBackRest into an empty directory", secs, c.pgbenchRate, rtoMarkBefore)
	return c.api.deleteInstance(ctx, src.ID)
}

// waitLeftRecovery waits until a started server has left recovery
// (promoted); it asks again while the server does not answer yet.
func waitLeftRecovery(ctx context.Context, t pgTarget) error {
	for {
		out, err := t.psql(ctx, "SELECT pg_is_in_recovery()")
		if err == nil && out == "f" {
			return nil
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// rtoMarkBefore is how long before pgbench's end the instant lies.
const rtoMarkBefore = 10

// loadThenMark runs pgbench for secs and returns the instant
// rtoMarkBefore seconds before its end, read from the server's clock,
// after recording the run's mean TPS as step "pgbench TPS while
// archived" of tool.
func loadThenMark(ctx context.Context, r *results, tool string, t pgTarget, secs, rate int) (time.Time, error) {
	args := []string{"-n", "-c", "2", "-j", "2", "-T", strconv.Itoa(secs), "-P", "1"}
	if rate > 0 {
		args = append(args, "-R", strconv.Itoa(rate))
	}
	run, err := startPgbench(ctx, t, args...)
	if err != nil {
		return time.Time{}, err
	}
	var mark time.Time
	werr := run.waitSeconds(ctx, max(1, secs-rtoMarkBefore))
	if werr == nil {
		var out string
		out, werr = t.psql(ctx, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
		if werr == nil {
			mark, werr = time.Parse(time.RFC3339Nano, out)
		}
	}
	tps, err := run.wait()
	if err != nil {
		return mark, err
	}
	if werr == nil {
		r.add("pgbench TPS while archived", tool, "tps", meanTPS(tps, 0, float64(secs)))
	}
	return mark, werr
}

// waitArchiveAt waits until the instance's archive holds a transaction
// that ended at or after at.
func waitArchiveAt(ctx context.Context, c config, id string, at time.Time) error {
	for {
		var out struct {
			Instance wire.Instance `json:"instance"`
		}
		if err := c.api.call(ctx, "GET", "/instances/"+id, nil, &out); err != nil {
			return err
		}
		if a := out.Instance.Archive; a != nil && !a.LastTransaction.Before(at) {
			return nil
		}
		if err := sleep(ctx, c.api.poll); err != nil {
			return err
		}
	}
}

// checkNewest checks that the newest pgbench transaction a recovered
// server holds lies at or before the instant, and within 5 s of it.
func checkNewest(ctx context.Context, t pgTarget, at time.Time) error {
	out, err := t.psql(ctx, "SELECT to_char(max(mtime), 'YYYY-MM-DD\"T\"HH24:MI:SS.US') FROM pgbench_history")
	if err != nil {
		return err
	}
	// mtime is a timestamp without time zone, in the server's zone (UTC
	// for both: cairn's instances and the peer's initdb here).
	newest, err := time.Parse("2006-01-02T15:04:05.999999", out)
	if err != nil {
		return fmt.Errorf("newest pgbench_history row %q: %w", out, err)
	}
	if newest.After(at) || at.Sub(newest) > 5*time.Second {
		return fmt.Errorf("newest pgbench_history row at %s, the instant %s", newest.Format(time.RFC3339Nano), at.Format(time.RFC3339Nano))
	}
	return nil
}
