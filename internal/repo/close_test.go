package repo_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/mem"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/repo/repotest"
)

// closingBackend counts its Close calls.
type closingBackend struct {
	objstore.Backend
	closes atomic.Int32
	err    error
}

func (b *closingBackend) Close() error {
	b.closes.Add(1)
	return b.err
}

// Close stops a running backup's heartbeat and waits for it, closes the
// store the repository owns, once however often it is called; the backup
// then refuses to commit, and no new one starts.
func TestCloseStopsHeartbeatsAndClosesTheStore(t *testing.T) {
	clk := newClock()
	inner := mem.New(mem.Options{Now: clk.Now})
	be := &closingBackend{Backend: inner}
	r := initRepoWith(t, be, format.GCParams{SessionTimeout: format.Duration(3 * time.Second)}, clockOpts(clk))
	g := newGate(t)
	done := startBackup(t, r, &repotest.Source{Data: repotest.Mixed(70, 2*testChunk, testChunk), Block: g.at(0)}, repo.BackupOptions{})
	<-g.reached
	if n := clk.Tickers(); n != 1 {
		t.Fatalf("%d tickers run during a backup, want its heartbeat's", n)
	}
	for range 2 {
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if n := clk.Tickers(); n != 0 {
			t.Fatal("Close returned while the heartbeat ran")
		}
		if n := be.closes.Load(); n != 1 {
			t.Fatalf("the store was closed %d times", n)
		}
	}
	close(g.open)
	if res := <-done; res.err == nil {
		t.Fatal("a backup whose repository was closed committed")
	}
	if _, err := r.Backup(t.Context(), &repotest.Source{Data: []byte("x")}, repo.BackupOptions{SourceName: "late"}); err == nil {
		t.Fatal("a backup started on a closed repository")
	}
	list, err := reopenWith(t, inner, clockOpts(clk)).Backups(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Backups) != 0 {
		t.Fatalf("%d backups visible", len(list.Backups))
	}
}

// Close reports the store's error, every time; a store without Close is
// left alone.
func TestCloseReportsTheStoresError(t *testing.T) {
	failing := errors.New("flush failed")
	be := &closingBackend{Backend: mem.New(mem.Options{}), err: failing}
	r := initRepo(t, be)
	for range 2 {
		if err := r.Close(); !errors.Is(err, failing) {
			t.Fatalf("close: %v", err)
		}
	}
	if n := be.closes.Load(); n != 1 {
		t.Fatalf("the store was closed %d times", n)
	}
	plain, _ := newMemRepo(t)
	if err := plain.Close(); err != nil {
		t.Fatalf("close over a store without Close: %v", err)
	}
}
