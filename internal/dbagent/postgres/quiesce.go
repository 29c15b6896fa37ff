package postgres

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// A snapshot backup of PostgreSQL is the low-level backup API on one
// held session: pg_backup_start(label, fast => true), the volume snapshot,
// pg_backup_stop() on the same session. The snapshot alone does not
// restore with the label: recovery from a backup_label must replay the
// WAL up to the end-of-backup record that pg_backup_stop writes, after the
// snapshot was taken, or PostgreSQL refuses to start ("WAL ends before end
// of online backup"). So Release also reads, over the same session, the
// WAL from the backup's start to its stop LSN and writes it to the
// overlay with the label; the restore writes both into the snapshot's
// data directory and the server replays exactly to the stop LSN. A
// temporary replication slot, made on the session before the backup
// starts, keeps the server from recycling that WAL meanwhile; it goes away
// with the session.

// walChunk is how much WAL one pg_read_binary_file call reads.
const walChunk = 1 << 20

// Quiesce implements dbagent.Instance.
func (i *Instance) Quiesce(ctx context.Context, opts dbagent.QuiesceOptions) (dbagent.Quiesced, error) {
	opts = opts.WithDefaults()
	if err := validLabel(opts.Label); err != nil {
		return nil, err
	}
	started := time.Now()
	actx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	conn, err := i.connect(actx, "postgres", "cairn-quiesce")
	if err != nil {
		return nil, fmt.Errorf("quiesce: %w", err)
	}
	q := &quiesce{i: i, opts: opts, conn: conn, pid: conn.PgConn().PID()}
	q.slot = slotName("cairn_quiesce_")

	start, segSize, err := q.start(actx, opts)
	if err != nil {
		endErr := q.endSession()
		if errors.Is(err, cairn.ErrUnsupported) {
			err = fmt.Errorf("quiesce: %w", err)
		} else if actx.Err() != nil || sqlState(err) == "57014" { // query_canceled: statement_timeout
			err = fmt.Errorf("quiesce: pg_backup_start not done within %v (a checkpoint or lock held it): %v: %w", opts.Timeout, err, cairn.ErrConflict)
		} else {
			err = fmt.Errorf("quiesce: %w", err)
		}
		return nil, errors.Join(err, endErr)
	}
	q.acquired = time.Now()
	q.rec = dbagent.Record{
		Datastore: i.e.ds, Method: dbagent.Snapshot, Label: opts.Label, Started: started,
		PostgreSQL: &dbagent.PostgresPoint{StartLSN: start, WALSegmentSize: segSize},
		Quiesce:    &dbagent.QuiesceTimes{Acquire: q.acquired.Sub(started)},
	}
	q.hold = dbagent.StartHold(opts.MaxHold, func() { q.stop(); _ = q.endSession() })
	return q, nil
}

func validLabel(label string) error {
	if len(label) > 200 {
		return fmt.Errorf("backup label longer than 200 bytes: %w", cairn.ErrInvalid)
	}
	for _, r := range label {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("backup label %q has a control character: %w", label, cairn.ErrInvalid)
		}
	}
	return nil
}

type quiesce struct {
	i        *Instance
	opts     dbagent.QuiesceOptions
	conn     *pgx.Conn // the held session; used only under the hold's lock once held
	pid      uint32    // its backend
	slot     string    // its temporary replication slot
	acquired time.Time
	rec      dbagent.Record
	hold     *dbagent.Hold
}

// start bounds the session's statements by the server too (so a wait
// the client cannot interrupt still ends in time), reserves the WAL and
// starts the backup.
func (q *quiesce) start(ctx context.Context, opts dbagent.QuiesceOptions) (dbagent.LSN, int64, error) {
	// A backend checks its client while it waits, so one whose agent died
	// ends its backup instead of holding it.
	if _, err := q.conn.Exec(ctx, fmt.Sprintf("SET statement_timeout = %d; SET client_connection_check_interval = 1000",
		max(opts.Timeout.Milliseconds(), 1))); err != nil {
		return 0, 0, err
	}
	var segSize int64
	var tablespaces int
	if err := q.conn.QueryRow(ctx, `SELECT (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
		(SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global'))`).Scan(&segSize, &tablespaces); err != nil {
		return 0, 0, fmt.Errorf("reading wal_segment_size: %w", err)
	}
	if tablespaces > 0 {
		// Their directories are off the data directory's volume: its
		// snapshot would not hold them.
		return 0, 0, fmt.Errorf("the server has %d tablespaces outside its data directory: %w", tablespaces, cairn.ErrUnsupported)
	}
	if _, err := q.conn.Exec(ctx, "SELECT pg_create_physical_replication_slot($1, true, true)", q.slot); err != nil {
		return 0, 0, fmt.Errorf("creating the session's replication slot: %w", err)
	}
	var lsn string
	if err := q.conn.QueryRow(ctx, "SELECT pg_backup_start($1, true)::text", q.opts.Label).Scan(&lsn); err != nil {
		return 0, 0, fmt.Errorf("pg_backup_start: %w", err)
	}
	start, err := dbagent.ParseLSN(lsn)
	if err != nil {
		return 0, 0, err
	}
	// Releasing is bounded by its own context, not by the acquisition's.
	if _, err := q.conn.Exec(ctx, "SET statement_timeout = 0"); err != nil {
		return 0, 0, err
	}
	return start, segSize, nil
}

// Record implements dbagent.Quiesced.
func (q *quiesce) Record() dbagent.Record { return q.rec }

// Done implements dbagent.Quiesced.
func (q *quiesce) Done() <-chan struct{} { return q.hold.Done() }

// Abort implements dbagent.Quiesced.
func (q *quiesce) Abort() error {
	var err error
	_ = q.hold.End(fmt.Errorf("quiesce aborted: %w", cairn.ErrConflict), func() {
		q.stop()
		err = q.endSession()
	})
	return err
}

// Release implements dbagent.Quiesced.
func (q *quiesce) Release(ctx context.Context, overlay io.Writer) (dbagent.Record, error) {
	var rec dbagent.Record
	var err error
	if prev := q.hold.End(fmt.Errorf("quiesce already released: %w", cairn.ErrConflict), func() {
		rec, err = q.release(ctx, overlay)
	}); prev != nil {
		return dbagent.Record{}, prev
	}
	return rec, err
}

func (q *quiesce) release(ctx context.Context, overlay io.Writer) (dbagent.Record, error) {
	began := time.Now()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), q.opts.ReleaseTimeout)
	defer cancel()
	var lsn, labelFile, spcMap string
	err := q.conn.QueryRow(rctx, "SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_backup_stop(false)").
		Scan(&lsn, &labelFile, &spcMap)
	stopped := time.Now()
	if err != nil {
		return dbagent.Record{}, errors.Join(fmt.Errorf("releasing the quiesce: pg_backup_stop: %w", err), q.endSession())
	}
	rec := q.rec
	p := *rec.PostgreSQL
	rec.PostgreSQL = &p
	times := *rec.Quiesce
	rec.Quiesce = &times
	rec.Time = stopped
	rec.Quiesce.Held = stopped.Sub(q.acquired)
	p.BackupLabel, p.TablespaceMap = labelFile, spcMap
	if p.StopLSN, err = dbagent.ParseLSN(lsn); err == nil {
		var label backupLabel
		if label, err = parseBackupLabel(labelFile); err == nil {
			p.Timeline = label.Timeline
			if label.StartLSN != p.StartLSN {
				err = fmt.Errorf("backup label starts at %s, pg_backup_start returned %s: %w", label.StartLSN, p.StartLSN, cairn.ErrCorrupt)
			}
		}
	}
	if err == nil && overlay != nil {
		err = q.writeOverlay(rctx, overlay, &p)
	}
	err = errors.Join(err, q.endSession())
	rec.Finished = time.Now()
	rec.Quiesce.Release = rec.Finished.Sub(began)
	if err != nil {
		return dbagent.Record{}, fmt.Errorf("releasing the quiesce: %w", err)
	}
	return rec, nil
}

// stop ends the backup on the session, best effort: closing the session
// would end it too.
func (q *quiesce) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), q.opts.ReleaseTimeout)
	defer cancel()
	_, _ = q.conn.Exec(ctx, "SELECT pg_backup_stop(false)")
}

// endSession closes the held session and makes sure its backend is gone,
// so neither the backup nor the slot outlive it: a backend busy in a wait
// would notice the closed socket only later, so it is terminated from a
// fresh session, which waits for it to exit.
func (q *quiesce) endSession() error {
	ctx, cancel := context.WithTimeout(context.Background(), q.opts.ReleaseTimeout)
	defer cancel()
	_ = q.conn.Close(ctx)
	return q.i.terminate(ctx, q.pid)
}

// terminate ends the backend pid and waits until it has exited.
func (i *Instance) terminate(ctx context.Context, pid uint32) error {
	conn, err := i.connect(ctx, "postgres", "cairn-agent")
	if err != nil {
		return fmt.Errorf("ending the quiesce session: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	timeout := int64(10000)
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl).Milliseconds()-100, 1)
	}
	// Zero rows when the backend has gone already.
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid, $2) FROM pg_stat_activity
		WHERE pid = $1 AND application_name = 'cairn-quiesce'`, int64(pid), timeout); err != nil {
		return fmt.Errorf("ending the quiesce session (pid %d): %w", pid, err)
	}
	var left int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE pid = $1 AND application_name = 'cairn-quiesce'`, int64(pid)).Scan(&left); err != nil {
		return fmt.Errorf("ending the quiesce session (pid %d): %w", pid, err)
	}
	if left != 0 {
		return fmt.Errorf("the quiesce session (pid %d) did not end: %w", pid, cairn.ErrUnavailable)
	}
	return nil
}

// overlay file names.
const (
	labelName = "backup_label"
	spcName   = "tablespace_map"
	walDir    = "pg_wal"
)

// writeOverlay writes the label, the tablespace map and the WAL segments
// from the one holding the backup's start to the one holding its stop, the
// last cut at the stop LSN: the restore pads it with zeros, where replay
// ends.
func (q *quiesce) writeOverlay(ctx context.Context, w io.Writer, p *dbagent.PostgresPoint) error {
	tw := tar.NewWriter(w)
	now := time.Now()
	file := func(name string, size int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o600, ModTime: now, Format: tar.FormatPAX})
	}
	for _, f := range []struct{ name, content string }{{labelName, p.BackupLabel}, {spcName, p.TablespaceMap}} {
		if f.content == "" {
			continue
		}
		if err := file(f.name, int64(len(f.content))); err != nil {
			return fmt.Errorf("writing the overlay: %w", err)
		}
		if _, err := io.WriteString(tw, f.content); err != nil {
			return fmt.Errorf("writing the overlay: %w", err)
		}
	}
	seg := int64(p.WALSegmentSize)
	for s := int64(p.StartLSN) / seg; s <= int64(p.StopLSN)/seg; s++ {
		name := walFile(p.Timeline, dbagent.LSN(s*seg), seg)
		size := seg
		if s == int64(p.StopLSN)/seg {
			size = int64(p.StopLSN) % seg
		}
		if err := file(walDir+"/"+name, size); err != nil {
			return fmt.Errorf("writing the overlay: %w", err)
		}
		for off := int64(0); off < size; off += walChunk {
			n := min(walChunk, size-off)
			var b []byte
			if err := q.conn.QueryRow(ctx, "SELECT pg_read_binary_file($1, $2, $3, false)", walDir+"/"+name, off, n).Scan(&b); err != nil {
				return fmt.Errorf("reading WAL %s at %d: %w", name, off, err)
			}
			if int64(len(b)) != n {
				return fmt.Errorf("reading WAL %s at %d: %d bytes, want %d: %w", name, off, len(b), n, cairn.ErrCorrupt)
			}
			if _, err := tw.Write(b); err != nil {
				return fmt.Errorf("writing the overlay: %w", err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("writing the overlay: %w", err)
	}
	return nil
}

// QuiesceHoldsCommits implements dbagent.Instance: a held
// pg_backup_start blocks no writes.
func (i *Instance) QuiesceHoldsCommits() bool { return false }
