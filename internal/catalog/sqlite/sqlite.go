// Package sqlite is the catalog in one SQLite file, the service's
// embedded default (modernc.org/sqlite: no cgo).
//
// The database runs in WAL mode with synchronous=FULL, so a transaction
// Update has committed survives the process being killed (and the machine
// losing power). Writes go through a pool of exactly one connection whose
// transactions begin with BEGIN IMMEDIATE: Updates queue for it (up to
// their context) instead of failing with SQLITE_BUSY, and, being one at a
// time, are serializable. Views read from a pool of several read-only
// connections; WAL gives each a snapshot, and none waits for the writer.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path/filepath"
	"runtime"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/cairnproject/cairn/internal/catalog/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// busyTimeout is how long a statement waits for another process's lock
// on the file before failing with SQLITE_BUSY (which Update then retries).
const busyTimeout = 5 * time.Second

// cacheSize is each connection's page cache: 32 MiB, where SQLite's
// default of 2 MiB has a catalog of ten thousand policies and their
// volumes and backups read pages back from the file in every
// transaction.
const cacheSize = "cache_size(-32768)"

// Store is a catalog.Store in a SQLite file.
type Store struct {
	*sqlstore.Store
	write *sql.DB // the single writer connection
}

// Open opens (creating it if missing) the catalog in the file at path and
// brings its schema up to date. A file whose schema is newer than this
// build's is refused with an error wrapping cairn.ErrUnsupported.
func Open(ctx context.Context, path string) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: %w", path, err)
	}
	d, err := dialect()
	if err != nil {
		return nil, err
	}
	write, err := openPool(abs, url.Values{
		"_txlock":       {"immediate"},
		"_busy_timeout": {fmt.Sprint(busyTimeout.Milliseconds())},
		"_journal_mode": {"WAL"},
		"_synchronous":  {"FULL"},
		"_foreign_keys": {"1"},
		"_pragma":       {cacheSize},
	}, 1)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: %w", path, err)
	}
	// Migrating through the writer also switches a new file to WAL.
	if err := sqlstore.Migrate(ctx, write, &d); err != nil {
		write.Close()
		return nil, fmt.Errorf("catalog %s: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	read, err := openPool(abs, url.Values{
		"_busy_timeout": {fmt.Sprint(busyTimeout.Milliseconds())},
		"_foreign_keys": {"1"},
		"_query_only":   {"1"},
		"_pragma":       {cacheSize},
	}, n)
	if err == nil {
		err = read.PingContext(ctx)
		if err != nil {
			read.Close()
		}
	}
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("catalog %s: readers: %w", path, err)
	}
	s, err := sqlstore.New(ctx, d, read, write)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: %w", path, err)
	}
	return &Store{Store: s, write: write}, nil
}

// openPool returns a pool of at most n connections to the file at abs
// with the driver parameters q.
func openPool(abs string, q url.Values, n int) (*sql.DB, error) {
	// A file: URI, so that any character in the path is escaped.
	u := url.URL{Scheme: "file", OmitHost: true, Path: abs, RawQuery: q.Encode()}
	c, err := sqlite.NewConnector(u.String())
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(c)
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	return db, nil
}

func dialect() (sqlstore.Dialect, error) {
	m, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return sqlstore.Dialect{}, fmt.Errorf("sqlite migrations: %w", err)
	}
	return sqlstore.Dialect{
		Name:    "sqlite",
		ReadTx:  sql.TxOptions{ReadOnly: true},
		WriteTx: sql.TxOptions{}, // BEGIN IMMEDIATE, by _txlock
		Retryable: func(err error) bool {
			return code(err)&0xff == sqlite3.SQLITE_BUSY
		},
		Duplicate: func(err error) bool {
			c := code(err)
			return c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || c == sqlite3.SQLITE_CONSTRAINT_UNIQUE
		},
		ForeignKey: func(err error) bool {
			return code(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
		},
		Time: func(t time.Time) any { return t.UnixMicro() },
		MigrationsTable: `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			applied_at INTEGER NOT NULL
		) STRICT`,
		Migrations: m,
		Prepare:    true,
	}, nil
}

// code is err's SQLite extended result code, or 0.
func code(err error) int {
	var e *sqlite.Error
	if errors.As(err, &e) {
		return e.Code()
	}
	return 0
}
