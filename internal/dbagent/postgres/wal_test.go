package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbagent/dbagenttest"
	"github.com/cairnproject/cairn/internal/pgwal"
)

// testStreamWAL streams a server's WAL over the archive slot while rows
// are committed: the bytes come in order without a hole, the decoder
// finds every commit in them, the slot lets go of what the stream says
// is flushed, and a second stream meets the first's slot in use.
func testStreamWAL(t *testing.T, env *dbagenttest.Env) {
	ctx := t.Context()
	src := env.Source(t, false)
	ws := src.Inst.(dbagent.WALSource)
	if _, err := ws.TimelineHistory(ctx, 1); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("history of timeline 1: %v, want invalid", err)
	}
	slot, err := ws.WALSlot(ctx)
	if err != nil || slot.Exists || slot.KeepBytes != 1<<30 {
		t.Fatalf("slot before the first stream: %+v %v", slot, err)
	}
	id, err := ws.WALIdentity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id.Timeline != 1 || id.SystemID == "" || id.SegmentSize != 16<<20 || id.Flushed == 0 {
		t.Fatalf("identity %+v", id)
	}
	if _, err := ws.StreamWAL(ctx, dbagent.WALStreamRequest{Timeline: 1, Start: id.Flushed + 1<<30},
		func(dbagent.WALMessage) error { return nil }); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("stream from beyond the flushed end: %v, want invalid", err)
	}

	const commits = 40
	start := id.Flushed - id.Flushed%pgwal.PageSize
	dec := pgwal.NewDecoder(uint64(start), uint64(id.SegmentSize), true)
	var mu sync.Mutex
	flushed := start
	found := 0
	next := start
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	sawCommits := make(chan struct{})
	go func() {
		_, err := ws.StreamWAL(sctx, dbagent.WALStreamRequest{Timeline: 1, Start: start, StatusInterval: 50 * time.Millisecond,
			Flushed: func() dbagent.LSN { mu.Lock(); defer mu.Unlock(); return flushed }},
			func(m dbagent.WALMessage) error {
				mu.Lock()
				defer mu.Unlock()
				if len(m.Data) == 0 {
					return nil // a keepalive
				}
				if m.Start != next {
					return fmt.Errorf("bytes from %s, want %s", m.Start, next)
				}
				next += dbagent.LSN(len(m.Data))
				before := found
				for _, e := range dec.Write(m.Data) {
					if e.Kind == pgwal.Commit {
						found++
					}
				}
				if before < commits && found >= commits {
					close(sawCommits)
				}
				flushed = next
				return nil
			})
		done <- err
	}()
	for i := range commits {
		if _, err := src.DB.ExecContext(ctx, "INSERT INTO writes (id, payload) VALUES ($1, $2)", 100000+i, fmt.Sprint("wal-", i)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-sawCommits:
	case err := <-done:
		t.Fatalf("the stream ended before %d commits were seen: %v", commits, err)
	}
	// The stream goes on calling fn (and so the decoder) after the
	// commits were seen.
	mu.Lock()
	st := dec.Stats()
	mu.Unlock()
	if st.Damaged != 0 {
		t.Fatalf("decoding the stream: %+v", st)
	}

	// A second stream finds the slot in use.
	if _, err := ws.StreamWAL(ctx, dbagent.WALStreamRequest{Timeline: 1, Start: start},
		func(dbagent.WALMessage) error { return nil }); !errors.Is(err, cairn.ErrConflict) {
		t.Fatalf("a second stream: %v, want conflict", err)
	}
	// The slot lets go of what the stream reported flushed.
	mu.Lock()
	want := flushed
	mu.Unlock()
	for {
		slot, err := ws.WALSlot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if slot.Exists && slot.Active && slot.RestartLSN >= want {
			if slot.Status != "reserved" && slot.Status != "extended" {
				t.Fatalf("slot status %q", slot.Status)
			}
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the stream ended: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("stream after cancel: %v", err)
	}
}

// testStreamWALSlowReader: a reader blocked for several times the
// server's wal_sender_timeout keeps its session (the stream goes on
// answering the server while the reader waits), and once it reads again
// the WAL comes on without a hole.
func testStreamWALSlowReader(t *testing.T, env *dbagenttest.Env) {
	ctx := t.Context()
	src := env.Source(t, false)
	for _, stmt := range []string{"ALTER SYSTEM SET wal_sender_timeout = '2s'", "SELECT pg_reload_conf()"} {
		if _, err := src.DB.ExecContext(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	ws := src.Inst.(dbagent.WALSource)
	id, err := ws.WALIdentity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := id.Flushed - id.Flushed%pgwal.PageSize
	var mu sync.Mutex
	next := start
	blocked, release := make(chan struct{}), make(chan struct{})
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() {
		first := true
		_, err := ws.StreamWAL(sctx, dbagent.WALStreamRequest{Timeline: 1, Start: start, StatusInterval: 100 * time.Millisecond},
			func(m dbagent.WALMessage) error {
				if len(m.Data) == 0 {
					return nil
				}
				if first {
					first = false
					close(blocked)
					<-release
				}
				mu.Lock()
				defer mu.Unlock()
				if m.Start != next {
					return fmt.Errorf("bytes from %s, want %s", m.Start, next)
				}
				next += dbagent.LSN(len(m.Data))
				return nil
			})
		done <- err
	}()
	insert := func(from, n int) {
		for i := range n {
			if _, err := src.DB.ExecContext(ctx, "INSERT INTO writes (id, payload) VALUES ($1, repeat('x', 100))", from+i); err != nil {
				t.Fatal(err)
			}
		}
	}
	insert(200000, 200)
	select {
	case <-blocked:
	case err := <-done:
		t.Fatalf("the stream ended before its first WAL: %v", err)
	}
	// The walsender hears from the session for more than twice its
	// timeout while the reader is blocked: it would have ended the
	// session after one.
	replyTime := func() (time.Time, bool) {
		var at time.Time
		err := src.DB.QueryRowContext(ctx, "SELECT reply_time FROM pg_stat_replication WHERE application_name = 'cairn-archive'").Scan(&at)
		if err != nil {
			return time.Time{}, false
		}
		return at, true
	}
	first, ok := replyTime()
	for !ok {
		select {
		case err := <-done:
			t.Fatalf("the stream ended: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		first, ok = replyTime()
	}
	for n := 300000; ; n += 20 {
		at, ok := replyTime()
		if !ok {
			t.Fatal("the server ended the session of a blocked reader")
		}
		if at.Sub(first) > 5*time.Second {
			break
		}
		insert(n, 20)
		select {
		case err := <-done:
			t.Fatalf("the stream ended while its reader was blocked: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	close(release)
	// Reading again, the stream delivers what the server wrote since.
	id2, err := ws.WALIdentity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for {
		mu.Lock()
		at := next
		mu.Unlock()
		if at >= id2.Flushed {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the stream ended after its reader came back: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("stream after cancel: %v", err)
	}
}
