package postgres

import (
	"context"
	"errors"
	"io/fs"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/catalog/catalogtest"
	"github.com/cairnproject/cairn/internal/catalog/postgres/pgtest"
)

func open(t *testing.T, dbURL string) *Store {
	t.Helper()
	s, err := Open(t.Context(), dbURL)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	catalogtest.Run(t, func(t *testing.T) catalog.Store { return open(t, pgtest.FreshDatabase(t)) })
}

// versions returns the schema_migrations rows of the database at dbURL.
func versions(t *testing.T, dbURL string) []int64 {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(t.Context(), "SELECT version FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// TestConcurrentOpen: processes opening a new database at once migrate
// it once, without an error.
func TestConcurrentOpen(t *testing.T) {
	dbURL := pgtest.FreshDatabase(t)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			s, err := Open(t.Context(), dbURL)
			if err != nil {
				t.Errorf("Open: %v", err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if vs := versions(t, dbURL); len(vs) != len(files) {
		t.Errorf("schema_migrations %v, want one row for each of %v", vs, files)
	}
}

func TestTooNewSchema(t *testing.T) {
	dbURL := pgtest.FreshDatabase(t)
	s, err := Open(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(t.Context(), "INSERT INTO schema_migrations (version, applied_at) VALUES (9999, now())")
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s, err = Open(t.Context(), dbURL)
	if !errors.Is(err, cairn.ErrUnsupported) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open of a schema from the future: %v, want ErrUnsupported", err)
	}
	t.Log(err)
}

// TestRetry: of two Updates that read a row and then both write it, the
// second fails to serialize, and is run again, and succeeds.
func TestRetry(t *testing.T) {
	s := open(t, pgtest.FreshDatabase(t))
	ctx := t.Context()
	p := cairn.Project{ID: "p", Name: "p", Quota: cairn.Quota{}, CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
	if err := s.Update(ctx, func(tx catalog.Tx) error { return tx.InsertProject(ctx, p) }); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	var bothRead sync.WaitGroup
	bothRead.Add(2)
	var wg sync.WaitGroup
	for range 2 {
		first := true
		wg.Go(func() {
			err := s.Update(ctx, func(tx catalog.Tx) error {
				calls.Add(1)
				q, err := tx.Project(ctx, p.ID)
				if err != nil {
					return err
				}
				if first {
					first = false
					bothRead.Done()
					bothRead.Wait()
				}
				q.Quota.Volumes++
				return tx.UpdateProject(ctx, q)
			})
			if err != nil {
				t.Errorf("Update: %v", err)
			}
		})
	}
	wg.Wait()
	err := s.View(ctx, func(tx catalog.Tx) error {
		q, err := tx.Project(ctx, p.ID)
		if err == nil && q.Quota.Volumes != 2 {
			t.Errorf("quota.volumes %d after 2 increments", q.Quota.Volumes)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n < 3 {
		t.Errorf("fn ran %d times; the conflict was not retried", n)
	}
}
