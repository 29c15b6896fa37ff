// Package sqlstore is the catalog.Store both SQL databases share: every
// transaction, query and migration, written once against database/sql and
// parametrised by a small Dialect. The sqlite and postgres packages only
// open their pools, fill in a Dialect and hand both to New.
package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/cairnproject/cairn/internal/catalog"
)

// Dialect is what differs between the databases.
type Dialect struct {
	// Name names the database in errors ("sqlite", "postgres").
	Name string
	// Numbered selects $1, $2… placeholders instead of ?. Queries are
	// written with ? and rewritten once, when the Store is made.
	Numbered bool
	// ReadTx begins View's transactions: read-only, one snapshot.
	ReadTx sql.TxOptions
	// WriteTx begins Update's transactions, which must be serializable
	// (PostgreSQL: LevelSerializable; SQLite: the writer pool's single
	// connection beginning with BEGIN IMMEDIATE).
	WriteTx sql.TxOptions
	// Retryable reports an error after which the transaction is rolled
	// back and run again: a serialization failure, a deadlock, a busy
	// database.
	Retryable func(error) bool
	// Duplicate reports a primary-key or unique-constraint violation.
	Duplicate func(error) bool
	// ForeignKey reports a foreign-key violation.
	ForeignKey func(error) bool
	// Time is the value a time column stores for t (SQLite: int64 unix
	// microseconds; PostgreSQL: the time.Time for a timestamptz). Scans
	// accept either form.
	Time func(t time.Time) any
	// MigrationsTable creates schema_migrations (version, applied_at) if
	// it is missing.
	MigrationsTable string
	// Migrations holds the schema as files NNNN_name.sql at its root,
	// applied in order of NNNN, each once.
	Migrations fs.FS
	// Prepare has New prepare the fixed statements (gets, inserts,
	// updates, deletes) on each pool, for a driver that would otherwise
	// parse each statement each time it runs (SQLite; pgx caches
	// statements by itself).
	Prepare bool
}

// rebind rewrites q's ? placeholders for the dialect. Queries never hold a
// ? inside a literal.
func (d *Dialect) rebind(q string) string {
	if !d.Numbered || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// Store is a catalog.Store over two pools: read for View, write for
// Update (for SQLite a pool of one connection). A function running in an
// Update may call View, but not Update: it would wait for itself when
// the write pool is exhausted.
type Store struct {
	d      Dialect
	read   *sql.DB
	write  *sql.DB
	tables tables
	// Statements prepared on each pool (Dialect.Prepare), by their text.
	readStmts, writeStmts *stmtCache
}

var _ catalog.Store = (*Store)(nil)

// New returns a Store that owns read and write (which may be the same
// pool) and closes them on Close, also when New fails. The schema must
// be migrated already.
func New(ctx context.Context, d Dialect, read, write *sql.DB) (*Store, error) {
	s := &Store{d: d, read: read, write: write}
	s.tables = newTables(&s.d)
	if !d.Prepare {
		return s, nil
	}
	s.readStmts, s.writeStmts = newStmtCache(read), newStmtCache(write)
	err := s.readStmts.prepareFixed(ctx, d.Name, s.tables.reads())
	if err == nil {
		err = s.writeStmts.prepareFixed(ctx, d.Name, append(s.tables.reads(), s.tables.writes()...))
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// View runs fn in a read-only transaction; fn is run once.
func (s *Store) View(ctx context.Context, fn func(catalog.Tx) error) error {
	_, err := s.run(ctx, s.read, &s.d.ReadTx, s.readStmts, fn)
	return err
}

// Update runs fn in a serializable transaction and commits it if fn
// returns nil. When the database reports a conflict (Dialect.Retryable)
// anywhere in the transaction, it is rolled back and fn run again after a
// short jittered pause, for as long as ctx allows.
func (s *Store) Update(ctx context.Context, fn func(catalog.Tx) error) error {
	for attempt := 0; ; attempt++ {
		retry, err := s.run(ctx, s.write, &s.d.WriteTx, s.writeStmts, fn)
		if !retry {
			return err
		}
		t := time.NewTimer(backoff(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s update: %d conflicts, last %v: %w", s.d.Name, attempt+1, err, ctx.Err())
		case <-t.C:
		}
	}
}

// backoff is the pause before attempt+1: doubling from 1 ms to 64 ms,
// uniformly jittered over its upper half.
func backoff(attempt int) time.Duration {
	d := time.Millisecond << min(attempt, 6)
	return d/2 + rand.N(d/2+1)
}

// run runs fn in one transaction. retry reports that the transaction hit
// a conflict and was rolled back, so running fn again may succeed.
func (s *Store) run(ctx context.Context, db *sql.DB, opts *sql.TxOptions, stmts *stmtCache, fn func(catalog.Tx) error) (retry bool, err error) {
	q, err := db.BeginTx(ctx, opts)
	if err != nil {
		return s.d.Retryable(err), fmt.Errorf("%s begin: %w", s.d.Name, err)
	}
	t := &tx{s: s, d: &s.d, q: q, stmts: stmts}
	defer q.Rollback() // a no-op (sql.ErrTxDone) after Commit
	if err := fn(t); err != nil {
		return t.conflict || s.d.Retryable(err), err
	}
	if t.conflict {
		// fn went on after a statement failed with a conflict; in
		// PostgreSQL the transaction is aborted and cannot commit.
		return true, fmt.Errorf("%s: transaction conflict", s.d.Name)
	}
	if err := q.Commit(); err != nil {
		return s.d.Retryable(err), fmt.Errorf("%s commit: %w", s.d.Name, err)
	}
	return false, nil
}

// Close closes the pools.
func (s *Store) Close() error {
	s.readStmts.close()
	s.writeStmts.close()
	err := s.write.Close()
	if s.read != s.write {
		if rerr := s.read.Close(); err == nil {
			err = rerr
		}
	}
	return err
}
