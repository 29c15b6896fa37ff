package api_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/cairnproject/cairn/internal/service"
)

// okJSON runs a command that must succeed and prints JSON (-f json), and
// returns what it printed, decoded into out.
func (c *cinderCLI) okJSON(out any, args ...string) {
	c.t.Helper()
	stdout := c.ok(args...)
	if err := json.Unmarshal([]byte(stdout), out); err != nil {
		c.t.Fatalf("%s %s: output %q: %v", c.prog, strings.Join(args, " "), stdout, err)
	}
}

// TestOpenStackVolumes runs the openstack command's volume, snapshot and
// backup commands against the API at microversion 3.0: create (which
// reads the answer's volume_type and metadata), show, list, set --name
// (which sends display_name), snapshot and backup create, show and list,
// the absolute limits, and the deletes. Each must exit 0; the fields
// they print are the API's, and the catalog holds what they did.
func TestOpenStackVolumes(t *testing.T) {
	c := newOpenStackVolumeCLI(t)
	e := c.env
	alpha := service.Caller{ProjectID: "alpha"}

	var vol map[string]any
	c.okJSON(&vol, "volume", "create", "--size", "1", "one", "-f", "json")
	// The command shows metadata as properties, volume_type as type.
	checkFields(t, "volume create", vol, map[string]any{"name": "one", "size": 1, "type": "__DEFAULT__",
		"availability_zone": "nova", "properties": map[string]any{}, "bootable": "false", "encrypted": false,
		"multiattach": false})
	if u, _ := vol["user_id"].(string); u == "" {
		t.Errorf("volume create: user_id empty, want the token's ID")
	}
	id, _ := vol["id"].(string)
	if r := e.wait(e.tokA, "alpha", "volume", id); r["status"] != "available" {
		t.Fatalf("volume %s: %v", id, r)
	}

	c.okJSON(&vol, "volume", "show", "one", "-f", "json")
	checkFields(t, "volume show", vol, map[string]any{"id": id, "name": "one", "status": "available", "size": 1,
		"type": "__DEFAULT__", "availability_zone": "nova", "replication_status": "disabled",
		"os-vol-tenant-attr:tenant_id": "alpha", "attachments": []any{}, "properties": map[string]any{},
		"consistencygroup_id": nil, "source_volid": nil, "snapshot_id": nil})
	if _, ok := vol["links"]; ok {
		t.Errorf("volume show printed links (the command drops them): %v", vol)
	}

	var vols []map[string]any
	c.okJSON(&vols, "volume", "list", "-f", "json")
	if len(vols) != 1 {
		t.Fatalf("volume list: %v", vols)
	}
	checkFields(t, "volume list", vols[0], map[string]any{"ID": id, "Name": "one", "Status": "available", "Size": 1})

	// set --name sends the block storage API's older name, display_name.
	code, stdout, stderr, reqs := c.run("volume", "set", "--name", "two", "one")
	if code != 0 {
		t.Fatalf("volume set --name two one: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if put := lastRequest(t, reqs, "PUT"); string(put.Body) != `{"volume": {"display_name": "two"}}` {
		t.Errorf("volume set sent %s", put)
	}
	if v, err := e.svc.Volume(t.Context(), alpha, id); err != nil || v.Name != "two" {
		t.Fatalf("volume set --name two: the catalog holds %+v %v", v, err)
	}

	var snap map[string]any
	c.okJSON(&snap, "volume", "snapshot", "create", "--volume", "two", "s1", "-f", "json")
	checkFields(t, "snapshot create", snap, map[string]any{"name": "s1", "volume_id": id, "size": 1,
		"properties": map[string]any{}})
	sid, _ := snap["id"].(string)
	if r := e.wait(e.tokA, "alpha", "snapshot", sid); r["status"] != "available" {
		t.Fatalf("snapshot %s: %v", sid, r)
	}
	c.okJSON(&snap, "volume", "snapshot", "show", "s1", "-f", "json")
	checkFields(t, "snapshot show", snap, map[string]any{"id": sid, "name": "s1", "status": "available",
		"volume_id": id, "os-extended-snapshot-attributes:progress": "100%",
		"os-extended-snapshot-attributes:project_id": "alpha", "properties": map[string]any{}})
	var snaps []map[string]any
	c.okJSON(&snaps, "volume", "snapshot", "list", "-f", "json")
	if len(snaps) != 1 {
		t.Fatalf("snapshot list: %v", snaps)
	}
	checkFields(t, "snapshot list", snaps[0], map[string]any{"ID": sid, "Name": "s1", "Status": "available", "Size": 1})

	// The backup create prints the answer: the backup's ID and name.
	var backup map[string]any
	c.okJSON(&backup, "volume", "backup", "create", "--name", "b1", "two", "-f", "json")
	bid, _ := backup["id"].(string)
	if len(backup) != 2 || backup["name"] != "b1" || bid == "" {
		t.Errorf("backup create printed %v, want its id and name", backup)
	}
	if r := e.wait(e.tokA, "alpha", "backup", bid); r["status"] != "available" {
		t.Fatalf("backup %s: %v", bid, r)
	}
	c.okJSON(&backup, "volume", "backup", "show", "b1", "-f", "json")
	checkFields(t, "backup show", backup, map[string]any{"id": bid, "name": "b1", "status": "available",
		"volume_id": id, "size": 1, "container": "volumebackups", "is_incremental": false, "fail_reason": nil,
		"os-backup-project-attr:project_id": "alpha"})
	var backups []map[string]any
	c.okJSON(&backups, "volume", "backup", "list", "-f", "json")
	if len(backups) != 1 {
		t.Fatalf("backup list: %v", backups)
	}
	checkFields(t, "backup list", backups[0], map[string]any{"ID": bid, "Name": "b1", "Status": "available", "Size": 1})

	// The absolute limits, by the block storage API's names. (The
	// command asks the one endpoint twice, as block storage and as
	// compute, and prints both.)
	var limits []map[string]any
	c.okJSON(&limits, "limits", "show", "--absolute", "-f", "json")
	got := map[string]any{}
	for _, l := range limits {
		got[l["Name"].(string)] = l["Value"]
	}
	checkFields(t, "limits show --absolute", got, map[string]any{"maxTotalVolumes": -1, "maxTotalSnapshots": -1,
		"maxTotalVolumeGigabytes": -1, "maxTotalBackups": -1, "maxTotalBackupGigabytes": -1,
		"totalVolumesUsed": 1, "totalGigabytesUsed": 2, "totalSnapshotsUsed": 1, "totalBackupsUsed": 1,
		"totalBackupGigabytesUsed": 1})

	// The deletes, each by name.
	c.ok("volume", "backup", "delete", "b1")
	if r := e.wait(e.tokA, "alpha", "backup", bid); r != nil {
		t.Fatalf("backup after its delete: %v", r)
	}
	c.ok("volume", "snapshot", "delete", "s1")
	if r := e.wait(e.tokA, "alpha", "snapshot", sid); r != nil {
		t.Fatalf("snapshot after its delete: %v", r)
	}
	c.ok("volume", "delete", "two")
	if r := e.wait(e.tokA, "alpha", "volume", id); r != nil {
		t.Fatalf("volume after its delete: %v", r)
	}
	if s := e.state(); len(s.Volumes)+len(s.Snapshots)+len(s.Backups) != 0 {
		t.Errorf("after the deletes the catalog holds %+v", s)
	}
}

// lastRequest returns the last request of reqs with method.
func lastRequest(t *testing.T, reqs []captured, method string) captured {
	t.Helper()
	for i := len(reqs) - 1; i >= 0; i-- {
		if reqs[i].Method == method {
			return reqs[i]
		}
	}
	t.Fatalf("no %s request among\n%s", method, formatRequests(reqs))
	return captured{}
}

// TestOpenStackVolumeProperties: the openstack command's properties (the
// block storage API's metadata) of a volume and a snapshot: `volume set
// --property` adds through the metadata call, `volume unset --property`
// removes an item, `volume snapshot set` renames a snapshot (PUT of the
// snapshot) and adds to its properties, `volume snapshot unset` removes
// one. Each exits 0, the catalog holds what it asked for, and show
// prints it.
func TestOpenStackVolumeProperties(t *testing.T) {
	c := newOpenStackVolumeCLI(t)
	e := c.env
	ctx := t.Context()
	alpha := service.Caller{ProjectID: "alpha"}
	id := e.createVolume(e.tokA, "alpha", 1, "one")
	storedVolume := func(what string, want map[string]string) {
		t.Helper()
		v, err := e.svc.Volume(ctx, alpha, id)
		if err != nil || !reflect.DeepEqual(v.Metadata, want) {
			t.Errorf("%s: the catalog holds %v %v, want %v", what, v.Metadata, err, want)
		}
	}

	c.ok("volume", "set", "--property", "c=d", "--property", "e=f", "one")
	storedVolume("volume set --property c=d --property e=f", map[string]string{"c": "d", "e": "f"})
	var vol map[string]any
	c.okJSON(&vol, "volume", "show", "one", "-f", "json")
	checkFields(t, "volume show", vol, map[string]any{"properties": map[string]any{"c": "d", "e": "f"}})
	code, stdout, stderr, reqs := c.run("volume", "unset", "--property", "c", "one")
	if code != 0 {
		t.Fatalf("volume unset --property c one: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if del := lastRequest(t, reqs, "DELETE"); del.Path != "/v3/alpha/volumes/"+id+"/metadata/c" {
		t.Errorf("volume unset --property c sent %s", del)
	}
	storedVolume("volume unset --property c", map[string]string{"e": "f"})
	// Unsetting a property the volume does not have fails, as the block
	// storage API answers 404.
	if code, _, _, _ := c.run("volume", "unset", "--property", "nope", "one"); code == 0 {
		t.Errorf("volume unset --property nope exited 0")
	}
	storedVolume("volume unset --property nope", map[string]string{"e": "f"})

	var snap map[string]any
	c.okJSON(&snap, "volume", "snapshot", "create", "--volume", "one", "s1", "-f", "json")
	sid, _ := snap["id"].(string)
	e.wait(e.tokA, "alpha", "snapshot", sid)
	c.ok("volume", "snapshot", "set", "--name", "s2", "--property", "p=q", "s1")
	s, err := e.svc.Snapshot(ctx, alpha, sid)
	if err != nil || s.Name != "s2" || !reflect.DeepEqual(s.Metadata, map[string]string{"p": "q"}) {
		t.Fatalf("volume snapshot set --name s2 --property p=q s1: the catalog holds %+v %v", s, err)
	}
	c.okJSON(&snap, "volume", "snapshot", "show", "s2", "-f", "json")
	checkFields(t, "snapshot show", snap, map[string]any{"id": sid, "name": "s2", "properties": map[string]any{"p": "q"}})
	c.ok("volume", "snapshot", "set", "--description", "about", "--property", "r=s", "s2")
	c.ok("volume", "snapshot", "unset", "--property", "p", "s2")
	s, err = e.svc.Snapshot(ctx, alpha, sid)
	if err != nil || s.Name != "s2" || s.Description != "about" || !reflect.DeepEqual(s.Metadata, map[string]string{"r": "s"}) {
		t.Errorf("after snapshot set --description and unset --property p: the catalog holds %+v %v", s, err)
	}
	e.settle()
}
