package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// BackupPhysical implements dbagent.Instance: pg_basebackup writes one tar
// of the data directory, with the WAL from the backup's start to its end
// (-X fetch), to w. A server with tablespaces other than the default ones
// cannot be written as one tar and fails. PostgreSQL 15 has no
// incremental backups.
//
// -X fetch reads that WAL at the end, and a busy server may have recycled
// it by then ("requested WAL segment … has already been removed"):
// pg_basebackup cannot stream WAL into a tar on standard output, nor use
// a slot without streaming. So a temporary physical slot, reserving WAL
// from before the backup's start, is held on a session of its own for
// the whole backup; it goes away with that session, whatever happens.
func (i *Instance) BackupPhysical(ctx context.Context, w io.Writer, label string, parent *dbagent.Record) (dbagent.Record, error) {
	if parent != nil {
		return dbagent.Record{}, fmt.Errorf("incremental physical backup of PostgreSQL %s: %w", i.e.ds.Version, cairn.ErrUnsupported)
	}
	if err := validLabel(label); err != nil {
		return dbagent.Record{}, err
	}
	rec := dbagent.Record{Datastore: i.e.ds, Method: dbagent.Physical, Label: label, Started: time.Now()}
	segSize, err := i.walSegmentSize(ctx)
	if err != nil {
		return rec, err
	}
	if label == "" {
		label = "cairn"
	}
	hold, err := i.connect(ctx, "postgres", "cairn-basebackup")
	if err != nil {
		return rec, fmt.Errorf("physical backup: %w", err)
	}
	defer hold.Close(context.WithoutCancel(ctx))
	slot := slotName(basebackupSlotPrefix)
	if _, err := hold.Exec(ctx, "SELECT pg_create_physical_replication_slot($1, true, true)", slot); err != nil {
		return rec, fmt.Errorf("physical backup: reserving its WAL: %w", err)
	}
	// Dropped before the session ends, so it is gone when this returns
	// (a closed session's backend drops it a moment later).
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = hold.Exec(dctx, "SELECT pg_drop_replication_slot($1)", slot)
	}()
	cw := &dbagent.CountingWriter{W: w}
	cmd := i.e.tool(ctx, "pg_basebackup", "-d", i.connString("postgres"), "--no-password",
		"-D", "-", "-F", "tar", "-X", "fetch", "-c", "fast", "-v", "-l", label)
	cmd.Stdout = cw
	stderr, err := dbagent.RunTool(cmd)
	if err != nil {
		return rec, fmt.Errorf("physical backup: %w", err)
	}
	point, err := parseBasebackupOutput(stderr)
	if err != nil {
		return rec, fmt.Errorf("physical backup: %w", err)
	}
	rec.Finished = time.Now()
	rec.Time = rec.Finished
	rec.Bytes = cw.N
	rec.PostgreSQL = &dbagent.PostgresPoint{
		Timeline: point.Timeline, StartLSN: point.Start, StopLSN: point.End, WALSegmentSize: segSize,
	}
	return rec, nil
}

// basebackupSlotPrefix begins the names of the slots that hold a
// physical backup's WAL.
const basebackupSlotPrefix = "cairn_basebackup_"

// slotName returns a new replication slot name beginning with prefix.
func slotName(prefix string) string {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	return prefix + hex.EncodeToString(rnd[:])
}

func (i *Instance) walSegmentSize(ctx context.Context) (int64, error) {
	conn, err := i.connect(ctx, "postgres", "cairn-agent")
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int64
	if err := conn.QueryRow(ctx, "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'").Scan(&n); err != nil {
		return 0, fmt.Errorf("reading wal_segment_size: %w", err)
	}
	return n, nil
}

// Sections of a logical backup's dump file.
const (
	rolesSection    = "roles"
	databasePrefix  = "database:"
	maxRolesSection = 16 << 20
)

// BackupLogical implements dbagent.Instance: a dump file (see
// dbagent.DumpWriter) of the roles (as CREATE ROLE statements with their
// password hashes) and one pg_dump custom-format archive per user
// database. Each database's dump is consistent in itself; the record's
// LSNs bound when their snapshots were taken.
func (i *Instance) BackupLogical(ctx context.Context, w io.Writer, label string) (dbagent.Record, error) {
	rec := dbagent.Record{Datastore: i.e.ds, Method: dbagent.Logical, Label: label, Started: time.Now()}
	conn, err := i.connect(ctx, "postgres", "cairn-agent")
	if err != nil {
		return rec, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	dbs, err := userDatabases(ctx, conn)
	if err != nil {
		return rec, err
	}
	roles, err := rolesSQL(ctx, conn)
	if err != nil {
		return rec, err
	}
	before, err := currentLSN(ctx, conn)
	if err != nil {
		return rec, err
	}
	cw := &dbagent.CountingWriter{W: w}
	dw, err := dbagent.NewDumpWriter(cw)
	if err != nil {
		return rec, fmt.Errorf("logical backup: %w", err)
	}
	sw, err := dw.Section(rolesSection)
	if err != nil {
		return rec, fmt.Errorf("logical backup: %w", err)
	}
	if _, err := io.WriteString(sw, roles); err != nil {
		return rec, fmt.Errorf("logical backup: %w", err)
	}
	if err := sw.Close(); err != nil {
		return rec, fmt.Errorf("logical backup: %w", err)
	}
	for _, db := range dbs {
		sw, err := dw.Section(databasePrefix + db)
		if err != nil {
			return rec, fmt.Errorf("logical backup: %w", err)
		}
		cmd := i.e.tool(ctx, "pg_dump", "--no-password", "-F", "custom", "-d", i.connString(db))
		cmd.Stdout = sw
		if _, err := dbagent.RunTool(cmd); err != nil {
			return rec, fmt.Errorf("logical backup of %s: %w", db, err)
		}
		if err := sw.Close(); err != nil {
			return rec, fmt.Errorf("logical backup: %w", err)
		}
	}
	if err := dw.Close(); err != nil {
		return rec, fmt.Errorf("logical backup: %w", err)
	}
	after, err := currentLSN(ctx, conn)
	if err != nil {
		return rec, err
	}
	rec.Finished = time.Now()
	rec.Time = rec.Finished
	rec.Bytes = cw.N
	rec.PostgreSQL = &dbagent.PostgresPoint{StartLSN: before, StopLSN: after, Databases: dbs}
	return rec, nil
}

func currentLSN(ctx context.Context, conn *pgx.Conn) (dbagent.LSN, error) {
	var s string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&s); err != nil {
		return 0, fmt.Errorf("reading the WAL position: %w", err)
	}
	return dbagent.ParseLSN(s)
}

// rolesSQL returns the statements that recreate the roles made after
// initdb (oid 16384 and up: not the bootstrap superuser, not the
// predefined roles) with their login right and password hash.
func rolesSQL(ctx context.Context, conn *pgx.Conn) (string, error) {
	rows, err := conn.Query(ctx, `SELECT rolname, rolcanlogin, coalesce(rolpassword, '')
		FROM pg_authid WHERE oid >= 16384 ORDER BY rolname`)
	if err != nil {
		return "", fmt.Errorf("listing roles: %w", err)
	}
	var b strings.Builder
	var name, password string
	var login bool
	_, err = pgx.ForEachRow(rows, []any{&name, &login, &password}, func() error {
		b.WriteString("CREATE ROLE " + ident(name))
		if login {
			b.WriteString(" LOGIN")
		}
		if password != "" {
			b.WriteString(" PASSWORD " + literal(password))
		}
		b.WriteString(";\n")
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("listing roles: %w", err)
	}
	return b.String(), nil
}

// RestoreLogical implements dbagent.Instance: the roles first, then each
// database with pg_restore --create.
func (i *Instance) RestoreLogical(ctx context.Context, r io.Reader) error {
	dr, err := dbagent.NewDumpReader(r)
	if err != nil {
		return fmt.Errorf("logical restore: %w", err)
	}
	for {
		name, err := dr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("logical restore: %w", err)
		}
		switch db, isDB := strings.CutPrefix(name, databasePrefix); {
		case name == rolesSection:
			if err := i.restoreRoles(ctx, dr); err != nil {
				return err
			}
		case isDB && db != "":
			cmd := i.e.tool(ctx, "pg_restore", "--no-password", "--create", "--exit-on-error", "-d", i.connString("postgres"))
			cmd.Stdin = dr
			if _, err := dbagent.RunTool(cmd); err != nil {
				return fmt.Errorf("logical restore of %s: %w", db, err)
			}
		default:
			return fmt.Errorf("logical restore: unknown section %q: %w", name, cairn.ErrCorrupt)
		}
	}
}

func (i *Instance) restoreRoles(ctx context.Context, r io.Reader) error {
	b, err := io.ReadAll(io.LimitReader(r, maxRolesSection+1))
	if err != nil {
		return fmt.Errorf("logical restore: roles: %w", err)
	}
	if len(b) > maxRolesSection {
		return fmt.Errorf("logical restore: roles section over %d bytes: %w", maxRolesSection, cairn.ErrCorrupt)
	}
	if len(b) == 0 {
		return nil
	}
	conn, err := i.connect(ctx, "postgres", "cairn-agent")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// One implicit transaction: all roles or none.
	if _, err := conn.Exec(ctx, string(b)); err != nil {
		return serverError("logical restore: roles", err)
	}
	return nil
}
