package service_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/catalog/sqlite"
	"github.com/cairnproject/cairn/internal/catalog/sqlite/sqlitetest"
	"github.com/cairnproject/cairn/internal/notify"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/service/servicetest"
	"github.com/cairnproject/cairn/internal/tasks"
)

// project is the rig's project; caller acts in it.
const project = "p"

var caller = service.Caller{ProjectID: project}

// rig is a service over a real SQLite catalog, the fake engine and fake
// repositories, all sharing one Faults. Services come and go (start,
// stop: as processes would); the catalog, engine and stores stay.
type rig struct {
	t      *testing.T
	faults *servicetest.Faults
	cat    *faultyCatalog
	eng    *servicetest.Engine
	host   *servicetest.InstanceHost
	clock  *backoffClock

	mu     sync.Mutex
	stores map[string]*servicetest.Store
	opens  map[string]int // calls of the opener, by container
	// beforeOpen, when set, runs at the start of every open.
	beforeOpen func(ctx context.Context, container string) error

	svc *service.Service
	// walHost, when set, is the instance host the service uses (the
	// fake host with a WAL of its own); archiveInterval its archive's.
	walHost         service.InstanceHost
	archiveInterval time.Duration
	archiveCheck    time.Duration
	// pointInterval, pointKeep and pointTicks are the services' restore
	// point settings: a point is taken at each send on pointTicks.
	pointInterval time.Duration
	pointKeep     int
	pointTicks    chan time.Time

	// now, when set, is the services' clock.
	now func() time.Time
	// scratch is the services' scratch directory (drills).
	scratch string

	// events are the notifications the services raised.
	eventsMu sync.Mutex
	events   []notify.Event
}

// Notify records an event: the rig is the services' notifier.
func (r *rig) Notify(_ context.Context, e notify.Event) {
	r.eventsMu.Lock()
	defer r.eventsMu.Unlock()
	r.events = append(r.events, e)
}

// eventsOf returns the events of a type raised so far.
func (r *rig) eventsOf(typ string) []notify.Event {
	r.eventsMu.Lock()
	defer r.eventsMu.Unlock()
	var out []notify.Event
	for _, e := range r.events {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

func newRig(t *testing.T) *rig {
	t.Helper()
	path := filepath.Join(t.TempDir(), "catalog.db")
	sqlitetest.Create(t, path)
	store, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	f := servicetest.NewFaults()
	r := &rig{t: t, faults: f, cat: &faultyCatalog{Store: store, faults: f}, eng: servicetest.NewEngine(f),
		clock: newBackoffClock(), stores: map[string]*servicetest.Store{}, opens: map[string]int{}}
	r.host = servicetest.NewInstanceHost(r.eng)
	r.scratch = t.TempDir()
	t.Cleanup(func() {
		r.stop()
		_ = store.Close()
	})
	if _, err := service.CreateProject(t.Context(), store, project, "project", cairn.Unlimited, time.Now()); err != nil {
		t.Fatal(err)
	}
	r.start()
	return r
}

// store returns the fake repository of a container.
func (r *rig) store(container string) *servicetest.Store {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.stores[container]
	if !ok {
		s = servicetest.NewStore(r.eng, r.faults)
		r.stores[container] = s
	}
	return s
}

// open is the service's RepoOpener: a new handle on the container's
// store, through the faults ("RepoOpener").
func (r *rig) open(ctx context.Context, container string) (service.Repository, error) {
	r.mu.Lock()
	r.opens[container]++
	before := r.beforeOpen
	r.mu.Unlock()
	if before != nil {
		if err := before(ctx, container); err != nil {
			return nil, err
		}
	}
	c, err := r.faults.Begin(ctx, "RepoOpener")
	if err != nil {
		return nil, err
	}
	repo := r.store(container).Open()
	if err := c.End(ctx); err != nil {
		_ = repo.Close()
		return nil, err
	}
	return repo, nil
}

// openCount is how often the opener was called for container.
func (r *rig) openCount(container string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opens[container]
}

// start starts a new service (a process) over the rig.
func (r *rig) start() {
	r.t.Helper()
	var host service.InstanceHost = r.host
	if r.walHost != nil {
		host = r.walHost
	}
	r.svc = service.New(service.Config{Catalog: r.cat, Engine: r.eng, OpenRepo: r.open,
		Workers: 2, After: r.clock.After, Now: r.now, ScratchDir: r.scratch, Instances: host, ArchiveInterval: r.archiveInterval, ArchiveCheck: r.archiveCheck, ArchiveWAL: true, Notifier: r,
		RestorePointInterval: r.pointInterval, RestorePoints: r.pointKeep,
		RestorePointAfter: func(time.Duration) <-chan time.Time { return r.pointTicks }})
	if err := r.svc.Start(r.t.Context()); err != nil {
		r.t.Fatal(err)
	}
}

// stop stops the service, as a process stopping (or dying: tasks cut
// short stay running in the catalog).
func (r *rig) stop() {
	if r.svc != nil {
		r.svc.Stop()
		r.svc = nil
	}
}

// restart stops the service and starts another.
func (r *rig) restart() {
	r.t.Helper()
	r.stop()
	r.start()
}

func (r *rig) view(fn func(ctx context.Context, tx catalog.Tx) error) {
	r.t.Helper()
	ctx := r.t.Context()
	if err := r.cat.View(ctx, func(tx catalog.Tx) error { return fn(ctx, tx) }); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) volume(id string) cairn.Volume {
	r.t.Helper()
	var v cairn.Volume
	r.view(func(ctx context.Context, tx catalog.Tx) error {
		var err error
		v, err = tx.Volume(ctx, id)
		return err
	})
	return v
}

func (r *rig) snapshot(id string) cairn.Snapshot {
	r.t.Helper()
	var s cairn.Snapshot
	r.view(func(ctx context.Context, tx catalog.Tx) error {
		var err error
		s, err = tx.Snapshot(ctx, id)
		return err
	})
	return s
}

func (r *rig) backup(id string) cairn.Backup {
	r.t.Helper()
	var b cairn.Backup
	r.view(func(ctx context.Context, tx catalog.Tx) error {
		var err error
		b, err = tx.Backup(ctx, id)
		return err
	})
	return b
}

// gone reports whether a volume, snapshot or backup row is missing.
func (r *rig) gone(kind, id string) bool {
	r.t.Helper()
	var err error
	ctx := r.t.Context()
	_ = r.cat.View(ctx, func(tx catalog.Tx) error {
		switch kind {
		case "volume":
			_, err = tx.Volume(ctx, id)
		case "snapshot":
			_, err = tx.Snapshot(ctx, id)
		default:
			_, err = tx.Backup(ctx, id)
		}
		return nil
	})
	if err != nil && !errors.Is(err, cairn.ErrNotFound) {
		r.t.Fatal(err)
	}
	return err != nil
}

// lastTask is the newest task of a resource.
func (r *rig) lastTask(resource string) cairn.Task {
	r.t.Helper()
	var list []cairn.Task
	r.view(func(ctx context.Context, tx catalog.Tx) error {
		var err error
		list, err = tx.Tasks(ctx, catalog.Filter{ResourceID: resource})
		return err
	})
	if len(list) == 0 {
		r.t.Fatalf("no task of %s", resource)
	}
	return list[len(list)-1]
}

func (r *rig) task(id string) cairn.Task {
	r.t.Helper()
	var task cairn.Task
	r.view(func(ctx context.Context, tx catalog.Tx) error {
		var err error
		task, err = tx.Task(ctx, id)
		return err
	})
	return task
}

// wait waits for a task to end.
func (r *rig) wait(id string) cairn.Task {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.t.Context(), time.Minute)
	defer cancel()
	task, err := tasks.Wait(ctx, r.cat, id, 2*time.Millisecond)
	if err != nil {
		r.t.Fatalf("task %s did not end: %v (%+v)", id, err, r.task(id))
	}
	return task
}

// done waits for the newest task of a resource, which must succeed.
func (r *rig) done(resource string) {
	r.t.Helper()
	if task := r.wait(r.lastTask(resource).ID); task.State != cairn.TaskDone {
		r.t.Fatalf("task %s of %s: %s: %s", task.Kind, resource, task.State, task.Error)
	}
}

// engineID is a catalog volume's engine volume.
func (r *rig) engineID(volume string) cairn.ID {
	r.t.Helper()
	id, err := cairn.ParseID(r.volume(volume).EngineID)
	if err != nil {
		r.t.Fatal(err)
	}
	return id
}

// settled checks what every task's end must leave: no task pending or
// running, no resource in a transient state, nothing in the engine or
// the repositories that the catalog does not name (at most once), no
// temporary snapshot, no open device, no repository handle left open by
// a stopped service.
func (r *rig) settled() {
	r.t.Helper()
	var vols []cairn.Volume
	var snaps []cairn.Snapshot
	var backups []cairn.Backup
	var open []cairn.Task
	var instances []cairn.Instance
	var dbBackups []cairn.DatabaseBackup
	r.view(func(ctx context.Context, tx catalog.Tx) error {
		var err error
		if vols, err = tx.Volumes(ctx, catalog.Filter{}); err != nil {
			return err
		}
		if snaps, err = tx.Snapshots(ctx, catalog.Filter{}); err != nil {
			return err
		}
		if backups, err = tx.Backups(ctx, catalog.Filter{}); err != nil {
			return err
		}
		if instances, err = tx.Instances(ctx, catalog.Filter{}); err != nil {
			return err
		}
		if dbBackups, err = tx.DatabaseBackups(ctx, catalog.Filter{}); err != nil {
			return err
		}
		open, err = tx.Tasks(ctx, catalog.Filter{TaskStates: []cairn.TaskState{cairn.TaskPending, cairn.TaskRunning}})
		return err
	})
	// Database instances and backups: steady, each engine volume and
	// snapshot named by one, each repository object named by a completed
	// backup, none left by a failed one.
	named := map[string]bool{} // engine names the catalog accounts for
	objects := map[string]bool{}
	for _, in := range instances {
		switch in.Status {
		case cairn.InstanceActive, cairn.InstanceError:
		default:
			r.t.Errorf("instance %s is %s", in.ID, in.Status)
		}
		named[in.ID] = true
		if in.Status == cairn.InstanceActive {
			if _, ok := r.host.Spec(in.ID); !ok {
				r.t.Errorf("active instance %s is not on the host", in.ID)
			}
		}
	}
	for _, b := range dbBackups {
		switch b.Status {
		case cairn.DatabaseBackupCompleted, cairn.DatabaseBackupDeleteFailed:
			// A backup whose deletion failed is still whole, or partly
			// forgotten: what is left of it is what it names.
			objects[b.Data] = true
			if b.Overlay != "" {
				objects[b.Overlay] = true
			}
		case cairn.DatabaseBackupFailed:
		default:
			r.t.Errorf("database backup %s is %s", b.ID, b.Status)
		}
		if b.SnapshotID != "" {
			named[service.DBSnapshotName(b.ID)] = true
		}
	}
	for _, task := range open {
		r.t.Errorf("task %s of %s is %s (%s)", task.Kind, task.ResourceID, task.State, task.Error)
	}
	steady := func(st cairn.Status) bool {
		switch st {
		case cairn.StatusAvailable, cairn.StatusInUse, cairn.StatusError, cairn.StatusErrorDeleting:
			return true
		}
		return false
	}
	volIDs, snapIDs, backupIDs := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, v := range vols {
		volIDs[v.ID] = true
		if !steady(v.Status) {
			r.t.Errorf("volume %s is %s", v.ID, v.Status)
		}
	}
	for _, s := range snaps {
		snapIDs[s.ID] = true
		if !steady(s.Status) {
			r.t.Errorf("snapshot %s is %s", s.ID, s.Status)
		}
	}
	for _, b := range backups {
		backupIDs[b.ID] = true
		if !steady(b.Status) {
			r.t.Errorf("backup %s is %s", b.ID, b.Status)
		}
		if b.TempSnapshotEngineID != "" {
			r.t.Errorf("backup %s still names a temporary snapshot", b.ID)
		}
	}
	evols, esnaps := r.eng.Peek()
	seen := map[string]int{}
	for _, v := range evols {
		if seen[v.Name]++; !(volIDs[v.Name] || named[v.Name]) || seen[v.Name] > 1 {
			r.t.Errorf("engine volume %s (%s) leaked: the catalog names it %d times, the engine has it %d times", v.ID.Short(), v.Name, btoi(volIDs[v.Name]), seen[v.Name])
		}
	}
	for _, s := range esnaps {
		if seen[s.Name]++; !(snapIDs[s.Name] || named[s.Name]) || seen[s.Name] > 1 {
			r.t.Errorf("engine snapshot %s (%s) leaked", s.ID.Short(), s.Name)
		}
	}
	if n := r.eng.OpenDevices(); n != 0 {
		r.t.Errorf("%d devices left open", n)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, st := range r.stores {
		tagged := map[string]int{}
		for _, m := range st.Manifests() {
			if m.Tags[service.TagDBOverlay] != "" || m.Tags[service.TagDBRecord] != "" || m.Tags[service.TagDBStream] != "" {
				if !objects[m.ID.String()] {
					r.t.Errorf("container %s: object %s of database backup %s%s leaked", name, m.ID.Short(), m.Tags[service.TagBackup], m.Tags[service.TagDBOverlay])
				}
				continue
			}
			id := m.Tags[service.TagBackup]
			if tagged[id]++; !backupIDs[id] || tagged[id] > 1 {
				r.t.Errorf("container %s: backup %s of catalog backup %q leaked (%d of it)", name, m.ID.Short(), id, tagged[id])
			}
		}
		if r.svc == nil && st.OpenHandles() != 0 {
			r.t.Errorf("container %s: %d repository handles left open by stopped services", name, st.OpenHandles())
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// backoffClock hands the task runner's waits between retries to the
// test: each is announced on waits and ends when the test fires it.
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

// wait returns the next wait asked for, and fails t when none comes
// within a minute (the code under test did not wait).
func (c *backoffClock) wait(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-c.waits:
		return d
	case <-time.After(time.Minute):
		t.Fatal("no wait was asked for")
		return 0
	}
}

func (c *backoffClock) next(t *testing.T) {
	t.Helper()
	c.wait(t)
}

// faultyCatalog is the rig's catalog: real, but writing a resource's
// error status goes through the faults ("Catalog.SetError"), so a test
// can make a Fail fail at the step that shows the failure; and it
// records the status changes the API shows, in order.
type faultyCatalog struct {
	catalog.Store
	faults *servicetest.Faults

	mu      sync.Mutex
	changes []statusChange
}

// statusChange is a committed change of a resource's status (or its
// row's removal: "deleted").
type statusChange struct {
	id     string
	status cairn.Status
}

func (c *faultyCatalog) Update(ctx context.Context, fn func(catalog.Tx) error) error {
	var changes []statusChange
	err := c.Store.Update(ctx, func(tx catalog.Tx) error {
		changes = nil
		return fn(faultyTx{tx, ctx, c.faults, &changes})
	})
	if err == nil {
		c.mu.Lock()
		c.changes = append(c.changes, changes...)
		c.mu.Unlock()
	}
	return err
}

// takeChanges returns the status changes since the last call.
func (c *faultyCatalog) takeChanges() []statusChange {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.changes
	c.changes = nil
	return out
}

type faultyTx struct {
	catalog.Tx
	ctx     context.Context
	faults  *servicetest.Faults
	changes *[]statusChange
}

func (tx faultyTx) changed(id string, old, now cairn.Status) {
	if old != now {
		*tx.changes = append(*tx.changes, statusChange{id, now})
	}
}

func (tx faultyTx) setError(st cairn.Status) error {
	if st != cairn.StatusError && st != cairn.StatusErrorDeleting {
		return nil
	}
	c, err := tx.faults.Begin(tx.ctx, "Catalog.SetError")
	if err != nil {
		return err
	}
	return c.End(tx.ctx)
}

// UpdatePolicySlot goes through the faults ("Catalog.UpdatePolicySlot"):
// queuing a recorded slot's backups can be made to fail, as a process
// dying between the scheduler's two transactions would leave it.
func (tx faultyTx) UpdatePolicySlot(ctx context.Context, st cairn.PolicySlot) error {
	c, err := tx.faults.Begin(tx.ctx, "Catalog.UpdatePolicySlot")
	if err != nil {
		return err
	}
	if err := c.End(tx.ctx); err != nil {
		return err
	}
	return tx.Tx.UpdatePolicySlot(ctx, st)
}

func (tx faultyTx) UpdateVolume(ctx context.Context, v cairn.Volume) error {
	if err := tx.setError(v.Status); err != nil {
		return err
	}
	old, err := tx.Tx.Volume(ctx, v.ID)
	if err == nil {
		tx.changed(v.ID, old.Status, v.Status)
	}
	return tx.Tx.UpdateVolume(ctx, v)
}

func (tx faultyTx) UpdateSnapshot(ctx context.Context, s cairn.Snapshot) error {
	if err := tx.setError(s.Status); err != nil {
		return err
	}
	old, err := tx.Tx.Snapshot(ctx, s.ID)
	if err == nil {
		tx.changed(s.ID, old.Status, s.Status)
	}
	return tx.Tx.UpdateSnapshot(ctx, s)
}

func (tx faultyTx) UpdateBackup(ctx context.Context, b cairn.Backup) error {
	if err := tx.setError(b.Status); err != nil {
		return err
	}
	old, err := tx.Tx.Backup(ctx, b.ID)
	if err == nil {
		tx.changed(b.ID, old.Status, b.Status)
	}
	return tx.Tx.UpdateBackup(ctx, b)
}

func (tx faultyTx) UpdateInstance(ctx context.Context, in cairn.Instance) error {
	if in.Status == cairn.InstanceError {
		if err := tx.setError(cairn.StatusError); err != nil {
			return err
		}
	}
	old, err := tx.Tx.Instance(ctx, in.ID)
	if err == nil {
		tx.changed(in.ID, cairn.Status(old.Status), cairn.Status(in.Status))
	}
	return tx.Tx.UpdateInstance(ctx, in)
}

func (tx faultyTx) UpdateDatabaseBackup(ctx context.Context, b cairn.DatabaseBackup) error {
	if b.Status == cairn.DatabaseBackupFailed || b.Status == cairn.DatabaseBackupDeleteFailed {
		if err := tx.setError(cairn.StatusError); err != nil {
			return err
		}
	}
	old, err := tx.Tx.DatabaseBackup(ctx, b.ID)
	if err == nil {
		tx.changed(b.ID, cairn.Status(old.Status), cairn.Status(b.Status))
	}
	return tx.Tx.UpdateDatabaseBackup(ctx, b)
}

func (tx faultyTx) DeleteInstance(ctx context.Context, id string) error {
	tx.changed(id, "", cairn.StatusDeleted)
	return tx.Tx.DeleteInstance(ctx, id)
}

func (tx faultyTx) DeleteDatabaseBackup(ctx context.Context, id string) error {
	tx.changed(id, "", cairn.StatusDeleted)
	return tx.Tx.DeleteDatabaseBackup(ctx, id)
}

func (tx faultyTx) DeleteVolume(ctx context.Context, id string) error {
	tx.changed(id, "", cairn.StatusDeleted)
	return tx.Tx.DeleteVolume(ctx, id)
}

func (tx faultyTx) DeleteSnapshot(ctx context.Context, id string) error {
	tx.changed(id, "", cairn.StatusDeleted)
	return tx.Tx.DeleteSnapshot(ctx, id)
}

func (tx faultyTx) DeleteBackup(ctx context.Context, id string) error {
	tx.changed(id, "", cairn.StatusDeleted)
	return tx.Tx.DeleteBackup(ctx, id)
}

// shownLast checks that a task's last status change was its resource's,
// to want: who sees the resource's final status sees everything else the
// task did (sources released) done.
func (r *rig) shownLast(res string, want cairn.Status) {
	r.t.Helper()
	changes := r.cat.takeChanges()
	if len(changes) == 0 || changes[len(changes)-1] != (statusChange{res, want}) {
		r.t.Errorf("status changes %v: want the last to be %s to %s", changes, res, want)
	}
}

// occurrence is which call of its method trace[i] is (from 1).
func occurrence(trace []string, i int) int {
	n := 0
	for _, m := range trace[:i+1] {
		if m == trace[i] {
			n++
		}
	}
	return n
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
