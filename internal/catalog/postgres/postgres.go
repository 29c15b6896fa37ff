// Package postgres is the catalog in a PostgreSQL database, for services
// that share one catalog or keep it off the local disk
// (github.com/jackc/pgx/v5 through database/sql).
//
// Update runs at SERIALIZABLE isolation; a transaction PostgreSQL aborts
// with a serialization failure (SQLSTATE 40001) or a deadlock (40P01) is
// rolled back and its function run again. View runs READ ONLY at
// REPEATABLE READ: one snapshot, and never a serialization failure.
package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/cairnproject/cairn/internal/catalog/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is the pg_advisory_lock key that keeps processes opening
// the same database from migrating it at once ("cairncat").
const migrationLock int64 = 0x636169726e636174

// maxConns bounds each of the two pools (View's and Update's): one
// connection per concurrent transaction. Separate pools let a function
// running in an Update call View even when every writer is busy.
const maxConns = 8

// Store is a catalog.Store in a PostgreSQL database.
type Store struct {
	*sqlstore.Store
}

// Open connects to the database at url (a postgres:// URL or a key=value
// string, as libpq takes) and brings its schema up to date. A database
// whose schema is newer than this build's is refused with an error
// wrapping cairn.ErrUnsupported.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("catalog postgres: %w", err)
	}
	d, err := dialect()
	if err != nil {
		return nil, err
	}
	pool := func() *sql.DB {
		db := stdlib.OpenDB(*cfg)
		db.SetMaxOpenConns(maxConns)
		db.SetMaxIdleConns(maxConns)
		db.SetConnMaxIdleTime(5 * time.Minute)
		return db
	}
	write := pool()
	if err := migrate(ctx, write, &d); err != nil {
		write.Close()
		return nil, fmt.Errorf("catalog postgres %s/%s: %w", cfg.Host, cfg.Database, err)
	}
	s, err := sqlstore.New(ctx, d, pool(), write)
	if err != nil {
		return nil, fmt.Errorf("catalog postgres %s/%s: %w", cfg.Host, cfg.Database, err)
	}
	return &Store{Store: s}, nil
}

// migrate runs the migrations holding the advisory lock, on one
// connection. The lock is a session's: if unlocking fails, the connection
// is discarded rather than returned to the pool still holding it.
func migrate(ctx context.Context, db *sql.DB, d *sqlstore.Dialect) (err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", migrationLock); err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	defer func() {
		_, uerr := conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrationLock)
		if uerr != nil {
			conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	return sqlstore.Migrate(ctx, conn, d)
}

func dialect() (sqlstore.Dialect, error) {
	m, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return sqlstore.Dialect{}, fmt.Errorf("postgres migrations: %w", err)
	}
	return sqlstore.Dialect{
		Name:     "postgres",
		Numbered: true,
		ReadTx:   sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true},
		WriteTx:  sql.TxOptions{Isolation: sql.LevelSerializable},
		Retryable: func(err error) bool {
			c := sqlState(err)
			return c == "40001" || c == "40P01"
		},
		Duplicate:  func(err error) bool { return sqlState(err) == "23505" },
		ForeignKey: func(err error) bool { return sqlState(err) == "23503" },
		Time:       func(t time.Time) any { return t },
		MigrationsTable: `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    BIGINT PRIMARY KEY,
			applied_at TIMESTAMPTZ NOT NULL
		)`,
		Migrations: m,
	}, nil
}

// sqlState is err's SQLSTATE, or "".
func sqlState(err error) string {
	var e *pgconn.PgError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
