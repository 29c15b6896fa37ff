package mariadb

import (
	"archive/tar"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// A snapshot backup of MariaDB is BACKUP STAGE on one held connection:
// START, then BLOCK_COMMIT, which waits for commits in flight and blocks
// new ones; while commits are blocked the binary log position and GTIDs
// are read, the caller snapshots the volume, and BACKUP STAGE END lets
// commits go on. The restored snapshot starts by InnoDB crash recovery at
// exactly the recorded position. The stages belong to the connection: a
// pool could run them on different ones, and then nothing is held.

// Quiesce implements dbagent.Instance. Each stage's wait is bounded by
// the server (max_statement_time, lock_wait_timeout) as well as by the
// context, so a DDL or a LOCK TABLES in the way makes it fail within
// opts.Timeout; the connection is then killed, which ends any stage it
// reached.
func (i *Instance) Quiesce(ctx context.Context, opts dbagent.QuiesceOptions) (dbagent.Quiesced, error) {
	opts = opts.WithDefaults()
	started := time.Now()
	deadline := started.Add(opts.Timeout)
	actx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	db := i.openDB("")
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(actx)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("quiesce: connecting: %w", err)
	}
	q := &quiesce{i: i, opts: opts, db: db, conn: conn}
	fail := func(err error) (dbagent.Quiesced, error) {
		endErr := q.endSession(true)
		if n := errNumber(err); actx.Err() != nil || n == errStatementTimeout || n == errLockWaitTimeout || n == errQueryInterrupted {
			err = fmt.Errorf("quiesce: BACKUP STAGE not had within %v (a DDL or a table lock held it): %v: %w", opts.Timeout, err, cairn.ErrConflict)
		} else {
			err = fmt.Errorf("quiesce: %w", err)
		}
		return nil, errors.Join(err, endErr)
	}
	if err := conn.QueryRowContext(actx, "SELECT CONNECTION_ID()").Scan(&q.id); err != nil {
		return fail(err)
	}
	if _, err := conn.ExecContext(actx, fmt.Sprintf("SET SESSION lock_wait_timeout = %d", int64(math.Ceil(opts.Timeout.Seconds())))); err != nil {
		return fail(err)
	}
	stage := func(name string) error {
		left := time.Until(deadline).Seconds()
		if left <= 0 {
			return context.DeadlineExceeded
		}
		_, err := conn.ExecContext(actx, fmt.Sprintf("SET STATEMENT max_statement_time = %.3f FOR BACKUP STAGE %s", max(left, 0.001), name))
		return err
	}
	if err := stage("START"); err != nil {
		return fail(err)
	}
	q.blocking = time.Now()
	if err := stage("BLOCK_COMMIT"); err != nil {
		return fail(err)
	}
	point, err := q.readPoint(actx)
	if err != nil {
		return fail(err)
	}
	now := time.Now()
	q.rec = dbagent.Record{
		Datastore: i.e.ds, Method: dbagent.Snapshot, Label: opts.Label, Started: started, Time: now,
		MariaDB: point,
		Quiesce: &dbagent.QuiesceTimes{Acquire: now.Sub(started)},
	}
	q.hold = dbagent.StartHold(opts.MaxHold, func() { _ = q.endSession(false) })
	return q, nil
}

type quiesce struct {
	i        *Instance
	opts     dbagent.QuiesceOptions
	db       *sql.DB
	conn     *sql.Conn // the held connection
	id       int64     // its connection ID
	blocking time.Time // when BLOCK_COMMIT was sent
	rec      dbagent.Record
	hold     *dbagent.Hold
}

// readPoint reads the binary log position and the GTIDs while commits are
// blocked.
func (q *quiesce) readPoint(ctx context.Context) (*dbagent.MariaDBPoint, error) {
	rows, err := q.conn.QueryContext(ctx, "SHOW MASTER STATUS")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	columns, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	if !rows.Next() {
		return nil, fmt.Errorf("SHOW MASTER STATUS: no row (is the binary log off?): %w", cairn.ErrUnsupported)
	}
	raw := make([]sql.NullString, len(columns))
	ptrs := make([]any, len(columns))
	for k := range raw {
		ptrs[k] = &raw[k]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	values := make([]string, len(raw))
	for k, v := range raw {
		values[k] = v.String
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	p := &dbagent.MariaDBPoint{}
	if p.BinlogFile, p.BinlogPos, err = parseMasterStatus(columns, values); err != nil {
		return nil, err
	}
	if err := q.conn.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos, @@gtid_current_pos").Scan(&p.GTIDBinlogPos, &p.GTIDCurrentPos); err != nil {
		return nil, err
	}
	for _, g := range []string{p.GTIDBinlogPos, p.GTIDCurrentPos} {
		if _, err := parseGTIDList(g); err != nil {
			return nil, err
		}
	}
	if p.BinlogGeneration, err = readGeneration(q.i.cfg.DataDir); err != nil {
		return nil, err
	}
	return p, nil
}

// Record implements dbagent.Quiesced.
func (q *quiesce) Record() dbagent.Record { return q.rec }

// Done implements dbagent.Quiesced.
func (q *quiesce) Done() <-chan struct{} { return q.hold.Done() }

// Abort implements dbagent.Quiesced.
func (q *quiesce) Abort() error {
	var err error
	_ = q.hold.End(fmt.Errorf("quiesce aborted: %w", cairn.ErrConflict), func() { err = q.endSession(false) })
	return err
}

// Release implements dbagent.Quiesced. A MariaDB snapshot needs nothing
// laid over it: the overlay is an empty tar.
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
	_, err := q.conn.ExecContext(rctx, "BACKUP STAGE END")
	ended := time.Now()
	if err != nil {
		return dbagent.Record{}, errors.Join(fmt.Errorf("releasing the quiesce: BACKUP STAGE END: %w", err), q.endSession(true))
	}
	_ = q.conn.Close()
	q.db.Close()
	rec := q.rec
	times := *rec.Quiesce
	rec.Quiesce = &times
	rec.Quiesce.Held = ended.Sub(q.blocking)
	if overlay != nil {
		if err := tar.NewWriter(overlay).Close(); err != nil {
			return dbagent.Record{}, fmt.Errorf("writing the overlay: %w", err)
		}
	}
	rec.Finished = time.Now()
	rec.Quiesce.Release = rec.Finished.Sub(began)
	return rec, nil
}

// endSession ends the held connection. Unless kill is set it first ends
// the backup stage on it; when that fails, or with kill, the connection
// is killed from a fresh one and waited for, so no stage outlives it.
func (q *quiesce) endSession(kill bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), q.opts.ReleaseTimeout)
	defer cancel()
	if !kill {
		if _, err := q.conn.ExecContext(ctx, "BACKUP STAGE END"); err != nil && errNumber(err) != errBackupStageNotStart {
			kill = true
		}
	}
	_ = q.conn.Close()
	q.db.Close()
	if !kill || q.id == 0 {
		return nil
	}
	return q.i.kill(ctx, q.id)
}

// kill kills connection id and waits until it has gone.
func (i *Instance) kill(ctx context.Context, id int64) error {
	db := i.openDB("")
	defer db.Close()
	if _, err := db.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", id)); err != nil && errNumber(err) != errNoSuchThread {
		return fmt.Errorf("ending the quiesce connection %d: %w", id, err)
	}
	delay := time.Millisecond
	for {
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?", id).Scan(&n); err != nil {
			return fmt.Errorf("ending the quiesce connection %d: %w", id, err)
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the quiesce connection %d did not end: %w", id, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// QuiesceHoldsCommits implements dbagent.Instance: BACKUP STAGE
// BLOCK_COMMIT holds every commit.
func (i *Instance) QuiesceHoldsCommits() bool { return true }
