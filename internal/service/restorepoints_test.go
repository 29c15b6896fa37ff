package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/service/servicetest"
	"github.com/cairnproject/cairn/internal/volume"
)

// pointsRig is a streaming instance whose service takes a restore point
// at each tick, keeping keep.
func pointsRig(t *testing.T, keep int) (*rig, *fixture) {
	r, _, f, _ := streamingArchiverWith(t, func(r *rig) {
		r.pointInterval, r.pointKeep, r.pointTicks = time.Minute, keep, make(chan time.Time)
	})
	return r, f
}

// tick lets the instance's restore point keeper take its next point. The
// send returns once the keeper waits for it, so once the tick before it
// has been handled in full.
func (r *rig) tick() {
	r.t.Helper()
	select {
	case r.pointTicks <- time.Now():
	case <-r.t.Context().Done():
		r.t.Fatal("the restore point keeper never waited for its next tick")
	}
}

// pointsState is what an instance's restore points are made of: the
// rows, the engine's restore point snapshots of its volume and the
// overlays in the archive's container.
type pointsState struct {
	rows     []cairn.RestorePoint
	snaps    map[string]string // snapshot ID by name
	overlays map[string]*repoManifest
}

type repoManifest struct {
	id   cairn.ID
	tags map[string]string
	data []byte
}

func (r *rig) points(instance string) pointsState {
	r.t.Helper()
	ctx := r.t.Context()
	var st pointsState
	r.view(func(ctx context.Context, tx catalog.Tx) error {
		var err error
		st.rows, err = tx.RestorePoints(ctx, instance)
		return err
	})
	st.snaps = map[string]string{}
	for _, sn := range must[[]volume.SnapshotInfo](r.t)(r.eng.Snapshots(ctx)) {
		if strings.HasPrefix(sn.Name, "restorepoint-") {
			st.snaps[sn.Name] = sn.ID.String()
		}
	}
	st.overlays = map[string]*repoManifest{}
	rp := r.store("volumebackups").Open()
	defer rp.Close()
	list := must[*repo.BackupList](r.t)(rp.Backups(ctx))
	for _, m := range list.Backups {
		if id := m.Tags[service.TagRestorePoint]; id != "" {
			var buf bytes.Buffer
			if _, err := rp.RestoreStream(ctx, m, &buf, nil); err != nil {
				r.t.Fatal(err)
			}
			st.overlays[id] = &repoManifest{id: m.ID, tags: m.Tags, data: buf.Bytes()}
		}
	}
	return st
}

// waitPoints waits until the instance's restore points are ok.
func (r *rig) waitPoints(instance string, what string, ok func(pointsState) bool) pointsState {
	r.t.Helper()
	for {
		st := r.points(instance)
		if ok(st) {
			return st
		}
		select {
		case <-r.t.Context().Done():
			r.t.Fatalf("restore points never came to %s: %d rows, snapshots %v, overlays %d", what, len(st.rows), st.snaps, len(st.overlays))
		case <-time.After(time.Millisecond):
		}
	}
}

// waitArchive waits until the instance's archive state (what the
// metrics read) satisfies ok.
func (r *rig) waitArchive(instance, what string, ok func(cairn.ArchiveState) bool) {
	r.t.Helper()
	for {
		st, found := r.svc.Archives()[instance]
		if found && ok(st) {
			return
		}
		select {
		case <-r.t.Context().Done():
			r.t.Fatalf("the archive state never came to %s: %+v", what, st)
		case <-time.After(time.Millisecond):
		}
	}
}

// consistent says that every row names a snapshot and an overlay that
// exist, of the row's own point, and that nothing else exists.
func consistent(st pointsState) bool {
	if len(st.snaps) != len(st.rows) || len(st.overlays) != len(st.rows) {
		return false
	}
	for _, rp := range st.rows {
		o := st.overlays[rp.ID]
		if st.snaps["restorepoint-"+rp.ID] != rp.SnapshotID || o == nil || o.id.String() != rp.Overlay {
			return false
		}
	}
	return true
}

func pointIDs(rows []cairn.RestorePoint) []string {
	var out []string
	for _, rp := range rows {
		out = append(out, rp.ID)
	}
	return out
}

// TestRestorePoints: a restore point is taken at each tick while the
// instance's archive streams, with its snapshot, overlay and record; the
// newest keep are kept and the older deleted whole; a point whose
// overlay cannot be stored leaves nothing behind; what a process killed
// halfway left is swept at the next start; an instance's delete takes
// its points with it.
func TestRestorePoints(t *testing.T) {
	r, f := pointsRig(t, 2)
	inst := r.instance(f.vol)

	r.tick()
	first := r.waitPoints(f.vol, "one point", func(st pointsState) bool { return len(st.rows) == 1 && consistent(st) })
	rp := first.rows[0]
	if rp.VolumeID != inst.VolumeID || rp.ProjectID != project || rp.Container != "volumebackups" || rp.DataTimestamp.IsZero() {
		t.Fatalf("restore point %+v of instance %+v", rp, inst)
	}
	var rec dbagent.Record
	if err := json.Unmarshal(rp.Record, &rec); err != nil || rec.Label != "cairn-"+rp.ID || !rec.Time.Equal(rp.DataTimestamp) {
		t.Fatalf("record %s (%v)", rp.Record, err)
	}
	if o := first.overlays[rp.ID]; string(o.data) != "overlay of restorepoint-"+rp.ID || o.tags[service.TagProject] != project {
		t.Fatalf("overlay %q, tags %v", o.data, o.tags)
	}

	// Three points in all: the oldest goes, snapshot and overlay too.
	r.tick()
	r.tick()
	st := r.waitPoints(f.vol, "the newest two of three", func(st pointsState) bool {
		return len(st.rows) == 2 && !slices.Contains(pointIDs(st.rows), rp.ID) && consistent(st)
	})
	kept := pointIDs(st.rows)
	r.waitArchive(f.vol, "two points counted", func(a cairn.ArchiveState) bool {
		return a.RestorePoints.Count == 2 && a.RestorePoints.Newest.Equal(st.rows[1].DataTimestamp) && a.RestorePointFailures == 0
	})

	// The overlay's store fails: the snapshot taken goes again.
	r.faults.Add(servicetest.Fault{Method: "Repository.BackupStream", Times: 1})
	calls := len(r.faults.Trace())
	r.tick()
	// The failed store, then the snapshot's delete.
	for {
		trace := r.faults.Trace()[calls:]
		if i := slices.Index(trace, "Repository.BackupStream"); i >= 0 && slices.Contains(trace[i:], "Engine.DeleteSnapshot") {
			break
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("the failed point was never undone: calls %v", trace)
		case <-time.After(time.Millisecond):
		}
	}
	r.waitPoints(f.vol, "as before the failed point", func(st pointsState) bool {
		return slices.Equal(pointIDs(st.rows), kept) && consistent(st)
	})
	r.waitArchive(f.vol, "one failure counted", func(a cairn.ArchiveState) bool {
		return a.RestorePointFailures == 1 && a.RestorePoints.Count == 2
	})
	// The next point is taken, and the failures are cleared.
	r.tick()
	r.waitArchive(f.vol, "the failures cleared", func(a cairn.ArchiveState) bool {
		return a.RestorePointFailures == 0 && a.RestorePoints.Count == 2
	})
	st = r.waitPoints(f.vol, "a newer point kept", func(st pointsState) bool {
		return len(st.rows) == 2 && st.rows[0].ID == kept[1] && consistent(st)
	})
	kept = pointIDs(st.rows)

	// A process killed between the snapshot, the overlay and the row:
	// what it left no row names, and the next process removes it.
	r.stop()
	stray := cairn.NewUUID()
	vol := must[cairn.ID](t)(cairn.ParseID(inst.VolumeID))
	if _, err := r.eng.CreateSnapshot(t.Context(), vol, "restorepoint-"+stray); err != nil {
		t.Fatal(err)
	}
	store := r.store("volumebackups").Open()
	if _, err := store.BackupStream(t.Context(), strings.NewReader("stray overlay"), repo.StreamOptions{
		Name: "instance-" + f.vol + "/restore-point", Tags: map[string]string{service.TagRestorePoint: stray}}); err != nil {
		t.Fatal(err)
	}
	store.Close()
	r.start()
	r.waitPoints(f.vol, "the stray snapshot and overlay swept", func(st pointsState) bool {
		_, snap := st.snaps["restorepoint-"+stray]
		return !snap && st.overlays[stray] == nil && len(st.rows) >= 2 && consistent(st)
	})

	// The instance deleted: its points go with it.
	if err := r.svc.DeleteInstance(t.Context(), caller, f.vol); err != nil {
		t.Fatal(err)
	}
	r.done(f.vol)
	if st := r.points(f.vol); len(st.rows) != 0 || len(st.snaps) != 0 || len(st.overlays) != 0 {
		t.Fatalf("after the instance's delete: rows %v, snapshots %v, overlays %d", pointIDs(st.rows), st.snaps, len(st.overlays))
	}
}
