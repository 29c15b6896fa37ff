package api_test

import (
	"net/http"
	"reflect"
	"testing"

	"github.com/cairnproject/cairn/internal/service"
)

// TestQuotaSets: a project's quota set shows its limits (and usage when
// asked), an admin changes and deletes it, the default class is what a
// deleted set and a new project get, per_volume_gigabytes bounds each
// volume, and bad changes are refused without changing anything.
func TestQuotaSets(t *testing.T) {
	e := newEnv(t)
	const A, adm = "/v3/alpha", "/v3/admin"
	vol := e.createVolume(e.tokA, "alpha", 2, "v")
	e.wait(e.tokA, "alpha", "volume", vol)

	show := func(token, url string) map[string]any {
		t.Helper()
		return object(t, "quota set", e.call(200, token, "GET", url, nil), "quota_set")
	}
	// The project's own, unlimited (the test's projects are), with usage.
	qs := show(e.tokA, A+"/os-quota-sets/alpha?usage=true")
	if qs["id"] != "alpha" || !reflect.DeepEqual(qs["volumes"], map[string]any{"limit": -1.0, "in_use": 1.0, "reserved": 0.0, "allocated": 0.0}) ||
		!reflect.DeepEqual(qs["gigabytes"], map[string]any{"limit": -1.0, "in_use": 2.0, "reserved": 0.0, "allocated": 0.0}) {
		t.Fatalf("alpha's quota set with usage: %v", qs)
	}
	for _, k := range []string{"snapshots", "backups", "backup_gigabytes", "per_volume_gigabytes", "groups"} {
		if _, ok := qs[k]; !ok {
			t.Errorf("quota set lacks %s: %v", k, qs)
		}
	}
	// Another project's: admins only.
	if code := e.do(e.tokA, "GET", A+"/os-quota-sets/beta", nil, nil); code != http.StatusForbidden {
		t.Errorf("alpha reading beta's quota set: %d, want 403", code)
	}
	// A project cairn does not know shows the default class.
	def := show(e.admin, adm+"/os-quota-sets/newcomer")
	want := map[string]any{"id": "newcomer", "volumes": 10.0, "gigabytes": 1000.0, "snapshots": 10.0, "backups": 10.0,
		"backup_gigabytes": 1000.0, "per_volume_gigabytes": -1.0, "groups": 0.0}
	if !reflect.DeepEqual(def, want) {
		t.Fatalf("unknown project's quota set %v, want %v", def, want)
	}
	if d := show(e.admin, adm+"/os-quota-sets/alpha/defaults"); d["volumes"] != 10.0 || d["id"] != "alpha" {
		t.Errorf("defaults: %v", d)
	}

	// Changes: only the limits given; numbers or strings of them.
	// cinderclient also names the project in the body, as tenant_id, and
	// may ask ?skip_validation=False.
	up := object(t, "update", e.call(200, e.admin, "PUT", adm+"/os-quota-sets/alpha?skip_validation=False",
		map[string]any{"quota_set": map[string]any{"tenant_id": "alpha", "volumes": 3, "per_volume_gigabytes": "2"}}), "quota_set")
	if up["volumes"] != 3.0 || up["per_volume_gigabytes"] != 2.0 || up["gigabytes"] != -1.0 {
		t.Fatalf("after the update: %v", up)
	}
	// per_volume_gigabytes bounds each volume, created or extended: 413.
	if code := e.do(e.tokA, "POST", A+"/volumes", map[string]any{"volume": map[string]any{"size": 3}}, nil); code != http.StatusRequestEntityTooLarge {
		t.Errorf("a 3 GiB volume over the 2 GiB per-volume limit: %d, want 413", code)
	}
	if code := e.do(e.tokA, "POST", A+"/volumes/"+vol+"/action", map[string]any{"os-extend": map[string]any{"new_size": 3}}, nil); code != http.StatusRequestEntityTooLarge {
		t.Errorf("extending to 3 GiB over the per-volume limit: %d, want 413", code)
	}
	for _, tc := range []struct {
		name  string
		body  any
		query string
	}{
		{"below usage", map[string]any{"quota_set": map[string]any{"volumes": 0}}, ""},
		{"below usage, validation skipped", map[string]any{"quota_set": map[string]any{"volumes": 0}}, "?skip_validation=True"},
		{"skip_validation not a boolean", map[string]any{"quota_set": map[string]any{"volumes": 4}}, "?skip_validation=maybe"},
		{"another project's tenant_id", map[string]any{"quota_set": map[string]any{"tenant_id": "beta", "volumes": 4}}, ""},
		{"tenant_id not a string", map[string]any{"quota_set": map[string]any{"tenant_id": 7, "volumes": 4}}, ""},
		{"below -1", map[string]any{"quota_set": map[string]any{"snapshots": -2}}, ""},
		{"not a number", map[string]any{"quota_set": map[string]any{"backups": "many"}}, ""},
		{"a float", map[string]any{"quota_set": map[string]any{"backups": 1.5}}, ""},
		{"per-type", map[string]any{"quota_set": map[string]any{"volumes___DEFAULT__": 4}}, ""},
		{"groups", map[string]any{"quota_set": map[string]any{"groups": 2}}, ""},
		{"wrong member", map[string]any{"quota": map[string]any{"volumes": 4}}, ""},
	} {
		if code := e.do(e.admin, "PUT", adm+"/os-quota-sets/alpha"+tc.query, tc.body, nil); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", tc.name, code)
		}
	}
	if code := e.do(e.tokA, "PUT", A+"/os-quota-sets/alpha", map[string]any{"quota_set": map[string]any{"volumes": 100}}, nil); code != http.StatusForbidden {
		t.Errorf("a project raising its own quota: %d, want 403", code)
	}
	if got := show(e.tokA, A+"/os-quota-sets/alpha"); got["volumes"] != 3.0 {
		t.Errorf("refused changes changed the quota set: %v", got)
	}

	// The default class: admins change it; a deleted quota set returns to it.
	cls := object(t, "class", e.call(200, e.admin, "GET", adm+"/os-quota-class-sets/default", nil), "quota_class_set")
	if cls["id"] != "default" || cls["volumes"] != 10.0 {
		t.Fatalf("default class: %v", cls)
	}
	e.call(200, e.admin, "PUT", adm+"/os-quota-class-sets/default", map[string]any{"quota_class_set": map[string]any{"volumes": 7}})
	if code := e.do(e.admin, "GET", adm+"/os-quota-class-sets/gold", nil, nil); code != http.StatusNotFound {
		t.Errorf("another class: %d, want 404", code)
	}
	if code := e.do(e.tokA, "GET", A+"/os-quota-class-sets/default", nil, nil); code != http.StatusForbidden {
		t.Errorf("a project reading the class: %d, want 403", code)
	}
	e.call(200, e.admin, "DELETE", adm+"/os-quota-sets/alpha", nil)
	if got := show(e.tokA, A+"/os-quota-sets/alpha"); got["volumes"] != 7.0 || got["per_volume_gigabytes"] != -1.0 {
		t.Errorf("after the delete, alpha's quota set %v, want the default class's", got)
	}
	// An update of a project cairn does not know makes it.
	e.call(200, e.admin, "PUT", adm+"/os-quota-sets/newcomer", map[string]any{"quota_set": map[string]any{"snapshots": 5}})
	p, err := service.NewProjects(e.cat).Show(t.Context(), "newcomer")
	if err != nil || p.Quota.Snapshots != 5 || p.Quota.Volumes != 7 {
		t.Errorf("project made by a quota update: %+v %v", p, err)
	}
}

// TestSnapshotActions: the admin's os-force_delete deletes a snapshot
// whatever its status; os-update_snapshot_status reports a status and a
// progress the answers show, within the moves allowed.
func TestSnapshotActions(t *testing.T) {
	e := newEnv(t)
	const A = "/v3/alpha"
	vol := e.createVolume(e.tokA, "alpha", 1, "v")
	e.wait(e.tokA, "alpha", "volume", vol)
	snap := func() string {
		t.Helper()
		out := object(t, "snapshot create", e.call(202, e.tokA, "POST", A+"/snapshots",
			map[string]any{"snapshot": map[string]any{"volume_id": vol, "display_name": "old-name"}}), "snapshot")
		id, _ := out["id"].(string)
		if out["name"] != "old-name" {
			t.Errorf("display_name not taken as the name: %v", out)
		}
		e.wait(e.tokA, "alpha", "snapshot", id)
		return id
	}
	act := func(token, id string, body any) int {
		return e.do(token, "POST", A+"/snapshots/"+id+"/action", body, nil)
	}
	// Force delete, from a status a plain delete refuses.
	s1 := snap()
	if code := act(e.admin, s1, map[string]any{"os-reset_status": map[string]any{"status": "creating"}}); code != 202 {
		t.Fatalf("reset: %d", code)
	}
	if code := e.do(e.tokA, "DELETE", A+"/snapshots/"+s1, nil, nil); code != http.StatusConflict {
		t.Errorf("plain delete of a creating snapshot: %d, want 409", code)
	}
	if code := act(e.tokA, s1, map[string]any{"os-force_delete": nil}); code != http.StatusForbidden {
		t.Errorf("a project's force delete: %d, want 403", code)
	}
	if code := act(e.admin, s1, map[string]any{"os-force_delete": map[string]any{}}); code != 202 {
		t.Fatalf("force delete: %d", code)
	}
	if r := e.wait(e.tokA, "alpha", "snapshot", s1); r != nil {
		t.Fatalf("force-deleted snapshot still there: %v", r)
	}

	// Status reports: creating -> error with a progress.
	s2 := snap()
	for _, tc := range []struct {
		name string
		body any
		code int
	}{
		{"from available", map[string]any{"os-update_snapshot_status": map[string]any{"status": "error"}}, 400},
		{"two actions", map[string]any{"os-force_delete": nil, "os-reset_status": map[string]any{"status": "error"}}, 400},
		{"no action", map[string]any{}, 400},
	} {
		if code := act(e.admin, s2, tc.body); code != tc.code {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.code)
		}
	}
	act(e.admin, s2, map[string]any{"os-reset_status": map[string]any{"status": "creating"}})
	if code := act(e.tokA, s2, map[string]any{"os-update_snapshot_status": map[string]any{"status": "error", "progress": "80%"}}); code != 202 {
		t.Fatalf("update status: %d", code)
	}
	got := object(t, "snapshot show", e.call(200, e.tokA, "GET", A+"/snapshots/"+s2, nil), "snapshot")
	if got["status"] != "error" || got["os-extended-snapshot-attributes:progress"] != "80%" {
		t.Errorf("after the report: %v", got)
	}
	// A snapshot's backup may name its volume too, not another.
	act(e.admin, s2, map[string]any{"os-reset_status": map[string]any{"status": "available"}})
	if code := e.do(e.tokA, "POST", A+"/backups", map[string]any{"backup": map[string]any{"volume_id": vol, "snapshot_id": s2}}, nil); code != 202 {
		t.Errorf("backup naming the snapshot and its volume: %d, want 202", code)
	}
}

// TestRetype: os-retype gives a volume another type it may use, by name
// or ID; its own type again, an unknown one and a volume in the wrong
// status are refused, and nothing changes.
func TestRetype(t *testing.T) {
	e := newEnv(t)
	const A = "/v3/alpha"
	vt := object(t, "type create", e.call(200, e.admin, "POST", "/v3/admin/types",
		map[string]any{"volume_type": map[string]any{"name": "gold"}}), "volume_type")
	vol := e.createVolume(e.tokA, "alpha", 1, "v")
	e.wait(e.tokA, "alpha", "volume", vol)
	act := A + "/volumes/" + vol + "/action"
	retype := func(body any) int { return e.do(e.tokA, "POST", act, body, nil) }
	if code := retype(map[string]any{"os-retype": map[string]any{"new_type": "gold", "migration_policy": "never"}}); code != 202 {
		t.Fatalf("retype to gold: %d", code)
	}
	if got := e.volumeShown(e.tokA, "alpha", vol).VolumeType; got != "gold" {
		t.Fatalf("after retype: type %q, want gold", got)
	}
	for _, tc := range []struct {
		name string
		body any
		code int
	}{
		{"same type", map[string]any{"os-retype": map[string]any{"new_type": vt["id"]}}, 400},
		{"unknown type", map[string]any{"os-retype": map[string]any{"new_type": "silver"}}, 404},
		{"bad policy", map[string]any{"os-retype": map[string]any{"new_type": "__DEFAULT__", "migration_policy": "always"}}, 400},
		{"no type", map[string]any{"os-retype": map[string]any{}}, 400},
	} {
		if code := retype(tc.body); code != tc.code {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.code)
		}
	}
	e.call(202, e.admin, "POST", act, map[string]any{"os-reset_status": map[string]any{"status": "error"}})
	if code := retype(map[string]any{"os-retype": map[string]any{"new_type": "__DEFAULT__"}}); code != 400 {
		t.Errorf("retype of a volume in error: %d, want 400", code)
	}
	if got := e.volumeShown(e.tokA, "alpha", vol).VolumeType; got != "gold" {
		t.Errorf("refused retypes changed the type to %q", got)
	}
}

// TestRestoreCarriesMetadata: a backup keeps its volume's metadata as it
// was, and a restore into a new volume gives it back, also after the
// backup's record was exported and imported.
func TestRestoreCarriesMetadata(t *testing.T) {
	e := newEnv(t)
	const A = "/v3/alpha"
	v := object(t, "create", e.call(202, e.tokA, "POST", A+"/volumes", map[string]any{"volume": map[string]any{
		"size": 1, "metadata": map[string]string{"app": "db", "tier": "gold"}}}), "volume")
	vol, _ := v["id"].(string)
	e.wait(e.tokA, "alpha", "volume", vol)
	b := object(t, "backup", e.call(202, e.tokA, "POST", A+"/backups", map[string]any{"backup": map[string]any{"volume_id": vol}}), "backup")
	backup, _ := b["id"].(string)
	if r := e.wait(e.tokA, "alpha", "backup", backup); r["status"] != "available" {
		t.Fatalf("backup: %v", r)
	}
	// Changed after the backup: the restore gives the backup's.
	e.call(200, e.tokA, "PUT", A+"/volumes/"+vol+"/metadata", map[string]any{"metadata": map[string]string{"app": "web"}})
	restore := func(id string) map[string]any {
		t.Helper()
		r := object(t, "restore", e.call(202, e.tokA, "POST", A+"/backups/"+id+"/restore", map[string]any{"restore": map[string]any{}}), "restore")
		nv, _ := r["volume_id"].(string)
		if got := e.wait(e.tokA, "alpha", "volume", nv); got["status"] != "available" {
			t.Fatalf("restored volume: %v", got)
		}
		return object(t, "show", e.call(200, e.tokA, "GET", A+"/volumes/"+nv, nil), "volume")
	}
	want := map[string]any{"app": "db", "tier": "gold"}
	if got := restore(backup)["metadata"]; !reflect.DeepEqual(got, want) {
		t.Errorf("restored volume's metadata %v, want %v", got, want)
	}
	rec := object(t, "export", e.call(200, e.tokA, "GET", A+"/backups/"+backup+"/export_record", nil), "backup-record")
	// Another deployment on the same store imports the record.
	e2 := newEnvAt(t, t.TempDir(), e.store)
	e2.call(201, e2.tokA, "POST", A+"/backups/import_record", map[string]any{"backup-record": rec})
	r := object(t, "restore", e2.call(202, e2.tokA, "POST", A+"/backups/"+backup+"/restore", map[string]any{"restore": map[string]any{}}), "restore")
	nv, _ := r["volume_id"].(string)
	if got := e2.wait(e2.tokA, "alpha", "volume", nv); got["status"] != "available" {
		t.Fatalf("volume restored in the other deployment: %v", got)
	}
	got := object(t, "show", e2.call(200, e2.tokA, "GET", A+"/volumes/"+nv, nil), "volume")
	if !reflect.DeepEqual(got["metadata"], want) {
		t.Errorf("metadata after export and import: %v, want %v", got["metadata"], want)
	}
}
