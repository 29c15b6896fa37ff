package api_test

import (
	"bytes"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

const gib = service.GiB

// randomBlocks fills a few scattered 64 KiB blocks of a 1 GiB volume.
func randomBlocks(seed uint64, n int) map[int64][]byte {
	r := rand.New(rand.NewPCG(seed, 1))
	out := map[int64][]byte{}
	for range n {
		off := r.Int64N(gib/65536) * 65536
		b := make([]byte, 65536)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		out[off] = b
	}
	return out
}

func (e *env) writeBlocks(id string, blocks map[int64][]byte) {
	for off, b := range blocks {
		e.write(id, off, b)
	}
}

func TestLifecycle(t *testing.T) { lifecycle(t, newEnv(t)) }

// TestLifecyclePostgres runs the lifecycle on a PostgreSQL catalog.
func TestLifecyclePostgres(t *testing.T) { lifecycle(t, newEnvPostgres(t)) }

func lifecycle(t *testing.T, e *env) {
	// Parents and stored bytes are cairn's own members, as its client
	// asks for them.
	e.members = true
	const p = "alpha"
	vol := e.createVolume(e.tokA, p, 1, "data")
	e.writeBlocks(vol, randomBlocks(1, 40))
	v1 := e.digest(vol, gib)

	// A snapshot, then a full backup of it: data_timestamp is the
	// snapshot's creation time.
	var snap struct{ Snapshot wire.Snapshot }
	e.must(202, e.tokA, "POST", "/v3/"+p+"/snapshots", map[string]any{"snapshot": map[string]any{"volume_id": vol, "name": "s1"}}, &snap)
	e.wait(e.tokA, p, "snapshot", snap.Snapshot.ID)
	var s1 struct{ Snapshot wire.Snapshot }
	e.must(200, e.tokA, "GET", "/v3/"+p+"/snapshots/"+snap.Snapshot.ID, nil, &s1)

	var full struct{ Backup wire.Backup }
	e.must(202, e.tokA, "POST", "/v3/"+p+"/backups", map[string]any{"backup": map[string]any{"snapshot_id": snap.Snapshot.ID, "name": "full"}}, &full)
	if r := e.wait(e.tokA, p, "backup", full.Backup.ID); r["status"] != "available" {
		t.Fatalf("full backup: %v", r)
	}
	var fb struct{ Backup wire.Backup }
	e.must(200, e.tokA, "GET", "/v3/"+p+"/backups/"+full.Backup.ID, nil, &fb)
	if !fb.Backup.DataTimestamp.Equal(s1.Snapshot.CreatedAt) {
		t.Errorf("data_timestamp %v, want the snapshot's %v", fb.Backup.DataTimestamp, s1.Snapshot.CreatedAt)
	}
	if fb.Backup.IsIncremental || fb.Backup.ParentID != nil || fb.Backup.ObjectCount == 0 || fb.Backup.SnapshotID == nil {
		t.Errorf("full backup fields: %+v", fb.Backup)
	}

	// Change the volume; a second snapshot; an incremental of it uses the
	// first backup as parent (its snapshot still exists: change tracking).
	e.writeBlocks(vol, randomBlocks(2, 10))
	v2 := e.digest(vol, gib)
	var snap2 struct{ Snapshot wire.Snapshot }
	e.must(202, e.tokA, "POST", "/v3/"+p+"/snapshots", map[string]any{"snapshot": map[string]any{"volume_id": vol}}, &snap2)
	e.wait(e.tokA, p, "snapshot", snap2.Snapshot.ID)
	var incr struct{ Backup wire.Backup }
	e.must(202, e.tokA, "POST", "/v3/"+p+"/backups", map[string]any{"backup": map[string]any{"snapshot_id": snap2.Snapshot.ID, "incremental": true}}, &incr)
	e.wait(e.tokA, p, "backup", incr.Backup.ID)
	var ib struct{ Backup wire.Backup }
	e.must(200, e.tokA, "GET", "/v3/"+p+"/backups/"+incr.Backup.ID, nil, &ib)
	if !ib.Backup.IsIncremental || ib.Backup.ParentID == nil || *ib.Backup.ParentID != full.Backup.ID {
		t.Errorf("incremental: %+v", ib.Backup)
	}
	// The parent's snapshot exists: only what changed was read (10 blocks
	// of 64 KiB), not the volume's 1 GiB.
	if read := e.manifest(ib.Backup.Container, ib.Backup.ID).Stats.BytesRead; read > 2<<20 {
		t.Errorf("the incremental read %d bytes; change tracking should read about 640 KiB", read)
	}
	e.must(200, e.tokA, "GET", "/v3/"+p+"/backups/"+full.Backup.ID, nil, &fb)
	if !fb.Backup.HasDependentBackups {
		t.Error("the full backup does not show its dependent")
	}

	// A volume backup (temporary snapshot) of the changed volume. A task
	// shows its resource's final status last: once the backup is shown
	// available, its temporary snapshot is gone and its volume released.
	snapsBefore := len(e.eng.Snapshots(cairn.ID{}))
	var vb struct{ Backup wire.Backup }
	e.must(202, e.tokA, "POST", "/v3/"+p+"/backups", map[string]any{"backup": map[string]any{"volume_id": vol, "incremental": true}}, &vb)
	if r := e.wait(e.tokA, p, "backup", vb.Backup.ID); r["status"] != "available" || r["parent_id"] != incr.Backup.ID {
		t.Fatalf("volume backup: %v", r)
	}
	if n := len(e.eng.Snapshots(cairn.ID{})); n != snapsBefore {
		t.Errorf("engine snapshots %d after a volume backup, want %d", n, snapsBefore)
	}
	var vr struct{ Volume wire.Volume }
	if e.must(200, e.tokA, "GET", "/v3/"+p+"/volumes/"+vol, nil, &vr); vr.Volume.Status != "available" {
		t.Errorf("volume once its backup is available: %s", vr.Volume.Status)
	}

	// Deleting the full backup is allowed; the incremental still restores.
	e.must(202, e.tokA, "DELETE", "/v3/"+p+"/backups/"+full.Backup.ID, nil, nil)
	if r := e.wait(e.tokA, p, "backup", full.Backup.ID); r != nil {
		t.Fatalf("deleted backup still there: %v", r)
	}
	var res struct{ Restore wire.RestoreResult }
	e.must(202, e.tokA, "POST", "/v3/"+p+"/backups/"+incr.Backup.ID+"/restore", map[string]any{"restore": map[string]any{"name": "restored"}}, &res)
	if r := e.wait(e.tokA, p, "volume", res.Restore.VolumeID); r["status"] != "available" {
		t.Fatalf("restored volume: %v", r)
	}
	if e.digest(res.Restore.VolumeID, gib) != v2 {
		t.Fatal("the incremental's restore differs from the volume it backed up")
	}

	// Restore the volume backup into an existing, larger, available volume.
	big := e.createVolume(e.tokA, p, 2, "big")
	e.write(big, 0, bytes.Repeat([]byte{0xee}, 1<<20))
	e.must(202, e.tokA, "POST", "/v3/"+p+"/backups/"+vb.Backup.ID+"/restore", map[string]any{"restore": map[string]any{"volume_id": big}}, nil)
	if r := e.wait(e.tokA, p, "volume", big); r["status"] != "available" {
		t.Fatalf("restore into existing: %v", r)
	}
	if e.digest(big, gib) != v2 {
		t.Fatal("restore into an existing volume differs")
	}
	if r := e.wait(e.tokA, p, "backup", vb.Backup.ID); r["status"] != "available" {
		t.Fatalf("backup after restore: %v", r)
	}

	// A volume from the first snapshot holds the first data; extend it.
	var clone struct{ Volume wire.Volume }
	e.must(202, e.tokA, "POST", "/v3/"+p+"/volumes", map[string]any{"volume": map[string]any{"snapshot_id": snap.Snapshot.ID}}, &clone)
	e.wait(e.tokA, p, "volume", clone.Volume.ID)
	if e.digest(clone.Volume.ID, gib) != v1 {
		t.Fatal("a volume from a snapshot differs from the snapshot")
	}
	e.must(202, e.tokA, "POST", "/v3/"+p+"/volumes/"+clone.Volume.ID+"/action", map[string]any{"os-extend": map[string]any{"new_size": 3}}, nil)
	if r := e.wait(e.tokA, p, "volume", clone.Volume.ID); r["status"] != "available" || r["size"].(float64) != 3 {
		t.Fatalf("extend: %v", r)
	}

	// Export the incremental's record; a second deployment with the same
	// backup store and key imports it and restores the same bytes.
	var rec struct {
		Record wire.BackupRecord `json:"backup-record"`
	}
	e.must(200, e.tokA, "GET", "/v3/"+p+"/backups/"+incr.Backup.ID+"/export_record", nil, &rec)
	e2 := newEnvAt(t, t.TempDir(), e.store)
	// The import answers the block storage API's summary: ID, name and
	// links; the backup is available at once.
	imp := e2.call(201, e2.tokA, "POST", "/v3/alpha/backups/import_record", map[string]any{"backup-record": rec.Record})
	ib2 := object(t, "import", imp, "backup")
	members(t, "import", ib2, summaryMembers)
	if ib2["id"] != incr.Backup.ID {
		t.Fatalf("imported: %v", ib2)
	}
	e2.checkLinks("import", e2.tokA, "alpha", "backup", ib2)
	if r := e2.wait(e2.tokA, "alpha", "backup", incr.Backup.ID); r["status"] != "available" {
		t.Fatalf("imported: %v", r)
	}
	e2.must(409, e2.tokA, "POST", "/v3/alpha/backups/import_record", map[string]any{"backup-record": rec.Record}, nil)
	var res2 struct{ Restore wire.RestoreResult }
	e2.must(202, e2.tokA, "POST", "/v3/alpha/backups/"+incr.Backup.ID+"/restore", map[string]any{"restore": map[string]any{}}, &res2)
	if r := e2.wait(e2.tokA, "alpha", "volume", res2.Restore.VolumeID); r["status"] != "available" {
		t.Fatalf("restore in the second deployment: %v", r)
	}
	if e2.digest(res2.Restore.VolumeID, gib) != v2 {
		t.Fatal("the second deployment restored different bytes")
	}

	// Notifications carried the resource fields, snapshot_id included.
	e.settle()
	seen := map[string]bool{}
	for len(e.events.ch) > 0 {
		ev := <-e.events.ch
		seen[ev.Type] = true
		if ev.Type == "backup.create.end" && ev.Payload["id"] == full.Backup.ID && ev.Payload["snapshot_id"] != snap.Snapshot.ID {
			t.Errorf("backup.create.end payload: %v", ev.Payload)
		}
	}
	for _, want := range []string{"volume.create.start", "volume.create.end", "snapshot.create.end",
		"backup.create.start", "backup.create.end", "backup.restore.start", "backup.restore.end",
		"backup.delete.end", "volume.resize.end"} {
		if !seen[want] {
			t.Errorf("no %s notification (saw %v)", want, keys(seen))
		}
	}

	// Delete everything; nothing is left in the catalog or the engine.
	for _, id := range []string{vb.Backup.ID, incr.Backup.ID} {
		e.must(202, e.tokA, "DELETE", "/v3/"+p+"/backups/"+id, nil, nil)
		e.wait(e.tokA, p, "backup", id)
	}
	e.must(409, e.tokA, "DELETE", "/v3/"+p+"/volumes/"+vol, nil, nil) // it has snapshots
	for _, id := range []string{snap.Snapshot.ID, snap2.Snapshot.ID} {
		e.must(202, e.tokA, "DELETE", "/v3/"+p+"/snapshots/"+id, nil, nil)
		e.wait(e.tokA, p, "snapshot", id)
	}
	for _, id := range []string{vol, res.Restore.VolumeID, big, clone.Volume.ID} {
		e.must(202, e.tokA, "DELETE", "/v3/"+p+"/volumes/"+id, nil, nil)
		e.wait(e.tokA, p, "volume", id)
	}
	e.settle()
	st := e.state()
	if len(st.Volumes)+len(st.Snapshots)+len(st.Backups)+len(st.Engine)+len(st.EngSnaps) != 0 {
		t.Fatalf("left behind: %+v", st)
	}
	for _, task := range st.Tasks {
		if task.State != cairn.TaskDone {
			t.Errorf("task %s %s ended %s: %s", task.Kind, task.ResourceID, task.State, task.Error)
		}
	}
}

func keys(m map[string]bool) string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func TestAttachExportsOverNBD(t *testing.T) {
	e := newEnv(t)
	vol := e.createVolume(e.tokA, "alpha", 1, "")
	var att struct{ Attachment wire.Attachment }
	e.must(200, e.tokA, "POST", "/v3/alpha/volumes/"+vol+"/action", map[string]any{"os-attach": map[string]any{}}, &att)
	if att.Attachment.ExportName != vol || len(att.Attachment.URIs) == 0 {
		t.Fatalf("attachment: %+v", att)
	}
	if list := e.exports.All(); len(list) != 1 || list[vol].IsZero() {
		t.Fatalf("exports: %+v", list)
	}
	// In use: no delete, snapshot only with force, backup only with force.
	e.must(409, e.tokA, "DELETE", "/v3/alpha/volumes/"+vol, nil, nil)
	e.must(409, e.tokA, "POST", "/v3/alpha/snapshots", map[string]any{"snapshot": map[string]any{"volume_id": vol}}, nil)
	e.must(409, e.tokA, "POST", "/v3/alpha/backups", map[string]any{"backup": map[string]any{"volume_id": vol}}, nil)
	var s struct{ Snapshot wire.Snapshot }
	e.must(202, e.tokA, "POST", "/v3/alpha/snapshots", map[string]any{"snapshot": map[string]any{"volume_id": vol, "force": true}}, &s)
	var b struct{ Backup wire.Backup }
	e.must(202, e.tokA, "POST", "/v3/alpha/backups", map[string]any{"backup": map[string]any{"volume_id": vol, "force": true}}, &b)
	if r := e.wait(e.tokA, "alpha", "backup", b.Backup.ID); r["status"] != "available" {
		t.Fatalf("backup of an in-use volume: %v", r)
	}
	if r := e.wait(e.tokA, "alpha", "volume", vol); r["status"] != "in-use" {
		t.Fatalf("volume after its backup: %v", r)
	}
	e.must(202, e.tokA, "POST", "/v3/alpha/volumes/"+vol+"/action", map[string]any{"os-detach": map[string]any{}}, nil)
	if list := e.exports.All(); len(list) != 0 {
		t.Fatalf("exports after detach: %+v", list)
	}
	e.must(409, e.tokA, "POST", "/v3/alpha/volumes/"+vol+"/action", map[string]any{"os-detach": map[string]any{}}, nil)
}

func TestHealthMetricsOpenAPI(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/healthz", "/metrics", "/openapi.yaml", "/v3/"} {
		if code := e.do("", "GET", path, nil, nil); code != http.StatusOK {
			t.Errorf("GET %s: %d", path, code)
		}
	}
	e.createVolume(e.tokA, "alpha", 1, "")
	e.settle() // the task's end is counted after its volume is available
	resp, err := http.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	for _, want := range []string{`cairn_tasks_total{kind="volume.create",result="ok"} 1`, "cairn_http_requests_total", "cairn_task_duration_seconds"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestFailedBackupCleansUp: a backup whose store cannot be reached ends
// in error with a fail_reason; its volume is available again and its
// temporary snapshot is gone.
func TestFailedBackupCleansUp(t *testing.T) {
	e := newEnv(t)
	vol := e.createVolume(e.tokA, "alpha", 1, "")
	var b struct{ Backup wire.Backup }
	e.must(202, e.tokA, "POST", "/v3/alpha/backups", map[string]any{"backup": map[string]any{"volume_id": vol, "container": "unreachable"}}, &b)
	r := e.wait(e.tokA, "alpha", "backup", b.Backup.ID)
	if r["status"] != "error" || !strings.Contains(r["fail_reason"].(string), "connection refused") {
		t.Fatalf("backup to an unreachable store: %v", r)
	}
	e.settle()
	if v := e.wait(e.tokA, "alpha", "volume", vol); v["status"] != "available" {
		t.Fatalf("volume after a failed backup: %v", v)
	}
	if n := len(e.eng.Snapshots(cairn.ID{})); n != 0 {
		t.Fatalf("%d engine snapshots left after a failed backup", n)
	}
	found := false
	for len(e.events.ch) > 0 {
		if ev := <-e.events.ch; ev.Type == "backup.create.error" && ev.Payload["id"] == b.Backup.ID {
			found = true
		}
	}
	if !found {
		t.Error("no backup.create.error notification")
	}
	// A failed backup can be deleted.
	e.must(202, e.tokA, "DELETE", "/v3/alpha/backups/"+b.Backup.ID, nil, nil)
	if r := e.wait(e.tokA, "alpha", "backup", b.Backup.ID); r != nil {
		// Deleting needs the store too: it fails again, visibly.
		if r["status"] != "error" {
			t.Fatalf("delete of a failed backup: %v", r)
		}
	}
}
