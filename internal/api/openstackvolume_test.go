package api_test

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/wire"
)

// TestOpenStackVolumes runs the openstack command's volume, snapshot and
// backup commands against the API at microversion 3.0, once with cairn's
// tokens and once through Keystone: create (which reads the answer's
// volume_type and metadata), show, list, set --name (which sends
// display_name), extend (set --size), snapshot and backup create
// (incremental too), show and list, restore into a new volume and over
// an existing one, the backup record's export and its import into a
// second deployment that shares the container, the absolute limits,
// and the deletes. Each must exit 0; the fields they print are the
// API's, the catalog holds what they did, and every restore holds the
// backed-up bytes.
func TestOpenStackVolumes(t *testing.T) {
	forEachAuth(t, func(t *testing.T, c *clientCloud) {
		e := c.env
		P := c.project

		var vol map[string]any
		c.openstack(&vol, "volume", "create", "--size", "1", "one", "-f", "json")
		// The command shows metadata as properties, volume_type as type.
		checkFields(t, "volume create", vol, map[string]any{"name": "one", "size": 1, "type": "__DEFAULT__",
			"availability_zone": "nova", "properties": map[string]any{}, "bootable": "false", "encrypted": false,
			"multiattach": false})
		if u, _ := vol["user_id"].(string); u == "" || (c.auth == keystoneLogin && u != c.member.id) {
			t.Errorf("volume create: user_id %q, want the token's user", u)
		}
		id, _ := vol["id"].(string)
		if r := c.wait("volume", id); r["status"] != "available" {
			t.Fatalf("volume %s: %v", id, r)
		}
		// Data to back up: a block at the start and one at the end.
		block := bytes.Repeat([]byte("cairn-openstack!"), 4096)
		e.write(id, 0, block)
		e.write(id, 1<<30-int64(len(block)), block)
		want := e.digest(id, 1<<30)

		c.openstack(&vol, "volume", "show", "one", "-f", "json")
		checkFields(t, "volume show", vol, map[string]any{"id": id, "name": "one", "status": "available", "size": 1,
			"type": "__DEFAULT__", "availability_zone": "nova", "replication_status": "disabled",
			"os-vol-tenant-attr:tenant_id": P, "attachments": []any{}, "properties": map[string]any{},
			"consistencygroup_id": nil, "source_volid": nil, "snapshot_id": nil})
		if _, ok := vol["links"]; ok {
			t.Errorf("volume show printed links (the command drops them): %v", vol)
		}

		var vols []map[string]any
		c.openstack(&vols, "volume", "list", "-f", "json")
		if len(vols) != 1 {
			t.Fatalf("volume list: %v", vols)
		}
		checkFields(t, "volume list", vols[0], map[string]any{"ID": id, "Name": "one", "Status": "available", "Size": 1})

		// set --name sends the block storage API's older name, display_name.
		code, stdout, stderr, reqs := c.run(c.member, "openstack", "volume", "set", "--name", "two", "one")
		if code != 0 {
			t.Fatalf("volume set --name two one: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		if put := lastRequest(t, reqs, "PUT"); string(put.Body) != `{"volume": {"display_name": "two"}}` {
			t.Errorf("volume set sent %s", put)
		}
		if v, err := e.svc.Volume(t.Context(), c.caller(), id); err != nil || v.Name != "two" {
			t.Fatalf("volume set --name two: the catalog holds %+v %v", v, err)
		}

		var snap map[string]any
		c.openstack(&snap, "volume", "snapshot", "create", "--volume", "two", "s1", "-f", "json")
		checkFields(t, "snapshot create", snap, map[string]any{"name": "s1", "volume_id": id, "size": 1,
			"properties": map[string]any{}})
		sid, _ := snap["id"].(string)
		if r := c.wait("snapshot", sid); r["status"] != "available" {
			t.Fatalf("snapshot %s: %v", sid, r)
		}
		c.openstack(&snap, "volume", "snapshot", "show", "s1", "-f", "json")
		checkFields(t, "snapshot show", snap, map[string]any{"id": sid, "name": "s1", "status": "available",
			"volume_id": id, "os-extended-snapshot-attributes:progress": "100%",
			"os-extended-snapshot-attributes:project_id": P, "properties": map[string]any{}})
		var snaps []map[string]any
		c.openstack(&snaps, "volume", "snapshot", "list", "-f", "json")
		if len(snaps) != 1 {
			t.Fatalf("snapshot list: %v", snaps)
		}
		checkFields(t, "snapshot list", snaps[0], map[string]any{"ID": sid, "Name": "s1", "Status": "available", "Size": 1})

		// The backup create prints the answer: the backup's ID and name.
		var backup map[string]any
		c.openstack(&backup, "volume", "backup", "create", "--name", "b1", "two", "-f", "json")
		bid, _ := backup["id"].(string)
		if len(backup) != 2 || backup["name"] != "b1" || bid == "" {
			t.Errorf("backup create printed %v, want its id and name", backup)
		}
		if r := c.wait("backup", bid); r["status"] != "available" {
			t.Fatalf("backup %s: %v", bid, r)
		}
		c.openstack(&backup, "volume", "backup", "show", "b1", "-f", "json")
		checkFields(t, "backup show", backup, map[string]any{"id": bid, "name": "b1", "status": "available",
			"volume_id": id, "size": 1, "container": "volumebackups", "is_incremental": false, "fail_reason": nil,
			"os-backup-project-attr:project_id": P})

		// Extend (the command's set --size): then an incremental backup
		// of the larger volume.
		c.ok(c.member, "openstack", "volume", "set", "--size", "2", "two")
		if r := c.wait("volume", id); r["status"] != "available" || fmt.Sprint(r["size"]) != "2" {
			t.Fatalf("volume set --size 2: %v", r)
		}
		c.openstack(&backup, "volume", "backup", "create", "--incremental", "--name", "b2", "two", "-f", "json")
		bid2, _ := backup["id"].(string)
		if r := c.wait("backup", bid2); r["status"] != "available" || r["is_incremental"] != true || fmt.Sprint(r["size"]) != "2" {
			t.Fatalf("incremental backup %s: %v", bid2, r)
		}
		var backups []map[string]any
		c.openstack(&backups, "volume", "backup", "list", "-f", "json")
		if len(backups) != 2 {
			t.Fatalf("backup list: %v", backups)
		}
		slices.SortFunc(backups, func(a, b map[string]any) int { return strings.Compare(fmt.Sprint(a["Name"]), fmt.Sprint(b["Name"])) })
		checkFields(t, "backup list", backups[0], map[string]any{"ID": bid, "Name": "b1", "Status": "available", "Size": 1})
		checkFields(t, "backup list", backups[1], map[string]any{"ID": bid2, "Name": "b2", "Status": "available", "Size": 2})

		// Restore into a new volume, named by the command.
		restore := func(cc *clientCloud, args ...string) captured {
			t.Helper()
			code, stdout, stderr, reqs := cc.run(cc.member, "openstack", append([]string{"volume", "backup", "restore"}, args...)...)
			// OSC 6.0 sends the restore, then fails to print the answer:
			// its command returns cinderclient's restore object where
			// the columns and values are due. The restore is judged by
			// the request it sent and the volume it made.
			if code != 0 && strings.TrimSpace(stderr) != "cannot unpack non-iterable VolumeBackupsRestore object" {
				t.Fatalf("volume backup restore %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, stdout, stderr)
			}
			return lastRequest(t, reqs, "POST")
		}
		var restored map[string]any
		if post := restore(c, "b1", "restored"); post.Path != "/v3/"+P+"/backups/"+bid+"/restore" ||
			string(post.Body) != `{"restore": {"volume_id": null, "name": "restored"}}` {
			t.Errorf("volume backup restore b1 restored sent %s", post)
		}
		c.openstack(&restored, "volume", "show", "restored", "-f", "json")
		rid, _ := restored["id"].(string)
		if r := c.wait("volume", rid); r["status"] != "available" || r["name"] != "restored" || fmt.Sprint(r["size"]) != "1" {
			t.Fatalf("restored volume %s: %v", rid, r)
		}
		if e.digest(rid, 1<<30) != want {
			t.Errorf("the volume restored from b1 does not hold the backed-up bytes")
		}
		// And over an existing volume, which needs --force.
		if code, _, stderr, _ := c.run(c.member, "openstack", "volume", "backup", "restore", "b1", "restored"); code == 0 ||
			!strings.Contains(stderr, "--force") {
			t.Errorf("restore over an existing volume without --force: exit %d, %s", code, stderr)
		}
		e.write(rid, 0, bytes.Repeat([]byte{0xee}, 4096))
		if post := restore(c, "--force", "b1", "restored"); string(post.Body) != `{"restore": {"volume_id": "`+rid+`", "name": null}}` {
			t.Errorf("volume backup restore --force b1 restored sent %s", post)
		}
		if r := c.wait("volume", rid); r["status"] != "available" {
			t.Fatalf("volume %s after the restore over it: %v", rid, r)
		}
		if e.digest(rid, 1<<30) != want {
			t.Errorf("the volume b1 was restored over does not hold the backed-up bytes")
		}

		// The record: exported here, imported by a second deployment with
		// its own catalog and the same container, and restored there.
		var record map[string]any
		c.openstack(&record, "volume", "backup", "record", "export", "b1", "-f", "json")
		if record["backup_service"] != "cairn.repository" || record["backup_url"] == "" {
			t.Fatalf("backup record export printed %v", record)
		}
		second := c.sibling()
		var imported map[string]any
		second.openstack(&imported, "volume", "backup", "record", "import", record["backup_service"].(string),
			record["backup_url"].(string), "-f", "json")
		if imported["id"] != bid || imported["name"] != "b1" {
			t.Errorf("backup record import printed %v, want backup %s", imported, bid)
		}
		second.openstack(&backup, "volume", "backup", "show", bid, "-f", "json")
		checkFields(t, "the imported backup", backup, map[string]any{"id": bid, "status": "available", "size": 1,
			"os-backup-project-attr:project_id": second.project})
		restore(second, bid, "from-record")
		second.openstack(&restored, "volume", "show", "from-record", "-f", "json")
		rid2, _ := restored["id"].(string)
		if r := second.wait("volume", rid2); r["status"] != "available" {
			t.Fatalf("the volume restored from the imported record: %v", r)
		}
		if second.env.digest(rid2, 1<<30) != want {
			t.Errorf("the volume restored from the imported record does not hold the backed-up bytes")
		}

		// The absolute limits, by the block storage API's names.
		limitsArgs := []string{"limits", "show", "--absolute", "-f", "json"}
		if c.auth == keystoneLogin {
			// OSC 6.0 makes its compute client before it asks the catalog
			// whether there is a compute service: through Keystone, on a
			// cloud without one, the command fails whatever the block
			// storage service answers. `cinder absolute-limits` and
			// cinderclient's API read them there (TestCinderVolumes,
			// TestCinderClientPython).
			code, _, stderr, reqs := c.run(c.member, "openstack", limitsArgs...)
			if code == 0 || !strings.Contains(stderr, "endpoint for compute service") || len(reqs) != 0 {
				t.Errorf("limits show through Keystone: exit %d, %d requests, stderr %s", code, len(reqs), stderr)
			}
		} else {
			// With one endpoint given, the command asks it twice, as
			// block storage and as compute, and prints both.
			var limits []map[string]any
			c.openstack(&limits, limitsArgs...)
			got := map[string]any{}
			for _, l := range limits {
				got[l["Name"].(string)] = l["Value"]
			}
			q := c.quota
			checkFields(t, "limits show --absolute", got, map[string]any{"maxTotalVolumes": q.Volumes,
				"maxTotalSnapshots": q.Snapshots, "maxTotalVolumeGigabytes": q.Gigabytes, "maxTotalBackups": q.Backups,
				"maxTotalBackupGigabytes": q.BackupGigabytes, "totalVolumesUsed": 2, "totalGigabytesUsed": 4,
				"totalSnapshotsUsed": 1, "totalBackupsUsed": 2, "totalBackupGigabytesUsed": 3})
		}

		// The deletes, each by name; the incremental one first.
		for _, tc := range []struct{ kind, name, id string }{
			{"backup", "b2", bid2}, {"backup", "b1", bid}, {"snapshot", "s1", sid},
			{"", "restored", rid}, {"", "two", id},
		} {
			if tc.kind == "" {
				c.ok(c.member, "openstack", "volume", "delete", tc.name)
				tc.kind = "volume"
			} else {
				c.ok(c.member, "openstack", "volume", tc.kind, "delete", tc.name)
			}
			if r := c.wait(tc.kind, tc.id); r != nil {
				t.Fatalf("%s %s after its delete: %v", tc.kind, tc.name, r)
			}
		}
		if s := e.state(); len(s.Volumes)+len(s.Snapshots)+len(s.Backups) != 0 {
			t.Errorf("after the deletes the catalog holds %+v", s)
		}
	})
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
	forEachAuth(t, func(t *testing.T, c *clientCloud) {
		e := c.env
		ctx := t.Context()
		var vol map[string]any
		c.openstack(&vol, "volume", "create", "--size", "1", "one", "-f", "json")
		id, _ := vol["id"].(string)
		c.wait("volume", id)
		storedVolume := func(what string, want map[string]string) {
			t.Helper()
			v, err := e.svc.Volume(ctx, c.caller(), id)
			if err != nil || !reflect.DeepEqual(v.Metadata, want) {
				t.Errorf("%s: the catalog holds %v %v, want %v", what, v.Metadata, err, want)
			}
		}

		c.ok(c.member, "openstack", "volume", "set", "--property", "c=d", "--property", "e=f", "one")
		storedVolume("volume set --property c=d --property e=f", map[string]string{"c": "d", "e": "f"})
		c.openstack(&vol, "volume", "show", "one", "-f", "json")
		checkFields(t, "volume show", vol, map[string]any{"properties": map[string]any{"c": "d", "e": "f"}})
		code, stdout, stderr, reqs := c.run(c.member, "openstack", "volume", "unset", "--property", "c", "one")
		if code != 0 {
			t.Fatalf("volume unset --property c one: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		if del := lastRequest(t, reqs, "DELETE"); del.Path != "/v3/"+c.project+"/volumes/"+id+"/metadata/c" {
			t.Errorf("volume unset --property c sent %s", del)
		}
		storedVolume("volume unset --property c", map[string]string{"e": "f"})
		// Unsetting a property the volume does not have fails, as the block
		// storage API answers 404.
		if code, _, _, _ := c.run(c.member, "openstack", "volume", "unset", "--property", "nope", "one"); code == 0 {
			t.Errorf("volume unset --property nope exited 0")
		}
		storedVolume("volume unset --property nope", map[string]string{"e": "f"})

		var snap map[string]any
		c.openstack(&snap, "volume", "snapshot", "create", "--volume", "one", "s1", "-f", "json")
		sid, _ := snap["id"].(string)
		c.wait("snapshot", sid)
		c.ok(c.member, "openstack", "volume", "snapshot", "set", "--name", "s2", "--property", "p=q", "s1")
		s, err := e.svc.Snapshot(ctx, c.caller(), sid)
		if err != nil || s.Name != "s2" || !reflect.DeepEqual(s.Metadata, map[string]string{"p": "q"}) {
			t.Fatalf("volume snapshot set --name s2 --property p=q s1: the catalog holds %+v %v", s, err)
		}
		c.openstack(&snap, "volume", "snapshot", "show", "s2", "-f", "json")
		checkFields(t, "snapshot show", snap, map[string]any{"id": sid, "name": "s2", "properties": map[string]any{"p": "q"}})
		c.ok(c.member, "openstack", "volume", "snapshot", "set", "--description", "about", "--property", "r=s", "s2")
		c.ok(c.member, "openstack", "volume", "snapshot", "unset", "--property", "p", "s2")
		s, err = e.svc.Snapshot(ctx, c.caller(), sid)
		if err != nil || s.Name != "s2" || s.Description != "about" || !reflect.DeepEqual(s.Metadata, map[string]string{"r": "s"}) {
			t.Errorf("after snapshot set --description and unset --property p: the catalog holds %+v %v", s, err)
		}
		e.settle()
	})
}

// TestOpenStackListPaging: lists longer than the API's page (100 items).
// The admin raises the project's quota with `cinder quota-update`; the
// project then holds 105 volumes, snapshots and backups, and another
// project one volume. The openstack command's volume, snapshot and
// backup lists, and `cinder list`, follow the next links (absolute, as
// the clients join them to nothing) and print all 105; the admin's
// `--all-projects` lists print both projects', the member's only its
// own.
func TestOpenStackListPaging(t *testing.T) {
	forEachAuth(t, func(t *testing.T, c *clientCloud) {
		e := c.env
		const n = 105
		// The first command of a Keystone project's member makes it a
		// cairn project.
		var list []map[string]any
		c.openstack(&list, "volume", "list", "-f", "json")
		if len(list) != 0 {
			t.Fatalf("volume list of a new project: %v", list)
		}
		out := c.ok(c.admin, "cinder", "quota-update", "--volumes", "200", "--snapshots", "200", "--backups", "200", c.project)
		if got := cinderField(t, out, "volumes"); got != "200" {
			t.Errorf("quota-update printed volumes %s, want 200:\n%s", got, out)
		}
		// The items themselves are made through the API, with a cairn
		// token of the project (which works alongside Keystone's).
		tok := e.project(c.project, false, cairn.Quota{})
		want := map[string][]string{}
		vol := e.createVolume(tok, c.project, 1, "v000")
		want["volume"] = append(want["volume"], vol)
		for i := 1; i < n; i++ {
			want["volume"] = append(want["volume"], e.createVolume(tok, c.project, 1, fmt.Sprintf("v%03d", i)))
		}
		for i := range n {
			var s struct{ Snapshot wire.Snapshot }
			e.must(202, tok, "POST", "/v3/"+c.project+"/snapshots", map[string]any{"snapshot": map[string]any{"volume_id": vol, "name": fmt.Sprintf("s%03d", i)}}, &s)
			want["snapshot"] = append(want["snapshot"], s.Snapshot.ID)
		}
		e.settle()
		for i := range n {
			var b struct{ Backup wire.Backup }
			e.must(202, tok, "POST", "/v3/"+c.project+"/backups", map[string]any{"backup": map[string]any{"volume_id": want["volume"][i], "name": fmt.Sprintf("b%03d", i)}}, &b)
			want["backup"] = append(want["backup"], b.Backup.ID)
		}
		e.settle()
		var theirs map[string]any
		c.okJSON(c.other, &theirs, "openstack", "volume", "create", "--size", "1", "theirs", "-f", "json")
		theirID, _ := theirs["id"].(string)
		e.wait(e.admin, c.other.project, "volume", theirID)

		ids := func(who clientUser, args ...string) []string {
			t.Helper()
			var rows []map[string]any
			reqs := c.okJSON(who, &rows, "openstack", append(args, "-f", "json")...)
			pages := 0
			for _, r := range reqs {
				if r.Method == "GET" && strings.Contains(r.Path, "marker=") {
					pages++
				}
			}
			if pages == 0 {
				t.Errorf("%s: no request of a second page:\n%s", strings.Join(args, " "), formatRequests(reqs))
			}
			var out []string
			for _, r := range rows {
				out = append(out, fmt.Sprint(r["ID"]))
			}
			slices.Sort(out)
			return out
		}
		for _, kind := range []string{"volume", "snapshot", "backup"} {
			args := []string{"volume", kind, "list"}
			if kind == "volume" {
				args = []string{"volume", "list"}
			}
			w := slices.Sorted(slices.Values(want[kind]))
			if got := ids(c.member, args...); !slices.Equal(got, w) {
				t.Errorf("%s: %d items, want the %d of the project", strings.Join(args, " "), len(got), len(w))
			}
			all := ids(c.admin, append(args, "--all-projects")...)
			if kind == "volume" {
				w = slices.Sorted(slices.Values(append(slices.Clone(w), theirID)))
			}
			if !slices.Equal(all, w) {
				t.Errorf("%s --all-projects: %d items, want %d", strings.Join(args, " "), len(all), len(w))
			}
		}
		out = c.cinder("list")
		for _, id := range append(want["volume"], theirID) {
			if strings.Contains(out, id) != (id != theirID) {
				t.Errorf("cinder list: volume %s shown %v", id, id != theirID)
			}
		}
	})
}
