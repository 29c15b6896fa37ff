package service_test

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/service/servicetest"
	"github.com/cairnproject/cairn/internal/volume"
)

const gib = service.GiB

// fixture is what a scenario's setup made and its task works on.
type fixture struct {
	vol, snap, backup string // the sources the setup made
	// res is the resource the task works on (its task's ResourceID).
	res string
	// data is the source volume's data when the task started.
	data map[int64][]byte
}

// scenario is one kind of task, from a setup that makes what it needs
// (through the service, settled) to the checks of its two ends.
type scenario struct {
	name string
	kind string
	// setup makes the sources; start asks the service for the task.
	setup func(r *rig) *fixture
	start func(r *rig, f *fixture)
	// ok checks the task's success, failed its failure: the resource in
	// error with a fail_reason, the sources back to available.
	ok     func(r *rig, f *fixture)
	failed func(r *rig, f *fixture, reason string)
	// done and error are the resource's status at the task's end,
	// without faults and with them.
	done, error cairn.Status
}

// makeVolume makes an available volume of 1 GiB with some data.
func makeVolume(r *rig, f *fixture) {
	v := must[cairn.Volume](r.t)(r.svc.CreateVolume(r.t.Context(), caller, service.VolumeCreate{Name: "src", Size: 1}))
	r.done(v.ID)
	f.vol = v.ID
	eid := r.engineID(v.ID)
	for i, off := range []int64{0, 5 << 20, gib - 8192} {
		if err := r.eng.Write(eid, off, bytes.Repeat([]byte{byte(i + 1)}, 6000)); err != nil {
			r.t.Fatal(err)
		}
	}
	f.data = must[map[int64][]byte](r.t)(r.eng.Pages(eid))
}

func makeSnapshot(r *rig, f *fixture) {
	s := must[cairn.Snapshot](r.t)(r.svc.CreateSnapshot(r.t.Context(), caller, service.SnapshotCreate{VolumeID: f.vol, Name: "s"}))
	r.done(s.ID)
	f.snap = s.ID
}

func makeBackup(r *rig, f *fixture) {
	b := must[cairn.Backup](r.t)(r.svc.CreateBackup(r.t.Context(), caller, service.BackupCreate{VolumeID: f.vol, Name: "b"}))
	r.done(b.ID)
	f.backup = b.ID
}

func wantStatus(t *testing.T, what string, got, want cairn.Status) {
	t.Helper()
	if got != want {
		t.Errorf("%s is %s, want %s", what, got, want)
	}
}

func wantReason(t *testing.T, what, got, want string) {
	t.Helper()
	if !contains(got, want) {
		t.Errorf("%s fail_reason %q, want it to say %q", what, got, want)
	}
}

// engineData is the data of a catalog volume's engine volume.
func engineData(r *rig, volume string) map[int64][]byte {
	r.t.Helper()
	return must[map[int64][]byte](r.t)(r.eng.Pages(r.engineID(volume)))
}

func sameData(a, b map[int64][]byte) bool { return maps.EqualFunc(a, b, bytes.Equal) }

// manifestOf is the one manifest of catalog backup id in its container.
func manifestOf(r *rig, b cairn.Backup) string {
	r.t.Helper()
	var ids []string
	for _, m := range r.store(b.Container).Manifests() {
		if m.Tags[service.TagBackup] == b.ID {
			ids = append(ids, m.ID.String())
		}
	}
	if len(ids) != 1 {
		r.t.Fatalf("backup %s has %d manifests", b.ID, len(ids))
	}
	return ids[0]
}

func scenarios() []scenario {
	volumeFailed := func(st cairn.Status) func(r *rig, f *fixture, reason string) {
		return func(r *rig, f *fixture, reason string) {
			v := r.volume(f.res)
			wantStatus(r.t, "volume", v.Status, st)
			wantReason(r.t, "volume", v.FailReason, reason)
		}
	}
	snapshotFailed := func(st cairn.Status) func(r *rig, f *fixture, reason string) {
		return func(r *rig, f *fixture, reason string) {
			s := r.snapshot(f.res)
			wantStatus(r.t, "snapshot", s.Status, st)
			wantReason(r.t, "snapshot", s.FailReason, reason)
			wantStatus(r.t, "its volume", r.volume(f.vol).Status, cairn.StatusAvailable)
		}
	}
	backupCreated := func(r *rig, f *fixture) {
		b := r.backup(f.res)
		wantStatus(r.t, "backup", b.Status, cairn.StatusAvailable)
		if b.RepoID != manifestOf(r, b) {
			r.t.Errorf("backup's repository id %s is not its manifest's", b.RepoID)
		}
		wantStatus(r.t, "its volume", r.volume(f.vol).Status, cairn.StatusAvailable)
		if f.snap != "" {
			wantStatus(r.t, "its snapshot", r.snapshot(f.snap).Status, cairn.StatusAvailable)
		}
	}
	backupFailed := func(r *rig, f *fixture, reason string) {
		b := r.backup(f.res)
		wantStatus(r.t, "backup", b.Status, cairn.StatusError)
		wantReason(r.t, "backup", b.FailReason, reason)
		wantStatus(r.t, "its volume", r.volume(f.vol).Status, cairn.StatusAvailable)
		if f.snap != "" {
			wantStatus(r.t, "its snapshot", r.snapshot(f.snap).Status, cairn.StatusAvailable)
		}
	}
	restored := func(r *rig, f *fixture) {
		v := r.volume(f.res)
		wantStatus(r.t, "restored volume", v.Status, cairn.StatusAvailable)
		if !sameData(engineData(r, f.res), f.data) {
			r.t.Error("the restored volume differs from the backed-up one")
		}
		wantStatus(r.t, "backup", r.backup(f.backup).Status, cairn.StatusAvailable)
	}
	restoreFailed := func(r *rig, f *fixture, reason string) {
		v := r.volume(f.res)
		wantStatus(r.t, "restored volume", v.Status, cairn.StatusError)
		wantReason(r.t, "restored volume", v.FailReason, reason)
		wantStatus(r.t, "backup", r.backup(f.backup).Status, cairn.StatusAvailable)
	}
	return append([]scenario{
		{
			name: "volume.create", kind: "volume.create", done: cairn.StatusAvailable, error: cairn.StatusError,
			setup: func(*rig) *fixture { return &fixture{} },
			start: func(r *rig, f *fixture) {
				f.res = must[cairn.Volume](r.t)(r.svc.CreateVolume(r.t.Context(), caller, service.VolumeCreate{Size: 2})).ID
			},
			ok: func(r *rig, f *fixture) {
				v := r.volume(f.res)
				wantStatus(r.t, "volume", v.Status, cairn.StatusAvailable)
				evols, _ := r.eng.Peek()
				if i := slices.IndexFunc(evols, func(e volume.VolumeInfo) bool { return e.Name == f.res }); i < 0 || evols[i].Size != 2*gib || evols[i].ID.String() != v.EngineID {
					r.t.Errorf("engine volumes %+v; want one of 2 GiB named %s with id %s", evols, f.res, v.EngineID)
				}
			},
			failed: volumeFailed(cairn.StatusError),
		},
		{
			name: "volume.create from a snapshot", kind: "volume.create", done: cairn.StatusAvailable, error: cairn.StatusError,
			setup: func(r *rig) *fixture { f := &fixture{}; makeVolume(r, f); makeSnapshot(r, f); return f },
			start: func(r *rig, f *fixture) {
				f.res = must[cairn.Volume](r.t)(r.svc.CreateVolume(r.t.Context(), caller, service.VolumeCreate{SnapshotID: f.snap, Size: 2})).ID
			},
			ok: func(r *rig, f *fixture) {
				wantStatus(r.t, "clone", r.volume(f.res).Status, cairn.StatusAvailable)
				if !sameData(engineData(r, f.res), f.data) {
					r.t.Error("the clone differs from its snapshot")
				}
				wantStatus(r.t, "its snapshot", r.snapshot(f.snap).Status, cairn.StatusAvailable)
			},
			failed: volumeFailed(cairn.StatusError),
		},
		{
			name: "volume.delete", kind: "volume.delete", done: cairn.StatusDeleted, error: cairn.StatusErrorDeleting,
			setup: func(r *rig) *fixture { f := &fixture{}; makeVolume(r, f); return f },
			start: func(r *rig, f *fixture) {
				f.res = f.vol
				if err := r.svc.DeleteVolume(r.t.Context(), caller, f.vol); err != nil {
					r.t.Fatal(err)
				}
			},
			ok: func(r *rig, f *fixture) {
				if !r.gone("volume", f.res) {
					r.t.Error("the deleted volume is still in the catalog")
				}
			},
			failed: func(r *rig, f *fixture, reason string) {
				v := r.volume(f.res)
				wantStatus(r.t, "volume", v.Status, cairn.StatusErrorDeleting)
				wantReason(r.t, "volume", v.FailReason, reason)
			},
		},
		{
			name: "volume.extend", kind: "volume.extend", done: cairn.StatusAvailable, error: cairn.StatusError,
			setup: func(r *rig) *fixture { f := &fixture{}; makeVolume(r, f); return f },
			start: func(r *rig, f *fixture) {
				f.res = f.vol
				if err := r.svc.ExtendVolume(r.t.Context(), caller, f.vol, 3); err != nil {
					r.t.Fatal(err)
				}
			},
			ok: func(r *rig, f *fixture) {
				v := r.volume(f.res)
				wantStatus(r.t, "volume", v.Status, cairn.StatusAvailable)
				evols, _ := r.eng.Peek()
				if v.Size != 3 || len(evols) != 1 || evols[0].Size != 3*gib {
					r.t.Errorf("extended volume: %d GiB, engine %+v", v.Size, evols)
				}
				if !sameData(engineData(r, f.res), f.data) {
					r.t.Error("the extended volume lost data")
				}
			},
			failed: volumeFailed(cairn.StatusError),
		},
		{
			name: "snapshot.create", kind: "snapshot.create", done: cairn.StatusAvailable, error: cairn.StatusError,
			setup: func(r *rig) *fixture { f := &fixture{}; makeVolume(r, f); return f },
			start: func(r *rig, f *fixture) {
				f.res = must[cairn.Snapshot](r.t)(r.svc.CreateSnapshot(r.t.Context(), caller, service.SnapshotCreate{VolumeID: f.vol})).ID
			},
			ok: func(r *rig, f *fixture) {
				s := r.snapshot(f.res)
				wantStatus(r.t, "snapshot", s.Status, cairn.StatusAvailable)
				eid, err := cairn.ParseID(s.EngineID)
				if err != nil {
					r.t.Fatalf("snapshot engine id %q", s.EngineID)
				}
				if !sameData(must[map[int64][]byte](r.t)(r.eng.Pages(eid)), f.data) {
					r.t.Error("the snapshot differs from its volume")
				}
			},
			failed: snapshotFailed(cairn.StatusError),
		},
		{
			name: "snapshot.delete", kind: "snapshot.delete", done: cairn.StatusDeleted, error: cairn.StatusErrorDeleting,
			setup: func(r *rig) *fixture { f := &fixture{}; makeVolume(r, f); makeSnapshot(r, f); return f },
			start: func(r *rig, f *fixture) {
				f.res = f.snap
				if err := r.svc.DeleteSnapshot(r.t.Context(), caller, f.snap); err != nil {
					r.t.Fatal(err)
				}
			},
			ok: func(r *rig, f *fixture) {
				if !r.gone("snapshot", f.res) {
					r.t.Error("the deleted snapshot is still in the catalog")
				}
			},
			failed: snapshotFailed(cairn.StatusErrorDeleting),
		},
		{
			name: "backup.create of a volume", kind: "backup.create", done: cairn.StatusAvailable, error: cairn.StatusError,
			setup: func(r *rig) *fixture { f := &fixture{}; makeVolume(r, f); return f },
			start: func(r *rig, f *fixture) {
				f.res = must[cairn.Backup](r.t)(r.svc.CreateBackup(r.t.Context(), caller, service.BackupCreate{VolumeID: f.vol})).ID
			},
			ok:     backupCreated,
			failed: backupFailed,
		},
		{
			name: "backup.create of a snapshot", kind: "backup.create", done: cairn.StatusAvailable, error: cairn.StatusError,
			setup: func(r *rig) *fixture { f := &fixture{}; makeVolume(r, f); makeSnapshot(r, f); return f },
			start: func(r *rig, f *fixture) {
				f.res = must[cairn.Backup](r.t)(r.svc.CreateBackup(r.t.Context(), caller, service.BackupCreate{SnapshotID: f.snap})).ID
			},
			ok:     backupCreated,
			failed: backupFailed,
		},
		{
			name: "backup.create incremental", kind: "backup.create", done: cairn.StatusAvailable, error: cairn.StatusError,
			setup: func(r *rig) *fixture { f := &fixture{}; makeVolume(r, f); makeBackup(r, f); return f },
			start: func(r *rig, f *fixture) {
				f.res = must[cairn.Backup](r.t)(r.svc.CreateBackup(r.t.Context(), caller, service.BackupCreate{VolumeID: f.vol, Incremental: true})).ID
			},
			ok: func(r *rig, f *fixture) {
				backupCreated(r, f)
				if b := r.backup(f.res); !b.Incremental || b.ParentID != f.backup {
					r.t.Errorf("incremental %+v, want parent %s", b, f.backup)
				}
			},
			failed: backupFailed,
		},
		{
			name: "backup.delete", kind: "backup.delete", done: cairn.StatusDeleted, error: cairn.StatusError,
			setup: func(r *rig) *fixture { f := &fixture{}; makeVolume(r, f); makeBackup(r, f); return f },
			start: func(r *rig, f *fixture) {
				f.res = f.backup
				if err := r.svc.DeleteBackup(r.t.Context(), caller, f.backup); err != nil {
					r.t.Fatal(err)
				}
			},
			ok: func(r *rig, f *fixture) {
				if !r.gone("backup", f.res) {
					r.t.Error("the deleted backup is still in the catalog")
				}
				if ms := r.store("volumebackups").Manifests(); len(ms) != 0 {
					r.t.Errorf("manifests left: %+v", ms)
				}
			},
			failed: func(r *rig, f *fixture, reason string) {
				b := r.backup(f.res)
				wantStatus(r.t, "backup", b.Status, cairn.StatusError)
				wantReason(r.t, "backup", b.FailReason, reason)
			},
		},
		{
			// A backup that failed once its manifest was written: deleting
			// it finds the manifest by its tag and removes it.
			name: "backup.delete of a failed backup", kind: "backup.delete", done: cairn.StatusDeleted, error: cairn.StatusError,
			setup: func(r *rig) *fixture {
				f := &fixture{}
				makeVolume(r, f)
				r.faults.Add(servicetest.Fault{Method: "Repository.BackupSnapshot", Times: 1, After: true})
				b := must[cairn.Backup](r.t)(r.svc.CreateBackup(r.t.Context(), caller, service.BackupCreate{VolumeID: f.vol}))
				if task := r.wait(r.lastTask(b.ID).ID); task.State != cairn.TaskFailed {
					r.t.Fatalf("setup: backup task %s: %s", task.State, task.Error)
				}
				if got := r.backup(b.ID); got.Status != cairn.StatusError || got.RepoID != "" || len(r.store("volumebackups").Manifests()) != 1 {
					r.t.Fatalf("setup: a failed backup with a manifest and no repository id: %+v", got)
				}
				f.backup = b.ID
				return f
			},
			start: func(r *rig, f *fixture) {
				f.res = f.backup
				if err := r.svc.DeleteBackup(r.t.Context(), caller, f.backup); err != nil {
					r.t.Fatal(err)
				}
			},
			ok: func(r *rig, f *fixture) {
				if !r.gone("backup", f.res) {
					r.t.Error("the deleted backup is still in the catalog")
				}
				if ms := r.store("volumebackups").Manifests(); len(ms) != 0 {
					r.t.Errorf("manifests left: %+v", ms)
				}
			},
			failed: func(r *rig, f *fixture, reason string) {
				b := r.backup(f.res)
				wantStatus(r.t, "backup", b.Status, cairn.StatusError)
				wantReason(r.t, "backup", b.FailReason, reason)
			},
		},
		{
			name: "backup.restore into a new volume", kind: "backup.restore", done: cairn.StatusAvailable, error: cairn.StatusError,
			setup: func(r *rig) *fixture { f := &fixture{}; makeVolume(r, f); makeBackup(r, f); return f },
			start: func(r *rig, f *fixture) {
				f.res = must[service.RestoreResult](r.t)(r.svc.RestoreBackup(r.t.Context(), caller, f.backup, service.RestoreRequest{})).VolumeID
			},
			ok:     restored,
			failed: restoreFailed,
		},
		{
			name: "backup.restore into a volume", kind: "backup.restore", done: cairn.StatusAvailable, error: cairn.StatusError,
			setup: func(r *rig) *fixture {
				f := &fixture{}
				makeVolume(r, f)
				makeBackup(r, f)
				// The source changes after its backup; the restore puts the
				// backed-up data back.
				if err := r.eng.Write(r.engineID(f.vol), 1<<20, bytes.Repeat([]byte{9}, 4096)); err != nil {
					r.t.Fatal(err)
				}
				return f
			},
			start: func(r *rig, f *fixture) {
				f.res = f.vol
				if _, err := r.svc.RestoreBackup(r.t.Context(), caller, f.backup, service.RestoreRequest{VolumeID: f.vol}); err != nil {
					r.t.Fatal(err)
				}
			},
			ok:     restored,
			failed: restoreFailed,
		},
	}, databaseScenarios()...)
}

// cleanRun runs a scenario without faults and returns the fake calls its
// task made.
func cleanRun(t *testing.T, sc scenario) []string {
	r := newRig(t)
	f := sc.setup(r)
	r.faults.Reset()
	r.cat.takeChanges()
	sc.start(r, f)
	task := r.wait(r.lastTask(f.res).ID)
	trace := r.faults.Trace()
	if task.State != cairn.TaskDone || task.Kind != sc.kind {
		t.Fatalf("task %s: %s: %s", task.Kind, task.State, task.Error)
	}
	r.shownLast(f.res, sc.done)
	sc.ok(r, f)
	r.settled()
	if len(trace) == 0 {
		t.Fatal("the task made no engine or repository call")
	}
	return trace
}

// TestTaskKinds runs every kind of task: without faults; with each
// engine and repository call it makes failing (before or after it took
// effect), when it must end failed and cleaned up; and cut short at each
// of those calls by a stop, when the next service must finish it exactly
// once.
func TestTaskKinds(t *testing.T) {
	kinds := map[string]bool{}
	for _, sc := range scenarios() {
		kinds[sc.kind] = true
		t.Run(sc.name, func(t *testing.T) {
			trace := cleanRun(t, sc)
			t.Logf("calls: %v", trace)
			for i, method := range trace {
				if i > 0 && i+1 < len(trace) && trace[i-1] == method && trace[i+1] == method {
					// Inside a run of like calls (a restore's writes): the
					// first and last of the run stand for it.
					continue
				}
				n := occurrence(trace, i)
				for _, after := range []bool{false, true} {
					when := "before"
					if after {
						when = "after"
					}
					t.Run(fmt.Sprintf("fail %s #%d %s", method, n, when), func(t *testing.T) {
						r := newRig(t)
						f := sc.setup(r)
						r.faults.Reset()
						r.faults.Add(servicetest.Fault{Method: method, Call: n, Times: 1, After: after})
						r.cat.takeChanges()
						sc.start(r, f)
						task := r.wait(r.lastTask(f.res).ID)
						if task.State != cairn.TaskFailed || !contains(task.Error, servicetest.ErrInjected.Error()) {
							t.Fatalf("task %s: %s: %s", task.Kind, task.State, task.Error)
						}
						r.shownLast(f.res, sc.error)
						sc.failed(r, f, servicetest.ErrInjected.Error())
						r.settled()
					})
					t.Run(fmt.Sprintf("stop at %s #%d %s", method, n, when), func(t *testing.T) {
						r := newRig(t)
						f := sc.setup(r)
						r.faults.Reset()
						gate := servicetest.NewGate()
						r.faults.Add(servicetest.Fault{Method: method, Call: n, Times: 1, After: after, Gate: gate})
						r.cat.takeChanges()
						sc.start(r, f)
						<-gate.Reached()
						id := r.lastTask(f.res).ID
						r.stop()
						if task := r.task(id); task.State != cairn.TaskRunning {
							t.Fatalf("a task cut short by a stop is %s: %s", task.State, task.Error)
						}
						r.start()
						if task := r.wait(id); task.State != cairn.TaskDone || task.Attempts != 2 {
							t.Fatalf("after a restart, task %s: %s after %d attempts: %s", task.Kind, task.State, task.Attempts, task.Error)
						}
						r.shownLast(f.res, sc.done)
						sc.ok(r, f)
						r.stop()
						r.settled()
					})
				}
			}
		})
	}
	for _, k := range []string{"volume.create", "volume.delete", "volume.extend", "snapshot.create",
		"snapshot.delete", "backup.create", "backup.delete", "backup.restore",
		"instance.create", "instance.delete", "dbbackup.create", "dbbackup.delete"} {
		if !kinds[k] {
			t.Errorf("no scenario of task kind %s", k)
		}
	}
}

// TestFailingFail: for every kind, a task whose Run fails and whose Fail
// then fails (at the step that shows the failure) is retried by the same
// service until the Fail succeeds; meanwhile the resource is not yet
// shown failed and the task says why the cleanup failed. Stopped while
// failing, the next service resumes the Fail, not the Run.
func TestFailingFail(t *testing.T) {
	for _, sc := range scenarios() {
		var trace []string
		t.Run(sc.name+" without faults", func(t *testing.T) { trace = cleanRun(t, sc) })
		if len(trace) == 0 {
			continue
		}
		for _, restart := range []bool{false, true} {
			name := sc.name
			if restart {
				name += " across a restart"
			}
			t.Run(name, func(t *testing.T) {
				r := newRig(t)
				f := sc.setup(r)
				r.faults.Reset()
				// Run fails at its first call; Fail's write of the error status
				// fails twice.
				first := trace[0]
				r.faults.Add(servicetest.Fault{Method: first, Call: 1, Times: 1, Err: errors.New("disk on fire")})
				r.faults.Add(servicetest.Fault{Method: "Catalog.SetError", Times: 2, Err: errors.New("catalog away")})
				r.cat.takeChanges()
				sc.start(r, f)
				id := r.lastTask(f.res).ID
				r.clock.next(t)
				task := r.task(id)
				if task.State != cairn.TaskRunning || !contains(task.FailCause, "disk on fire") || !contains(task.Error, "cleanup failed, retrying:") || !contains(task.Error, "catalog away") {
					t.Fatalf("while its cleanup is retried, the task is %s, cause %q, error %q", task.State, task.FailCause, task.Error)
				}
				if st := resourceStatus(r, sc.kind, f.res); st == cairn.StatusError || st == cairn.StatusErrorDeleting {
					t.Fatalf("the resource is shown %s before its cleanup is done", st)
				}
				if restart {
					r.restart()
				} else {
					r.clock.fire <- time.Time{}
				}
				r.clock.next(t)
				r.clock.fire <- time.Time{}
				task = r.wait(id)
				if task.State != cairn.TaskFailed || !contains(task.Error, "disk on fire") {
					t.Fatalf("task %s: %s: %s", task.Kind, task.State, task.Error)
				}
				r.shownLast(f.res, sc.error)
				sc.failed(r, f, "disk on fire")
				r.settled()
			})
		}
	}
}

// resourceStatus is the status of the resource a task of kind works on.
func resourceStatus(r *rig, kind, id string) cairn.Status {
	switch {
	case strings.HasPrefix(kind, "snapshot."):
		return r.snapshot(id).Status
	case kind == "backup.create" || kind == "backup.delete":
		return r.backup(id).Status
	case strings.HasPrefix(kind, "instance."):
		return cairn.Status(r.instance(id).Status)
	case strings.HasPrefix(kind, "dbbackup."):
		return cairn.Status(r.dbBackup(id).Status)
	}
	return r.volume(id).Status
}

// TestBackupShownAfterCleanup: a backup of a volume is not shown
// available while its temporary snapshot exists, nor its volume released
// (the engine's deletion of the snapshot is held meanwhile); once shown
// available, the snapshot is gone.
func TestBackupShownAfterCleanup(t *testing.T) {
	r := newRig(t)
	f := &fixture{}
	makeVolume(r, f)
	gate := r.faults.Hold("Engine.DeleteSnapshot", false)
	b := must[cairn.Backup](t)(r.svc.CreateBackup(t.Context(), caller, service.BackupCreate{VolumeID: f.vol}))
	<-gate.Reached()
	if got := r.backup(b.ID); got.Status != cairn.StatusCreating {
		t.Errorf("while its temporary snapshot is being deleted, the backup is shown %s", got.Status)
	}
	if got := r.volume(f.vol); got.Status != cairn.StatusBackingUp {
		t.Errorf("while its temporary snapshot is being deleted, the volume is shown %s", got.Status)
	}
	gate.Open()
	r.done(b.ID)
	if _, snaps := r.eng.Peek(); len(snaps) != 0 {
		t.Errorf("engine snapshots after the backup: %+v", snaps)
	}
	r.settled()
}
