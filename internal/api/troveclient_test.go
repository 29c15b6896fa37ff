package api_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/testenv"
)

var updateCaptures = flag.Bool("update", false, "rewrite internal/wire/testdata/troveclient from the real client's requests")

// captured is one request a client made.
type captured struct {
	Method, Path string
	Body         []byte
}

func (c captured) String() string {
	s := c.Method + " " + c.Path
	if len(c.Body) > 0 {
		s += " " + string(c.Body)
	}
	return s
}

// captureRequests records every request before h serves it.
type captureRequests struct {
	h    http.Handler
	mu   sync.Mutex
	seen []captured
}

func (c *captureRequests) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	c.mu.Lock()
	c.seen = append(c.seen, captured{Method: r.Method, Path: r.URL.RequestURI(), Body: body})
	c.mu.Unlock()
	c.h.ServeHTTP(w, r)
}

// take returns the requests recorded since the last take.
func (c *captureRequests) take() []captured {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.seen
	c.seen = nil
	return out
}

// runClient runs one of the OpenStack clients, prog with its global
// arguments and then args, with HOME home and no OS_* variable of the
// test's, and returns its exit status, output and the requests capture
// recorded meanwhile.
func runClient(t *testing.T, capture *captureRequests, home, prog string, global, args []string) (code int, stdout, stderr string, reqs []captured) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), prog, append(slices.Clone(global), args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "LC_ALL=C.UTF-8"}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("%s %s: %v", prog, strings.Join(args, " "), err)
		}
		code = exit.ExitCode()
	}
	reqs = capture.take()
	t.Logf("%s %s: exit %d\n%s", prog, strings.Join(args, " "), code, formatRequests(reqs))
	return code, out.String(), errOut.String(), reqs
}

func formatRequests(reqs []captured) string {
	var b strings.Builder
	for _, r := range reqs {
		fmt.Fprintf(&b, "  %s\n", r)
	}
	return b.String()
}

// routes returns "METHOD PATH" of requests, query included.
func routes(reqs []captured) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = r.Method + " " + r.Path
	}
	return out
}

func wantRoutes(t *testing.T, what string, reqs []captured, want ...string) {
	t.Helper()
	if got := routes(reqs); !slices.Equal(got, want) {
		t.Errorf("%s: requests\n%s\nwant\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// checkFields checks the members of a `-f json` object.
func checkFields(t *testing.T, what string, got map[string]any, want map[string]any) {
	t.Helper()
	for k, w := range want {
		if g, ok := got[k]; !ok || fmt.Sprint(g) != fmt.Sprint(w) {
			t.Errorf("%s: %s = %v (present %v), want %v", what, k, g, ok, w)
		}
	}
}

// sent returns the one request of reqs that has a body (POST, PUT or
// PATCH).
func sent(t *testing.T, reqs []captured) captured {
	t.Helper()
	var posts []captured
	for _, r := range reqs {
		if r.Method == "POST" || r.Method == "PUT" || r.Method == "PATCH" {
			posts = append(posts, r)
		}
	}
	if len(posts) != 1 {
		t.Fatalf("%d POST, PUT or PATCH requests, want 1:\n%s", len(posts), formatRequests(reqs))
	}
	return posts[0]
}

// saveCapture checks that the body of a request the client sent is the
// one in internal/wire/testdata/troveclient/name (which the wire
// package's tests decode), or writes it there with -update.
func saveCapture(t *testing.T, name string, r captured) {
	t.Helper()
	path := filepath.Join("..", "wire", "testdata", "troveclient", name)
	if *updateCaptures {
		var pretty bytes.Buffer
		if err := json.Indent(&pretty, r.Body, "", "  "); err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		pretty.WriteByte('\n')
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to capture it)", err)
	}
	var want, got any
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if err := json.Unmarshal(r.Body, &got); err != nil {
		t.Fatalf("%s: %v", r, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the client sent %s\nbut %s holds %s (run with -update if the client changed)", r.Body, path, data)
	}
}

// TestTroveClient runs the operations python-troveclient has against the
// database API through the real client (`openstack database ...`), and
// checks what it sent, its exit status and the fields it printed: the
// instance create, list, show and delete; backup create, list, show and
// delete; restore (instance create --backup); backup strategies; flavors
// and datastores, which the client reads to create an instance.
func TestTroveClient(t *testing.T) {
	forEachAuth(t, func(t *testing.T, c *clientCloud) {
		fake := c.fake
		db := "/v1.0/" + c.project

		// The first command also tells whether the openstack command has
		// Trove's plugin (python3-troveclient).
		code, stdout, stderr, reqs := c.run(c.member, "openstack", "database", "flavor", "list", "-f", "json")
		if code != 0 && strings.Contains(stderr, "is not an openstack command") {
			testenv.SkipOrFail(t, "the openstack command lacks Trove's plugin: apt-get install python3-troveclient")
		}
		var flavors []map[string]any
		if code != 0 || json.Unmarshal([]byte(stdout), &flavors) != nil {
			t.Fatalf("flavor list: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		wantRoutes(t, "flavor list", reqs, "GET "+db+"/flavors")
		if len(flavors) != 1 || flavors[0]["ID"] != "host" || flavors[0]["Name"] != "host" {
			t.Errorf("flavor list: %v", flavors)
		}

		var datastores []map[string]any
		reqs = c.openstack(&datastores, "datastore", "list", "-f", "json")
		wantRoutes(t, "datastore list", reqs, "GET "+db+"/datastores")
		if len(datastores) != 2 || datastores[0]["Name"] != "mariadb" || datastores[1]["Name"] != "postgresql" {
			t.Errorf("datastore list: %v", datastores)
		}
		var versions []map[string]any
		reqs = c.openstack(&versions, "datastore", "version", "list", "postgresql", "-f", "json")
		wantRoutes(t, "datastore version list", reqs, "GET "+db+"/datastores/postgresql/versions")
		if len(versions) != 1 || versions[0]["ID"] != "postgresql-15" || versions[0]["Name"] != "15" || versions[0]["Version"] != "15.10" {
			t.Errorf("datastore version list: %v", versions)
		}

		// Create.
		var inst map[string]any
		reqs = c.openstack(&inst, "database", "instance", "create", "orders", "--flavor", "host", "--size", "2",
			"--datastore", "postgresql", "--datastore-version", "15", "--databases", "shop", "stock",
			"--users", "app:secret", "-f", "json")
		// The client reads the instance again for the members its answer
		// lacks (fault, configuration, replicas, ...), by ID.
		id, _ := inst["id"].(string)
		wantRoutes(t, "instance create", reqs, "GET "+db+"/flavors/host", "POST "+db+"/instances",
			"GET "+db+"/instances/"+id)
		saveCapture(t, "instance-create.json", sent(t, reqs))
		checkFields(t, "instance create", inst, map[string]any{"name": "orders", "status": "BUILD",
			"flavor": "host", "volume": 2, "datastore": "postgresql", "datastore_version": "15",
			"operating_status": ""})
		created, _ := fake.createdInputs()
		want := cairn.InstanceCreate{Name: "orders", Datastore: "postgresql", DatastoreVersion: "15", VolumeSize: 2,
			Databases: []cairn.DatabaseSpec{{Name: "shop"}, {Name: "stock"}},
			Users:     []cairn.DatabaseUser{{Name: "app", Password: "secret", Databases: []string{"shop", "stock"}}}}
		if len(created) != 1 || !reflect.DeepEqual(created[0], want) {
			t.Fatalf("the service was asked for %+v, want %+v", created, want)
		}

		// The task brings it up.
		fake.setInstance(id, func(v *cairn.Instance) {
			v.Status, v.OperatingStatus = cairn.InstanceActive, cairn.OperatingHealthy
			v.Address, v.Port, v.VolumeUsed = "127.0.0.1", 54321, 3<<28
		})

		var list []map[string]any
		reqs = c.openstack(&list, "database", "instance", "list", "-f", "json")
		wantRoutes(t, "instance list", reqs, "GET "+db+"/instances?include_clustered=False")
		if len(list) != 1 {
			t.Fatalf("instance list: %v", list)
		}
		checkFields(t, "instance list", list[0], map[string]any{"ID": id, "Name": "orders", "Datastore": "postgresql",
			"Datastore Version": "15", "Status": "ACTIVE", "Operating Status": "HEALTHY", "Flavor ID": "host",
			"Size": 2, "Public": false, "Addresses": "[map[address:127.0.0.1 port:54321 type:private]]"})

		// Show, by name: the client looks for an ID first, then lists.
		reqs = c.openstack(&inst, "database", "instance", "show", "orders", "-f", "json")
		wantRoutes(t, "instance show", reqs, "GET "+db+"/instances/orders",
			"GET "+db+"/instances?include_clustered=False", "GET "+db+"/instances/"+id)
		checkFields(t, "instance show", inst, map[string]any{"id": id, "name": "orders", "status": "ACTIVE",
			"operating_status": "HEALTHY", "ip": "127.0.0.1", "volume": 2, "volume_used": 0.75,
			"datastore": "postgresql", "datastore_version": "15", "flavor": "host"})

		// Metadata, with the trove command (the openstack plugin has no
		// metadata commands): what a backup policy's tag selects by. The
		// trove command signs in through Keystone only (it has no
		// admin_token sign-in), so with cairn's tokens the item is set
		// through the API here, and the calls are checked by
		// TestInstanceMetadataAPI.
		if c.auth != keystoneLogin {
			if _, err := fake.UpdateInstanceMetadata(t.Context(), c.caller(), id, service.MetadataEdit{Set: map[string]string{"tier": "gold"}}); err != nil {
				t.Fatal(err)
			}
		} else {
			troveMetadata(t, c, id)
		}
		reqs = c.openstack(&inst, "database", "instance", "show", id, "-f", "json")
		wantRoutes(t, "instance show after metadata", reqs, "GET "+db+"/instances/"+id)
		if got := fmt.Sprint(inst["metadata"]); got != "map[tier:gold]" {
			t.Errorf("instance show: metadata %s", got)
		}

		// Back up, naming the instance by name, incremental into a container.
		var backup map[string]any
		reqs = c.openstack(&backup, "database", "backup", "create", "nightly", "--instance", "orders",
			"--description", "before the upgrade", "--incremental", "--swift-container", "dbs", "-f", "json")
		// A name that is not a UUID is looked up in the list straight away.
		wantRoutes(t, "backup create", reqs, "GET "+db+"/instances?include_clustered=False",
			"GET "+db+"/instances/"+id, "POST "+db+"/backups")
		saveCapture(t, "backup-create.json", sent(t, reqs))
		checkFields(t, "backup create", backup, map[string]any{"name": "nightly", "status": "NEW",
			"instance_id": id, "description": "before the upgrade", "container": "dbs", "strategy": "snapshot",
			"datastore": "postgresql", "datastore_version": "15", "datastore_version_id": "postgresql-15",
			"size": nil, "parent_id": nil})
		backupID, _ := backup["id"].(string)
		_, backupsCreated := fake.createdInputs()
		wantBackup := cairn.DatabaseBackupCreate{InstanceID: id, Name: "nightly", Description: "before the upgrade",
			Incremental: true, Container: "dbs"}
		if len(backupsCreated) != 1 || backupsCreated[0] != wantBackup {
			t.Fatalf("the service was asked for %+v, want %+v", backupsCreated, wantBackup)
		}
		fake.setBackup(backupID, func(b *cairn.DatabaseBackup) {
			b.Status, b.Size, b.Location = cairn.DatabaseBackupCompleted, 3<<29, "dbs/7d2f"
		})

		reqs = c.openstack(&list, "database", "backup", "list", "-f", "json")
		wantRoutes(t, "backup list", reqs, "GET "+db+"/backups")
		if len(list) != 1 {
			t.Fatalf("backup list: %v", list)
		}
		checkFields(t, "backup list", list[0], map[string]any{"ID": backupID, "Instance ID": id, "Name": "nightly",
			"Status": "COMPLETED", "Parent ID": nil, "Project ID": c.project})

		reqs = c.openstack(&list, "database", "backup", "list", "--instance", id, "-f", "json")
		wantRoutes(t, "backup list --instance", reqs, "GET "+db+"/backups?instance_id="+id)
		if len(list) != 1 || list[0]["ID"] != backupID {
			t.Errorf("backup list --instance: %v", list)
		}

		reqs = c.openstack(&backup, "database", "backup", "show", "nightly", "-f", "json")
		wantRoutes(t, "backup show", reqs, "GET "+db+"/backups/nightly", "GET "+db+"/backups",
			"GET "+db+"/backups/"+backupID)
		checkFields(t, "backup show", backup, map[string]any{"id": backupID, "status": "COMPLETED", "size": 1.5,
			"locationRef": "dbs/7d2f", "datastore": "postgresql", "datastore_version_id": "postgresql-15"})

		// Restore into a new instance.
		reqs = c.openstack(&inst, "database", "instance", "create", "restored", "--flavor", "host", "--size", "3",
			"--datastore", "postgresql", "--backup", "nightly", "-f", "json")
		restoredID, _ := inst["id"].(string)
		wantRoutes(t, "instance create --backup", reqs, "GET "+db+"/flavors/host",
			"GET "+db+"/backups/nightly", "GET "+db+"/backups", "GET "+db+"/backups/"+backupID,
			"POST "+db+"/instances", "GET "+db+"/instances/"+restoredID)
		saveCapture(t, "instance-create-restore.json", sent(t, reqs))
		checkFields(t, "instance create --backup", inst, map[string]any{"name": "restored", "status": "BUILD",
			"volume": 3, "backup_id": backupID})
		created, _ = fake.createdInputs()
		if len(created) != 2 || created[1].BackupID != backupID || created[1].VolumeSize != 3 || created[1].DatastoreVersion != "" {
			t.Fatalf("the service was asked for %+v", created)
		}

		// Delete the restored instance, by ID, then the backup.
		code, stdout, _, reqs = c.run(c.member, "openstack", "database", "instance", "delete", restoredID)
		wantRoutes(t, "instance delete", reqs, "DELETE "+db+"/instances/"+restoredID)
		if code != 0 || !strings.Contains(stdout, "Request to delete database instance "+restoredID+" has been accepted") {
			t.Errorf("instance delete: exit %d, %q", code, stdout)
		}
		if v, err := fake.Instance(t.Context(), c.caller(), restoredID); err != nil || v.Status != cairn.InstanceShutdown {
			t.Errorf("after delete: %+v, %v", v, err)
		}
		code, stdout, _, reqs = c.run(c.member, "openstack", "database", "backup", "delete", backupID)
		wantRoutes(t, "backup delete", reqs, "DELETE "+db+"/backups/"+backupID)
		if code != 0 || !strings.Contains(stdout, "Request to delete database backup "+backupID+" has been accepted") {
			t.Errorf("backup delete: exit %d, %q", code, stdout)
		}
		if _, err := fake.DatabaseBackup(t.Context(), c.caller(), backupID); err == nil {
			t.Error("the backup is still there")
		}

		// Backup strategies.
		var strategy map[string]any
		reqs = c.openstack(&strategy, "database", "backup", "strategy", "create", "--instance-id", id,
			"--swift-container", "nightly-dbs", "-f", "json")
		wantRoutes(t, "backup strategy create", reqs, "POST "+db+"/backup_strategies")
		saveCapture(t, "backup-strategy-create.json", sent(t, reqs))
		checkFields(t, "backup strategy create", strategy, map[string]any{"instance_id": id, "project_id": c.project,
			"swift_container": "nightly-dbs", "backend": "local", "strategy": ""})
		reqs = c.openstack(&list, "database", "backup", "strategy", "list", "--instance-id", id, "-f", "json")
		wantRoutes(t, "backup strategy list", reqs, "GET "+db+"/backup_strategies?instance_id="+id)
		if len(list) != 1 || list[0]["Swift Container"] != "nightly-dbs" || list[0]["Project ID"] != c.project {
			t.Errorf("backup strategy list: %v", list)
		}
		reqs = c.openstack(nil, "database", "backup", "strategy", "delete", "--instance-id", id)
		wantRoutes(t, "backup strategy delete", reqs, "DELETE "+db+"/backup_strategies?instance_id="+id)

		// An error: the client prints the message of the API's error body.
		code, _, stderr, reqs = c.run(c.member, "openstack", "database", "instance", "create", "x", "--flavor", "host", "--size", "1",
			"--datastore", "oracle")
		wantRoutes(t, "instance create of a missing datastore", reqs, "GET "+db+"/flavors/host", "POST "+db+"/instances")
		if code == 0 || !strings.Contains(stderr, "datastore oracle: not installed on this host (installed: mariadb, postgresql): invalid argument (HTTP 400)") {
			t.Errorf("create with a missing datastore: exit %d, stderr %q", code, stderr)
		}
		// Another project's token, in its own project, cannot touch alpha's
		// instance: the client prints the API's message.
		code, stdout, _, reqs = c.run(c.other, "openstack", "database", "instance", "delete", id)
		wantRoutes(t, "another project deleting the member's instance", reqs, "DELETE /v1.0/"+c.other.project+"/instances/"+id)
		if code == 0 || !strings.Contains(stdout, "instance "+id+": not found (HTTP 404)") {
			t.Errorf("another project deleting the member's instance: exit %d, stdout %q", code, stdout)
		}
		if v, err := fake.Instance(t.Context(), c.caller(), id); err != nil || v.Status != cairn.InstanceActive {
			t.Errorf("the member's instance after the other project's delete: %+v, %v", v, err)
		}
	})
}

// troveMetadata runs the trove command's metadata-* commands on
// instance id: each sends Trove's request, and what it sets is what the
// service holds; at the end the instance holds tier=gold.
func troveMetadata(t *testing.T, c *clientCloud, id string) {
	t.Helper()
	fake, db := c.fake, "/v1.0/"+c.project
	trove := func(what string, args ...string) (string, []captured) {
		t.Helper()
		code, stdout, stderr, reqs := c.run(c.member, "trove", args...)
		if code != 0 {
			t.Fatalf("trove %s: exit %d\nstdout: %s\nstderr: %s", what, code, stdout, stderr)
		}
		return stdout, reqs
	}
	md := db + "/instances/" + id + "/metadata"
	_, reqs := trove("metadata-create", "metadata-create", id, "tier", "gold")
	wantRoutes(t, "metadata-create", reqs, "POST "+md+"/tier")
	saveCapture(t, "instance-metadata-create.json", sent(t, reqs))
	// The CLI parses a value as JSON when it can: 3 is a number.
	_, reqs = trove("metadata-create", "metadata-create", id, "copies", "3")
	wantRoutes(t, "metadata-create of a number", reqs, "POST "+md+"/copies")
	code, _, stderr, reqs := c.run(c.member, "trove", "metadata-create", id, "tier", "silver")
	wantRoutes(t, "metadata-create of a key that is there", reqs, "POST "+md+"/tier")
	if code == 0 || !strings.Contains(stderr, "is there already") {
		t.Errorf("metadata-create of a key that is there: exit %d, %q", code, stderr)
	}
	_, reqs = trove("metadata-edit", "metadata-edit", id, "copies", "2")
	wantRoutes(t, "metadata-edit", reqs, "PATCH "+md+"/copies")
	_, reqs = trove("metadata-update", "metadata-update", id, "copies", "replicas", "two")
	wantRoutes(t, "metadata-update", reqs, "PUT "+md+"/copies")
	saveCapture(t, "instance-metadata-update.json", sent(t, reqs))
	if v, err := fake.Instance(t.Context(), c.caller(), id); err != nil ||
		!reflect.DeepEqual(v.Metadata, map[string]string{"tier": "gold", "replicas": "two"}) {
		t.Errorf("the instance's metadata: %v, %v", v.Metadata, err)
	}
	stdout, reqs := trove("metadata-show", "metadata-show", id, "tier")
	wantRoutes(t, "metadata-show", reqs, "GET "+md+"/tier")
	if !strings.Contains(stdout, "gold") {
		t.Errorf("metadata-show: %q", stdout)
	}
	stdout, reqs = trove("metadata-list", "metadata-list", id)
	wantRoutes(t, "metadata-list", reqs, "GET "+md)
	if !strings.Contains(stdout, "gold") || !strings.Contains(stdout, "replicas") {
		t.Errorf("metadata-list: %q", stdout)
	}
	_, reqs = trove("metadata-delete", "metadata-delete", id, "replicas")
	wantRoutes(t, "metadata-delete", reqs, "DELETE "+md+"/replicas")
	code, _, _, reqs = c.run(c.member, "trove", "metadata-show", id, "replicas")
	wantRoutes(t, "metadata-show of a deleted key", reqs, "GET "+md+"/replicas")
	if code == 0 {
		t.Error("metadata-show of a deleted key succeeded")
	}
	if v, err := fake.Instance(t.Context(), c.caller(), id); err != nil || !reflect.DeepEqual(v.Metadata, map[string]string{"tier": "gold"}) {
		t.Errorf("the instance's metadata at the end: %v, %v", v.Metadata, err)
	}
}
