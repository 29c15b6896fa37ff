package dbagenttest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"

	"golang.org/x/sync/errgroup"
)

// Bounds place one commit in the server's history: its commit position
// lies in (Before, After] (PostgreSQL: WAL positions around the commit
// record) or is exactly After with Before = After - 1 (MariaDB: the GTID
// sequence number).
type Bounds struct{ Before, After uint64 }

// Commit is one row the writer committed.
type Commit struct {
	ID     int64
	Bounds Bounds
}

// Writer inserts rows 1, 2, 3, … into a table, one transaction each, and
// logs each commit's bounds, until stopped.
type Writer struct {
	mu       sync.Mutex
	log      []Commit
	progress chan struct{} // closed and replaced at each commit
	stop     chan struct{}
	stopOnce sync.Once
	g        *errgroup.Group
	failed   chan struct{} // closed when the writer's goroutine fails
}

// StartWriter starts a writer on its own connection from db.
func StartWriter(t *testing.T, ctx context.Context, h *Harness, db *sql.DB, table string) *Writer {
	t.Helper()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := &Writer{progress: make(chan struct{}), stop: make(chan struct{}), failed: make(chan struct{})}
	w.g = &errgroup.Group{}
	w.g.Go(func() error {
		defer conn.Close()
		for id := int64(1); ; id++ {
			select {
			case <-w.stop:
				return nil
			default:
			}
			b, err := h.Commit(ctx, conn, fmt.Sprintf("INSERT INTO %s (id, payload) VALUES (%d, '%s')", table, id, payload(id)))
			if err != nil {
				close(w.failed)
				return fmt.Errorf("writer: row %d: %w", id, err)
			}
			w.mu.Lock()
			w.log = append(w.log, Commit{ID: id, Bounds: b})
			close(w.progress)
			w.progress = make(chan struct{})
			w.mu.Unlock()
		}
	})
	t.Cleanup(func() { _ = w.Stop() })
	return w
}

func payload(id int64) string { return fmt.Sprintf("row-%d", id) }

// Committed returns how many rows have been committed.
func (w *Writer) Committed() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.log)
}

// WaitFor waits until n rows have been committed.
func (w *Writer) WaitFor(ctx context.Context, n int) error {
	for {
		w.mu.Lock()
		if len(w.log) >= n {
			w.mu.Unlock()
			return nil
		}
		ch := w.progress
		w.mu.Unlock()
		select {
		case <-ch:
		case <-w.failed:
			return w.Stop()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Stop stops the writer after its current commit and returns the log.
func (w *Writer) Stop() error {
	w.stopOnce.Do(func() { close(w.stop) })
	err := w.g.Wait()
	if err == nil && w.Committed() == 0 {
		return errors.New("writer: no row committed")
	}
	return err
}

// Log returns the commits so far.
func (w *Writer) Log() []Commit {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Commit(nil), w.log...)
}
