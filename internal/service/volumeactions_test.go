package service_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/service/servicetest"
)

var admin = service.Caller{ProjectID: project, Admin: true, UserID: "the-admin"}

// TestCloneVolume: a clone of a volume (source_volid) holds the source's
// data, of at least its size; it takes the source's bootable flag and
// user; its temporary snapshot of the source is gone once it is
// available, and nothing is left.
func TestCloneVolume(t *testing.T) {
	r := newRig(t)
	f := &fixture{}
	makeVolume(r, f)
	ctx := t.Context()
	if err := r.svc.SetBootable(ctx, caller, f.vol, true); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{0, 2} {
		c := service.Caller{ProjectID: project, UserID: "cloner"}
		v := must[cairn.Volume](t)(r.svc.CreateVolume(ctx, c, service.VolumeCreate{Name: "clone", SourceVolID: f.vol, Size: size}))
		r.done(v.ID)
		got := r.volume(v.ID)
		want := max(size, 1)
		if got.Status != cairn.StatusAvailable || got.Size != want || got.SourceVolID != f.vol || !got.Bootable || got.UserID != "cloner" {
			t.Errorf("clone of size %d: %+v; want available, %d GiB, from %s, bootable, user cloner", size, got, want, f.vol)
		}
		pages := must[map[int64][]byte](t)(r.eng.Pages(r.engineID(v.ID)))
		if !maps.EqualFunc(pages, f.data, func(a, b []byte) bool { return string(a) == string(b) }) {
			t.Errorf("clone of size %d: data differs from the source's", size)
		}
		if _, snaps := r.eng.Peek(); len(snaps) != 0 {
			t.Errorf("engine snapshots after the clone: %+v", snaps)
		}
		if src := r.volume(f.vol); src.Status != cairn.StatusAvailable {
			t.Errorf("source after the clone: %s", src.Status)
		}
	}
	r.settled()
}

// TestCloneVolumeRefused: the requests a clone refuses, changing nothing.
func TestCloneVolumeRefused(t *testing.T) {
	r := newRig(t)
	f := &fixture{}
	makeVolume(r, f)
	ctx := t.Context()
	if _, err := service.CreateProject(ctx, r.cat, "other", "other", cairn.Unlimited, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		c    service.Caller
		req  service.VolumeCreate
		err  error
		msg  string
	}{
		{"smaller", caller, service.VolumeCreate{SourceVolID: f.vol, Size: 1}, nil, ""},
		{"unknown", caller, service.VolumeCreate{SourceVolID: "nope"}, cairn.ErrNotFound, "nope"},
		{"another project's, to a member", service.Caller{ProjectID: "other"}, service.VolumeCreate{SourceVolID: f.vol}, cairn.ErrNotFound, f.vol},
		{"another project's, to an admin", service.Caller{ProjectID: "other", Admin: true}, service.VolumeCreate{SourceVolID: f.vol}, cairn.ErrInvalid, "another project"},
		{"with a snapshot", caller, service.VolumeCreate{SourceVolID: f.vol, SnapshotID: "s"}, cairn.ErrInvalid, "not both"},
		{"with all", caller, service.VolumeCreate{SourceVolID: f.vol, SnapshotID: "s", BackupID: "b"}, cairn.ErrInvalid, "all three"},
	} {
		before := r.volumes()
		v, err := r.svc.CreateVolume(ctx, tc.c, tc.req)
		if tc.err == nil {
			// Size 1 of a 1 GiB source is allowed: equal, not smaller.
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			} else {
				r.done(v.ID)
			}
			continue
		}
		if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %v saying %q", tc.name, err, tc.err, tc.msg)
		}
		if after := r.volumes(); after != before {
			t.Errorf("%s: %d volumes before, %d after", tc.name, before, after)
		}
	}
	// A source in a status other than available or in-use.
	if err := r.svc.ResetVolumeStatus(ctx, admin, f.vol, service.VolumeReset{Status: cairn.StatusMaintenance}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.svc.CreateVolume(ctx, caller, service.VolumeCreate{SourceVolID: f.vol}); !errors.Is(err, cairn.ErrConflict) {
		t.Errorf("clone of a volume in maintenance: %v, want ErrConflict", err)
	}
	// Bigger than its source: 2 GiB of a 1 GiB source is fine, smaller
	// is not.
	if err := r.svc.ResetVolumeStatus(ctx, admin, f.vol, service.VolumeReset{Status: cairn.StatusAvailable}); err != nil {
		t.Fatal(err)
	}
	if err := r.svc.ExtendVolume(ctx, caller, f.vol, 3); err != nil {
		t.Fatal(err)
	}
	r.done(f.vol)
	if _, err := r.svc.CreateVolume(ctx, caller, service.VolumeCreate{SourceVolID: f.vol, Size: 2}); !errors.Is(err, cairn.ErrInvalid) {
		t.Errorf("clone smaller than its source: %v, want ErrInvalid", err)
	}
	r.settled()
}

// volumes counts the catalog's volumes.
func (r *rig) volumes() int {
	r.t.Helper()
	n := 0
	r.view(func(ctx context.Context, tx catalog.Tx) error {
		l, err := tx.Volumes(ctx, catalog.Filter{})
		n = len(l)
		return err
	})
	return n
}

// TestCloneVolumeFails: a clone whose engine calls fail, before or after
// they take effect, ends in error with nothing left in the engine (the
// temporary snapshot of its source removed) and its source available.
func TestCloneVolumeFails(t *testing.T) {
	for _, method := range []string{"Engine.CreateSnapshot", "Engine.CloneVolume", "Engine.DeleteSnapshot"} {
		for _, after := range []bool{false, true} {
			t.Run(method+map[bool]string{false: " before", true: " after"}[after], func(t *testing.T) {
				r := newRig(t)
				f := &fixture{}
				makeVolume(r, f)
				r.faults.Add(servicetest.Fault{Method: method, Times: 1, After: after})
				v := must[cairn.Volume](t)(r.svc.CreateVolume(t.Context(), caller, service.VolumeCreate{SourceVolID: f.vol}))
				r.wait(r.lastTask(v.ID).ID)
				got := r.volume(v.ID)
				if got.Status != cairn.StatusError || got.FailReason == "" {
					t.Fatalf("clone: %s (%q), want error with a reason", got.Status, got.FailReason)
				}
				if _, snaps := r.eng.Peek(); len(snaps) != 0 {
					t.Errorf("engine snapshots after the failed clone: %+v", snaps)
				}
				if src := r.volume(f.vol); src.Status != cairn.StatusAvailable {
					t.Errorf("source: %s", src.Status)
				}
				// The failed clone deletes, leaving nothing.
				if err := r.svc.DeleteVolume(t.Context(), caller, v.ID); err != nil {
					t.Fatal(err)
				}
				r.wait(r.lastTask(v.ID).ID)
				if !r.gone("volume", v.ID) {
					t.Errorf("failed clone not deleted: %+v", r.volume(v.ID))
				}
				r.settled()
			})
		}
	}
}

// TestHeldResources: while a task works on a resource, its source's
// and its own status may not be reset, nor the volume force-deleted,
// extended or deleted, nor its clone's source; once the task ends they
// may.
func TestHeldResources(t *testing.T) {
	r := newRig(t)
	f := &fixture{}
	makeVolume(r, f)
	ctx := t.Context()
	gate := r.faults.Hold("Engine.CreateSnapshot", false)
	snap := must[cairn.Snapshot](t)(r.svc.CreateSnapshot(ctx, caller, service.SnapshotCreate{VolumeID: f.vol}))
	<-gate.Reached()
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"reset the volume", r.svc.ResetVolumeStatus(ctx, admin, f.vol, service.VolumeReset{Status: cairn.StatusError})},
		{"reset the volume's attach status", r.svc.ResetVolumeStatus(ctx, admin, f.vol, service.VolumeReset{AttachStatus: "detached"})},
		{"force-delete the volume", r.svc.ForceDeleteVolume(ctx, admin, f.vol)},
		{"extend the volume", r.svc.ExtendVolume(ctx, caller, f.vol, 2)},
		{"reset the snapshot", r.svc.ResetSnapshotStatus(ctx, admin, snap.ID, cairn.StatusError)},
	} {
		if !errors.Is(tc.err, cairn.ErrConflict) || !strings.Contains(tc.err.Error(), "snapshot.create") {
			t.Errorf("%s while a snapshot of it is taken: %v, want ErrConflict naming the task", tc.name, tc.err)
		}
	}
	if v := r.volume(f.vol); v.Status != cairn.StatusAvailable || v.Size != 1 {
		t.Errorf("volume changed while refusing: %+v", v)
	}
	if sn := r.snapshot(snap.ID); sn.Status != cairn.StatusCreating {
		t.Errorf("snapshot changed while refusing: %s", sn.Status)
	}
	gate.Open()
	r.done(snap.ID)
	if err := r.svc.ResetSnapshotStatus(ctx, admin, snap.ID, "ERROR"); err != nil {
		t.Errorf("reset after the task: %v", err)
	}
	if sn := r.snapshot(snap.ID); sn.Status != cairn.StatusError {
		t.Errorf("snapshot after its reset to ERROR: %s", sn.Status)
	}

	// A clone holds its source: not deleted from under it.
	gate = r.faults.Hold("Engine.CloneVolume", false)
	clone := must[cairn.Volume](t)(r.svc.CreateVolume(ctx, caller, service.VolumeCreate{SourceVolID: f.vol}))
	<-gate.Reached()
	if err := r.svc.DeleteVolumeWith(ctx, caller, f.vol, service.VolumeDelete{Cascade: true}); !errors.Is(err, cairn.ErrConflict) {
		t.Errorf("cascading delete of a clone's source: %v, want ErrConflict", err)
	}
	if err := r.svc.ResetVolumeStatus(ctx, admin, f.vol, service.VolumeReset{Status: cairn.StatusError}); !errors.Is(err, cairn.ErrConflict) {
		t.Errorf("reset of a clone's source: %v, want ErrConflict", err)
	}
	gate.Open()
	r.done(clone.ID)
	r.settled()
}

// TestResetVolumeStatus: every status the block storage API allows a
// volume, in any case, and its attach status; others refused; admins
// only.
func TestResetVolumeStatus(t *testing.T) {
	r := newRig(t)
	f := &fixture{}
	makeVolume(r, f)
	ctx := t.Context()
	for _, st := range cairn.VolumeStatuses {
		for _, spelled := range []cairn.Status{st, cairn.Status(strings.ToUpper(string(st)))} {
			if err := r.svc.ResetVolumeStatus(ctx, admin, f.vol, service.VolumeReset{Status: spelled}); err != nil {
				t.Errorf("reset to %s: %v", spelled, err)
			}
			if got := r.volume(f.vol).Status; got != st {
				t.Errorf("reset to %s: %s", spelled, got)
			}
		}
	}
	for _, tc := range []struct {
		name string
		c    service.Caller
		r    service.VolumeReset
		err  error
	}{
		{"a member", caller, service.VolumeReset{Status: cairn.StatusAvailable}, cairn.ErrForbidden},
		{"nothing", admin, service.VolumeReset{}, cairn.ErrInvalid},
		{"deleted", admin, service.VolumeReset{Status: cairn.StatusDeleted}, cairn.ErrInvalid},
		{"a snapshot's", admin, service.VolumeReset{Status: cairn.StatusUnmanaging}, cairn.ErrInvalid},
		{"junk", admin, service.VolumeReset{Status: "fine"}, cairn.ErrInvalid},
		{"attach status junk", admin, service.VolumeReset{AttachStatus: "half"}, cairn.ErrInvalid},
		{"migration status junk", admin, service.VolumeReset{MigrationStatus: "moving"}, cairn.ErrInvalid},
	} {
		before := r.volume(f.vol)
		if err := r.svc.ResetVolumeStatus(ctx, tc.c, f.vol, tc.r); !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
		if after := r.volume(f.vol); after.Status != before.Status || after.Attached != before.Attached {
			t.Errorf("%s: changed %+v to %+v", tc.name, before, after)
		}
	}
	// attach_status attached exports the volume, detached unexports it;
	// a migration status alone changes nothing cairn shows.
	if err := r.svc.ResetVolumeStatus(ctx, admin, f.vol, service.VolumeReset{Status: "in-use", AttachStatus: "attached"}); err != nil {
		t.Fatal(err)
	}
	if v := r.volume(f.vol); !v.Attached || v.Status != cairn.StatusInUse {
		t.Errorf("after attach_status attached: %+v", v)
	}
	if ex, _ := r.eng.Exported(ctx); ex[f.vol] != r.engineID(f.vol) {
		t.Errorf("exports after attach_status attached: %v", ex)
	}
	if err := r.svc.ResetVolumeStatus(ctx, admin, f.vol, service.VolumeReset{MigrationStatus: "none"}); err != nil {
		t.Errorf("migration_status none: %v", err)
	}
	if err := r.svc.ResetVolumeStatus(ctx, admin, f.vol, service.VolumeReset{Status: "available", AttachStatus: "detached"}); err != nil {
		t.Fatal(err)
	}
	if ex, _ := r.eng.Exported(ctx); len(ex) != 0 {
		t.Errorf("exports after attach_status detached: %v", ex)
	}
	// Snapshots and backups: their statuses, theirs only.
	makeSnapshot(r, f)
	makeBackup(r, f)
	for _, st := range cairn.SnapshotStatuses {
		if err := r.svc.ResetSnapshotStatus(ctx, admin, f.snap, cairn.Status(strings.ToUpper(string(st)))); err != nil {
			t.Errorf("snapshot reset to %s: %v", st, err)
		}
		if got := r.snapshot(f.snap).Status; got != st {
			t.Errorf("snapshot reset to %s: %s", st, got)
		}
	}
	for _, st := range []cairn.Status{cairn.StatusInUse, cairn.StatusMaintenance, "junk"} {
		if err := r.svc.ResetSnapshotStatus(ctx, admin, f.snap, st); !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("snapshot reset to %s: %v, want ErrInvalid", st, err)
		}
	}
	for _, st := range cairn.BackupStatuses {
		if err := r.svc.ResetBackupStatus(ctx, admin, f.backup, st); err != nil || r.backup(f.backup).Status != st {
			t.Errorf("backup reset to %s: %v, %s", st, err, r.backup(f.backup).Status)
		}
	}
	for _, st := range []cairn.Status{cairn.StatusCreating, cairn.StatusRestoring, cairn.StatusDeleting} {
		if err := r.svc.ResetBackupStatus(ctx, admin, f.backup, st); !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("backup reset to %s: %v, want ErrInvalid", st, err)
		}
	}
	if err := r.svc.ResetSnapshotStatus(ctx, caller, f.snap, cairn.StatusAvailable); !errors.Is(err, cairn.ErrForbidden) {
		t.Errorf("a member's snapshot reset: %v", err)
	}
	if err := r.svc.ResetSnapshotStatus(ctx, admin, f.snap, cairn.StatusAvailable); err != nil {
		t.Fatal(err)
	}
	r.settled()
}

// TestForceDeleteVolume: an admin deletes a volume in any status no task
// holds; not an attached one, nor one with snapshots; a member not at
// all.
func TestForceDeleteVolume(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	for _, st := range []cairn.Status{cairn.StatusCreating, cairn.StatusAttaching, cairn.StatusError,
		cairn.StatusMaintenance, cairn.StatusDeleting, cairn.StatusAvailable} {
		f := &fixture{}
		makeVolume(r, f)
		if err := r.svc.ResetVolumeStatus(ctx, admin, f.vol, service.VolumeReset{Status: st}); err != nil {
			t.Fatal(err)
		}
		if err := r.svc.ForceDeleteVolume(ctx, caller, f.vol); !errors.Is(err, cairn.ErrForbidden) {
			t.Errorf("%s: a member's force-delete: %v", st, err)
		}
		if err := r.svc.ForceDeleteVolume(ctx, admin, f.vol); err != nil {
			t.Fatalf("%s: %v", st, err)
		}
		r.done(f.vol)
		if !r.gone("volume", f.vol) {
			t.Errorf("%s: volume not deleted", st)
		}
	}
	f := &fixture{}
	makeVolume(r, f)
	must[service.Attachment](t)(r.svc.AttachVolume(ctx, caller, f.vol))
	if err := r.svc.ForceDeleteVolume(ctx, admin, f.vol); !errors.Is(err, cairn.ErrConflict) {
		t.Errorf("force-delete of an attached volume: %v", err)
	}
	if err := r.svc.DetachVolume(ctx, caller, f.vol); err != nil {
		t.Fatal(err)
	}
	makeSnapshot(r, f)
	if err := r.svc.ForceDeleteVolume(ctx, admin, f.vol); !errors.Is(err, cairn.ErrConflict) {
		t.Errorf("force-delete of a volume with snapshots: %v", err)
	}
	if v := r.volume(f.vol); v.Status != cairn.StatusAvailable {
		t.Errorf("refused force-delete changed the volume: %s", v.Status)
	}
	r.settled()
}

// TestCascadeDelete: a volume deletes with its snapshots; a snapshot in
// a status that is not deletable refuses it (ErrInvalid); a failed
// cascade leaves the volume and the snapshots not yet deleted
// error_deleting, and deletes again.
func TestCascadeDelete(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	f := &fixture{}
	makeVolume(r, f)
	makeSnapshot(r, f)
	s1 := f.snap
	makeSnapshot(r, f)
	s2 := f.snap
	if err := r.svc.DeleteVolume(ctx, caller, f.vol); !errors.Is(err, cairn.ErrConflict) {
		t.Errorf("delete with snapshots, no cascade: %v", err)
	}
	if err := r.svc.ResetSnapshotStatus(ctx, admin, s2, cairn.StatusBackingUp); err != nil {
		t.Fatal(err)
	}
	if err := r.svc.DeleteVolumeWith(ctx, caller, f.vol, service.VolumeDelete{Cascade: true}); !errors.Is(err, cairn.ErrInvalid) || !strings.Contains(err.Error(), s2) {
		t.Errorf("cascade over a snapshot backing-up: %v, want ErrInvalid naming it", err)
	}
	if v, sn := r.volume(f.vol), r.snapshot(s1); v.Status != cairn.StatusAvailable || sn.Status != cairn.StatusAvailable {
		t.Errorf("refused cascade changed %s, %s", v.Status, sn.Status)
	}
	if err := r.svc.ResetSnapshotStatus(ctx, admin, s2, cairn.StatusError); err != nil {
		t.Fatal(err)
	}
	// The second snapshot deletion fails: the volume and that snapshot
	// end error_deleting.
	r.faults.Reset()
	r.faults.Add(servicetest.Fault{Method: "Engine.DeleteSnapshot", Call: 2, Times: 1})
	if err := r.svc.DeleteVolumeWith(ctx, caller, f.vol, service.VolumeDelete{Cascade: true}); err != nil {
		t.Fatal(err)
	}
	r.wait(r.lastTask(f.vol).ID)
	if v := r.volume(f.vol); v.Status != cairn.StatusErrorDeleting {
		t.Errorf("volume after a failed cascade: %s", v.Status)
	}
	left := 0
	for _, id := range []string{s1, s2} {
		if !r.gone("snapshot", id) {
			left++
			if sn := r.snapshot(id); sn.Status != cairn.StatusErrorDeleting {
				t.Errorf("snapshot %s after a failed cascade: %s", id, sn.Status)
			}
		}
	}
	if left != 1 {
		t.Errorf("%d snapshots left after a cascade failing at the second, want 1", left)
	}
	if err := r.svc.DeleteVolumeWith(ctx, caller, f.vol, service.VolumeDelete{Cascade: true}); err != nil {
		t.Fatal(err)
	}
	r.done(f.vol)
	for _, id := range []string{f.vol, s1, s2} {
		kind := "snapshot"
		if id == f.vol {
			kind = "volume"
		}
		if !r.gone(kind, id) {
			t.Errorf("%s %s left after the cascade", kind, id)
		}
	}
	if vols, snaps := r.eng.Peek(); len(vols) != 0 || len(snaps) != 0 {
		t.Errorf("engine after the cascade: %v, %v", vols, snaps)
	}
	if n := len(r.eventsOf("snapshot.delete.end")); n != 2 {
		t.Errorf("%d snapshot.delete.end events, want 2", n)
	}
	r.settled()
}

// TestAttachHandshake: reserve, unreserve, attach from a reservation,
// begin and roll back a detachment, detach from detaching; each from
// its one status.
func TestAttachHandshake(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	f := &fixture{}
	makeVolume(r, f)
	step := func(name string, err error, want cairn.Status) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := r.volume(f.vol).Status; got != want {
			t.Fatalf("%s: %s, want %s", name, got, want)
		}
	}
	// The handshake's wrong moves are InvalidVolume (400) in the block
	// storage API, not conflicts.
	refused := func(name string, err error) {
		t.Helper()
		if !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	refused("unreserve available", r.svc.UnreserveVolume(ctx, caller, f.vol))
	refused("begin detaching available", r.svc.BeginDetaching(ctx, caller, f.vol))
	step("reserve", r.svc.ReserveVolume(ctx, caller, f.vol), cairn.StatusAttaching)
	refused("reserve attaching", r.svc.ReserveVolume(ctx, caller, f.vol))
	if err := r.svc.ExtendVolume(ctx, caller, f.vol, 2); !errors.Is(err, cairn.ErrConflict) {
		t.Errorf("extend attaching: %v, want ErrConflict", err)
	}
	step("unreserve", r.svc.UnreserveVolume(ctx, caller, f.vol), cairn.StatusAvailable)
	step("reserve again", r.svc.ReserveVolume(ctx, caller, f.vol), cairn.StatusAttaching)
	_, err := r.svc.AttachVolume(ctx, caller, f.vol)
	step("attach reserved", err, cairn.StatusInUse)
	step("begin detaching", r.svc.BeginDetaching(ctx, caller, f.vol), cairn.StatusDetaching)
	if ex, _ := r.eng.Exported(ctx); ex[f.vol] != r.engineID(f.vol) {
		t.Errorf("detaching volume not exported: %v", ex)
	}
	// Unexported meanwhile (as a restart does: Start exports in-use
	// volumes): rolling back exports it again.
	if err := r.eng.Unexport(ctx, f.vol); err != nil {
		t.Fatal(err)
	}
	step("roll detaching", r.svc.RollDetaching(ctx, caller, f.vol), cairn.StatusInUse)
	if ex, _ := r.eng.Exported(ctx); ex[f.vol] != r.engineID(f.vol) {
		t.Errorf("volume not exported after roll_detaching: %v", ex)
	}
	refused("roll detaching in-use", r.svc.RollDetaching(ctx, caller, f.vol))
	step("begin detaching again", r.svc.BeginDetaching(ctx, caller, f.vol), cairn.StatusDetaching)
	step("detach detaching", r.svc.DetachVolume(ctx, caller, f.vol), cairn.StatusAvailable)
	if ex, _ := r.eng.Exported(ctx); len(ex) != 0 {
		t.Errorf("exports after detach: %v", ex)
	}
	r.settled()
}

// TestFlagsAndUpdates: bootable and read-only flags, the read-only flag
// kept apart from the tenant's metadata; a backup's name and
// description; the creator's user on every resource.
func TestFlagsAndUpdates(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	c := service.Caller{ProjectID: project, UserID: "u-1"}
	v := must[cairn.Volume](t)(r.svc.CreateVolume(ctx, c, service.VolumeCreate{Size: 1, Metadata: map[string]string{"a": "b"}}))
	r.done(v.ID)
	if err := r.svc.SetBootable(ctx, c, v.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := r.svc.SetReadOnly(ctx, c, v.ID, true); err != nil {
		t.Fatal(err)
	}
	got := r.volume(v.ID)
	if !got.Bootable || got.AdminMetadata[cairn.ReadOnlyKey] != "True" || !maps.Equal(got.Metadata, map[string]string{"a": "b"}) {
		t.Errorf("after the flags: bootable %v, admin metadata %v, metadata %v", got.Bootable, got.AdminMetadata, got.Metadata)
	}
	// Replacing all of the tenant's metadata leaves the flag.
	empty := map[string]string{"readonly": "forged"}
	must[cairn.Volume](t)(r.svc.UpdateVolume(ctx, c, v.ID, service.VolumeUpdate{Metadata: &empty}))
	if got := r.volume(v.ID); got.AdminMetadata[cairn.ReadOnlyKey] != "True" {
		t.Errorf("a metadata update changed the read-only flag: %v", got.AdminMetadata)
	}
	if err := r.svc.SetReadOnly(ctx, c, v.ID, false); err != nil {
		t.Fatal(err)
	}
	if got := r.volume(v.ID); got.AdminMetadata[cairn.ReadOnlyKey] != "False" || got.Metadata["readonly"] != "forged" {
		t.Errorf("after readonly false: %v, %v", got.AdminMetadata, got.Metadata)
	}
	if err := r.svc.ReserveVolume(ctx, c, v.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.svc.SetReadOnly(ctx, c, v.ID, true); !errors.Is(err, cairn.ErrConflict) {
		t.Errorf("readonly of an attaching volume: %v", err)
	}
	if err := r.svc.SetBootable(ctx, c, v.ID, false); err != nil {
		t.Errorf("bootable of an attaching volume: %v", err)
	}
	if err := r.svc.UnreserveVolume(ctx, c, v.ID); err != nil {
		t.Fatal(err)
	}

	snap := must[cairn.Snapshot](t)(r.svc.CreateSnapshot(ctx, c, service.SnapshotCreate{VolumeID: v.ID}))
	r.done(snap.ID)
	b := must[cairn.Backup](t)(r.svc.CreateBackup(ctx, c, service.BackupCreate{VolumeID: v.ID}))
	r.done(b.ID)
	if u := [3]string{r.volume(v.ID).UserID, r.snapshot(snap.ID).UserID, r.backup(b.ID).UserID}; u != [3]string{"u-1", "u-1", "u-1"} {
		t.Errorf("user_id of volume, snapshot, backup: %v", u)
	}
	name, desc := "renamed", "described"
	d := must[service.BackupDetail](t)(r.svc.UpdateBackup(ctx, c, b.ID, service.BackupUpdate{Name: &name}))
	if d.Name != name || r.backup(b.ID).Name != name {
		t.Errorf("backup update: %q, stored %q", d.Name, r.backup(b.ID).Name)
	}
	must[service.BackupDetail](t)(r.svc.UpdateBackup(ctx, c, b.ID, service.BackupUpdate{Description: &desc}))
	if got := r.backup(b.ID); got.Name != name || got.Description != desc {
		t.Errorf("backup after both updates: %q, %q", got.Name, got.Description)
	}
	long := strings.Repeat("n", 256)
	for _, tc := range []struct {
		name string
		c    service.Caller
		req  service.BackupUpdate
		err  error
	}{
		{"nothing", c, service.BackupUpdate{}, cairn.ErrInvalid},
		{"long name", c, service.BackupUpdate{Name: &long}, cairn.ErrInvalid},
		{"another project", service.Caller{ProjectID: "other"}, service.BackupUpdate{Name: &name}, cairn.ErrNotFound},
	} {
		if _, err := r.svc.UpdateBackup(ctx, tc.c, b.ID, tc.req); !errors.Is(err, tc.err) {
			t.Errorf("backup update, %s: %v, want %v", tc.name, err, tc.err)
		}
	}
	if got := r.backup(b.ID); got.Name != name || got.Description != desc {
		t.Errorf("refused updates changed the backup: %q, %q", got.Name, got.Description)
	}
	r.settled()
}
