package repo_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/faulty"
	"github.com/cairnproject/cairn/internal/objstore/local"
	"github.com/cairnproject/cairn/internal/objstore/mem"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/repo/repotest"
	"golang.org/x/sync/errgroup"
)

func chunkNames(t *testing.T, be objstore.Backend) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	if err := be.List(t.Context(), "chunks/", func(i objstore.ObjectInfo) error { names[i.Name] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	return names
}

func referenced(t *testing.T, r *repo.Repository) map[string]bool {
	t.Helper()
	list, err := r.Backups(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range list.Backups {
		entries, err := r.Index(t.Context(), m)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !e.Zero {
				out[e.Chunk.ObjectName()] = true
			}
		}
	}
	return out
}

func TestForgetGCRemovesExactlyUnreferenced(t *testing.T) {
	r, be := newMemRepo(t)
	ctx := t.Context()
	src := &repotest.Source{Data: repotest.Mixed(20, 40*testChunk, testChunk)}
	var ids []cairn.ID
	versions := map[cairn.ID][]byte{}
	for i := range 5 {
		repotest.Scribble(uint64(i), src.Data, 4, 20000)
		m := backup(t, r, src, repo.BackupOptions{})
		ids = append(ids, m.ID)
		versions[m.ID] = bytes.Clone(src.Data)
	}
	before := chunkNames(t, be)
	if err := r.Forget(ctx, []cairn.ID{ids[1], ids[3]}); err != nil {
		t.Fatal(err)
	}
	want := referenced(t, r)
	stats, err := r.GC(ctx, repo.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after := chunkNames(t, be)
	if fmt.Sprint(after) != fmt.Sprint(want) {
		t.Fatalf("after gc %d chunks stored, %d referenced", len(after), len(want))
	}
	if stats.ChunksDeleted != len(before)-len(after) || stats.BytesFreed <= 0 || stats.ChunksPending != 0 {
		t.Fatalf("stats %+v; %d chunks went", stats, len(before)-len(after))
	}
	for _, id := range []cairn.ID{ids[0], ids[2], ids[4]} {
		m, err := r.Manifest(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		restoreAndCompare(t, r, m, versions[id])
	}
	// Nothing left to do: a second gc frees nothing.
	stats, err = r.GC(ctx, repo.GCOptions{})
	if err != nil || stats.ChunksDeleted != 0 || stats.ChunksCondemned != 0 {
		t.Fatalf("second gc: %+v %v", stats, err)
	}
	checkClean(t, r)
	if _, err := r.Manifest(ctx, ids[1]); !errors.Is(err, cairn.ErrNotFound) {
		t.Fatalf("forgotten backup: %v", err)
	}
}

func TestGCDryRun(t *testing.T) {
	r, be := newMemRepo(t)
	m := backup(t, r, &repotest.Source{Data: repotest.Mixed(21, 10*testChunk, testChunk)}, repo.BackupOptions{})
	if err := r.Forget(t.Context(), []cairn.ID{m.ID}); err != nil {
		t.Fatal(err)
	}
	n := len(chunkNames(t, be))
	stats, err := r.GC(t.Context(), repo.GCOptions{DryRun: true})
	if err != nil || stats.ChunksCondemned != n || len(chunkNames(t, be)) != n {
		t.Fatalf("dry run: %+v %v", stats, err)
	}
}

// A gc must stop, not delete, when it cannot read every index.
func TestGCStopsOnUnreadableIndex(t *testing.T) {
	r, be := newMemRepo(t)
	a := backup(t, r, &repotest.Source{Data: repotest.Mixed(22, 10*testChunk, testChunk)}, repo.BackupOptions{SourceName: "a"})
	b := backup(t, r, &repotest.Source{Data: repotest.Mixed(23, 10*testChunk, testChunk)}, repo.BackupOptions{SourceName: "b"})
	if err := r.Forget(t.Context(), []cairn.ID{a.ID}); err != nil {
		t.Fatal(err)
	}
	if err := be.Corrupt(b.Index[0].Name, 100); err != nil {
		t.Fatal(err)
	}
	before := len(chunkNames(t, be))
	if _, err := r.GC(t.Context(), repo.GCOptions{}); !errors.Is(err, cairn.ErrCorrupt) {
		t.Fatalf("gc with a corrupt index: %v", err)
	}
	if len(chunkNames(t, be)) != before {
		t.Fatal("gc deleted chunks although an index was unreadable")
	}
}

func TestCheckFindsDamage(t *testing.T) {
	r, be := newMemRepo(t)
	ctx := t.Context()
	data := repotest.Mixed(24, 20*testChunk, testChunk)
	a := backup(t, r, &repotest.Source{Data: data}, repo.BackupOptions{SourceName: "a"})
	b := backup(t, r, &repotest.Source{Data: repotest.Mixed(25, 20*testChunk, testChunk)}, repo.BackupOptions{SourceName: "b"})
	checkClean(t, r)

	ea, _ := r.Index(ctx, a)
	eb, _ := r.Index(ctx, b)
	var flip, gone format.ChunkID
	for _, e := range ea {
		if !e.Zero {
			flip = e.Chunk
			break
		}
	}
	for _, e := range eb {
		if !e.Zero {
			gone = e.Chunk
		}
	}
	if err := be.Corrupt(flip.ObjectName(), 12345); err != nil {
		t.Fatal(err)
	}
	if err := be.Delete(ctx, gone.ObjectName()); err != nil {
		t.Fatal(err)
	}

	// Without reading data, the missing chunk is found.
	rep, err := r.Check(ctx, repo.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != repo.ProblemMissingChunk || rep.Problems[0].Backups[0] != b.ID {
		t.Fatalf("structure check: %v", rep.Problems)
	}
	// Reading data finds the flipped bit and names the backup.
	rep, err = r.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]cairn.ID{}
	for _, p := range rep.Problems {
		kinds[p.Kind] = p.Backups[0]
	}
	if kinds[repo.ProblemCorruptChunk] != a.ID || kinds[repo.ProblemMissingChunk] != b.ID || rep.AffectedCount != 2 {
		t.Fatalf("read-data check: %v", rep.Problems)
	}
	// A restore of the damaged backup fails loudly.
	if _, err := r.Restore(ctx, a, repotest.NewTarget(a.Size), nil); !errors.Is(err, cairn.ErrCorrupt) {
		t.Fatalf("restore over a corrupt chunk: %v", err)
	}
	if _, err := r.Restore(ctx, b, repotest.NewTarget(b.Size), nil); !errors.Is(err, cairn.ErrCorrupt) {
		t.Fatalf("restore over a missing chunk: %v", err)
	}

	// A damaged index and a damaged manifest are reported too.
	if err := be.Corrupt(a.Index[0].Name, 7); err != nil {
		t.Fatal(err)
	}
	if err := be.Corrupt("backups/"+b.ID.String(), 7); err != nil {
		t.Fatal(err)
	}
	rep, err = r.Check(ctx, repo.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range rep.Problems {
		got = append(got, p.Kind)
	}
	if s := strings.Join(got, ","); !strings.Contains(s, repo.ProblemIndex) || !strings.Contains(s, repo.ProblemManifest) {
		t.Fatalf("metadata damage: %v", rep.Problems)
	}
}

func TestCheckSubset(t *testing.T) {
	r, _ := newMemRepo(t)
	backup(t, r, &repotest.Source{Data: repotest.Mixed(26, 200*testChunk, testChunk)}, repo.BackupOptions{})
	rep, err := r.Check(t.Context(), repo.CheckOptions{ReadDataSubset: 0.25})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ChunksRead == 0 || rep.ChunksRead >= rep.Chunks {
		t.Fatalf("read %d of %d chunks for a 25%% subset", rep.ChunksRead, rep.Chunks)
	}
}

// TestRestoreNeverWritesWrongBytes reads through a store that corrupts or
// truncates some reads: the restore must fail, and every byte it wrote
// before failing must be right.
func TestRestoreNeverWritesWrongBytes(t *testing.T) {
	r, be := newMemRepo(t)
	data := repotest.Mixed(27, 60*testChunk, testChunk)
	m := backup(t, r, &repotest.Source{Data: data}, repo.BackupOptions{})
	for seed := range uint64(10) {
		fb := faulty.New(be, faulty.Options{Seed: seed, CorruptRate: 0.05, TruncateRate: 0.05, Prefix: "chunks/"})
		rr := reopen(t, fb)
		tgt := repotest.NewTarget(m.Size)
		_, err := rr.Restore(t.Context(), m, tgt, nil)
		if fb.Injected() > 0 && err == nil {
			// Faults may have hit only metadata reads that were retried or
			// the zero chunks; the result must still be exact.
			if !bytes.Equal(tgt.Data, data) {
				t.Fatal("restore succeeded with wrong bytes")
			}
			continue
		}
		for i := range tgt.Data {
			if tgt.Data[i] != data[i] && tgt.Data[i] != 0 {
				t.Fatalf("seed %d: byte %d written wrong after a damaged read", seed, i)
			}
		}
	}
}

// A sweep rewrites its markers while it works (docs/format.md, step 4),
// and stops, deleting nothing, once they could look dead to a backup
// waiting for it: when they have not been rewritten for 2/3 of the
// session timeout.
func TestSweepStopsWhenItsMarkersGoStale(t *testing.T) {
	for _, refused := range []bool{false, true} {
		t.Run(fmt.Sprintf("refreshes refused=%v", refused), func(t *testing.T) {
			const margin = 2 * time.Second // a second beyond the heartbeat interval
			ctx := t.Context()
			clk := newClock()
			be := faulty.New(mem.New(mem.Options{Now: clk.Now}), faulty.Options{})
			opts := clockOpts(clk)
			beats := heartbeats(&opts)
			r := initRepoWith(t, be, format.GCParams{SessionTimeout: format.Duration(3 * time.Second), ConsistencyMargin: format.Duration(margin)}, opts)
			f := backup(t, r, &repotest.Source{Data: repotest.Mixed(71, 6*testChunk, testChunk)}, repo.BackupOptions{})
			if err := r.Forget(ctx, []cairn.ID{f.ID}); err != nil {
				t.Fatal(err)
			}
			// The first gc condemns f's chunks; the set must age twice the
			// margin before a sweep.
			s1, err := r.GC(ctx, repo.GCOptions{})
			if err != nil || s1.ChunksCondemned == 0 || s1.ChunksDeleted != 0 {
				t.Fatalf("first gc: %+v %v", s1, err)
			}
			before := len(chunkNames(t, be))
			clk.Advance(2 * margin)

			type gcResult struct {
				stats repo.GCStats
				err   error
			}
			done := make(chan gcResult, 1)
			finished := make(chan struct{})
			go func() {
				defer close(finished)
				s, err := r.GC(ctx, repo.GCOptions{})
				done <- gcResult{s, err}
			}()
			t.Cleanup(func() { <-finished }) // t.Context ends first, and with it the gc's sleep
			// The sweep has announced itself and waits a margin before it
			// looks for holds; then it waits another before it deletes, its
			// keep-alive running.
			<-clk.Sleeping(1)
			clk.Advance(margin)
			<-clk.Sleeping(1)
			if refused {
				be.SetOptions(faulty.Options{Prefix: format.SweepingPrefix, FailRate: 1})
			}
			// Two margins after the announcement the keep-alive is due.
			clk.Tick()
			if err := <-beats; (err != nil) != refused {
				t.Fatalf("keep-alive of the sweep markers: %v", err)
			}
			clk.WakeSleepers()
			res := <-done
			be.SetOptions(faulty.Options{})
			got := len(chunkNames(t, be))
			if refused {
				if !errors.Is(res.err, cairn.ErrConflict) || got != before {
					t.Fatalf("sweep with markers unrefreshed for %v: %v, %d of %d chunks left", 2*margin, res.err, got, before)
				}
				return
			}
			if res.err != nil || res.stats.ChunksDeleted != before || got != 0 {
				t.Fatalf("sweep with fresh markers: %+v %v, %d chunks left", res.stats, res.err, got)
			}
		})
	}
}

// TestCrashDuringBackup stops the store after every possible number of
// writes. No half backup may become visible, the repository must check
// clean, and the next backup must succeed and reuse what was stored.
//
// On a fake clock whose ticks never come, no heartbeat writes: the crash
// falls after exactly n writes of the backup itself.
func TestCrashDuringBackup(t *testing.T) {
	clk := newClock()
	r, be := newClockRepo(t, clk)
	base := repotest.Mixed(30, 24*testChunk, testChunk)
	backup(t, r, &repotest.Source{Data: base}, repo.BackupOptions{})
	data := bytes.Clone(base)
	repotest.Scribble(31, data, 8, 3*testChunk)

	reused := false
	for n := 1; ; n++ {
		snapshot := cloneMem(t, be, clk)
		fb := faulty.New(snapshot, faulty.Options{CrashAfter: n})
		rr, err := repo.Open(t.Context(), fb, password, clockOpts(clk))
		if err != nil {
			t.Fatal(err)
		}
		_, err = rr.Backup(t.Context(), &repotest.Source{Data: data}, repo.BackupOptions{SourceName: "/dev/test"})
		if !fb.Crashed() {
			if err != nil {
				t.Fatal(err)
			}
			if n < 3 {
				t.Fatal("backup finished without enough writes to test")
			}
			break
		}
		// "Restart" on what reached the store. The backup is visible only
		// if it reported success (the crash hit its clean-up).
		want := 1
		if err == nil {
			want = 2
		}
		after := reopenWith(t, snapshot, clockOpts(clk))
		list, lerr := after.Backups(t.Context())
		if lerr != nil || len(list.Backups) != want || len(list.Damaged) != 0 {
			t.Fatalf("crash after %d writes (backup error %v): %d backups visible, damaged %v, %v", n, err, len(list.Backups), list.Damaged, lerr)
		}
		checkClean(t, after)
		m := backup(t, after, &repotest.Source{Data: data}, repo.BackupOptions{NoParent: true})
		restoreAndCompare(t, after, m, data)
		reused = reused || m.Stats.ChunksReused > 0 && m.Stats.ChunksNew < 8
	}
	if !reused {
		t.Fatal("no backup after a crash reused the chunks stored before it")
	}
}

// TestCrashDuringGC stops the store after every possible number of writes
// of a gc: every surviving backup must still restore, and the next gc must
// finish the job. As in TestCrashDuringBackup, the fake clock keeps
// heartbeats from adding writes.
func TestCrashDuringGC(t *testing.T) {
	clk := newClock()
	r, be := newClockRepo(t, clk)
	src := &repotest.Source{Data: repotest.Mixed(40, 24*testChunk, testChunk)}
	versions := map[cairn.ID][]byte{}
	var ids []cairn.ID
	for i := range 4 {
		repotest.Scribble(uint64(41+i), src.Data, 3, 2*testChunk)
		m := backup(t, r, src, repo.BackupOptions{})
		versions[m.ID] = bytes.Clone(src.Data)
		ids = append(ids, m.ID)
		clk.Advance(time.Second) // each backup's parent is the one before
	}
	if err := r.Forget(t.Context(), []cairn.ID{ids[0], ids[2]}); err != nil {
		t.Fatal(err)
	}
	for n := 1; ; n++ {
		snapshot := cloneMem(t, be, clk)
		fb := faulty.New(snapshot, faulty.Options{CrashAfter: n})
		rr := reopenWith(t, fb, clockOpts(clk))
		_, err := rr.GC(t.Context(), repo.GCOptions{})
		if !fb.Crashed() {
			if err != nil {
				t.Fatal(err)
			}
			break
		}
		after := reopenWith(t, snapshot, clockOpts(clk))
		for _, id := range []cairn.ID{ids[1], ids[3]} {
			m, err := after.Manifest(t.Context(), id)
			if err != nil {
				t.Fatalf("crash after %d writes: %v", n, err)
			}
			restoreAndCompare(t, after, m, versions[id])
		}
		checkClean(t, after)
		if _, err := after.GC(t.Context(), repo.GCOptions{}); err != nil {
			t.Fatalf("gc after a crashed gc: %v", err)
		}
		if got, want := chunkNames(t, snapshot), referenced(t, after); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("crash after %d writes: the next gc left %d chunks for %d referenced", n, len(got), len(want))
		}
	}
}

// cloneMem copies every object of be into a new store on clk.
func cloneMem(t *testing.T, be *mem.Backend, clk *repotest.Clock) *mem.Backend {
	t.Helper()
	c := mem.New(mem.Options{Now: clk.Now})
	err := be.List(t.Context(), "", func(info objstore.ObjectInfo) error {
		data, err := objstore.ReadAll(t.Context(), be, info.Name, 0, -1)
		if err != nil {
			return err
		}
		return c.Put(t.Context(), info.Name, data, objstore.PutOptions{})
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestGCConcurrentWithBackups runs backups, forgets and gcs at the same
// time: every backup that completes must restore byte for byte, and the
// repository must check clean.
//
// Every process runs on one fake clock, which only the gc's goroutine
// moves: by a step after each gc, to the end of any wait of a backup for a
// sweep, and through the gc's own waits for the consistency margin. The
// session timeout is an hour of that time, so however slowly the machine
// runs the goroutines, no session or sweep looks stale: what varies
// between runs is only the interleaving.
func TestGCConcurrentWithBackups(t *testing.T) {
	gc := format.GCParams{SessionTimeout: format.Duration(time.Hour)}
	t.Run("local", func(t *testing.T) {
		be, err := local.New(t.TempDir(), false)
		if err != nil {
			t.Fatal(err)
		}
		testGCConcurrent(t, be, newClock(), gc)
	})
	// Listings lag writes and deletes by 150 ms; the repository's margin
	// covers it.
	t.Run("eventually consistent", func(t *testing.T) {
		clk := newClock()
		be := mem.New(mem.Options{ListLag: 150 * time.Millisecond, Now: clk.Now})
		gc := gc
		gc.ConsistencyMargin = format.Duration(200 * time.Millisecond)
		testGCConcurrent(t, be, clk, gc)
	})
}

func testGCConcurrent(t *testing.T, be objstore.Backend, clk *repotest.Clock, gc format.GCParams) {
	// Each writer makes at least minBackups backups, and goes on (up to
	// maxBackups) until gc has both found sets waiting for running backups
	// and freed chunks while they ran.
	const (
		minBackups = 10
		maxBackups = 150
		step       = 100 * time.Millisecond
	)
	// The gc's waits pass the time; backups wait for it to pass.
	gcOpts := clockOpts(clk)
	gcOpts.Sleep = clk.Pass
	r := initRepoWith(t, be, gc, gcOpts)
	clk.Advance(time.Second) // the key and config show in listings
	var exercised atomic.Bool
	var writing atomic.Int32

	var mu sync.Mutex
	versions := map[cairn.ID][]byte{}
	g, ctx := errgroup.WithContext(t.Context())
	for w := range 2 {
		writing.Add(1)
		g.Go(func() error {
			defer writing.Add(-1)
			rr := reopenWith(t, be, clockOpts(clk))
			// Sources share most chunks, so gcs find many of them
			// unreferenced while backups want to reuse them.
			data := repotest.Mixed(50, 16*testChunk, testChunk)
			for i := 0; i < minBackups || !exercised.Load() && i < maxBackups; i++ {
				repotest.Scribble(uint64(1000*w+i), data, 2, testChunk)
				m, err := rr.Backup(ctx, &repotest.Source{Data: data}, repo.BackupOptions{SourceName: fmt.Sprint("src", w)})
				if err != nil {
					return fmt.Errorf("backup: %w", err)
				}
				mu.Lock()
				versions[m.ID] = bytes.Clone(data)
				mu.Unlock()
			}
			return nil
		})
	}
	// A third writer backs up a stream that changes a little each time,
	// so its chunks, too, go unreferenced and are wanted again.
	writing.Add(1)
	g.Go(func() error {
		defer writing.Add(-1)
		rr := small(reopenWith(t, be, clockOpts(clk)))
		data := repotest.PgbenchDump(52, 1<<20)
		for i := 0; i < minBackups || !exercised.Load() && i < maxBackups; i++ {
			repotest.Scribble(uint64(2000+i), data, 2, testChunk)
			m, err := rr.BackupStream(ctx, bytes.NewReader(data), repo.StreamOptions{Name: "stream"})
			if err != nil {
				return fmt.Errorf("stream backup: %w", err)
			}
			mu.Lock()
			versions[m.ID] = bytes.Clone(data)
			mu.Unlock()
		}
		return nil
	})
	var pendingRuns, freed int
	g.Go(func() error {
		// Until the last backup ends: a backup waiting for a sweep wakes
		// only when this goroutine moves the clock.
		for writing.Load() > 0 {
			list, err := r.Backups(ctx)
			if err != nil {
				return err
			}
			// Keep only the newest backup of each source (about).
			var forget []cairn.ID
			if n := len(list.Backups); n > 3 {
				for _, m := range list.Backups[:n-3] {
					forget = append(forget, m.ID)
				}
			}
			if err := r.Forget(ctx, forget); err != nil && !errors.Is(err, cairn.ErrNotFound) {
				return err
			}
			mu.Lock()
			for _, id := range forget {
				delete(versions, id)
			}
			mu.Unlock()
			stats, err := r.GC(ctx, repo.GCOptions{})
			if err != nil {
				return fmt.Errorf("gc: %w", err)
			}
			if len(stats.Pending) > 0 {
				pendingRuns++
			}
			freed += stats.ChunksDeleted
			exercised.Store(pendingRuns > 0 && freed > 0)
			clk.WakeSleepers()
			clk.Advance(step)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	// The protocol must have been exercised: some sets had to wait for
	// running backups, and chunks were freed while backups ran.
	if pendingRuns == 0 || freed == 0 {
		t.Fatalf("%d gc runs found sets waiting and %d chunks were freed: the test did not exercise concurrency", pendingRuns, freed)
	}
	t.Logf("gc runs with waiting sets: %d, chunks freed during backups: %d, backups kept: %d", pendingRuns, freed, len(versions))
	clk.Advance(time.Second) // listings show every backup, and no forgotten one
	list, err := r.Backups(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Backups) == 0 {
		t.Fatal("no backups survived")
	}
	for _, m := range list.Backups {
		restoreAndCompare(t, r, m, versions[m.ID])
	}
	checkClean(t, r)
	// With no backup running, gc leaves exactly what is referenced (on a
	// lagging store, once the margins have passed).
	for range 3 {
		if _, err := r.GC(t.Context(), repo.GCOptions{}); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
	}
	if got, want := chunkNames(t, be), referenced(t, r); len(got) != len(want) {
		for name := range want {
			if !got[name] {
				t.Logf("referenced but not stored: %s", name)
			}
		}
		t.Fatalf("final gc left %d chunks for %d referenced", len(got), len(want))
	}
}
