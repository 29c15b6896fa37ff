package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/catalog/sqlite"
	"github.com/cairnproject/cairn/internal/catalog/sqlite/sqlitetest"
	"github.com/cairnproject/cairn/internal/tasks"
)

func openCatalog(t *testing.T, path string) catalog.Store {
	t.Helper()
	sqlitetest.Create(t, path)
	cat, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cat.Close() })
	return cat
}

func queue(t *testing.T, cat catalog.Store, kind string) string {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Microsecond)
	task := cairn.Task{ID: cairn.NewUUID(), ProjectID: "p", Kind: kind, ResourceID: "r",
		State: cairn.TaskPending, CreatedAt: now, UpdatedAt: now}
	err := cat.Update(t.Context(), func(tx catalog.Tx) error {
		if _, err := tx.Project(t.Context(), "p"); errors.Is(err, cairn.ErrNotFound) {
			if err := tx.InsertProject(t.Context(), cairn.Project{ID: "p", Quota: cairn.Unlimited, CreatedAt: now}); err != nil {
				return err
			}
		}
		return tx.InsertTask(t.Context(), task)
	})
	if err != nil {
		t.Fatal(err)
	}
	return task.ID
}

func wait(t *testing.T, cat catalog.Store, id string) cairn.Task {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	task, err := tasks.Wait(ctx, cat, id, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

func TestRunsAndRecords(t *testing.T) {
	cat := openCatalog(t, filepath.Join(t.TempDir(), "c.db"))
	var failed atomic.Value
	kinds := map[string]tasks.Kind{
		"ok":    {Run: func(context.Context, cairn.Task) error { return nil }},
		"bad":   {Run: func(context.Context, cairn.Task) error { return errors.New("disk on fire") }, Fail: func(_ context.Context, _ cairn.Task, cause error) error { failed.Store(cause.Error()); return nil }},
		"panic": {Run: func(context.Context, cairn.Task) error { panic("oops") }},
		// An error without a message still marks the task failing.
		"silent": {Run: func(context.Context, cairn.Task) error { return errors.New("") }, Fail: func(context.Context, cairn.Task, error) error { return nil }},
	}
	r := tasks.New(cat, kinds, tasks.Options{Workers: 2, Poll: 10 * time.Millisecond})
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	cases := []struct {
		kind  string
		state cairn.TaskState
		msg   string
	}{
		{"ok", cairn.TaskDone, ""},
		{"bad", cairn.TaskFailed, "disk on fire"},
		{"panic", cairn.TaskFailed, "panicked: oops"},
		{"silent", cairn.TaskFailed, "failed without saying why"},
		{"unknown", cairn.TaskFailed, "unknown to this build"},
	}
	for _, c := range cases {
		id := queue(t, cat, c.kind)
		r.Wake()
		got := wait(t, cat, id)
		if got.State != c.state || (c.msg != "" && !contains(got.Error, c.msg)) || got.Attempts != 1 || got.FinishedAt.IsZero() {
			t.Errorf("%s: %+v", c.kind, got)
		}
	}
	if failed.Load() != "disk on fire" {
		t.Errorf("Fail saw %v", failed.Load())
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestRestartRunsAgain: a task cut short by a stop (as by a crash) is
// run again by the next Start; after MaxAttempts it is failed, through
// its Fail.
func TestRestartRunsAgain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	cat := openCatalog(t, path)
	started := make(chan struct{}, 10)
	var runs, fails atomic.Int32
	hang := tasks.Kind{
		Run: func(ctx context.Context, t cairn.Task) error {
			runs.Add(1)
			started <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		},
		Fail: func(context.Context, cairn.Task, error) error { fails.Add(1); return nil },
	}
	id := queue(t, cat, "hang")
	for attempt := 1; attempt <= 3; attempt++ {
		r := tasks.New(cat, map[string]tasks.Kind{"hang": hang}, tasks.Options{MaxAttempts: 3, Poll: 10 * time.Millisecond})
		if err := r.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		<-started
		r.Stop()
		var task cairn.Task
		_ = cat.View(t.Context(), func(tx catalog.Tx) error {
			var err error
			task, err = tx.Task(t.Context(), id)
			return err
		})
		if task.State != cairn.TaskRunning || task.Attempts != attempt {
			t.Fatalf("after stop %d: %+v", attempt, task)
		}
	}
	// The fourth start finds it interrupted three times: it fails it.
	r := tasks.New(cat, map[string]tasks.Kind{"hang": hang}, tasks.Options{MaxAttempts: 3, Poll: 10 * time.Millisecond})
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	got := wait(t, cat, id)
	if got.State != cairn.TaskFailed || !contains(got.Error, "interrupted 3 times") || fails.Load() != 1 || runs.Load() != 3 {
		t.Fatalf("task %+v, runs %d, fails %d", got, runs.Load(), fails.Load())
	}
}

// TestConcurrentWorkers: many tasks on several workers each run once.
func TestConcurrentWorkers(t *testing.T) {
	cat := openCatalog(t, filepath.Join(t.TempDir(), "c.db"))
	var mu sync.Mutex
	seen := map[string]int{}
	kinds := map[string]tasks.Kind{"count": {Run: func(_ context.Context, task cairn.Task) error {
		mu.Lock()
		seen[task.ID]++
		mu.Unlock()
		time.Sleep(time.Millisecond)
		return nil
	}}}
	var ids []string
	for range 200 {
		ids = append(ids, queue(t, cat, "count"))
	}
	r := tasks.New(cat, kinds, tasks.Options{Workers: 8, Poll: 10 * time.Millisecond})
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	for _, id := range ids {
		if got := wait(t, cat, id); got.State != cairn.TaskDone {
			t.Fatalf("%+v", got)
		}
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Fatalf("task %s ran %d times", id, seen[id])
		}
	}
}

// backoffClock hands the runner's waits between retries to the test:
// each wait is announced on waits, and ends when the test sends on fire.
type backoffClock struct {
	waits chan time.Duration
	fire  chan time.Time
}

func newBackoffClock() *backoffClock {
	return &backoffClock{waits: make(chan time.Duration, 100), fire: make(chan time.Time)}
}

func (c *backoffClock) After(d time.Duration) <-chan time.Time {
	c.waits <- d
	return c.fire
}

// nextWait returns the duration of the runner's next wait between
// retries, failing the test if none comes.
func (c *backoffClock) nextWait(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-c.waits:
		return d
	case <-time.After(20 * time.Second):
		t.Fatal("the runner never waited to retry the cleanup")
		return 0
	}
}

func readTask(t *testing.T, cat catalog.Store, id string) cairn.Task {
	t.Helper()
	var task cairn.Task
	err := cat.View(t.Context(), func(tx catalog.Tx) error {
		var err error
		task, err = tx.Task(t.Context(), id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// TestFailRetriedUntilItSucceeds: a Fail that fails is retried, with a
// growing backoff, by the same runner, without a restart; meanwhile the
// task is running, says why the cleanup failed, and keeps its cause; it
// ends failed with the cause, its Run called once.
func TestFailRetriedUntilItSucceeds(t *testing.T) {
	cat := openCatalog(t, filepath.Join(t.TempDir(), "c.db"))
	var runs, fails atomic.Int32
	causes := make(chan string, 10)
	kinds := map[string]tasks.Kind{"bad": {
		Run: func(context.Context, cairn.Task) error { runs.Add(1); return errors.New("disk on fire") },
		Fail: func(_ context.Context, _ cairn.Task, cause error) error {
			causes <- cause.Error()
			if n := fails.Add(1); n <= 3 {
				return fmt.Errorf("snapshot busy (%d)", n)
			}
			return nil
		},
	}}
	clk := newBackoffClock()
	r := tasks.New(cat, kinds, tasks.Options{Workers: 1, Poll: 10 * time.Millisecond, After: clk.After})
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	id := queue(t, cat, "bad")
	r.Wake()
	for n, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if d := clk.nextWait(t); d != want {
			t.Errorf("wait %d: %v, want %v", n+1, d, want)
		}
		got := readTask(t, cat, id)
		wantErr := fmt.Sprintf("cleanup failed, retrying: snapshot busy (%d)", n+1)
		if got.State != cairn.TaskRunning || got.FailCause != "disk on fire" || got.Error != wantErr {
			t.Fatalf("while retrying the cleanup (%d): state %s, cause %q, error %q", n+1, got.State, got.FailCause, got.Error)
		}
		clk.fire <- time.Time{}
	}
	got := wait(t, cat, id)
	if got.State != cairn.TaskFailed || got.Error != "disk on fire" || got.FinishedAt.IsZero() {
		t.Fatalf("after the cleanup: %+v", got)
	}
	if runs.Load() != 1 || fails.Load() != 4 {
		t.Fatalf("Run called %d times, Fail %d times; want 1 and 4", runs.Load(), fails.Load())
	}
	close(causes)
	for c := range causes {
		if c != "disk on fire" {
			t.Errorf("Fail was given %q", c)
		}
	}
}

// TestFailingTaskResumesFail: a runner stopped while a task is failing
// (inside its Fail, or waiting to retry it) leaves it running with its
// cause; the next runner goes straight to Fail, with the cause, and never
// runs the task again.
func TestFailingTaskResumesFail(t *testing.T) {
	for _, c := range []struct {
		name string
		// stop returns once the first runner is where it is stopped.
		stop func(t *testing.T, clk *backoffClock, inFail <-chan struct{})
	}{
		{"in Fail", func(t *testing.T, _ *backoffClock, inFail <-chan struct{}) {
			select {
			case <-inFail:
			case <-time.After(20 * time.Second):
				t.Fatal("Fail was never called")
			}
		}},
		{"between retries", func(t *testing.T, clk *backoffClock, _ <-chan struct{}) { clk.nextWait(t) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			cat := openCatalog(t, filepath.Join(t.TempDir(), "c.db"))
			var runs atomic.Int32
			var broken atomic.Bool
			broken.Store(true)
			inFail := make(chan struct{}, 10)
			causes := make(chan string, 10)
			kind := tasks.Kind{
				Run: func(context.Context, cairn.Task) error { runs.Add(1); return errors.New("disk on fire") },
				Fail: func(ctx context.Context, _ cairn.Task, cause error) error {
					causes <- cause.Error()
					if !broken.Load() {
						return nil
					}
					if c.name == "in Fail" {
						inFail <- struct{}{}
						<-ctx.Done()
						return ctx.Err()
					}
					return errors.New("snapshot busy")
				},
			}
			kinds := map[string]tasks.Kind{"bad": kind}
			clk := newBackoffClock()
			r := tasks.New(cat, kinds, tasks.Options{Workers: 1, Poll: 10 * time.Millisecond, After: clk.After})
			if err := r.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			id := queue(t, cat, "bad")
			r.Wake()
			c.stop(t, clk, inFail)
			r.Stop()
			got := readTask(t, cat, id)
			if got.State != cairn.TaskRunning || got.FailCause != "disk on fire" {
				t.Fatalf("after a stop while failing: state %s, cause %q, error %q", got.State, got.FailCause, got.Error)
			}

			broken.Store(false)
			r2 := tasks.New(cat, kinds, tasks.Options{Workers: 1, Poll: 10 * time.Millisecond, After: clk.After})
			if err := r2.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			defer r2.Stop()
			got = wait(t, cat, id)
			if got.State != cairn.TaskFailed || got.Error != "disk on fire" {
				t.Fatalf("after the restart: %+v", got)
			}
			if runs.Load() != 1 {
				t.Fatalf("Run called %d times: the restart ran the failing task again", runs.Load())
			}
			close(causes)
			for c := range causes {
				if c != "disk on fire" {
					t.Errorf("Fail was given %q", c)
				}
			}
		})
	}
}
