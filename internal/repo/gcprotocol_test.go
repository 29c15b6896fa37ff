package repo_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/faulty"
	"github.com/cairnproject/cairn/internal/objstore/mem"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/repo/repotest"
)

type result struct {
	m   *format.Manifest
	err error
}

// startBackup runs a backup in a goroutine the test waits for at its end
// (when t.Context has ended, which releases gates and sleeps).
func startBackup(t *testing.T, r *repo.Repository, src *repotest.Source, opts repo.BackupOptions) <-chan result {
	done := make(chan result, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		m, err := r.Backup(t.Context(), src, opts)
		done <- result{m, err}
	}()
	t.Cleanup(func() { <-finished })
	return done
}

// waitResult waits for a backup started by startBackup; the test binary's
// timeout, not a guess at how slow the machine is, bounds the wait.
func waitResult(t *testing.T, ch <-chan result) *format.Manifest {
	t.Helper()
	res := <-ch
	if res.err != nil {
		t.Fatalf("backup: %v", res.err)
	}
	return res.m
}

func pendingText(s repo.GCStats) string { return strings.Join(s.Pending, "; ") }

// A backup that already uses chunks which a gc then condemns holds the
// condemned set when it sees it; the set is swept only after the backup
// ends, and then only of what the backup did not reference.
func TestGCProtocolHoldAfterUse(t *testing.T) {
	clk := newClock()
	r, be := newClockRepo(t, clk)
	ctx := t.Context()
	data := repotest.Mixed(60, 12*testChunk, testChunk)
	for i := range data[11*testChunk:] {
		data[11*testChunk+i] = byte(i*31 + 7) // a last chunk unlike any other
	}
	f := backup(t, r, &repotest.Source{Data: data}, repo.BackupOptions{SourceName: "f"})

	// b shares f's first 11 chunks and has a new last one. One worker
	// takes the regions in order, so when b stores its first chunk, the
	// last region's, it has claimed (reused) all the others; there it
	// pauses.
	changed := bytes.Clone(data)
	changed[11*testChunk] ^= 0xff
	upload := newGate(t)
	wbe := &watchedBackend{Backend: be, beforePut: func(name string) {
		if strings.HasPrefix(name, format.ChunksPrefix) {
			upload.wait()
		}
	}}
	opts := clockOpts(clk)
	opts.Workers = 1
	beats := heartbeats(&opts)
	done := startBackup(t, reopenWith(t, wbe, opts), &repotest.Source{Data: changed}, repo.BackupOptions{SourceName: "b", NoParent: true})
	<-upload.reached

	if err := r.Forget(ctx, []cairn.ID{f.ID}); err != nil {
		t.Fatal(err)
	}
	s1, err := r.GC(ctx, repo.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s1.ChunksCondemned == 0 || s1.ChunksDeleted != 0 || !strings.Contains(pendingText(s1), "has not seen it") {
		t.Fatalf("first gc: %+v", s1)
	}
	// b's heartbeat comes due (every SessionTimeout/3, 1 s here): it sees
	// the set, finds it lists chunks b uses, and holds it.
	clk.Advance(time.Second)
	clk.Tick()
	if err := <-beats; err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	s2, err := r.GC(ctx, repo.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s2.ChunksDeleted != 0 || !strings.Contains(pendingText(s2), "held by") {
		t.Fatalf("second gc: %+v", s2)
	}
	close(upload.open)
	b := waitResult(t, done)
	s3, err := r.GC(ctx, repo.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s3.ChunksDeleted != 1 || s3.ChunksPending != 0 {
		t.Fatalf("third gc deleted %d chunks (want only f's last chunk): %+v", s3.ChunksDeleted, s3)
	}
	restoreAndCompare(t, r, b, changed)
	checkClean(t, r)
}

// A backup that starts after a set was condemned reuses its chunks only
// after holding it; the gc then keeps them.
func TestGCProtocolHoldBeforeReuse(t *testing.T) {
	clk := newClock()
	r, be := newClockRepo(t, clk)
	ctx := t.Context()
	data := repotest.Mixed(61, 10*testChunk, testChunk)
	f := backup(t, r, &repotest.Source{Data: data}, repo.BackupOptions{SourceName: "f"})
	if err := r.Forget(ctx, []cairn.ID{f.ID}); err != nil {
		t.Fatal(err)
	}
	// A running backup that has not seen the set keeps it from being
	// swept at once.
	g := newGate(t)
	gOpts := clockOpts(clk)
	gBeats := heartbeats(&gOpts)
	blocker := startBackup(t, reopenWith(t, be, gOpts), &repotest.Source{Data: repotest.Mixed(62, testChunk, testChunk), Block: g.at(0)}, repo.BackupOptions{SourceName: "g"})
	<-g.reached
	s1, err := r.GC(ctx, repo.GCOptions{})
	if err != nil || s1.ChunksDeleted != 0 || s1.ChunksPending == 0 {
		t.Fatalf("first gc: %+v %v", s1, err)
	}
	// The blocker's heartbeat: it sees the set (and uses none of its
	// chunks), so only holds can keep the set from a sweep now.
	clk.Advance(time.Second)
	clk.Tick()
	if err := <-gBeats; err != nil {
		t.Fatalf("heartbeat: %v", err)
	}

	// b reuses the set's chunks. Paused before its index, with every
	// region claimed, it must hold the set: a gc now keeps the chunks.
	index := newGate(t)
	wbe := &watchedBackend{Backend: be, beforePut: func(name string) {
		if strings.HasPrefix(name, format.IndexesPrefix) {
			index.wait()
		}
	}}
	done := startBackup(t, reopenWith(t, wbe, clockOpts(clk)), &repotest.Source{Data: data}, repo.BackupOptions{SourceName: "b", NoParent: true})
	select {
	case <-index.reached:
	case res := <-done:
		t.Fatalf("backup ended before writing its index: %v", res.err)
	}
	s, err := r.GC(ctx, repo.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.ChunksDeleted != 0 || !strings.Contains(pendingText(s), "held by") {
		t.Fatalf("gc while a backup reuses the set's chunks: %+v", s)
	}
	close(index.open)
	b := waitResult(t, done)
	if b.Stats.ChunksNew != 0 {
		t.Fatalf("backup stored %d chunks that were condemned but held", b.Stats.ChunksNew)
	}
	close(g.open)
	waitResult(t, blocker)
	s2, err := r.GC(ctx, repo.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s2.ChunksDeleted != 0 || s2.ChunksPending != 0 {
		t.Fatalf("gc after the backups: %+v", s2)
	}
	restoreAndCompare(t, r, b, data)
	checkClean(t, r)
}

// A backup that needs a chunk of a set being swept waits for the sweep to
// end and uploads the chunk again.
func TestGCProtocolWaitForSweep(t *testing.T) {
	clk := newClock()
	r, be := newClockRepo(t, clk)
	ctx := t.Context()
	data := repotest.Mixed(63, 6*testChunk, testChunk)
	f := backup(t, r, &repotest.Source{Data: data}, repo.BackupOptions{SourceName: "f"})
	if err := r.Forget(ctx, []cairn.ID{f.ID}); err != nil {
		t.Fatal(err)
	}
	g := newGate(t)
	blocker := startBackup(t, reopenWith(t, be, clockOpts(clk)), &repotest.Source{Data: repotest.Mixed(64, testChunk, testChunk), Block: g.at(0)}, repo.BackupOptions{SourceName: "g"})
	<-g.reached
	if _, err := r.GC(ctx, repo.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	var set string
	_ = be.List(ctx, format.CondemnedPrefix, func(i objstore.ObjectInfo) error {
		set = strings.TrimPrefix(i.Name, format.CondemnedPrefix)
		return nil
	})
	if set == "" {
		t.Fatal("no condemned set")
	}
	// Play a sweeper that has announced itself.
	if err := be.Put(ctx, format.SweepingPrefix+set, []byte("x"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	done := startBackup(t, reopenWith(t, be, clockOpts(clk)), &repotest.Source{Data: data}, repo.BackupOptions{SourceName: "b", NoParent: true})
	// The backup holds the set, finds the sweep under way and waits for
	// it: it sleeps on the clock, which nothing moves yet. Finishing
	// instead would be using chunks the sweep is deleting.
	select {
	case res := <-done:
		t.Fatalf("backup finished during a sweep of chunks it needs: %+v", res)
	case <-clk.Sleeping(1):
	}
	// The sweep deletes the chunks and ends; the backup's next look finds
	// it over.
	_ = be.List(ctx, format.ChunksPrefix, func(i objstore.ObjectInfo) error { return be.Delete(ctx, i.Name) })
	_ = be.Delete(ctx, format.CondemnedPrefix+set)
	_ = be.Delete(ctx, format.SweepingPrefix+set)
	clk.WakeSleepers()
	b := waitResult(t, done)
	if b.Stats.ChunksNew == 0 {
		t.Fatal("backup did not upload the swept chunks again")
	}
	close(g.open)
	waitResult(t, blocker)
	restoreAndCompare(t, r, b, data)
	checkClean(t, r)
}

// A backup whose session went stale (a paused process) must not commit.
func TestStaleSessionDoesNotCommit(t *testing.T) {
	clk := newClock()
	_, inner := newClockRepo(t, clk)
	be := faulty.New(inner, faulty.Options{})
	opts := clockOpts(clk)
	beats := heartbeats(&opts)
	r := reopenWith(t, be, opts)
	g := newGate(t)
	done := startBackup(t, r, &repotest.Source{Data: repotest.Mixed(65, testChunk, testChunk), Block: g.at(0)}, repo.BackupOptions{SourceName: "s"})
	<-g.reached
	// The store refuses writes to sessions/, so the heartbeat, due now,
	// cannot refresh the marker; and 2.5 s is beyond 2/3 of the 3 s
	// timeout, when a session stops trusting its marker.
	be.SetOptions(faulty.Options{Prefix: format.SessionsPrefix, FailRate: 1})
	clk.Advance(2500 * time.Millisecond)
	clk.Tick()
	if err := <-beats; err == nil {
		t.Fatal("the heartbeat refreshed the session through a store refusing it")
	}
	close(g.open)
	res := <-done
	be.SetOptions(faulty.Options{})
	if res.err == nil {
		t.Fatal("a backup with a stale session committed")
	}
	if !errors.Is(res.err, cairn.ErrConflict) {
		t.Fatalf("a backup with a stale session failed with %v, want a conflict", res.err)
	}
	list, err := r.Backups(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Backups) != 0 {
		t.Fatal("backup visible")
	}
}

// A backup whose session looked dead for a while must not commit, even
// when its heartbeat later refreshes the marker again: a gc may have
// swept, meanwhile, sets the session had not seen.
func TestSessionStaleOnceDoesNotCommit(t *testing.T) {
	clk := newClock()
	rGC, inner := newClockRepo(t, clk)
	be := faulty.New(inner, faulty.Options{})
	opts := clockOpts(clk)
	beats := heartbeats(&opts)
	r := reopenWith(t, be, opts)
	g := newGate(t)
	done := startBackup(t, r, &repotest.Source{Data: repotest.Mixed(70, testChunk, testChunk), Block: g.at(0)}, repo.BackupOptions{SourceName: "s"})
	<-g.reached
	// The store refuses the heartbeat due at 2.5 s; at 3.5 s a gc finds
	// the marker dead (3 s timeout) and removes it.
	be.SetOptions(faulty.Options{Prefix: format.SessionsPrefix, FailRate: 1})
	clk.Advance(2500 * time.Millisecond)
	clk.Tick()
	if err := <-beats; err == nil {
		t.Fatal("the heartbeat refreshed the session through a store refusing it")
	}
	clk.Advance(time.Second)
	s, err := rGC.GC(t.Context(), repo.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.SessionsRemoved != 1 {
		t.Fatalf("gc removed %d sessions, want the stale one: %+v", s.SessionsRemoved, s)
	}
	// The store works again: the next heartbeat writes the marker, but
	// the session was dead to the gc and must say so.
	be.SetOptions(faulty.Options{})
	clk.Tick()
	if err := <-beats; !errors.Is(err, cairn.ErrConflict) {
		t.Fatalf("heartbeat after the session was taken for dead: %v, want a conflict", err)
	}
	close(g.open)
	res := <-done
	if !errors.Is(res.err, cairn.ErrConflict) {
		t.Fatalf("a backup whose session was taken for dead ended with %v, want a conflict", res.err)
	}
	list, err := r.Backups(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Backups) != 0 {
		t.Fatal("backup visible")
	}
}

// A lagging listing lets GC condemn the same chunks in two sets. A backup
// that reuses them must hold both: the sweep of either would delete them.
func TestGCProtocolChunkInTwoSets(t *testing.T) {
	const lag = 300 * time.Millisecond
	ctx := t.Context()
	clk := newClock()
	be := mem.New(mem.Options{ListLag: lag, Now: clk.Now})
	// The gc runs in this goroutine: its waits for the margin make the
	// time pass, for the store's listings too.
	gcOpts := clockOpts(clk)
	gcOpts.Sleep = clk.Pass
	r := initRepoWith(t, be, format.GCParams{SessionTimeout: format.Duration(10 * time.Second), ConsistencyMargin: format.Duration(lag)}, gcOpts)
	clk.Advance(lag) // the key and config show in listings
	data := repotest.Mixed(66, 8*testChunk, testChunk)
	f := backup(t, r, &repotest.Source{Data: data}, repo.BackupOptions{SourceName: "f"})
	clk.Advance(lag)
	if err := r.Forget(ctx, []cairn.ID{f.ID}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(lag)
	// Two gcs at one instant: the second does not list the first's set
	// yet, and condemns the same chunks again.
	for range 2 {
		if _, err := r.GC(ctx, repo.GCOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(2 * lag)
	var sets []string
	_ = be.List(ctx, format.CondemnedPrefix, func(i objstore.ObjectInfo) error {
		sets = append(sets, strings.TrimPrefix(i.Name, format.CondemnedPrefix))
		return nil
	})
	if len(sets) != 2 {
		t.Fatalf("%d condemned sets, want two", len(sets))
	}

	// A backup reuses the condemned chunks, and pauses before it commits:
	// when it writes its index, every region is claimed.
	var mu sync.Mutex
	held := map[string]bool{}
	index := newGate(t)
	wbe := &watchedBackend{
		Backend: be,
		beforePut: func(name string) {
			if strings.HasPrefix(name, format.IndexesPrefix) {
				index.wait()
			}
		},
		afterPut: func(name string) {
			if set, _, ok := strings.Cut(strings.TrimPrefix(name, format.HoldsPrefix), "/"); ok && strings.HasPrefix(name, format.HoldsPrefix) {
				mu.Lock()
				held[set] = true
				mu.Unlock()
			}
		},
	}
	done := startBackup(t, reopenWith(t, wbe, clockOpts(clk)), &repotest.Source{Data: data}, repo.BackupOptions{SourceName: "b", NoParent: true})
	select {
	case <-index.reached:
	case res := <-done:
		t.Fatalf("backup ended before writing its index: %v", res.err)
	}
	mu.Lock()
	if len(held) != 2 || !held[sets[0]] || !held[sets[1]] {
		t.Errorf("the backup reused chunks of sets %v holding only %v", sets, held)
	}
	mu.Unlock()
	// Sweeps now must find every set held.
	before := len(chunkNames(t, be))
	for range 2 {
		clk.Advance(2 * lag)
		s, err := r.GC(ctx, repo.GCOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(pendingText(s), "held by") != 2 {
			t.Fatalf("gc while a backup holds both sets: %+v", s)
		}
	}
	if got := len(chunkNames(t, be)); got < before {
		t.Fatalf("gc deleted %d chunks while a backup held every set listing them", before-got)
	}
	close(index.open)
	b := waitResult(t, done)
	clk.Advance(lag) // b's manifest shows in listings
	restoreAndCompare(t, r, b, data)
	checkClean(t, r)
}

// randomChunks returns n chunks of random bytes, none like another.
func randomChunks(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 3))
	out := make([]byte, n*testChunk)
	for i := range out {
		out[i] = byte(r.Uint32())
	}
	return out
}

// A backup that waits for a sweep of a set whose chunk it wants keeps its
// session alive meanwhile: its heartbeat refreshes the marker and takes in
// (and holds) a new set listing a chunk the backup already uploaded, and a
// gc sees the session alive, however long the sweep it waits for runs.
func TestGCProtocolHeartbeatWhileWaitingForSweep(t *testing.T) {
	clk := newClock()
	r, be := newClockRepo(t, clk)
	ctx := t.Context()
	old := randomChunks(67, 3)
	f := backup(t, r, &repotest.Source{Data: old}, repo.BackupOptions{SourceName: "f"})
	if err := r.Forget(ctx, []cairn.ID{f.ID}); err != nil {
		t.Fatal(err)
	}
	// A running backup that has not seen the set f's chunks go into
	// keeps the set from being swept at once.
	g := newGate(t)
	gOpts := clockOpts(clk)
	gBeats := heartbeats(&gOpts)
	blocker := startBackup(t, reopenWith(t, be, gOpts), &repotest.Source{Data: randomChunks(68, 1), Block: g.at(0)}, repo.BackupOptions{SourceName: "g"})
	<-g.reached
	if _, err := r.GC(ctx, repo.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	var set string
	_ = be.List(ctx, format.CondemnedPrefix, func(i objstore.ObjectInfo) error {
		set = strings.TrimPrefix(i.Name, format.CondemnedPrefix)
		return nil
	})
	if set == "" {
		t.Fatal("no condemned set")
	}
	// Play a sweeper of that set that has announced itself and keeps its
	// marker fresh.
	sweeping := func() {
		if err := be.Put(ctx, format.SweepingPrefix+set, []byte("x"), objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sweeping()

	// b's first region is new; the rest are f's condemned chunks. One
	// worker takes the regions in order: it uploads the new chunk, then
	// holds the set for the next region and waits for the sweep.
	data := append(randomChunks(69, 1), old...)
	uploaded := make(chan struct{}, 1)
	wbe := &watchedBackend{Backend: be, afterPut: func(name string) {
		if strings.HasPrefix(name, format.ChunksPrefix) {
			select {
			case uploaded <- struct{}{}:
			default:
			}
		}
	}}
	opts := clockOpts(clk)
	opts.Workers = 1
	beats := heartbeats(&opts)
	done := startBackup(t, reopenWith(t, wbe, opts), &repotest.Source{Data: data}, repo.BackupOptions{SourceName: "b", NoParent: true})
	<-uploaded
	select {
	case res := <-done:
		t.Fatalf("backup finished during a sweep of chunks it needs: %+v", res)
	case <-clk.Sleeping(1):
	}
	// A gc now condemns b's uploaded chunk, which no manifest references
	// yet, in a new set; b has not seen it, so it waits.
	s1, err := r.GC(ctx, repo.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s1.ChunksCondemned != 1 || s1.ChunksDeleted != 0 {
		t.Fatalf("gc while b waits: %+v", s1)
	}

	// The sweep goes on for longer than the session timeout (3 s). Each
	// second b's heartbeat is due: it must refresh the marker while b
	// still waits, the first time also holding the new set, which lists
	// a chunk b uses.
	for range 3 {
		sweeping()
		clk.Advance(time.Second)
		clk.Tick()
		select {
		case err := <-beats:
			if err != nil {
				t.Fatalf("heartbeat of the waiting backup: %v", err)
			}
		case res := <-done:
			t.Fatalf("backup ended during a sweep of chunks it needs: %+v", res)
		}
		if err := <-gBeats; err != nil {
			t.Fatalf("heartbeat of the blocker: %v", err)
		}
	}
	// 3.5 s after b started, a gc must find it alive, holding both sets.
	clk.Advance(500 * time.Millisecond)
	s2, err := r.GC(ctx, repo.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s2.SessionsRemoved != 0 || s2.ChunksDeleted != 0 || strings.Count(pendingText(s2), "held by") != 2 {
		t.Fatalf("gc while b waits for a sweep and keeps its session: %+v", s2)
	}

	// That gc, finding the set held, ended the sweep; b goes on.
	_ = be.Delete(ctx, format.SweepingPrefix+set)
	clk.WakeSleepers()
	b := waitResult(t, done)
	if b.Stats.ChunksNew != 1 || b.Stats.ChunksReused != 3 {
		t.Fatalf("backup stored %d chunks and reused %d, want 1 and 3", b.Stats.ChunksNew, b.Stats.ChunksReused)
	}
	close(g.open)
	waitResult(t, blocker)
	restoreAndCompare(t, r, b, data)
	checkClean(t, r)
}
