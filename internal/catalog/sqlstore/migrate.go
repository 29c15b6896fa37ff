package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
)

// Beginner is a pool or a single connection.
type Beginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// migration is one schema file.
type migration struct {
	version int64
	name    string
	sql     string
}

// migrations reads d.Migrations: every NNNN_name.sql at its root.
func (d *Dialect) migrations() ([]migration, error) {
	entries, err := fs.ReadDir(d.Migrations, ".")
	if err != nil {
		return nil, fmt.Errorf("schema migrations: %w", err)
	}
	var ms []migration
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("schema migration %s: name is not NNNN_name.sql: %w", name, cairn.ErrInvalid)
		}
		b, err := fs.ReadFile(d.Migrations, name)
		if err != nil {
			return nil, fmt.Errorf("schema migration %s: %w", name, err)
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return cmp.Compare(a.version, b.version) })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("schema migrations %s and %s: same version: %w", ms[i-1].name, ms[i].name, cairn.ErrInvalid)
		}
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("schema migrations: none: %w", cairn.ErrInvalid)
	}
	return ms, nil
}

// Migrate brings db's schema up to the newest of d.Migrations, applying
// each missing one in its own transaction (d.WriteTx) together with its
// schema_migrations row. It is idempotent. It fails with an error wrapping
// cairn.ErrUnsupported when the database's version is newer than any this
// build knows. Two processes migrating at once must be kept apart by the
// caller (PostgreSQL: an advisory lock) unless WriteTx already does
// (SQLite: BEGIN IMMEDIATE, and the version is read inside it).
func Migrate(ctx context.Context, db Beginner, d *Dialect) error {
	ms, err := d.migrations()
	if err != nil {
		return err
	}
	latest := ms[len(ms)-1].version
	if _, err := db.ExecContext(ctx, d.MigrationsTable); err != nil {
		return fmt.Errorf("%s schema_migrations: %w", d.Name, err)
	}
	for {
		done, err := migrateOne(ctx, db, d, ms, latest)
		if err != nil || done {
			return err
		}
	}
}

// migrateOne applies the first migration newer than the database's
// version; done reports there was none.
func migrateOne(ctx context.Context, db Beginner, d *Dialect, ms []migration, latest int64) (done bool, err error) {
	q, err := db.BeginTx(ctx, &d.WriteTx)
	if err != nil {
		return false, fmt.Errorf("%s migration: begin: %w", d.Name, err)
	}
	defer q.Rollback()
	var current int64
	if err := q.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&current); err != nil {
		return false, fmt.Errorf("%s schema version: %w", d.Name, err)
	}
	if current > latest {
		return false, fmt.Errorf("%s catalog schema version %d is newer than this build's %d: %w", d.Name, current, latest, cairn.ErrUnsupported)
	}
	i := slices.IndexFunc(ms, func(m migration) bool { return m.version > current })
	if i < 0 {
		return true, nil
	}
	m := ms[i]
	if _, err := q.ExecContext(ctx, m.sql); err != nil {
		return false, fmt.Errorf("%s migration %s: %w", d.Name, m.name, err)
	}
	if _, err := q.ExecContext(ctx, d.rebind("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)"),
		m.version, d.Time(time.Now())); err != nil {
		return false, fmt.Errorf("%s migration %s: recording it: %w", d.Name, m.name, err)
	}
	if err := q.Commit(); err != nil {
		return false, fmt.Errorf("%s migration %s: commit: %w", d.Name, m.name, err)
	}
	return false, nil
}
