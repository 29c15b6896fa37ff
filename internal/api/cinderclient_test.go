package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/testenv"
)

// TestCinderVersionDiscovery: the cinder command reads the versions
// document and negotiates the microversion it sends with what the
// server says it serves (`version-list` prints the range).
func TestCinderVersionDiscovery(t *testing.T) {
	forEachAuth(t, func(t *testing.T, c *clientCloud) {
		out := c.cinder("version-list")
		if !strings.Contains(out, "v3.0") || !strings.Contains(out, "CURRENT") || !strings.Contains(out, "3.10") {
			t.Fatalf("version-list printed:\n%s", out)
		}
		for _, want := range []string{"Client supported API versions", "Server supported API versions"} {
			if !strings.Contains(out, want) {
				t.Errorf("version-list: no %q in:\n%s", want, out)
			}
		}
	})
}

// TestCinderVolumes: the cinder command creates a volume with metadata
// (its create sends every member of the block storage API's, the ones
// cairn has no use for null), shows and lists it, snapshots it with
// metadata of the snapshot's own, backs it up and shows the absolute
// limits; each command exits 0 and prints the metadata given, which the
// catalog holds, and the values cairn's volumes have.
func TestCinderVolumes(t *testing.T) {
	forEachAuth(t, func(t *testing.T, c *clientCloud) {
		e := c.env
		out := c.cinder("create", "--name", "one", "--metadata", "a=b", "1")
		// create prints the volume as it reads it back, a Python dict.
		if got := cinderField(t, out, "metadata"); got != "{'a': 'b'}" {
			t.Errorf("create printed metadata %q, want {'a': 'b'}", got)
		}
		vol := cinderField(t, out, "id")
		if r := c.wait("volume", vol); r["status"] != "available" {
			t.Fatalf("volume %s: %v", vol, r)
		}
		block := bytes.Repeat([]byte("cinder-restore!!"), 4096)
		e.write(vol, 1<<20, block)
		first := e.digest(vol, 1<<30)

		// show formats metadata as "key : value" lines.
		out = c.cinder("show", "one")
		if got := cinderField(t, out, "metadata"); got != "a : b" {
			t.Errorf("show printed metadata %q, want a : b", got)
		}
		if got := cinderField(t, out, "id"); got != vol {
			t.Errorf("show one: id %s, want %s", got, vol)
		}
		for name, want := range map[string]string{"volume_type": "__DEFAULT__", "availability_zone": "nova",
			"replication_status": "disabled", "encrypted": "False", "multiattach": "False"} {
			if got := cinderField(t, out, name); got != want {
				t.Errorf("show one: %s %q, want %q", name, got, want)
			}
		}

		// list has no metadata column unless asked for one.
		out = c.cinder("list")
		if !strings.Contains(out, vol) || !strings.Contains(out, " one ") {
			t.Errorf("list does not show volume one (%s):\n%s", vol, out)
		}
		out = c.cinder("list", "--fields", "name,metadata")
		if !cinderListRow(out, vol, "one", "{'a': 'b'}") {
			t.Errorf("list --fields name,metadata does not show one's metadata:\n%s", out)
		}

		out = c.cinder("snapshot-create", "--name", "s1", "--metadata", "x=y", "one")
		if got := cinderField(t, out, "metadata"); got != "{'x': 'y'}" {
			t.Errorf("snapshot-create printed metadata %q, want {'x': 'y'}", got)
		}
		snap := cinderField(t, out, "id")
		if r := c.wait("snapshot", snap); r["status"] != "available" {
			t.Fatalf("snapshot %s: %v", snap, r)
		}
		out = c.cinder("snapshot-show", "s1")
		if got := cinderField(t, out, "metadata"); got != "{'x': 'y'}" {
			t.Errorf("snapshot-show printed metadata %q, want {'x': 'y'} (its own, not its volume's)", got)
		}
		if got := cinderField(t, out, "status"); got != "available" {
			t.Errorf("snapshot-show: status %s", got)
		}

		// A backup: the create prints the answer (the backup's ID and name;
		// the command adds the volume's ID), show the backup.
		out = c.cinder("backup-create", "--name", "b1", "one")
		backup := cinderField(t, out, "id")
		if got := cinderField(t, out, "name"); got != "b1" {
			t.Errorf("backup-create printed name %q", got)
		}
		if r := c.wait("backup", backup); r["status"] != "available" {
			t.Fatalf("backup %s: %v", backup, r)
		}
		out = c.cinder("backup-show", "b1")
		if got := cinderField(t, out, "status"); got != "available" {
			t.Errorf("backup-show: status %s", got)
		}
		if got := cinderField(t, out, "volume_id"); got != vol {
			t.Errorf("backup-show: volume_id %s, want %s", got, vol)
		}

		// An incremental backup of what changed since, then restores of
		// each: into a new volume by name, and over an existing volume.
		e.write(vol, 512<<20, block)
		second := e.digest(vol, 1<<30)
		out = c.cinder("backup-create", "--incremental", "--name", "b2", "one")
		backup2 := cinderField(t, out, "id")
		if r := c.wait("backup", backup2); r["status"] != "available" || r["is_incremental"] != true {
			t.Fatalf("incremental backup %s: %v", backup2, r)
		}
		out = c.cinder("backup-restore", "--name", "restored", "b2")
		if got := cinderField(t, out, "backup_id"); got != backup2 {
			t.Errorf("backup-restore printed backup_id %s, want %s", got, backup2)
		}
		restored := cinderField(t, out, "volume_id")
		if r := c.wait("volume", restored); r["status"] != "available" || r["name"] != "restored" {
			t.Fatalf("restored volume %s: %v", restored, r)
		}
		if e.digest(restored, 1<<30) != second {
			t.Errorf("the volume restored from the incremental backup does not hold its bytes")
		}
		out = c.cinder("backup-restore", "--volume", "restored", "b1")
		if got := cinderField(t, out, "volume_id"); got != restored {
			t.Errorf("backup-restore --volume restored printed volume_id %s, want %s", got, restored)
		}
		if r := c.wait("volume", restored); r["status"] != "available" {
			t.Fatalf("volume %s after b1 was restored over it: %v", restored, r)
		}
		if e.digest(restored, 1<<30) != first {
			t.Errorf("the volume b1 was restored over does not hold b1's bytes")
		}

		// The absolute limits: the project's quota; it holds two volumes and
		// a snapshot of 1 GiB each, and two backups of 1 GiB.
		out = c.cinder("absolute-limits")
		for name, want := range map[string]string{"maxTotalVolumes": fmt.Sprint(c.quota.Volumes),
			"maxTotalBackupGigabytes": fmt.Sprint(c.quota.BackupGigabytes),
			"totalVolumesUsed":        "2", "totalSnapshotsUsed": "1", "totalGigabytesUsed": "3", "totalBackupsUsed": "2",
			"totalBackupGigabytesUsed": "2"} {
			if got := cinderField(t, out, name); got != want {
				t.Errorf("absolute-limits: %s %s, want %s", name, got, want)
			}
		}

		// What the commands printed is what the catalog holds.
		v, err := e.svc.Volume(t.Context(), c.caller(), vol)
		if err != nil {
			t.Fatal(err)
		}
		s, err := e.svc.Snapshot(t.Context(), c.caller(), snap)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(v.Metadata, map[string]string{"a": "b"}) || !reflect.DeepEqual(s.Metadata, map[string]string{"x": "y"}) {
			t.Errorf("the catalog holds volume metadata %v and snapshot metadata %v", v.Metadata, s.Metadata)
		}
		e.settle()
	})
}

// cinderField returns the value of a row of the table the cinder command
// prints for one resource ("| id | 8f1c... |").
func cinderField(t *testing.T, out, name string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) >= 3 && strings.TrimSpace(cells[1]) == name {
			return strings.TrimSpace(cells[2])
		}
	}
	t.Fatalf("no %s row in:\n%s", name, out)
	return ""
}

// cinderListRow reports whether a table the cinder command printed has
// a row of exactly these cells.
func cinderListRow(out string, cells ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		parts := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		if slices.Equal(parts, cells) {
			return true
		}
	}
	return false
}

// TestCinderMetadata: the cinder command's metadata commands, on the
// metadata calls of volumes and snapshots (at the microversion negotiated, 3.10: POST to
// add, DELETE of each item to remove, PUT to replace all), its snapshot
// rename (PUT of the snapshot) and its list's metadata filter (a Python
// dict's repr in the query). Each exits 0, and the catalog holds what it
// asked for.
func TestCinderMetadata(t *testing.T) {
	forEachAuth(t, func(t *testing.T, c *clientCloud) {
		e := c.env
		ctx := t.Context()
		volume := func(name string, md ...string) string {
			args := []string{"create", "--name", name}
			if len(md) > 0 {
				args = append(append(args, "--metadata"), md...)
			}
			id := cinderField(t, c.cinder(append(args, "1")...), "id")
			c.wait("volume", id)
			return id
		}
		one := volume("one", "a=b")
		two := volume("two", "a=c")
		volume("three")
		storedVolume := func(what string, want map[string]string) {
			t.Helper()
			v, err := e.svc.Volume(ctx, c.caller(), one)
			if err != nil || !reflect.DeepEqual(v.Metadata, want) {
				t.Errorf("%s: the catalog holds %v %v, want %v", what, v.Metadata, err, want)
			}
		}

		c.cinder("metadata", "one", "set", "e=f")
		storedVolume("metadata one set e=f", map[string]string{"a": "b", "e": "f"})
		out := c.cinder("metadata-show", "one")
		if !cinderListRow(out, "a", "b") || !cinderListRow(out, "e", "f") {
			t.Errorf("metadata-show one printed:\n%s", out)
		}
		code, stdout, stderr, reqs := c.run(c.member, "cinder", "metadata", "one", "unset", "e")
		if code != 0 {
			t.Fatalf("metadata one unset e: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		if del := lastRequest(t, reqs, "DELETE"); del.Path != "/v3/"+c.project+"/volumes/"+one+"/metadata/e" {
			t.Errorf("metadata unset sent %s", del)
		}
		storedVolume("metadata one unset e", map[string]string{"a": "b"})
		c.cinder("metadata-update-all", "one", "x=y", "z=")
		storedVolume("metadata-update-all one x=y z=", map[string]string{"x": "y", "z": ""})
		c.cinder("metadata", "one", "set", "a=b")

		// The list's filter, sent as {'a': 'b'}: only one has a=b.
		code, stdout, stderr, reqs = c.run(c.member, "cinder", "list", "--metadata", "a=b")
		if code != 0 {
			t.Fatalf("list --metadata a=b: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		if get := lastRequest(t, reqs, "GET"); !strings.Contains(get.Path, "metadata=%7B%27a%27%3A+%27b%27%7D") {
			t.Errorf("list --metadata a=b sent %s", get)
		}
		if !strings.Contains(stdout, one) || strings.Contains(stdout, two) || strings.Count(stdout, "available") != 1 {
			t.Errorf("list --metadata a=b printed, want volume one (%s) only:\n%s", one, stdout)
		}
		out = c.cinder("list", "--metadata", "a=c")
		if !strings.Contains(out, two) || strings.Contains(out, one) {
			t.Errorf("list --metadata a=c printed, want volume two (%s) only:\n%s", two, out)
		}

		// A snapshot's metadata, and its rename.
		out = c.cinder("snapshot-create", "--name", "s1", "one")
		snap := cinderField(t, out, "id")
		c.wait("snapshot", snap)
		c.cinder("snapshot-metadata", "s1", "set", "k=v", "l=w")
		s, err := e.svc.Snapshot(ctx, c.caller(), snap)
		if err != nil || !reflect.DeepEqual(s.Metadata, map[string]string{"k": "v", "l": "w"}) {
			t.Errorf("snapshot-metadata s1 set k=v l=w: the catalog holds %v %v", s.Metadata, err)
		}
		c.cinder("snapshot-metadata", "s1", "unset", "l")
		c.cinder("snapshot-rename", "s1", "s2", "--description", "renamed")
		out = c.cinder("snapshot-show", "s2")
		if got := cinderField(t, out, "metadata"); got != "{'k': 'v'}" {
			t.Errorf("snapshot-show s2 printed metadata %q", got)
		}
		s, err = e.svc.Snapshot(ctx, c.caller(), snap)
		if err != nil || s.Name != "s2" || s.Description != "renamed" || !reflect.DeepEqual(s.Metadata, map[string]string{"k": "v"}) {
			t.Errorf("after snapshot-metadata s1 unset l and the rename, the catalog holds %+v %v", s, err)
		}
		e.settle()
	})
}

// TestCinderClientPython drives cinderclient's Python API as a program
// embedding it would (testdata/cinderclient_api.py), with the Python the
// cinder command runs on: version discovery (the unversioned document
// and the server's range, then the microversion negotiated from
// 3.latest), then a volume's create, list, rename, metadata and extend,
// a snapshot, a full and an incremental backup, a restore, the limits,
// and the deletes. What it saw is the API's, and the catalog agrees.
func TestCinderClientPython(t *testing.T) {
	forEachAuth(t, func(t *testing.T, c *clientCloud) {
		e := c.env
		cfg := map[string]string{}
		switch c.auth {
		case cairnTokens:
			cfg["endpoint"], cfg["token"] = c.url+"/v3/"+c.project, c.member.token
		case keystoneLogin:
			cfg["auth_url"], cfg["username"], cfg["password"] = c.keystone.URL, c.member.name, c.member.password
			cfg["project_id"], cfg["region"] = c.project, c.region
		}
		in, _ := json.Marshal(cfg)
		cmd := exec.CommandContext(t.Context(), clientPython(t), filepath.Join("testdata", "cinderclient_api.py"))
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + c.home, "LC_ALL=C.UTF-8"}
		cmd.Stdin = bytes.NewReader(in)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		t.Logf("cinderclient_api.py:\n%s", formatRequests(c.capture.take()))
		if err != nil {
			t.Fatalf("cinderclient_api.py: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
		}
		var got struct {
			Endpoint, Highest, Negotiated string
			ServerVersions                []map[string]string `json:"server_versions"`
			Created                       map[string]any
			Listed                        []string
			Changed                       map[string]any
			Snapshot                      map[string]any
			Backups                       []map[string]any
			Restored                      map[string]any
			Limits                        map[string]any
			AfterDelete                   []string `json:"after_delete"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
			t.Fatalf("cinderclient_api.py printed %q: %v", stdout.String(), err)
		}

		if got.Endpoint != c.url+"/v3/"+c.project {
			t.Errorf("the client's endpoint is %s", got.Endpoint)
		}
		if got.Highest != "3.10" || got.Negotiated != "3.10" {
			t.Errorf("highest %s, negotiated %s; want the server's 3.10", got.Highest, got.Negotiated)
		}
		if len(got.ServerVersions) != 1 || got.ServerVersions[0]["id"] != "v3.0" || got.ServerVersions[0]["status"] != "CURRENT" ||
			got.ServerVersions[0]["version"] != "3.10" || got.ServerVersions[0]["min_version"] != "3.0" {
			t.Errorf("server versions %v", got.ServerVersions)
		}
		id, _ := got.Created["id"].(string)
		checkFields(t, "create", got.Created, map[string]any{"status": "available", "size": 1, "name": "py-one",
			"metadata": map[string]any{"k": "v"}})
		if c.auth == keystoneLogin && got.Created["user_id"] != c.member.id {
			t.Errorf("create: user_id %v, want %s", got.Created["user_id"], c.member.id)
		}
		if !slices.Equal(got.Listed, []string{id}) {
			t.Errorf("list: %v, want [%s]", got.Listed, id)
		}
		checkFields(t, "rename, metadata, extend", got.Changed, map[string]any{"name": "py-two", "size": 2,
			"status": "available", "metadata": map[string]any{"m": "n"}})
		checkFields(t, "snapshot", got.Snapshot, map[string]any{"status": "available", "volume_id": id,
			"metadata": map[string]any{"s": "t"}})
		if len(got.Backups) != 2 {
			t.Fatalf("backups %v", got.Backups)
		}
		checkFields(t, "full backup", got.Backups[0], map[string]any{"status": "available", "is_incremental": false, "size": 2})
		checkFields(t, "incremental backup", got.Backups[1], map[string]any{"status": "available", "is_incremental": true, "size": 2})
		checkFields(t, "restore", got.Restored, map[string]any{"status": "available", "size": 2, "name": "py-restored"})
		checkFields(t, "limits", got.Limits, map[string]any{"maxTotalVolumes": c.quota.Volumes, "totalVolumesUsed": 2,
			"totalSnapshotsUsed": 1, "totalGigabytesUsed": 6, "totalBackupsUsed": 2, "totalBackupGigabytesUsed": 4})
		if len(got.AfterDelete) != 0 {
			t.Errorf("volumes after the deletes: %v", got.AfterDelete)
		}
		if s := e.state(); len(s.Volumes)+len(s.Snapshots)+len(s.Backups) != 0 {
			t.Errorf("after the deletes the catalog holds %+v", s)
		}
	})
}

// clientPython is the Python the cinder command runs on (its #! line),
// which has the OpenStack client libraries.
func clientPython(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("cinder")
	if err != nil {
		testenv.SkipOrFail(t, "the cinder command is missing: apt-get install python3-cinderclient")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	interp := strings.Fields(strings.TrimPrefix(line, "#!"))
	if len(interp) == 0 {
		t.Fatalf("%s: no #! line", path)
	}
	return interp[0]
}

// TestCinderTransfersAndMessages: the cinder command at the microversion
// it negotiates (3.10) offers a volume (transfer-create, transfer-list)
// that a member of another project accepts (transfer-accept): the
// catalog then holds it in that project, named by its user. A volume of
// a type cairn's backend cannot hold ends in error, and message-list,
// message-show and message-delete show and remove its user message.
func TestCinderTransfersAndMessages(t *testing.T) {
	forEachAuth(t, func(t *testing.T, c *clientCloud) {
		e := c.env
		vol := cinderField(t, c.cinder("create", "--name", "moving", "1"), "id")
		c.wait("volume", vol)
		out := c.cinder("transfer-create", "--name", "to-other", "moving")
		id, key := cinderField(t, out, "id"), cinderField(t, out, "auth_key")
		if cinderField(t, out, "volume_id") != vol || cinderField(t, out, "name") != "to-other" || len(key) != 16 {
			t.Fatalf("transfer-create printed:\n%s", out)
		}
		if out := c.cinder("transfer-list"); !cinderListRow(out, id, vol, "to-other") {
			t.Errorf("transfer-list printed:\n%s", out)
		}
		out = c.ok(c.other, "cinder", "transfer-accept", id, key)
		if cinderField(t, out, "volume_id") != vol {
			t.Errorf("transfer-accept printed:\n%s", out)
		}
		v, err := e.svc.Volume(t.Context(), service.Caller{ProjectID: c.other.project}, vol)
		if err != nil || v.ProjectID != c.other.project || v.Status != cairn.StatusAvailable ||
			(c.auth == keystoneLogin && v.UserID != c.other.id) {
			t.Fatalf("the accepted volume: %+v %v", v, err)
		}

		// A type asking for another storage protocol: no valid backend.
		var vt map[string]map[string]any
		e.must(200, e.admin, "POST", "/v3/admin/types", map[string]any{"volume_type": map[string]any{"name": "iscsi-only",
			"extra_specs": map[string]string{"storage_protocol": "iSCSI"}}}, &vt)
		bad := cinderField(t, c.cinder("create", "--volume-type", "iscsi-only", "--name", "bad", "1"), "id")
		if r := c.wait("volume", bad); r["status"] != "error" {
			t.Fatalf("volume of an iSCSI type: %v", r)
		}
		out = c.cinder("message-list")
		msg := ""
		for _, line := range strings.Split(out, "\n") {
			if cells := strings.Split(line, "|"); len(cells) > 4 && strings.TrimSpace(cells[3]) == bad {
				msg = strings.TrimSpace(cells[1])
				if strings.TrimSpace(cells[2]) != "VOLUME" || strings.TrimSpace(cells[4]) != "VOLUME_VOLUME_CREATE" {
					t.Errorf("message-list row %q", line)
				}
			}
		}
		if msg == "" {
			t.Fatalf("message-list shows no message of volume %s:\n%s", bad, out)
		}
		out = c.cinder("message-show", msg)
		if um := cinderField(t, out, "user_message"); !strings.Contains(um, "no valid backend") || cinderField(t, out, "message_level") != "ERROR" {
			t.Errorf("message-show printed:\n%s", out)
		}
		c.cinder("message-delete", msg)
		if out := c.cinder("message-list"); strings.Contains(out, bad) {
			t.Errorf("message-list after the delete:\n%s", out)
		}
	})
}
