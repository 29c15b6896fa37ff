package api_test

import (
	"net/http/httptest"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cairnproject/cairn/internal/api"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/testenv"
	"github.com/cairnproject/cairn/internal/wire"
)

// cinderCLI runs a block storage client against a test server: the
// `cinder` command (python3-cinderclient) or the `openstack` command's
// volume commands (python3-openstackclient), with the block storage
// API's real handlers and authentication (a project's cairn token, sent
// by keystoneauth's admin_token plugin to the given endpoint, no
// Keystone involved).
type cinderCLI struct {
	t        *testing.T
	env      *env
	capture  *captureRequests
	endpoint string
	home     string
	prog     string   // cinder or openstack
	global   []string // the options before ARGS, but authentication's
}

func newCinderCLI(t *testing.T) *cinderCLI {
	t.Helper()
	return newBlockStorageCLI(t, "cinder", "apt-get install python3-cinderclient", "--os-project-id", "alpha")
}

// newOpenStackVolumeCLI runs `openstack ...` at block storage API
// version 3 (its volume commands; the microversion it then asks for is
// 3.0).
func newOpenStackVolumeCLI(t *testing.T) *cinderCLI {
	t.Helper()
	return newBlockStorageCLI(t, "openstack", "apt-get install python3-openstackclient", "--os-volume-api-version", "3")
}

func newBlockStorageCLI(t *testing.T, prog, install string, global ...string) *cinderCLI {
	t.Helper()
	if _, err := exec.LookPath(prog); err != nil {
		testenv.SkipOrFail(t, "the "+prog+" command is missing: "+install)
	}
	e := newEnv(t)
	capture := &captureRequests{h: api.New(e.svc, nil, nil)}
	srv := httptest.NewServer(capture)
	t.Cleanup(srv.Close)
	return &cinderCLI{t: t, env: e, capture: capture, endpoint: srv.URL + "/v3/alpha", home: t.TempDir(),
		prog: prog, global: global}
}

// run runs the command with ARGS and the project's token and returns its
// exit status, output and the requests it made. Its environment holds
// no OS_* variable of the test's.
func (c *cinderCLI) run(args ...string) (code int, stdout, stderr string, reqs []captured) {
	c.t.Helper()
	global := append([]string{"--os-auth-type", "admin_token", "--os-endpoint", c.endpoint, "--os-token", c.env.tokA}, c.global...)
	return runClient(c.t, c.capture, c.home, c.prog, global, args)
}

// ok runs a command that must succeed and returns its output.
func (c *cinderCLI) ok(args ...string) string {
	c.t.Helper()
	code, stdout, stderr, _ := c.run(args...)
	if code != 0 {
		c.t.Fatalf("%s %s: exit %d\nstdout: %s\nstderr: %s", c.prog, strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// TestCinderVersionDiscovery: the cinder command reads the versions
// document and negotiates the microversion it sends with what the
// server says it serves (`version-list` prints the range).
func TestCinderVersionDiscovery(t *testing.T) {
	c := newCinderCLI(t)
	out := c.ok("version-list")
	if !strings.Contains(out, "v3.0") || !strings.Contains(out, "CURRENT") || !strings.Contains(out, "3.0") {
		t.Fatalf("version-list printed:\n%s", out)
	}
	for _, want := range []string{"Client supported API versions", "Server supported API versions"} {
		if !strings.Contains(out, want) {
			t.Errorf("version-list: no %q in:\n%s", want, out)
		}
	}
}

// TestCinderVolumes: the cinder command creates a volume with metadata
// (its create sends every member of the block storage API's, the ones
// cairn has no use for null), shows and lists it, snapshots it with
// metadata of the snapshot's own, backs it up and shows the absolute
// limits; each command exits 0 and prints the metadata given, which the
// catalog holds, and the values cairn's volumes have.
func TestCinderVolumes(t *testing.T) {
	c := newCinderCLI(t)
	e := c.env
	out := c.ok("create", "--name", "one", "--metadata", "a=b", "1")
	// create prints the volume as it reads it back, a Python dict.
	if got := cinderField(t, out, "metadata"); got != "{'a': 'b'}" {
		t.Errorf("create printed metadata %q, want {'a': 'b'}", got)
	}
	vol := cinderField(t, out, "id")
	if r := e.wait(e.tokA, "alpha", "volume", vol); r["status"] != "available" {
		t.Fatalf("volume %s: %v", vol, r)
	}

	// show formats metadata as "key : value" lines.
	out = c.ok("show", "one")
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
	out = c.ok("list")
	if !strings.Contains(out, vol) || !strings.Contains(out, " one ") {
		t.Errorf("list does not show volume one (%s):\n%s", vol, out)
	}
	out = c.ok("list", "--fields", "name,metadata")
	if !cinderListRow(out, vol, "one", "{'a': 'b'}") {
		t.Errorf("list --fields name,metadata does not show one's metadata:\n%s", out)
	}

	out = c.ok("snapshot-create", "--name", "s1", "--metadata", "x=y", "one")
	if got := cinderField(t, out, "metadata"); got != "{'x': 'y'}" {
		t.Errorf("snapshot-create printed metadata %q, want {'x': 'y'}", got)
	}
	snap := cinderField(t, out, "id")
	if r := e.wait(e.tokA, "alpha", "snapshot", snap); r["status"] != "available" {
		t.Fatalf("snapshot %s: %v", snap, r)
	}
	out = c.ok("snapshot-show", "s1")
	if got := cinderField(t, out, "metadata"); got != "{'x': 'y'}" {
		t.Errorf("snapshot-show printed metadata %q, want {'x': 'y'} (its own, not its volume's)", got)
	}
	if got := cinderField(t, out, "status"); got != "available" {
		t.Errorf("snapshot-show: status %s", got)
	}

	// A backup: the create prints the answer (the backup's ID and name;
	// the command adds the volume's ID), show the backup.
	out = c.ok("backup-create", "--name", "b1", "one")
	backup := cinderField(t, out, "id")
	if got := cinderField(t, out, "name"); got != "b1" {
		t.Errorf("backup-create printed name %q", got)
	}
	if r := e.wait(e.tokA, "alpha", "backup", backup); r["status"] != "available" {
		t.Fatalf("backup %s: %v", backup, r)
	}
	out = c.ok("backup-show", "b1")
	if got := cinderField(t, out, "status"); got != "available" {
		t.Errorf("backup-show: status %s", got)
	}
	if got := cinderField(t, out, "volume_id"); got != vol {
		t.Errorf("backup-show: volume_id %s, want %s", got, vol)
	}

	// The absolute limits: alpha's quotas are unlimited; it holds a
	// volume and a snapshot of 1 GiB each, and a backup of 1 GiB.
	out = c.ok("absolute-limits")
	for name, want := range map[string]string{"maxTotalVolumes": "-1", "maxTotalBackupGigabytes": "-1",
		"totalVolumesUsed": "1", "totalSnapshotsUsed": "1", "totalGigabytesUsed": "2", "totalBackupsUsed": "1",
		"totalBackupGigabytesUsed": "1"} {
		if got := cinderField(t, out, name); got != want {
			t.Errorf("absolute-limits: %s %s, want %s", name, got, want)
		}
	}

	// What the commands printed is what the catalog holds.
	v, err := e.svc.Volume(t.Context(), service.Caller{ProjectID: "alpha"}, vol)
	if err != nil {
		t.Fatal(err)
	}
	s, err := e.svc.Snapshot(t.Context(), service.Caller{ProjectID: "alpha"}, snap)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(v.Metadata, map[string]string{"a": "b"}) || !reflect.DeepEqual(s.Metadata, map[string]string{"x": "y"}) {
		t.Errorf("the catalog holds volume metadata %v and snapshot metadata %v", v.Metadata, s.Metadata)
	}
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
// metadata calls of volumes and snapshots (at microversion 3.0: POST to
// add, DELETE of each item to remove, PUT to replace all), its snapshot
// rename (PUT of the snapshot) and its list's metadata filter (a Python
// dict's repr in the query). Each exits 0, and the catalog holds what it
// asked for.
func TestCinderMetadata(t *testing.T) {
	c := newCinderCLI(t)
	e := c.env
	ctx := t.Context()
	alpha := service.Caller{ProjectID: "alpha"}
	volume := func(name string, md map[string]string) string {
		var out struct{ Volume wire.Volume }
		e.must(202, e.tokA, "POST", "/v3/alpha/volumes", map[string]any{"volume": map[string]any{"size": 1, "name": name, "metadata": md}}, &out)
		e.wait(e.tokA, "alpha", "volume", out.Volume.ID)
		return out.Volume.ID
	}
	one := volume("one", map[string]string{"a": "b"})
	two := volume("two", map[string]string{"a": "c"})
	volume("three", nil)
	storedVolume := func(what string, want map[string]string) {
		t.Helper()
		v, err := e.svc.Volume(ctx, alpha, one)
		if err != nil || !reflect.DeepEqual(v.Metadata, want) {
			t.Errorf("%s: the catalog holds %v %v, want %v", what, v.Metadata, err, want)
		}
	}

	c.ok("metadata", "one", "set", "e=f")
	storedVolume("metadata one set e=f", map[string]string{"a": "b", "e": "f"})
	out := c.ok("metadata-show", "one")
	if !cinderListRow(out, "a", "b") || !cinderListRow(out, "e", "f") {
		t.Errorf("metadata-show one printed:\n%s", out)
	}
	code, stdout, stderr, reqs := c.run("metadata", "one", "unset", "e")
	if code != 0 {
		t.Fatalf("metadata one unset e: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if del := lastRequest(t, reqs, "DELETE"); del.Path != "/v3/alpha/volumes/"+one+"/metadata/e" {
		t.Errorf("metadata unset sent %s", del)
	}
	storedVolume("metadata one unset e", map[string]string{"a": "b"})
	c.ok("metadata-update-all", "one", "x=y", "z=")
	storedVolume("metadata-update-all one x=y z=", map[string]string{"x": "y", "z": ""})
	c.ok("metadata", "one", "set", "a=b")

	// The list's filter, sent as {'a': 'b'}: only one has a=b.
	code, stdout, stderr, reqs = c.run("list", "--metadata", "a=b")
	if code != 0 {
		t.Fatalf("list --metadata a=b: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if get := lastRequest(t, reqs, "GET"); !strings.Contains(get.Path, "metadata=%7B%27a%27%3A+%27b%27%7D") {
		t.Errorf("list --metadata a=b sent %s", get)
	}
	if !strings.Contains(stdout, one) || strings.Contains(stdout, two) || strings.Count(stdout, "available") != 1 {
		t.Errorf("list --metadata a=b printed, want volume one (%s) only:\n%s", one, stdout)
	}
	out = c.ok("list", "--metadata", "a=c")
	if !strings.Contains(out, two) || strings.Contains(out, one) {
		t.Errorf("list --metadata a=c printed, want volume two (%s) only:\n%s", two, out)
	}

	// A snapshot's metadata, and its rename.
	out = c.ok("snapshot-create", "--name", "s1", "one")
	snap := cinderField(t, out, "id")
	e.wait(e.tokA, "alpha", "snapshot", snap)
	c.ok("snapshot-metadata", "s1", "set", "k=v", "l=w")
	s, err := e.svc.Snapshot(ctx, alpha, snap)
	if err != nil || !reflect.DeepEqual(s.Metadata, map[string]string{"k": "v", "l": "w"}) {
		t.Errorf("snapshot-metadata s1 set k=v l=w: the catalog holds %v %v", s.Metadata, err)
	}
	c.ok("snapshot-metadata", "s1", "unset", "l")
	c.ok("snapshot-rename", "s1", "s2", "--description", "renamed")
	out = c.ok("snapshot-show", "s2")
	if got := cinderField(t, out, "metadata"); got != "{'k': 'v'}" {
		t.Errorf("snapshot-show s2 printed metadata %q", got)
	}
	s, err = e.svc.Snapshot(ctx, alpha, snap)
	if err != nil || s.Name != "s2" || s.Description != "renamed" || !reflect.DeepEqual(s.Metadata, map[string]string{"k": "v"}) {
		t.Errorf("after snapshot-metadata s1 unset l and the rename, the catalog holds %+v %v", s, err)
	}
	e.settle()
}
