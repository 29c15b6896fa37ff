// Package tasks runs the service's long operations as durable tasks: a
// task is a catalog row written in the same transaction as the resource
// state it will move on, so a request that was accepted is never
// forgotten. Workers take pending tasks oldest first.
//
// After a crash, a task found running was cut short. It is run again: a
// Kind's Run must therefore be idempotent, picking up whatever an earlier
// attempt left (a snapshot it made, a volume it created). After
// MaxAttempts, or when Run returns an error, the task is failing: its
// cause is recorded in the task row, then the Kind's Fail puts the
// resource into its error state and removes what the task made, and the
// task ends failed. A Fail that fails is retried with backoff until it
// succeeds (the task's error says so meanwhile); a task cut short while
// failing resumes its Fail, never its Run, after a restart. Either way no
// resource stays in a transient state.
package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// Kind is how to run one kind of task.
type Kind struct {
	// Run does the work. It is called again after a crash cut an
	// earlier attempt short, and must finish what that attempt started.
	// An error ends the task: Fail is called with it.
	Run func(ctx context.Context, t cairn.Task) error
	// Fail puts the task's resources into their error state and removes
	// what Run made. It must be idempotent (a crash may repeat it).
	Fail func(ctx context.Context, t cairn.Task, cause error) error
}

// Observer is told when tasks end, for metrics.
type Observer interface {
	TaskEnded(kind string, ok bool, d time.Duration)
}

// Options configure a Runner.
type Options struct {
	// Workers is how many tasks run at once (default 8).
	Workers int
	// MaxAttempts is how many times a task cut short by crashes is
	// started before it is failed (default 3).
	MaxAttempts int
	// Poll is how often idle workers look for work they were not woken
	// for (default 1 s).
	Poll     time.Duration
	Logger   *slog.Logger
	Observer Observer
	Now      func() time.Time
	// Backoff is how long to wait after the nth failed attempt (from 1)
	// at a step that must happen: a failing task's Fail, or recording a
	// task's failure or end in the catalog. Default: 1 s doubling to 1
	// minute.
	Backoff func(n int) time.Duration
	// After returns a channel that receives once d has passed (default
	// time.After). Tests inject their own to run retries without
	// waiting.
	After func(d time.Duration) <-chan time.Time
}

// defaultBackoff doubles from a second to a minute.
func defaultBackoff(n int) time.Duration {
	if n > 6 {
		return time.Minute
	}
	return min(time.Second<<(n-1), time.Minute)
}

// Runner takes pending tasks from the catalog and runs them.
type Runner struct {
	store catalog.Store
	kinds map[string]Kind
	opts  Options
	log   *slog.Logger

	wake   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a Runner over store running the given kinds.
func New(store catalog.Store, kinds map[string]Kind, opts Options) *Runner {
	if opts.Workers <= 0 {
		opts.Workers = 8
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 3
	}
	if opts.Poll <= 0 {
		opts.Poll = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Backoff == nil {
		opts.Backoff = defaultBackoff
	}
	if opts.After == nil {
		opts.After = time.After
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{store: store, kinds: kinds, opts: opts, log: log,
		wake: make(chan struct{}, 1)}
}

// Start recovers tasks a previous process left running and starts the
// workers. It returns once recovery has been written to the catalog.
func (r *Runner) Start(ctx context.Context) error {
	var running []cairn.Task
	err := r.store.View(ctx, func(tx catalog.Tx) error {
		var err error
		running, err = tx.Tasks(ctx, catalog.Filter{TaskStates: []cairn.TaskState{cairn.TaskRunning}})
		return err
	})
	if err != nil {
		return fmt.Errorf("tasks left running: %w", err)
	}
	for _, t := range running {
		if t.FailCause != "" {
			r.log.Warn("task interrupted by a restart while failing; cleaning up again", "task", t.ID, "kind", t.Kind, "resource", t.ResourceID, "cause", t.FailCause)
		} else {
			r.log.Warn("task interrupted by a restart; running it again", "task", t.ID, "kind", t.Kind, "resource", t.ResourceID, "attempt", t.Attempts)
		}
		err := r.store.Update(ctx, func(tx catalog.Tx) error {
			cur, err := tx.Task(ctx, t.ID)
			if err != nil {
				return err
			}
			cur.State = cairn.TaskPending
			cur.UpdatedAt = r.opts.Now().UTC()
			return tx.UpdateTask(ctx, cur)
		})
		if err != nil {
			return fmt.Errorf("requeue task %s: %w", t.ID, err)
		}
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	for range r.opts.Workers {
		r.wg.Add(1)
		go r.worker(wctx)
	}
	r.Wake()
	return nil
}

// Stop cancels running tasks and waits for the workers. Tasks cut short
// stay running in the catalog and are run again by the next Start (or,
// cut short while failing, failed again).
func (r *Runner) Stop() {
	if r.cancel != nil {
		r.cancel()
	}
	r.wg.Wait()
}

// Wake tells an idle worker that a task was queued.
func (r *Runner) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Runner) worker(ctx context.Context) {
	defer r.wg.Done()
	tick := time.NewTicker(r.opts.Poll)
	defer tick.Stop()
	for {
		for {
			t, ok, err := r.claim(ctx)
			if err != nil {
				if ctx.Err() == nil {
					r.log.Error("taking a task", "err", err)
				}
				break
			}
			if !ok {
				break
			}
			// Another worker may find more.
			r.Wake()
			r.run(ctx, t)
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-tick.C:
		}
	}
}

// claim moves the oldest pending task to running.
func (r *Runner) claim(ctx context.Context) (cairn.Task, bool, error) {
	var got cairn.Task
	found := false
	err := r.store.Update(ctx, func(tx catalog.Tx) error {
		found = false
		list, err := tx.Tasks(ctx, catalog.Filter{TaskStates: []cairn.TaskState{cairn.TaskPending}, Limit: 1})
		if err != nil || len(list) == 0 {
			return err
		}
		t := list[0]
		t.State = cairn.TaskRunning
		t.Attempts++
		t.UpdatedAt = r.opts.Now().UTC()
		if err := tx.UpdateTask(ctx, t); err != nil {
			return err
		}
		got, found = t, true
		return nil
	})
	return got, found, err
}

// run runs a claimed task to its end, or until the runner stops.
func (r *Runner) run(ctx context.Context, t cairn.Task) {
	start := r.opts.Now()
	kind, known := r.kinds[t.Kind]
	log := r.log.With("task", t.ID, "kind", t.Kind, "resource", t.ResourceID)
	var cause error
	if t.FailCause != "" {
		// An earlier process was failing it: only the clean-up is left.
		cause = errors.New(t.FailCause)
	} else {
		var err error
		switch {
		case !known:
			err = fmt.Errorf("task kind %q unknown to this build: %w", t.Kind, cairn.ErrUnsupported)
		case t.Attempts > r.opts.MaxAttempts:
			err = fmt.Errorf("interrupted %d times by restarts; giving up", t.Attempts-1)
		default:
			log.Info("task started", "attempt", t.Attempts)
			err = runSafely(ctx, kind.Run, t)
		}
		if ctx.Err() != nil {
			// Shutting down: leave it running, the next Start runs it again.
			log.Info("task cut short by shutdown", "err", err)
			return
		}
		if err == nil {
			log.Info("task done", "duration", r.opts.Now().Sub(start).Round(time.Millisecond))
			r.finish(ctx, log, t, true, start, "")
			return
		}
		log.Warn("task failed", "err", err)
		cause = err
		// Recorded before any clean-up: from here on a restart resumes
		// the clean-up, and never runs the task again.
		if t.FailCause = err.Error(); t.FailCause == "" {
			t.FailCause = "failed without saying why"
		}
		recorded := r.retry(ctx, func() error {
			return r.setTask(ctx, t.ID, func(cur *cairn.Task) { cur.FailCause, cur.Error = t.FailCause, t.FailCause })
		}, func(_ int, err error) { log.Error("recording a task's failure; retrying", "err", err) })
		if !recorded {
			return
		}
	}
	if known && kind.Fail != nil {
		cleaned := r.retry(ctx, func() error { return runFail(ctx, kind.Fail, t, cause) },
			func(n int, ferr error) {
				log.Error("cleaning up after a failed task; retrying", "err", ferr, "attempt", n)
				msg := "cleanup failed, retrying: " + ferr.Error()
				if err := r.setTask(ctx, t.ID, func(cur *cairn.Task) { cur.Error = msg }); err != nil && ctx.Err() == nil {
					log.Error("recording a failed cleanup", "err", err)
				}
			})
		if !cleaned {
			// Shutting down: it stays running with its cause, and the
			// next Start resumes the clean-up.
			log.Info("cleanup of a failed task cut short by shutdown")
			return
		}
	}
	r.finish(ctx, log, t, false, start, t.FailCause)
}

// finish records a task's end, retrying until it is recorded or the
// runner stops (the next Start then takes the task up again: its Run or
// Fail is idempotent).
func (r *Runner) finish(ctx context.Context, log *slog.Logger, t cairn.Task, ok bool, start time.Time, msg string) {
	if r.opts.Observer != nil {
		r.opts.Observer.TaskEnded(t.Kind, ok, r.opts.Now().Sub(start))
	}
	state := cairn.TaskDone
	if !ok {
		state = cairn.TaskFailed
	}
	r.retry(ctx, func() error {
		return r.setTask(ctx, t.ID, func(cur *cairn.Task) {
			cur.State, cur.Error = state, msg
			cur.FinishedAt = r.opts.Now().UTC()
		})
	}, func(_ int, err error) { log.Error("recording a task's end; retrying", "err", err) })
}

// setTask changes task id's row with fn, stamping its update time.
func (r *Runner) setTask(ctx context.Context, id string, fn func(*cairn.Task)) error {
	return r.store.Update(ctx, func(tx catalog.Tx) error {
		cur, err := tx.Task(ctx, id)
		if err != nil {
			return err
		}
		fn(&cur)
		cur.UpdatedAt = r.opts.Now().UTC()
		return tx.UpdateTask(ctx, cur)
	})
}

// retry calls fn until it succeeds, telling failed of each failure and
// waiting Backoff before the next attempt. It returns false when ctx
// ended first: the runner is stopping.
func (r *Runner) retry(ctx context.Context, fn func() error, failed func(n int, err error)) bool {
	for n := 1; ; n++ {
		err := fn()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		failed(n, err)
		select {
		case <-ctx.Done():
			return false
		case <-r.opts.After(r.opts.Backoff(n)):
		}
	}
}

// runSafely turns a panic in a task into its error, so one bad task does
// not take the service down.
func runSafely(ctx context.Context, fn func(context.Context, cairn.Task) error, t cairn.Task) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("task panicked: %v", p)
		}
	}()
	return fn(ctx, t)
}

func runFail(ctx context.Context, fn func(context.Context, cairn.Task, error) error, t cairn.Task, cause error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("task cleanup panicked: %v", p)
		}
	}()
	return fn(ctx, t, cause)
}

// errNotFinished tells Wait's poll that the task runs on.
var errNotFinished = errors.New("task not finished")

// Wait polls until task id ends and returns it (for tests and the
// CLI's --wait through the API).
func Wait(ctx context.Context, store catalog.Store, id string, every time.Duration) (cairn.Task, error) {
	for {
		var t cairn.Task
		err := store.View(ctx, func(tx catalog.Tx) error {
			var err error
			t, err = tx.Task(ctx, id)
			if err == nil && t.State != cairn.TaskDone && t.State != cairn.TaskFailed {
				return errNotFinished
			}
			return err
		})
		if err == nil {
			return t, nil
		}
		if !errors.Is(err, errNotFinished) {
			return t, err
		}
		select {
		case <-ctx.Done():
			return t, ctx.Err()
		case <-time.After(every):
		}
	}
}
