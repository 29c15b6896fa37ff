package service_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/service/servicetest"
)

// containerGates holds the opens of chosen containers until released;
// the held opens do not end with their caller's context, as a store's
// authentication retried for minutes would not.
type containerGates struct {
	mu    sync.Mutex
	gates map[string]*servicetest.Gate
}

func (g *containerGates) hold(container string) *servicetest.Gate {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gates == nil {
		g.gates = map[string]*servicetest.Gate{}
	}
	gate := servicetest.NewGate()
	g.gates[container] = gate
	return gate
}

func (g *containerGates) before(_ context.Context, container string) error {
	g.mu.Lock()
	gate := g.gates[container]
	g.mu.Unlock()
	if gate != nil {
		return gate.Wait(context.Background())
	}
	return nil
}

// backupIn starts a backup of a new volume into container and returns
// its ID.
func backupIn(r *rig, container string) string {
	r.t.Helper()
	f := &fixture{}
	makeVolume(r, f)
	b := must[cairn.Backup](r.t)(r.svc.CreateBackup(r.t.Context(), caller, service.BackupCreate{VolumeID: f.vol, Container: container}))
	return b.ID
}

// TestSlowOpenHoldsOnlyItsContainer: while the repository of container a
// takes its time to open, a backup into b opens b's and completes.
func TestSlowOpenHoldsOnlyItsContainer(t *testing.T) {
	r := newRig(t)
	var gates containerGates
	slow := gates.hold("a")
	t.Cleanup(slow.Open) // before the rig stops its service
	r.beforeOpen = gates.before
	a := backupIn(r, "a")
	<-slow.Reached()
	b := backupIn(r, "b")
	r.done(b)
	if st := r.backup(a).Status; st != cairn.StatusCreating {
		t.Fatalf("the backup into a is %s while its repository opens", st)
	}
	slow.Open()
	r.done(a)
	if r.openCount("a") != 1 || r.openCount("b") != 1 {
		t.Errorf("opens: a %d, b %d; want one each", r.openCount("a"), r.openCount("b"))
	}
	r.stop()
	r.settled()
}

// TestOneOpenPerContainer: tasks of one container waiting for its
// repository share one open.
func TestOneOpenPerContainer(t *testing.T) {
	r := newRig(t)
	var gates containerGates
	slow := gates.hold("a")
	t.Cleanup(slow.Open) // before the rig stops its service
	r.beforeOpen = gates.before
	first := backupIn(r, "a")
	<-slow.Reached()
	second := backupIn(r, "a")
	// Both tasks are taken by the two workers before the open ends.
	for r.lastTask(second).State != cairn.TaskRunning {
		time.Sleep(time.Millisecond)
	}
	slow.Open()
	r.done(first)
	r.done(second)
	if n := r.openCount("a"); n != 1 {
		t.Errorf("the repository of a was opened %d times", n)
	}
	r.stop()
	r.settled()
}

// TestWaiterCancelled: a caller waiting for a repository another opens
// returns when its context ends, while the open goes on.
func TestWaiterCancelled(t *testing.T) {
	r := newRig(t)
	var gates containerGates
	slow := gates.hold("a")
	t.Cleanup(slow.Open) // before the rig stops its service
	r.beforeOpen = gates.before
	a := backupIn(r, "a")
	<-slow.Reached()
	rec, _ := json.Marshal(service.BackupRecord{Version: 1, ID: cairn.NewUUID(), Container: "a", Size: 1, RepoID: cairn.NewID().String()})
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := r.svc.ImportRecord(ctx, caller, service.BackupService, base64.StdEncoding.EncodeToString(rec))
		errc <- err
	}()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("import while the repository opens, cancelled: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a cancelled caller waited for another's open")
	}
	slow.Open()
	r.done(a)
	if n := r.openCount("a"); n != 1 {
		t.Errorf("the repository of a was opened %d times", n)
	}
}

// TestFailedOpenNotKept: a failed open is not remembered: the next task
// of the container opens it again.
func TestFailedOpenNotKept(t *testing.T) {
	r := newRig(t)
	r.faults.Add(servicetest.Fault{Method: "RepoOpener", Times: 1, Err: cairn.ErrUnavailable})
	first := backupIn(r, "a")
	if task := r.wait(r.lastTask(first).ID); task.State != cairn.TaskFailed {
		t.Fatalf("backup with a failing open: %s", task.State)
	}
	second := backupIn(r, "a")
	r.done(second)
	if n := r.openCount("a"); n != 2 {
		t.Errorf("opens of a: %d, want 2", n)
	}
	r.stop()
	r.settled()
}

// TestStopClosesRepositories: Stop closes the repositories the service
// opened, after its tasks stopped; an open that ends after Stop is closed
// too and not used.
func TestStopClosesRepositories(t *testing.T) {
	r := newRig(t)
	r.done(backupIn(r, "a"))
	r.done(backupIn(r, "b"))
	if r.store("a").OpenHandles() != 1 || r.store("b").OpenHandles() != 1 {
		t.Fatalf("open handles before Stop: a %d, b %d", r.store("a").OpenHandles(), r.store("b").OpenHandles())
	}
	var gates containerGates
	slow := gates.hold("c")
	t.Cleanup(slow.Open)
	r.beforeOpen = gates.before
	rec, _ := json.Marshal(service.BackupRecord{Version: 1, ID: cairn.NewUUID(), Container: "c", Size: 1, RepoID: cairn.NewID().String()})
	errc := make(chan error, 1)
	go func() {
		_, err := r.svc.ImportRecord(t.Context(), caller, service.BackupService, base64.StdEncoding.EncodeToString(rec))
		errc <- err
	}()
	<-slow.Reached()
	r.stop()
	for _, c := range []string{"a", "b"} {
		if n := r.store(c).OpenHandles(); n != 0 {
			t.Errorf("container %s: %d handles open after Stop", c, n)
		}
	}
	slow.Open()
	if err := <-errc; !errors.Is(err, cairn.ErrUnavailable) {
		t.Errorf("an open that ended after Stop: %v", err)
	}
	if n := r.store("c").OpenHandles(); n != 0 {
		t.Errorf("container c: %d handles open after an open that ended after Stop", n)
	}
}
