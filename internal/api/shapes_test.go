package api_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/volume"
)

// The members of the block storage API's answers, as the OpenStack
// clients read them and the response schemas of tempest
// (tempest/lib/api_schema/response/volume) require and allow them:
// nothing else. cairn's own members come only with X-Cairn-Members.
var (
	// volumeMembers: a volume in the answers to a create and an update;
	// show and the detailed list add the project.
	volumeMembers = []string{"id", "name", "description", "size", "status", "snapshot_id",
		"user_id", "attachments", "bootable", "metadata",
		"links", "availability_zone", "volume_type", "replication_status", "encrypted", "multiattach",
		"consistencygroup_id", "source_volid", "created_at", "updated_at"}
	volumeShowMembers = append(slices.Clone(volumeMembers), "os-vol-tenant-attr:tenant_id")
	// summaryMembers: a volume or backup in a list without details, and
	// a backup in the answer to a create or an import.
	summaryMembers = []string{"id", "name", "links"}
	// snapshotSummaryMembers: a snapshot in the answer to a create and in
	// the list without details.
	snapshotSummaryMembers = []string{"id", "volume_id", "name", "description", "size", "status", "metadata",
		"created_at", "updated_at"}
	// snapshotMembers: a snapshot in a show and the detailed list.
	snapshotMembers = append(slices.Clone(snapshotSummaryMembers),
		"os-extended-snapshot-attributes:project_id", "os-extended-snapshot-attributes:progress")
	// backupMembers: a backup in a show and the detailed list.
	backupMembers = []string{"id", "name", "description", "volume_id", "snapshot_id", "container", "status",
		"fail_reason", "size", "object_count", "is_incremental", "has_dependent_backups",
		"data_timestamp", "os-backup-project-attr:project_id", "links", "created_at", "updated_at"}
	// absoluteLimits: the members of limits.absolute.
	absoluteLimits = []string{"maxTotalVolumes", "maxTotalSnapshots", "maxTotalVolumeGigabytes", "maxTotalBackups",
		"maxTotalBackupGigabytes", "totalVolumesUsed", "totalGigabytesUsed", "totalSnapshotsUsed", "totalBackupsUsed",
		"totalBackupGigabytesUsed"}
)

// members checks that object m has exactly the members want.
func members(t testing.TB, what string, m map[string]any, want []string) {
	t.Helper()
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	w := slices.Sorted(slices.Values(want))
	if !slices.Equal(got, w) {
		var extra, missing []string
		for _, k := range got {
			if !slices.Contains(w, k) {
				extra = append(extra, k)
			}
		}
		for _, k := range w {
			if !slices.Contains(got, k) {
				missing = append(missing, k)
			}
		}
		t.Errorf("%s: members %v; unexpected %v, missing %v", what, got, extra, missing)
	}
}

// values checks members of m (JSON-decoded: numbers are float64).
func values(t testing.TB, what string, m map[string]any, want map[string]any) {
	t.Helper()
	for k, w := range want {
		if g, ok := m[k]; !ok || !reflect.DeepEqual(g, w) {
			t.Errorf("%s: %s = %#v (present %v), want %#v", what, k, g, ok, w)
		}
	}
}

// object is the member name of a JSON answer, an object.
func object(t testing.TB, what string, answer map[string]any, name string) map[string]any {
	t.Helper()
	o, ok := answer[name].(map[string]any)
	if !ok {
		t.Fatalf("%s: no object %q in %v", what, name, answer)
	}
	return o
}

// items is the member name of a JSON answer, an array of objects.
func items(t testing.TB, what string, answer map[string]any, name string) []map[string]any {
	t.Helper()
	list, ok := answer[name].([]any)
	if !ok {
		t.Fatalf("%s: no array %q in %v", what, name, answer)
	}
	out := make([]map[string]any, len(list))
	for i, x := range list {
		if out[i], ok = x.(map[string]any); !ok {
			t.Fatalf("%s: %s[%d] is %T", what, name, i, x)
		}
	}
	return out
}

// call sends a request that must answer want and returns its JSON body.
func (e *env) call(want int, token, method, path string, body any) map[string]any {
	e.t.Helper()
	var out map[string]any
	e.must(want, token, method, path, body, &out)
	return out
}

// checkLinks checks a resource's links: self and bookmark, both the
// absolute URL of the resource under project, which token can GET.
func (e *env) checkLinks(what string, token, project, kind string, r map[string]any) {
	t := e.t
	t.Helper()
	id, _ := r["id"].(string)
	want := fmt.Sprintf("%s/v3/%s/%ss/%s", e.srv.URL, project, kind, id)
	wantLinks := []any{map[string]any{"rel": "self", "href": want}, map[string]any{"rel": "bookmark", "href": want}}
	if !reflect.DeepEqual(r["links"], wantLinks) {
		t.Errorf("%s: links %v, want self and bookmark %s", what, r["links"], want)
		return
	}
	got := e.call(200, token, "GET", strings.TrimPrefix(want, e.srv.URL), nil)
	if o := object(t, what+": following its link", got, kind); o["id"] != id {
		t.Errorf("%s: its link leads to %v", what, o["id"])
	}
}

// TestBlockStorageAnswers checks every member of the answers of the
// volume, snapshot, backup and limits calls, and the values of those
// cairn has one of or none of.
func TestBlockStorageAnswers(t *testing.T) {
	e := newEnv(t)
	const A = "/v3/alpha"

	// Volumes. The create takes the one availability zone and volume
	// type by name.
	out := e.call(202, e.tokA, "POST", A+"/volumes", map[string]any{"volume": map[string]any{"size": 1, "name": "one",
		"availability_zone": "nova", "volume_type": "__DEFAULT__", "metadata": map[string]string{"a": "b"}}})
	v := object(t, "volume create", out, "volume")
	members(t, "volume create", v, volumeMembers)
	vol, _ := v["id"].(string)
	if r := e.wait(e.tokA, "alpha", "volume", vol); r["status"] != "available" {
		t.Fatalf("volume %s: %v", vol, r)
	}
	constant := map[string]any{"availability_zone": "nova", "volume_type": "__DEFAULT__",
		"replication_status": "disabled", "encrypted": false, "multiattach": false, "consistencygroup_id": nil,
		"source_volid": nil, "bootable": "false"}
	values(t, "volume create", v, constant)
	if u, _ := v["user_id"].(string); u == "" {
		t.Errorf("volume create: user_id empty, want the token's ID")
	}
	constant["os-vol-tenant-attr:tenant_id"] = "alpha"
	v = object(t, "volume show", e.call(200, e.tokA, "GET", A+"/volumes/"+vol, nil), "volume")
	members(t, "volume show", v, volumeShowMembers)
	values(t, "volume show", v, constant)
	values(t, "volume show", v, map[string]any{"id": vol, "name": "one", "size": 1.0, "status": "available",
		"snapshot_id": nil, "attachments": []any{}, "metadata": map[string]any{"a": "b"}})
	e.checkLinks("volume show", e.tokA, "alpha", "volume", v)

	// An update under the block storage API's older names, as the
	// openstack command sends it.
	v = object(t, "volume update", e.call(200, e.tokA, "PUT", A+"/volumes/"+vol,
		map[string]any{"volume": map[string]any{"display_name": "two", "display_description": "the second"}}), "volume")
	members(t, "volume update", v, volumeMembers)
	values(t, "volume update", v, map[string]any{"name": "two", "description": "the second"})
	v = object(t, "volume show", e.call(200, e.tokA, "GET", A+"/volumes/"+vol, nil), "volume")
	values(t, "volume show after the update", v, map[string]any{"name": "two", "description": "the second"})

	for _, r := range items(t, "volume list", e.call(200, e.tokA, "GET", A+"/volumes", nil), "volumes") {
		members(t, "volume list", r, summaryMembers)
		values(t, "volume list", r, map[string]any{"id": vol, "name": "two"})
		e.checkLinks("volume list", e.tokA, "alpha", "volume", r)
	}
	for _, r := range items(t, "volume detail list", e.call(200, e.tokA, "GET", A+"/volumes/detail", nil), "volumes") {
		members(t, "volume detail list", r, volumeShowMembers)
		values(t, "volume detail list", r, constant)
		e.checkLinks("volume detail list", e.tokA, "alpha", "volume", r)
	}
	// An admin's list of every project links each volume under the
	// admin's URL project, where the admin may follow it.
	all := items(t, "admin's volume list", e.call(200, e.admin, "GET", "/v3/admin/volumes?all_tenants=1", nil), "volumes")
	if len(all) != 1 {
		t.Fatalf("admin's list of every project's volumes: %v", all)
	}
	e.checkLinks("admin's volume list", e.admin, "admin", "volume", all[0])

	// Snapshots: the create answers the summary, show the details.
	out = e.call(202, e.tokA, "POST", A+"/snapshots", map[string]any{"snapshot": map[string]any{"volume_id": vol,
		"name": "s1", "metadata": map[string]string{"x": "y"}}})
	s := object(t, "snapshot create", out, "snapshot")
	members(t, "snapshot create", s, snapshotSummaryMembers)
	snap, _ := s["id"].(string)
	values(t, "snapshot create", s, map[string]any{"name": "s1", "volume_id": vol, "size": 1.0, "metadata": map[string]any{"x": "y"}})
	if r := e.wait(e.tokA, "alpha", "snapshot", snap); r["status"] != "available" {
		t.Fatalf("snapshot %s: %v", snap, r)
	}
	s = object(t, "snapshot show", e.call(200, e.tokA, "GET", A+"/snapshots/"+snap, nil), "snapshot")
	members(t, "snapshot show", s, snapshotMembers)
	snapValues := map[string]any{"id": snap, "name": "s1", "status": "available",
		"os-extended-snapshot-attributes:project_id": "alpha", "os-extended-snapshot-attributes:progress": "100%",
		"metadata": map[string]any{"x": "y"}}
	values(t, "snapshot show", s, snapValues)
	for _, r := range items(t, "snapshot list", e.call(200, e.tokA, "GET", A+"/snapshots", nil), "snapshots") {
		members(t, "snapshot list", r, snapshotSummaryMembers)
		values(t, "snapshot list", r, map[string]any{"id": snap, "status": "available", "metadata": map[string]any{"x": "y"}})
	}
	for _, r := range items(t, "snapshot detail list", e.call(200, e.tokA, "GET", A+"/snapshots/detail", nil), "snapshots") {
		members(t, "snapshot detail list", r, snapshotMembers)
		values(t, "snapshot detail list", r, snapValues)
	}

	// Backups: the create answers the summary, show the details.
	out = e.call(202, e.tokA, "POST", A+"/backups", map[string]any{"backup": map[string]any{"volume_id": vol, "name": "b1"}})
	b := object(t, "backup create", out, "backup")
	members(t, "backup create", b, summaryMembers)
	values(t, "backup create", b, map[string]any{"name": "b1"})
	e.checkLinks("backup create", e.tokA, "alpha", "backup", b)
	backup, _ := b["id"].(string)
	if r := e.wait(e.tokA, "alpha", "backup", backup); r["status"] != "available" {
		t.Fatalf("backup %s: %v", backup, r)
	}
	b = object(t, "backup show", e.call(200, e.tokA, "GET", A+"/backups/"+backup, nil), "backup")
	members(t, "backup show", b, backupMembers)
	values(t, "backup show", b, map[string]any{"id": backup, "name": "b1", "volume_id": vol, "status": "available",
		"fail_reason": nil, "snapshot_id": nil, "is_incremental": false,
		"os-backup-project-attr:project_id": "alpha"})
	e.checkLinks("backup show", e.tokA, "alpha", "backup", b)
	for _, r := range items(t, "backup list", e.call(200, e.tokA, "GET", A+"/backups", nil), "backups") {
		members(t, "backup list", r, summaryMembers)
		values(t, "backup list", r, map[string]any{"id": backup, "name": "b1"})
		e.checkLinks("backup list", e.tokA, "alpha", "backup", r)
	}
	for _, r := range items(t, "backup detail list", e.call(200, e.tokA, "GET", A+"/backups/detail", nil), "backups") {
		members(t, "backup detail list", r, backupMembers)
		e.checkLinks("backup detail list", e.tokA, "alpha", "backup", r)
	}

	// An admin's reset of the snapshot to error leaves its progress: it
	// was made.
	e.must(202, e.admin, "POST", A+"/snapshots/"+snap+"/action", map[string]any{"os-reset_status": map[string]any{"status": "error"}}, nil)
	s = object(t, "snapshot show", e.call(200, e.tokA, "GET", A+"/snapshots/"+snap, nil), "snapshot")
	values(t, "snapshot reset to error", s, map[string]any{"status": "error", "os-extended-snapshot-attributes:progress": "100%"})

	// Limits: no rate limits; alpha's quotas (unlimited) and usage: one
	// volume and one snapshot of 1 GiB each, one backup of 1 GiB.
	l := object(t, "limits", e.call(200, e.tokA, "GET", A+"/limits", nil), "limits")
	members(t, "limits", l, []string{"rate", "absolute"})
	if !reflect.DeepEqual(l["rate"], []any{}) {
		t.Errorf("limits: rate %#v, want []", l["rate"])
	}
	abs := object(t, "limits", l, "absolute")
	members(t, "limits.absolute", abs, absoluteLimits)
	values(t, "limits.absolute", abs, map[string]any{"maxTotalVolumes": -1.0, "maxTotalSnapshots": -1.0,
		"maxTotalVolumeGigabytes": -1.0, "maxTotalBackups": -1.0, "maxTotalBackupGigabytes": -1.0,
		"totalVolumesUsed": 1.0, "totalGigabytesUsed": 2.0, "totalSnapshotsUsed": 1.0, "totalBackupsUsed": 1.0,
		"totalBackupGigabytesUsed": 1.0})

	// Each quota in its place: a project whose quotas all differ.
	tok := e.project("quotas", false, cairn.Quota{Volumes: 1, Gigabytes: 2, Snapshots: 3, Backups: 4, BackupGigabytes: 5, PerVolumeGigabytes: -1})
	abs = object(t, "limits", object(t, "limits", e.call(200, tok, "GET", "/v3/quotas/limits", nil), "limits"), "absolute")
	values(t, "limits.absolute of quotas", abs, map[string]any{"maxTotalVolumes": 1.0, "maxTotalVolumeGigabytes": 2.0,
		"maxTotalSnapshots": 3.0, "maxTotalBackups": 4.0, "maxTotalBackupGigabytes": 5.0,
		"totalVolumesUsed": 0.0, "totalGigabytesUsed": 0.0, "totalSnapshotsUsed": 0.0, "totalBackupsUsed": 0.0,
		"totalBackupGigabytesUsed": 0.0})
}

// failSnapshots is a volume engine that cannot take snapshots.
type failSnapshots struct{ service.Engine }

func (failSnapshots) CreateSnapshot(context.Context, cairn.ID, string) (volume.SnapshotInfo, error) {
	return volume.SnapshotInfo{}, errors.New("no room for a snapshot")
}

// TestSnapshotProgressOfAFailedSnapshot: a snapshot whose taking failed
// is in error with progress 0%: it was never made.
func TestSnapshotProgressOfAFailedSnapshot(t *testing.T) {
	e := newEnvAt(t, t.TempDir(), filepath.Join(t.TempDir(), "backups"), func(c *service.Config) {
		c.Engine = failSnapshots{c.Engine}
	})
	vol := e.createVolume(e.tokA, "alpha", 1, "v")
	s := object(t, "snapshot create", e.call(202, e.tokA, "POST", "/v3/alpha/snapshots",
		map[string]any{"snapshot": map[string]any{"volume_id": vol}}), "snapshot")
	id, _ := s["id"].(string)
	if r := e.wait(e.tokA, "alpha", "snapshot", id); r["status"] != "error" {
		t.Fatalf("snapshot %s: %v", id, r)
	}
	s = object(t, "snapshot show", e.call(200, e.tokA, "GET", "/v3/alpha/snapshots/"+id, nil), "snapshot")
	members(t, "failed snapshot", s, snapshotMembers)
	// The reason is cairn's own member: asked for, as cairn's client does.
	e.members = true
	s = object(t, "snapshot show", e.call(200, e.tokA, "GET", "/v3/alpha/snapshots/"+id, nil), "snapshot")
	e.members = false
	members(t, "failed snapshot with cairn's members", s, append(slices.Clone(snapshotMembers), "fail_reason"))
	values(t, "failed snapshot", s, map[string]any{"status": "error", "os-extended-snapshot-attributes:progress": "0%"})
	if reason, _ := s["fail_reason"].(string); reason == "" {
		t.Errorf("failed snapshot: no fail_reason: %v", s)
	}
}

// TestVolumeCreateZoneAndType: a create names the one availability
// zone and a volume type, or none (null or ""); another zone is
// refused, a missing type not found, and neither creates anything.
func TestVolumeCreateZoneAndType(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		zone, typ any
		code      int
		message   string
	}{
		{nil, nil, 202, ""},
		{"", "", 202, ""},
		{"nova", "__DEFAULT__", 202, ""},
		{"nova", nil, 202, ""},
		{"Nova", nil, 400, `volume.availability_zone "Nova": cairn has no availability zones but nova`},
		{nil, "ssd", 404, `volume_type "ssd": no such volume type`},
	} {
		before := e.state()
		var out map[string]map[string]any
		code := e.do(e.tokA, "POST", "/v3/alpha/volumes", map[string]any{"volume": map[string]any{"size": 1,
			"availability_zone": c.zone, "volume_type": c.typ}}, &out)
		if code != c.code {
			t.Fatalf("zone %v, type %v: %d %v, want %d", c.zone, c.typ, code, out, c.code)
		}
		if c.code != 202 {
			if msg, _ := out[map[int]string{400: "badRequest", 404: "itemNotFound"}[c.code]]["message"].(string); !strings.Contains(msg, c.message) {
				t.Errorf("zone %v, type %v: message %q, want %q", c.zone, c.typ, msg, c.message)
			}
			if after := e.state(); !reflect.DeepEqual(before, after) {
				t.Errorf("zone %v, type %v: refused, but the catalog changed", c.zone, c.typ)
			}
			continue
		}
		values(t, fmt.Sprintf("zone %v, type %v", c.zone, c.typ), out["volume"],
			map[string]any{"availability_zone": "nova", "volume_type": "__DEFAULT__"})
		e.wait(e.tokA, "alpha", "volume", out["volume"]["id"].(string))
		e.settle()
	}
}
