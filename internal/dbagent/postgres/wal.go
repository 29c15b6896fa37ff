package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sync/errgroup"
)

// ArchiveSlot is the physical replication slot the WAL archive streams
// from. It lives in the data directory (pg_replslot), so a restored copy
// carries it; a restore drops it (the copy starts its own archive).
const ArchiveSlot = "cairn_archive"

// DefaultSlotKeep bounds the WAL the archive slot may hold when the
// archive falls behind (max_slot_wal_keep_size): past it the server
// drops what the archive has not stored rather than fill its disk, and
// the archive reports the gap.
const DefaultSlotKeep = "1GB"

var _ dbagent.WALSource = (*Instance)(nil)

// replConnect opens a physical replication session as the superuser over
// the unix socket.
func (i *Instance) replConnect(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig("")
	if err != nil {
		return nil, err
	}
	i.local(cfg, "", map[string]string{"application_name": "cairn-archive", "replication": "true"})
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("replication session: %w", err)
	}
	return conn, nil
}

// WALIdentity implements dbagent.WALSource.
func (i *Instance) WALIdentity(ctx context.Context) (dbagent.WALIdentity, error) {
	conn, err := i.replConnect(ctx)
	if err != nil {
		return dbagent.WALIdentity{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return dbagent.WALIdentity{}, fmt.Errorf("IDENTIFY_SYSTEM: %w", err)
	}
	res, err := conn.Exec(ctx, "SHOW wal_segment_size").ReadAll()
	if err != nil || len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return dbagent.WALIdentity{}, fmt.Errorf("wal_segment_size: %w", errors.Join(err, cairn.ErrUnsupported))
	}
	seg, err := parseSize(string(res[0].Rows[0][0]))
	if err != nil {
		return dbagent.WALIdentity{}, fmt.Errorf("wal_segment_size: %w", err)
	}
	return dbagent.WALIdentity{SystemID: sys.SystemID, Timeline: uint32(sys.Timeline),
		Flushed: dbagent.LSN(sys.XLogPos), SegmentSize: seg}, nil
}

// parseSize reads a size setting as SHOW prints it: "16MB", "1GB", "-1".
func parseSize(s string) (int64, error) {
	if s == "-1" {
		return -1, nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseInt(num, 10, 64)
			if err != nil || n < 0 {
				break
			}
			return n * u.mult, nil
		}
	}
	return 0, fmt.Errorf("size %q: %w", s, cairn.ErrInvalid)
}

// ensureSlot makes the archive slot when there is none, reserving WAL
// from now on.
func (i *Instance) ensureSlot(ctx context.Context) error {
	conn, err := i.connect(ctx, "postgres", "cairn-archive")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", ArchiveSlot).Scan(&n); err != nil {
		return fmt.Errorf("looking for the archive slot: %w", err)
	}
	if n > 0 {
		return nil
	}
	if _, err := conn.Exec(ctx, "SELECT pg_create_physical_replication_slot($1, true, false)", ArchiveSlot); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42710" { // made meanwhile
			return nil
		}
		return fmt.Errorf("making the archive slot: %w", err)
	}
	return nil
}

// StreamWAL implements dbagent.WALSource.
func (i *Instance) StreamWAL(ctx context.Context, req dbagent.WALStreamRequest, fn func(dbagent.WALMessage) error) (*dbagent.TimelineEnd, error) {
	if req.Timeline == 0 {
		return nil, fmt.Errorf("WAL stream without a timeline: %w", cairn.ErrInvalid)
	}
	flushed := req.Flushed
	if flushed == nil {
		flushed = func() dbagent.LSN { return req.Start }
	}
	interval := req.StatusInterval
	if interval <= 0 {
		interval = time.Second
	}
	if err := i.ensureSlot(ctx); err != nil {
		return nil, err
	}
	conn, err := i.replConnect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	err = pglogrepl.StartReplication(ctx, conn, ArchiveSlot, pglogrepl.LSN(req.Start),
		pglogrepl.StartReplicationOptions{Timeline: int32(req.Timeline), Mode: pglogrepl.PhysicalReplication})
	if tli, lsn, ok := pglogrepl.IsErrEndTimeline(err); ok {
		return &dbagent.TimelineEnd{Next: uint32(tli), Switch: dbagent.LSN(lsn)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("START_REPLICATION on timeline %d at %s: %w", req.Timeline, req.Start, walError(err))
	}
	// The session is read by one goroutine and handed to fn by another,
	// through a short queue: while fn is slow (the archive's store is
	// behind), the reader keeps answering the server with statuses, so
	// the walsender does not end the session at wal_sender_timeout, and
	// the socket's own window holds the server back.
	g, gctx := errgroup.WithContext(ctx)
	queue := make(chan dbagent.WALMessage, walQueue)
	var end *dbagent.TimelineEnd
	g.Go(func() error {
		for m := range queue {
			m.More = len(queue) > 0
			if err := fn(m); err != nil {
				return err
			}
		}
		return nil
	})
	g.Go(func() error {
		defer close(queue)
		var err error
		end, err = receiveWAL(gctx, conn, req.Timeline, interval, flushed, queue)
		return err
	})
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return end, nil
}

// walQueue bounds the messages waiting for the stream's fn (the server
// sends at most 128 KiB a message).
const walQueue = 64

// receiveWAL reads a started replication session into queue until the
// timeline ends or ctx is done. Every interval, and whenever the server
// asks, it sends a status saying what flushed reports stored, asking
// for a keepalive back: on an idle server it hears, every interval,
// that nothing more was written.
func receiveWAL(ctx context.Context, conn *pgconn.PgConn, timeline uint32, interval time.Duration,
	flushed func() dbagent.LSN, queue chan<- dbagent.WALMessage) (*dbagent.TimelineEnd, error) {
	status := func() error {
		f := pglogrepl.LSN(flushed())
		if err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{
			WALWritePosition: f, WALFlushPosition: f, WALApplyPosition: f, ReplyRequested: true}); err != nil {
			return fmt.Errorf("standby status: %w", err)
		}
		return nil
	}
	if err := status(); err != nil {
		return nil, err
	}
	next := time.Now().Add(interval)
	// deliver queues m, sending statuses while the queue is full.
	deliver := func(m dbagent.WALMessage) error {
		for {
			wait := time.NewTimer(time.Until(next))
			select {
			case queue <- m:
				wait.Stop()
				return nil
			case <-ctx.Done():
				wait.Stop()
				return ctx.Err()
			case <-wait.C:
				if err := status(); err != nil {
					return err
				}
				next = time.Now().Add(interval)
			}
		}
	}
	for {
		rctx, cancel := context.WithDeadline(ctx, next)
		msg, err := conn.ReceiveMessage(rctx)
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			if pgconn.Timeout(err) {
				if err := status(); err != nil {
					return nil, err
				}
				next = time.Now().Add(interval)
				continue
			}
			return nil, fmt.Errorf("WAL stream: %w", walError(err))
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				return nil, fmt.Errorf("WAL stream: an empty message: %w", cairn.ErrCorrupt)
			}
			switch m.Data[0] {
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return nil, fmt.Errorf("WAL stream: %v: %w", err, cairn.ErrCorrupt)
				}
				// The connection reuses its buffer on the next read.
				if err := deliver(dbagent.WALMessage{Start: dbagent.LSN(x.WALStart), Data: bytes.Clone(x.WALData),
					ServerEnd: dbagent.LSN(x.ServerWALEnd), ServerTime: x.ServerTime}); err != nil {
					return nil, err
				}
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				k, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return nil, fmt.Errorf("WAL stream: %v: %w", err, cairn.ErrCorrupt)
				}
				if k.ReplyRequested {
					if err := status(); err != nil {
						return nil, err
					}
				}
				if err := deliver(dbagent.WALMessage{ServerEnd: dbagent.LSN(k.ServerWALEnd), ServerTime: k.ServerTime}); err != nil {
					return nil, err
				}
			}
		case *pgproto3.CopyDone:
			// The timeline ended (the server was promoted onto another):
			// the server says where the next one starts.
			res, err := pglogrepl.SendStandbyCopyDone(ctx, conn)
			if err != nil {
				return nil, fmt.Errorf("ending the WAL stream: %w", walError(err))
			}
			if res == nil {
				return nil, fmt.Errorf("timeline %d ended without saying which follows: %w", timeline, cairn.ErrCorrupt)
			}
			return &dbagent.TimelineEnd{Next: uint32(res.Timeline), Switch: dbagent.LSN(res.LSN)}, nil
		case *pgproto3.ErrorResponse:
			return nil, fmt.Errorf("WAL stream: %w", walError(pgconn.ErrorResponseToPgError(m)))
		}
	}
}

// walError classes a replication error: WAL the server no longer has is
// cairn.ErrGone (the archive records a gap), the slot in use by another
// stream cairn.ErrConflict.
func walError(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch {
	case strings.Contains(pe.Message, "has already been removed"),
		strings.Contains(pe.Message, "slot has been invalidated"):
		return fmt.Errorf("%w: %w", err, cairn.ErrGone)
	case pe.Code == "55006": // object_in_use: the slot is active
		return fmt.Errorf("%w: %w", err, cairn.ErrConflict)
	case strings.Contains(pe.Message, "is not in this server's history"),
		strings.Contains(pe.Message, "ahead of the WAL flush position"):
		return fmt.Errorf("%w: %w", err, cairn.ErrInvalid)
	}
	return err
}

// TimelineHistory implements dbagent.WALSource.
func (i *Instance) TimelineHistory(ctx context.Context, timeline uint32) ([]byte, error) {
	if timeline < 2 {
		return nil, fmt.Errorf("timeline %d has no history: %w", timeline, cairn.ErrInvalid)
	}
	conn, err := i.replConnect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	res, err := pglogrepl.TimelineHistory(ctx, conn, int32(timeline))
	if err != nil {
		return nil, fmt.Errorf("TIMELINE_HISTORY %d: %w", timeline, errors.Join(walError(err), notFoundIfMissing(err)))
	}
	return res.Content, nil
}

func notFoundIfMissing(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "58P01" { // undefined_file
		return cairn.ErrNotFound
	}
	return nil
}

// WALSlot implements dbagent.WALSource.
func (i *Instance) WALSlot(ctx context.Context) (dbagent.WALSlot, error) {
	conn, err := i.connect(ctx, "postgres", "cairn-archive")
	if err != nil {
		return dbagent.WALSlot{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var keep string
	if err := conn.QueryRow(ctx, "SHOW max_slot_wal_keep_size").Scan(&keep); err != nil {
		return dbagent.WALSlot{}, fmt.Errorf("max_slot_wal_keep_size: %w", err)
	}
	s := dbagent.WALSlot{SafeBytes: -1}
	if s.KeepBytes, err = parseSize(keep); err != nil {
		return s, err
	}
	var restart *string
	var status *string
	var safe *int64
	err = conn.QueryRow(ctx, `SELECT active, restart_lsn::text, wal_status, safe_wal_size
		FROM pg_replication_slots WHERE slot_name = $1`, ArchiveSlot).Scan(&s.Active, &restart, &status, &safe)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("the archive slot: %w", err)
	}
	s.Exists = true
	if restart != nil {
		if s.RestartLSN, err = dbagent.ParseLSN(*restart); err != nil {
			return s, err
		}
	}
	if status != nil {
		s.Status = *status
	}
	if safe != nil {
		s.SafeBytes = *safe
	}
	return s, nil
}
