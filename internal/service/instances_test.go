package service_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbhost"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/service/servicetest"
)

func (r *rig) instance(id string) cairn.Instance {
	r.t.Helper()
	var in cairn.Instance
	r.view(func(ctx context.Context, tx catalog.Tx) error {
		var err error
		in, err = tx.Instance(ctx, id)
		return err
	})
	return in
}

func (r *rig) dbBackup(id string) cairn.DatabaseBackup {
	r.t.Helper()
	var b cairn.DatabaseBackup
	r.view(func(ctx context.Context, tx catalog.Tx) error {
		var err error
		b, err = tx.DatabaseBackup(ctx, id)
		return err
	})
	return b
}

func (r *rig) rowGone(get func(tx catalog.Tx, ctx context.Context) error) bool {
	r.t.Helper()
	var err error
	ctx := r.t.Context()
	_ = r.cat.View(ctx, func(tx catalog.Tx) error { err = get(tx, ctx); return nil })
	if err != nil && !errors.Is(err, cairn.ErrNotFound) {
		r.t.Fatal(err)
	}
	return err != nil
}

// makeInstance makes an active PostgreSQL instance with data on its
// volume.
func makeInstance(r *rig, f *fixture) { makeInstanceOf(r, f, "postgresql") }

func makeInstanceOf(r *rig, f *fixture, datastore string) {
	in := must[cairn.Instance](r.t)(r.svc.CreateInstance(r.t.Context(), caller, cairn.InstanceCreate{
		Name: "db", Datastore: datastore, VolumeSize: 1,
		Databases: []cairn.DatabaseSpec{{Name: "app"}}, Users: []cairn.DatabaseUser{{Name: "bob", Password: "pw-12345", Databases: []string{"app"}}}}))
	r.done(in.ID)
	f.vol = in.ID
	eid := must[cairn.ID](r.t)(cairn.ParseID(r.instance(in.ID).VolumeID))
	if err := r.eng.Write(eid, 1<<20, []byte("the database's pages")); err != nil {
		r.t.Fatal(err)
	}
	f.data = must[map[int64][]byte](r.t)(r.eng.Pages(eid))
}

func makeDBBackup(r *rig, f *fixture) { makeDBBackupBy(r, f, cairn.StrategySnapshot, false) }

// makeDBBackupBy makes a backup of strategy st of the fixture's instance;
// incremental builds on the latest.
func makeDBBackupBy(r *rig, f *fixture, st cairn.DatabaseStrategy, incremental bool) {
	b := must[cairn.DatabaseBackup](r.t)(r.svc.CreateDatabaseBackup(r.t.Context(), caller, cairn.DatabaseBackupCreate{
		InstanceID: f.vol, Name: "b", Strategy: st, Incremental: incremental}))
	r.done(b.ID)
	if incremental && b.ParentID != f.backup {
		r.t.Fatalf("incremental backup's parent %q, want %s", b.ParentID, f.backup)
	}
	f.snap, f.backup = f.backup, b.ID // snap: the parent, if any
}

// framed is parts as the host reads a physical chain.
func framed(t *testing.T, parts ...[]byte) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		if err := dbhost.WritePart(&b, bytes.NewReader(p), int64(len(p))); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// instanceData is the data of an instance's volume.
func instanceData(r *rig, id string) map[int64][]byte {
	r.t.Helper()
	return must[map[int64][]byte](r.t)(r.eng.Pages(must[cairn.ID](r.t)(cairn.ParseID(r.instance(id).VolumeID))))
}

// databaseScenarios are the task kinds of database instances and their
// backups, for TestTaskKinds and TestFailingFail: every call failing
// before and after it took effect, and the service stopped at each.
func databaseScenarios() []scenario {
	active, errored := cairn.Status(cairn.InstanceActive), cairn.Status(cairn.InstanceError)
	instanceFailed := func(r *rig, f *fixture, reason string) {
		in := r.instance(f.res)
		wantStatus(r.t, "instance", cairn.Status(in.Status), errored)
		wantReason(r.t, "instance", in.FailReason, reason)
	}
	restoredInstance := func(r *rig, f *fixture) {
		in := r.instance(f.res)
		wantStatus(r.t, "instance", cairn.Status(in.Status), active)
		if !sameData(instanceData(r, f.res), f.data) {
			r.t.Error("the restored instance's volume differs from the backed-up one")
		}
		spec, ok := r.host.Spec(f.res)
		if !ok || spec.Source != dbhost.SourceSnapshot || spec.Record == nil || string(spec.Overlay) != "overlay of "+service.DBSnapshotName(f.backup) {
			r.t.Errorf("the host provisioned %+v (overlay %q), want the backup's record and overlay", spec.Record, spec.Overlay)
		}
	}
	return []scenario{
		{
			name: "instance.create", kind: "instance.create", done: active, error: errored,
			setup: func(*rig) *fixture { return &fixture{} },
			start: func(r *rig, f *fixture) {
				f.res = must[cairn.Instance](r.t)(r.svc.CreateInstance(r.t.Context(), caller, cairn.InstanceCreate{
					Name: "db", Datastore: "postgresql", VolumeSize: 2, Databases: []cairn.DatabaseSpec{{Name: "app"}}})).ID
			},
			ok: func(r *rig, f *fixture) {
				in := r.instance(f.res)
				wantStatus(r.t, "instance", cairn.Status(in.Status), active)
				spec, ok := r.host.Spec(f.res)
				if !ok || spec.Source != dbhost.SourceInit || len(spec.Databases) != 1 || spec.Volume.String() != in.VolumeID || in.Port == 0 {
					r.t.Errorf("host spec %+v, instance %+v", spec, in)
				}
			},
			failed: instanceFailed,
		},
		{
			name: "instance.create from a backup's snapshot", kind: "instance.create", done: active, error: errored,
			setup: func(r *rig) *fixture { f := &fixture{}; makeInstance(r, f); makeDBBackup(r, f); return f },
			start: func(r *rig, f *fixture) {
				f.res = must[cairn.Instance](r.t)(r.svc.CreateInstance(r.t.Context(), caller, cairn.InstanceCreate{Name: "r", BackupID: f.backup})).ID
			},
			ok:     restoredInstance,
			failed: instanceFailed,
		},
		{
			name: "instance.create from a backup in the repository", kind: "instance.create", done: active, error: errored,
			setup: func(r *rig) *fixture {
				f := &fixture{}
				makeInstance(r, f)
				makeDBBackup(r, f)
				// Deleting the instance deletes its backups' snapshots.
				if err := r.svc.DeleteInstance(r.t.Context(), caller, f.vol); err != nil {
					r.t.Fatal(err)
				}
				r.done(f.vol)
				if r.dbBackup(f.backup).SnapshotID != "" {
					r.t.Fatal("the backup still names a snapshot of the deleted instance")
				}
				return f
			},
			start: func(r *rig, f *fixture) {
				f.res = must[cairn.Instance](r.t)(r.svc.CreateInstance(r.t.Context(), caller, cairn.InstanceCreate{Name: "r", BackupID: f.backup})).ID
			},
			ok:     restoredInstance,
			failed: instanceFailed,
		},
		{
			name: "instance.create from a logical backup", kind: "instance.create", done: active, error: errored,
			setup: func(r *rig) *fixture {
				f := &fixture{}
				makeInstance(r, f)
				makeDBBackupBy(r, f, cairn.StrategyLogical, false)
				return f
			},
			start: func(r *rig, f *fixture) {
				f.res = must[cairn.Instance](r.t)(r.svc.CreateInstance(r.t.Context(), caller, cairn.InstanceCreate{Name: "r", BackupID: f.backup})).ID
			},
			ok: func(r *rig, f *fixture) {
				wantStatus(r.t, "instance", cairn.Status(r.instance(f.res).Status), active)
				want := servicetest.StreamOf(f.vol, dbhost.StreamOptions{Method: dbagent.Logical, Label: "cairn-" + f.backup})
				if spec, _ := r.host.Spec(f.res); spec.Source != dbhost.SourceLogical || !bytes.Equal(r.host.Data(f.res), want) {
					r.t.Errorf("the host loaded %d bytes from %s, want the dump's %d", len(r.host.Data(f.res)), spec.Source, len(want))
				}
			},
			failed: instanceFailed,
		},
		{
			name: "instance.create from a physical chain", kind: "instance.create", done: active, error: errored,
			setup: func(r *rig) *fixture {
				f := &fixture{}
				makeInstanceOf(r, f, "mariadb")
				makeDBBackupBy(r, f, cairn.StrategyPhysical, false)
				makeDBBackupBy(r, f, cairn.StrategyPhysical, true)
				return f
			},
			start: func(r *rig, f *fixture) {
				f.res = must[cairn.Instance](r.t)(r.svc.CreateInstance(r.t.Context(), caller, cairn.InstanceCreate{Name: "r", BackupID: f.backup})).ID
			},
			ok: func(r *rig, f *fixture) {
				wantStatus(r.t, "instance", cairn.Status(r.instance(f.res).Status), active)
				full := servicetest.StreamOf(f.vol, dbhost.StreamOptions{Method: dbagent.Physical, Label: "cairn-" + f.snap})
				inc := servicetest.StreamOf(f.vol, dbhost.StreamOptions{Method: dbagent.Physical, Label: "cairn-" + f.backup,
					Parent: &dbagent.Record{Label: "cairn-" + f.snap}})
				spec, _ := r.host.Spec(f.res)
				if spec.Source != dbhost.SourcePhysical || len(spec.Parts) != 2 || !bytes.Equal(r.host.Data(f.res), framed(r.t, full, inc)) {
					r.t.Errorf("the host restored %d parts, %d bytes; want the full backup and its incremental framed", len(spec.Parts), len(r.host.Data(f.res)))
				}
			},
			failed: instanceFailed,
		},
		{
			name: "instance.delete", kind: "instance.delete", done: cairn.StatusDeleted, error: errored,
			setup: func(r *rig) *fixture { f := &fixture{}; makeInstance(r, f); makeDBBackup(r, f); return f },
			start: func(r *rig, f *fixture) {
				f.res = f.vol
				if err := r.svc.DeleteInstance(r.t.Context(), caller, f.vol); err != nil {
					r.t.Fatal(err)
				}
			},
			ok: func(r *rig, f *fixture) {
				if !r.rowGone(func(tx catalog.Tx, ctx context.Context) error { _, err := tx.Instance(ctx, f.res); return err }) {
					r.t.Error("the deleted instance is still in the catalog")
				}
				if _, ok := r.host.Spec(f.res); ok {
					r.t.Error("the deleted instance is still on the host")
				}
				b := r.dbBackup(f.backup)
				wantStatus(r.t, "its backup", cairn.Status(b.Status), cairn.Status(cairn.DatabaseBackupCompleted))
			},
			failed: instanceFailed,
		},
		{
			name: "dbbackup.create", kind: "dbbackup.create", done: cairn.Status(cairn.DatabaseBackupCompleted), error: cairn.Status(cairn.DatabaseBackupFailed),
			setup: func(r *rig) *fixture { f := &fixture{}; makeInstance(r, f); return f },
			start: func(r *rig, f *fixture) {
				f.res = must[cairn.DatabaseBackup](r.t)(r.svc.CreateDatabaseBackup(r.t.Context(), caller, cairn.DatabaseBackupCreate{InstanceID: f.vol, Name: "b"})).ID
			},
			ok: func(r *rig, f *fixture) {
				b := r.dbBackup(f.res)
				if b.Data == "" || b.Overlay == "" || b.SnapshotID == "" || len(b.Record) == 0 || b.DataTimestamp.IsZero() {
					r.t.Errorf("completed backup %+v", b)
				}
				wantStatus(r.t, "its instance", cairn.Status(r.instance(f.vol).Status), active)
			},
			failed: func(r *rig, f *fixture, reason string) {
				b := r.dbBackup(f.res)
				wantStatus(r.t, "backup", cairn.Status(b.Status), cairn.Status(cairn.DatabaseBackupFailed))
				wantReason(r.t, "backup", b.FailReason, reason)
				wantStatus(r.t, "its instance", cairn.Status(r.instance(f.vol).Status), active)
			},
		},
		{
			name: "dbbackup.create logical", kind: "dbbackup.create", done: cairn.Status(cairn.DatabaseBackupCompleted), error: cairn.Status(cairn.DatabaseBackupFailed),
			setup: func(r *rig) *fixture { f := &fixture{}; makeInstance(r, f); return f },
			start: func(r *rig, f *fixture) {
				f.res = must[cairn.DatabaseBackup](r.t)(r.svc.CreateDatabaseBackup(r.t.Context(), caller, cairn.DatabaseBackupCreate{
					InstanceID: f.vol, Name: "b", Strategy: cairn.StrategyLogical})).ID
			},
			ok: func(r *rig, f *fixture) {
				b := r.dbBackup(f.res)
				want := servicetest.StreamOf(f.vol, dbhost.StreamOptions{Method: dbagent.Logical, Label: "cairn-" + b.ID})
				if b.Data == "" || b.Overlay == "" || b.SnapshotID != "" || b.Size != int64(len(want)) || len(b.Record) == 0 {
					r.t.Errorf("completed logical backup %+v", b)
				}
				wantStatus(r.t, "its instance", cairn.Status(r.instance(f.vol).Status), active)
			},
			failed: func(r *rig, f *fixture, reason string) {
				b := r.dbBackup(f.res)
				wantStatus(r.t, "backup", cairn.Status(b.Status), cairn.Status(cairn.DatabaseBackupFailed))
				wantReason(r.t, "backup", b.FailReason, reason)
				wantStatus(r.t, "its instance", cairn.Status(r.instance(f.vol).Status), active)
			},
		},
		{
			name: "dbbackup.delete", kind: "dbbackup.delete", done: cairn.StatusDeleted, error: cairn.Status(cairn.DatabaseBackupDeleteFailed),
			setup: func(r *rig) *fixture { f := &fixture{}; makeInstance(r, f); makeDBBackup(r, f); return f },
			start: func(r *rig, f *fixture) {
				f.res = f.backup
				if err := r.svc.DeleteDatabaseBackup(r.t.Context(), caller, f.backup); err != nil {
					r.t.Fatal(err)
				}
			},
			ok: func(r *rig, f *fixture) {
				if !r.rowGone(func(tx catalog.Tx, ctx context.Context) error { _, err := tx.DatabaseBackup(ctx, f.res); return err }) {
					r.t.Error("the deleted backup is still in the catalog")
				}
			},
			failed: func(r *rig, f *fixture, reason string) {
				b := r.dbBackup(f.res)
				wantStatus(r.t, "backup", cairn.Status(b.Status), cairn.Status(cairn.DatabaseBackupDeleteFailed))
				wantReason(r.t, "backup", b.FailReason, reason)
			},
		},
	}
}

// TestDatabaseRequests: what the database API refuses, before any task.
func TestDatabaseRequests(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	f := &fixture{}
	makeInstance(r, f)
	for _, tc := range []struct {
		name string
		call func() error
		want error
	}{
		{"no name", func() error {
			_, err := r.svc.CreateInstance(ctx, caller, cairn.InstanceCreate{Datastore: "postgresql", VolumeSize: 1})
			return err
		}, cairn.ErrInvalid},
		{"unknown datastore", func() error {
			_, err := r.svc.CreateInstance(ctx, caller, cairn.InstanceCreate{Name: "x", Datastore: "oracle", VolumeSize: 1})
			return err
		}, cairn.ErrInvalid},
		{"unknown version", func() error {
			_, err := r.svc.CreateInstance(ctx, caller, cairn.InstanceCreate{Name: "x", Datastore: "postgresql", DatastoreVersion: "9", VolumeSize: 1})
			return err
		}, cairn.ErrInvalid},
		{"no size", func() error {
			_, err := r.svc.CreateInstance(ctx, caller, cairn.InstanceCreate{Name: "x", Datastore: "postgresql"})
			return err
		}, cairn.ErrInvalid},
		{"bad database name", func() error {
			_, err := r.svc.CreateInstance(ctx, caller, cairn.InstanceCreate{Name: "x", Datastore: "postgresql", VolumeSize: 1,
				Databases: []cairn.DatabaseSpec{{Name: "a;drop"}}})
			return err
		}, cairn.ErrInvalid},
		{"missing backup", func() error {
			_, err := r.svc.CreateInstance(ctx, caller, cairn.InstanceCreate{Name: "x", BackupID: "nope"})
			return err
		}, cairn.ErrNotFound},
		{"another project's instance", func() error {
			_, err := r.svc.Instance(ctx, service.Caller{ProjectID: "other"}, f.vol)
			return err
		}, cairn.ErrNotFound},
		{"unknown backup strategy", func() error {
			_, err := r.svc.CreateDatabaseBackup(ctx, caller, cairn.DatabaseBackupCreate{InstanceID: f.vol, Name: "b", Strategy: "tape"})
			return err
		}, cairn.ErrInvalid},
		{"unknown strategy", func() error {
			_, err := r.svc.SetBackupStrategy(ctx, caller, cairn.BackupStrategy{Strategy: "tape"})
			return err
		}, cairn.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// The users' passwords are gone from the catalog once the users
	// exist.
	if task := r.lastTask(f.vol); bytes.Contains(task.Params, []byte("pw-12345")) {
		t.Fatalf("the instance's task keeps the user's password: %s", task.Params)
	}
	// Instances show the host's live state.
	list := must[[]cairn.Instance](t)(r.svc.ListInstances(ctx, caller, service.ListQuery{}))
	if len(list) != 1 || list[0].OperatingStatus != cairn.OperatingHealthy || list[0].Port == 0 {
		t.Fatalf("instances: %+v", list)
	}
	// A backup strategy's container is the default of the next backup.
	if _, err := r.svc.SetBackupStrategy(ctx, caller, cairn.BackupStrategy{InstanceID: f.vol, Container: "elsewhere"}); err != nil {
		t.Fatal(err)
	}
	b := must[cairn.DatabaseBackup](t)(r.svc.CreateDatabaseBackup(ctx, caller, cairn.DatabaseBackupCreate{InstanceID: f.vol, Name: "b"}))
	if b.Container != "elsewhere" || b.Strategy != cairn.StrategySnapshot {
		t.Fatalf("backup under the instance's strategy: container %q, strategy %q", b.Container, b.Strategy)
	}
	r.done(b.ID)
	// An incremental's parent is the latest completed backup.
	inc := must[cairn.DatabaseBackup](t)(r.svc.CreateDatabaseBackup(ctx, caller, cairn.DatabaseBackupCreate{InstanceID: f.vol, Name: "i", Incremental: true}))
	if inc.ParentID != b.ID {
		t.Fatalf("incremental's parent %q, want %s", inc.ParentID, b.ID)
	}
	r.done(inc.ID)
	if err := r.svc.DeleteDatabaseBackup(ctx, caller, b.ID); !errors.Is(err, cairn.ErrConflict) {
		t.Fatalf("deleting the parent of an incremental: %v", err)
	}
	// A delete asked for again while the first is queued is that one:
	// one task (on a service whose workers are stopped, so the first
	// stays queued).
	r.stop()
	idle := service.New(service.Config{Catalog: r.cat, Engine: r.eng, OpenRepo: r.open, Workers: 2, After: r.clock.After, Instances: r.host})
	for range 2 {
		if err := idle.DeleteDatabaseBackup(ctx, caller, inc.ID); err != nil {
			t.Fatal(err)
		}
	}
	var deletes int
	r.view(func(ctx context.Context, tx catalog.Tx) error {
		list, err := tx.Tasks(ctx, catalog.Filter{ResourceID: inc.ID})
		for _, task := range list {
			if task.Kind == "dbbackup.delete" {
				deletes++
			}
		}
		return err
	})
	if deletes != 1 {
		t.Fatalf("two deletes of a backup queued %d tasks, want 1", deletes)
	}
	r.start()
	r.done(inc.ID)
}

// TestStrategySwitch: an instance's backup strategy switched from
// logical to physical to snapshot and back; every backup taken under
// each restores into a new instance, from the right kind of source.
func TestStrategySwitch(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	f := &fixture{}
	makeInstance(r, f)
	sources := map[cairn.DatabaseStrategy]dbhost.Source{
		cairn.StrategyLogical: dbhost.SourceLogical, cairn.StrategyPhysical: dbhost.SourcePhysical, cairn.StrategySnapshot: dbhost.SourceSnapshot}
	var backups []cairn.DatabaseBackup
	for _, st := range []cairn.DatabaseStrategy{cairn.StrategyLogical, cairn.StrategyPhysical, cairn.StrategySnapshot, cairn.StrategyLogical} {
		if _, err := r.svc.SetBackupStrategy(ctx, caller, cairn.BackupStrategy{InstanceID: f.vol, Strategy: st}); err != nil {
			t.Fatal(err)
		}
		b := must[cairn.DatabaseBackup](t)(r.svc.CreateDatabaseBackup(ctx, caller, cairn.DatabaseBackupCreate{InstanceID: f.vol, Name: string(st)}))
		if b.Strategy != st {
			t.Fatalf("backup under strategy %s is %s", st, b.Strategy)
		}
		r.done(b.ID)
		backups = append(backups, b)
	}
	for _, b := range backups {
		in := must[cairn.Instance](t)(r.svc.CreateInstance(ctx, caller, cairn.InstanceCreate{Name: "from-" + b.Name, BackupID: b.ID}))
		r.done(in.ID)
		spec, ok := r.host.Spec(in.ID)
		if got := r.instance(in.ID); got.Status != cairn.InstanceActive || !ok || spec.Source != sources[b.Strategy] {
			t.Fatalf("instance from the %s backup %s: %s, host source %q", b.Strategy, b.ID, got.Status, spec.Source)
		}
		if b.Strategy == cairn.StrategySnapshot && !sameData(instanceData(r, in.ID), f.data) {
			t.Fatal("the instance from the snapshot backup differs from the backed-up volume")
		}
	}
	r.settled()
}

// TestStartKeepsInstanceExports: a service starting reconciles the data
// plane's exports with its attached volumes, and leaves alone those of
// database instances, which belong to the host.
func TestStartKeepsInstanceExports(t *testing.T) {
	r := newRig(t)
	f := &fixture{}
	makeInstance(r, f)
	vol := must[cairn.ID](t)(cairn.ParseID(r.instance(f.vol).VolumeID))
	name := dbhost.ExportPrefix + f.vol
	if err := r.eng.Export(t.Context(), name, vol); err != nil {
		t.Fatal(err)
	}
	if err := r.eng.Export(t.Context(), "stale", vol); err != nil {
		t.Fatal(err)
	}
	r.restart()
	have := must[map[string]cairn.ID](t)(r.eng.Exported(t.Context()))
	if have[name] != vol {
		t.Fatalf("exports after a restart: %v, want %s kept", have, name)
	}
	if _, ok := have["stale"]; ok {
		t.Fatalf("exports after a restart: %v, want the stale one gone", have)
	}
}

// TestGivenUpTaskKeepsFinishedWork: a task cut short after its resource
// was finished (the instance ACTIVE, the backup COMPLETED), then cut
// short again until the runner gives up on it, fails without undoing
// that work: the instance stays ACTIVE, the backup COMPLETED with its
// snapshot and its image in the repository.
func TestGivenUpTaskKeepsFinishedWork(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	f := &fixture{}
	makeInstance(r, f)
	makeDBBackup(r, f)
	b := r.dbBackup(f.backup)
	for _, resource := range []string{f.vol, f.backup} {
		task := r.lastTask(resource)
		if err := r.cat.Update(ctx, func(tx catalog.Tx) error {
			task.State, task.Attempts = cairn.TaskRunning, 3
			return tx.UpdateTask(ctx, task)
		}); err != nil {
			t.Fatal(err)
		}
	}
	r.restart()
	for _, resource := range []string{f.vol, f.backup} {
		if task := r.wait(r.lastTask(resource).ID); task.State != cairn.TaskFailed {
			t.Fatalf("task %s of %s: %s, want it given up", task.Kind, resource, task.State)
		}
	}
	if in := r.instance(f.vol); in.Status != cairn.InstanceActive {
		t.Fatalf("instance after its create task was given up: %s (%s)", in.Status, in.FailReason)
	}
	got := r.dbBackup(f.backup)
	if got.Status != cairn.DatabaseBackupCompleted || got.SnapshotID != b.SnapshotID || got.Data != b.Data {
		t.Fatalf("backup after its task was given up: %s, snapshot %q (was %q), data %q (was %q)",
			got.Status, got.SnapshotID, b.SnapshotID, got.Data, b.Data)
	}
	// It still restores.
	in := must[cairn.Instance](t)(r.svc.CreateInstance(ctx, caller, cairn.InstanceCreate{Name: "again", BackupID: f.backup}))
	r.done(in.ID)
	if !sameData(instanceData(r, in.ID), f.data) {
		t.Fatal("the kept backup restores different data")
	}
}

// TestOperatingUnknown: while the host cannot be asked (its data plane
// is down), an ACTIVE instance shows operating status UNKNOWN, not the
// last status its row kept; once the host answers, its own.
func TestOperatingUnknown(t *testing.T) {
	r := newRig(t)
	f := &fixture{}
	makeInstance(r, f)
	show := func() (cairn.OperatingStatus, cairn.OperatingStatus) {
		t.Helper()
		one := must[cairn.Instance](t)(r.svc.Instance(t.Context(), caller, f.vol))
		list := must[[]cairn.Instance](t)(r.svc.ListInstances(t.Context(), caller, service.ListQuery{}))
		if len(list) != 1 {
			t.Fatalf("instances: %+v", list)
		}
		return one.OperatingStatus, list[0].OperatingStatus
	}
	if one, listed := show(); one != cairn.OperatingHealthy || listed != cairn.OperatingHealthy {
		t.Fatalf("operating status %q, listed %q; want HEALTHY", one, listed)
	}
	r.faults.Add(servicetest.Fault{Method: "InstanceHost.HostInstance"})
	r.faults.Add(servicetest.Fault{Method: "InstanceHost.HostInstances"})
	if one, listed := show(); one != cairn.OperatingUnknown || listed != cairn.OperatingUnknown {
		t.Fatalf("with the host unreachable: operating status %q, listed %q; want UNKNOWN", one, listed)
	}
	r.faults.Clear()
	if one, listed := show(); one != cairn.OperatingHealthy || listed != cairn.OperatingHealthy {
		t.Fatalf("once the host answers: operating status %q, listed %q; want HEALTHY", one, listed)
	}
}

// TestProvisionRetriesUnavailableHost: a Provision that meets the host
// unavailable (its data plane killed and starting again) is made again
// after a pause that doubles, and the instance comes up; a host that
// stays unavailable fails the instance after provisionAttempts calls,
// with the reason.
func TestProvisionRetriesUnavailableHost(t *testing.T) {
	r := newRig(t)
	create := func(name string) string {
		in := must[cairn.Instance](t)(r.svc.CreateInstance(t.Context(), caller, cairn.InstanceCreate{
			Name: name, Datastore: "postgresql", VolumeSize: 1}))
		return in.ID
	}
	gone := fmt.Errorf("data plane unreachable or gone during PUT /instances/x: EOF: %w", cairn.ErrUnavailable)
	r.faults.Add(servicetest.Fault{Method: "InstanceHost.Provision", Times: 2, Err: gone})
	id := create("comes-up")
	for _, want := range []time.Duration{time.Second, 2 * time.Second} {
		if d := r.clock.wait(t); d != want {
			t.Fatalf("paused %v before provisioning again, want %v", d, want)
		}
		r.clock.fire <- time.Time{}
	}
	r.done(id)
	if in := r.instance(id); in.Status != cairn.InstanceActive {
		t.Fatalf("instance after two unavailable calls: %s (%s)", in.Status, in.FailReason)
	}

	r.faults.Add(servicetest.Fault{Method: "InstanceHost.Provision", Err: gone})
	id = create("stays-down")
	for range 4 {
		r.clock.wait(t)
		r.clock.fire <- time.Time{}
	}
	if task := r.wait(r.lastTask(id).ID); task.State != cairn.TaskFailed {
		t.Fatalf("task with the host always unavailable: %s", task.State)
	}
	if in := r.instance(id); in.Status != cairn.InstanceError || !strings.Contains(in.FailReason, "data plane unreachable") {
		t.Fatalf("instance with the host always unavailable: %s (%s)", in.Status, in.FailReason)
	}
}

// TestDeleteInstanceBesideItsBackup: an instance and its backup deleted
// at once both go, whichever deletes the backup's snapshot first.
func TestDeleteInstanceBesideItsBackup(t *testing.T) {
	r := newRig(t)
	f := &fixture{}
	makeInstance(r, f)
	makeDBBackup(r, f)
	// The instance's delete has deleted the backup's snapshot, and waits.
	gate := r.faults.Hold("Engine.DeleteSnapshot", true)
	if err := r.svc.DeleteInstance(t.Context(), caller, f.vol); err != nil {
		t.Fatal(err)
	}
	<-gate.Reached()
	if err := r.svc.DeleteDatabaseBackup(t.Context(), caller, f.backup); err != nil {
		t.Fatal(err)
	}
	if task := r.wait(r.lastTask(f.backup).ID); task.State != cairn.TaskDone {
		t.Fatalf("backup delete: %s: %s", task.State, task.Error)
	}
	gate.Open()
	if task := r.wait(r.lastTask(f.vol).ID); task.State != cairn.TaskDone {
		t.Fatalf("instance delete beside its backup's: %s: %s", task.State, task.Error)
	}
}

// closingHost is a host whose first Provision with a stream closes the
// stream, as the HTTP client does when the data plane dies under the
// request, and fails as unavailable once the stream's writer has failed
// on the closed pipe.
type closingHost struct {
	service.InstanceHost
	closed atomic.Bool
}

func (h *closingHost) Provision(ctx context.Context, spec dbhost.Spec, data io.Reader) (dbhost.State, error) {
	if data != nil && h.closed.CompareAndSwap(false, true) {
		data.(io.Closer).Close()
		<-ctx.Done() // the writer's closed pipe ended the stream's group
		return dbhost.State{}, fmt.Errorf("data plane unreachable or gone during PUT: EOF: %w", cairn.ErrUnavailable)
	}
	return h.InstanceHost.Provision(ctx, spec, data)
}

// restoreDumpThrough takes a logical backup on r, then asks a service
// whose host is wrapped by wrap for a restore of it.
func restoreDumpThrough(t *testing.T, r *rig, wrap func(service.InstanceHost) service.InstanceHost) cairn.Instance {
	t.Helper()
	f := &fixture{}
	makeInstance(r, f)
	makeDBBackupBy(r, f, cairn.StrategyLogical, false)
	r.stop()
	svc := service.New(service.Config{Catalog: r.cat, Engine: r.eng, OpenRepo: r.open, Workers: 2, After: r.clock.After,
		Instances: wrap(r.host)})
	if err := svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	return must[cairn.Instance](t)(svc.CreateInstance(t.Context(), caller, cairn.InstanceCreate{
		Name: "restored", Datastore: "postgresql", VolumeSize: 1, BackupID: f.backup}))
}

// TestStreamedRestoreRetriesHostError: a restore from a dump whose host
// went away mid-stream fails with the host's error (temporary), not the
// closed pipe its writer saw first, so it is provisioned again and comes
// up.
func TestStreamedRestoreRetriesHostError(t *testing.T) {
	r := newRig(t)
	in := restoreDumpThrough(t, r, func(h service.InstanceHost) service.InstanceHost { return &closingHost{InstanceHost: h} })
	if d := r.clock.wait(t); d != time.Second {
		t.Fatalf("paused %v before provisioning again, want 1s", d)
	}
	r.clock.fire <- time.Time{}
	r.done(in.ID)
	if got := r.instance(in.ID); got.Status != cairn.InstanceActive {
		t.Fatalf("restore after the host went away mid-stream: %s (%s)", got.Status, got.FailReason)
	}
}

// preparedHost is a host whose data plane already holds what the stream
// would bring (a resumed restore past the step that reads it): it closes
// the stream unread, as the HTTP client does when its request ends, and
// succeeds once the stream's writer has failed on the closed pipe.
type preparedHost struct{ service.InstanceHost }

func (h preparedHost) Provision(ctx context.Context, spec dbhost.Spec, data io.Reader) (dbhost.State, error) {
	if data == nil {
		return h.InstanceHost.Provision(ctx, spec, nil)
	}
	data.(io.Closer).Close()
	<-ctx.Done() // the writer's closed pipe ended the stream's group
	// The data plane finished its request before the stream's group
	// ended.
	return h.InstanceHost.Provision(context.WithoutCancel(ctx), spec, strings.NewReader(""))
}

// TestStreamedRestoreStreamUnread: a restore whose host succeeds without
// reading all of the stream (resumed past the step that reads it) is
// ACTIVE; the writer's closed pipe is not its failure. TestDataPlaneKill9
// once saw such a restore end ERROR "io: read/write on closed pipe".
func TestStreamedRestoreStreamUnread(t *testing.T) {
	r := newRig(t)
	in := restoreDumpThrough(t, r, func(h service.InstanceHost) service.InstanceHost { return preparedHost{h} })
	r.done(in.ID)
	if got := r.instance(in.ID); got.Status != cairn.InstanceActive {
		t.Fatalf("restore whose host left the stream unread: %s (%s)", got.Status, got.FailReason)
	}
}
