package wire_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/wire"
)

var update = flag.Bool("update", false, "rewrite golden files")

// golden compares got with testdata/golden/name, or writes it there with
// -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s changed:\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

func ptr[T any](v T) *T { return &v }

var (
	created = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	updated = time.Date(2026, 3, 1, 12, 0, 5, 250000000, time.UTC)
)

func selfLinks(collection, id string) []wire.Link {
	return []wire.Link{
		{Rel: "self", Href: "/v1.0/alpha/" + collection + "/" + id},
		{Rel: "bookmark", Href: "/" + collection + "/" + id},
	}
}

// TestTroveAnswersGolden pins the JSON of every answer of the database
// API: member names (Trove's, and cairn's additions), which members are
// null and which are left out.
func TestTroveAnswersGolden(t *testing.T) {
	const id = "0b1c8a53-8a3e-4c1e-9c54-1f2a3b4c5d6e"
	const backupID = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
	flavor := wire.InstanceFlavor{ID: wire.HostFlavorID, Links: selfLinks("flavors", wire.HostFlavorID)}
	building := wire.Instance{ID: id, Name: "orders", Status: "BUILD",
		Datastore: wire.InstanceDatastore{Type: "postgresql", Version: "15"},
		Flavor:    flavor, Volume: wire.InstanceVolume{Size: 2}, ProjectID: "alpha",
		Links: selfLinks("instances", id), Created: created, Updated: created}
	active := building
	active.Status, active.OperatingStatus, active.Updated = "ACTIVE", "HEALTHY", updated
	active.Volume.Used = ptr(0.25)
	active.IP = []string{"127.0.0.1"}
	active.Addresses = []wire.InstanceAddress{{Address: "127.0.0.1", Type: "private", Port: 54321}}
	active.BackupID = ptr(backupID)
	failed := building
	failed.Status, failed.Updated = "ERROR", updated
	failed.FailReason = ptr("initdb: exit status 1")
	failed.Fault = &wire.InstanceFault{Message: "initdb: exit status 1", Created: updated}

	newBackup := wire.DatabaseBackup{ID: backupID, Name: "nightly", InstanceID: id, Status: "NEW",
		Strategy: "snapshot", Container: "databases",
		Datastore: wire.BackupDatastore{Type: "postgresql", Version: "15", VersionID: "postgresql-15"},
		ProjectID: "alpha", Created: created, Updated: created}
	done := newBackup
	done.Status, done.Updated, done.Description = "COMPLETED", updated, "before the upgrade"
	done.Size = ptr(1.5)
	done.LocationRef = ptr("databases/2c6f0d0e1b2a39485766a5b4c3d2e1f0")
	done.ParentID = ptr("5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d")
	done.DataTimestamp = ptr(time.Date(2026, 3, 1, 12, 0, 3, 125000000, time.UTC))
	failedBackup := newBackup
	failedBackup.Status, failedBackup.Updated = "FAILED", updated
	failedBackup.FailReason = ptr("quiesce: BACKUP STAGE BLOCK_COMMIT not granted within 5s")

	version := wire.DatastoreVersion{ID: "postgresql-15", Name: "15", Datastore: "postgresql", Version: "15.10",
		Active: true, Links: selfLinks("datastores/postgresql/versions", "postgresql-15")}
	datastore := wire.Datastore{ID: "postgresql", Name: "postgresql", DefaultVersion: "postgresql-15",
		Links: selfLinks("datastores", "postgresql"), Versions: []wire.DatastoreVersion{version}}

	for _, c := range []struct {
		name string
		v    any
	}{
		{"instance-build.json", map[string]any{"instance": building}},
		{"instance-active.json", map[string]any{"instance": active}},
		{"instance-error.json", map[string]any{"instance": failed}},
		{"instances.json", map[string]any{"instances": []wire.Instance{active, building},
			"links": []wire.Link{{Rel: "next", Href: "/v1.0/alpha/instances?limit=2&marker=" + id}}}},
		{"backup-new.json", map[string]any{"backup": newBackup}},
		{"backup-completed.json", map[string]any{"backup": done}},
		{"backup-failed.json", map[string]any{"backup": failedBackup}},
		{"backups.json", map[string]any{"backups": []wire.DatabaseBackup{done}}},
		{"datastores.json", map[string]any{"datastores": []wire.Datastore{datastore}}},
		{"datastore-version.json", map[string]any{"version": version}},
		{"flavor.json", map[string]any{"flavor": wire.Flavor{ID: wire.HostFlavorID, Name: wire.HostFlavorID,
			Description: "a database process on the service's host", Links: selfLinks("flavors", wire.HostFlavorID)}}},
		{"backup-strategy.json", map[string]any{"backup_strategy": wire.BackupStrategy{ProjectID: "alpha",
			InstanceID: id, Backend: "swift", SwiftContainer: "databases", Strategy: "physical"}}},
		{"versions.json", map[string]any{"versions": []wire.Version{{ID: "v1.0", Status: "CURRENT",
			Links: []wire.Link{{Rel: "self", Href: "/v1.0/"}}}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := json.MarshalIndent(c.v, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, c.name, append(got, '\n'))
		})
	}
}

// strict decodes like the API: unknown members refused.
func strict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// TestTroveClientRequestsDecode decodes every request body Trove's
// client sent (testdata/troveclient, captured from `openstack database
// ...` by the API's client test, which checks the files are what the
// client sends) into the wire types, refusing unknown members as the API
// does.
func TestTroveClientRequestsDecode(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "troveclient", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no captured requests in testdata/troveclient")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var v any
			switch name := filepath.Base(f); {
			case strings.HasPrefix(name, "instance-create"):
				v = new(wire.InstanceCreateRequest)
			case strings.HasPrefix(name, "backup-create"):
				v = new(wire.DatabaseBackupCreateRequest)
			case strings.HasPrefix(name, "backup-strategy-create"):
				v = new(wire.BackupStrategyCreateRequest)
			case strings.HasPrefix(name, "instance-metadata-"):
				v = new(wire.InstanceMetadataItemRequest)
			default:
				t.Fatalf("%s: which request is this? name it instance-create*, instance-metadata-*, backup-create* or backup-strategy-create*", name)
			}
			if err := strict(data, v); err != nil {
				t.Fatalf("%s: %v", data, err)
			}
			// Nothing the client sent was dropped: encoding what was
			// decoded keeps every member the client set.
			again, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			var sent, kept map[string]any
			if err := json.Unmarshal(data, &sent); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(again, &kept); err != nil {
				t.Fatal(err)
			}
			if missing := lost(sent, kept, ""); missing != "" {
				t.Errorf("decoding dropped %s of %s", missing, data)
			}
		})
	}
}

// lost names the first member of sent that kept does not hold with the
// same value ("" when none).
func lost(sent, kept any, path string) string {
	switch s := sent.(type) {
	case map[string]any:
		k, _ := kept.(map[string]any)
		for name, v := range s {
			if m := lost(v, k[name], path+"."+name); m != "" {
				return m
			}
		}
		return ""
	case []any:
		k, _ := kept.([]any)
		if len(k) != len(s) {
			return path
		}
		for i := range s {
			if m := lost(s[i], k[i], path); m != "" {
				return m
			}
		}
		return ""
	case nil:
		return ""
	default:
		if sent != kept {
			return path
		}
		return ""
	}
}

func TestFlavorRef(t *testing.T) {
	for _, c := range []struct {
		in, want string
		bad      bool
	}{
		{in: `"host"`, want: "host"},
		{in: `"https://example.test/v1.0/p/flavors/host"`, want: "https://example.test/v1.0/p/flavors/host"},
		{in: `7`, want: "7"},
		{in: ` 12 `, want: "12"},
		{in: `1.5`, bad: true},
		{in: `true`, bad: true},
		{in: `{"id":"host"}`, bad: true},
		{in: `"unterminated`, bad: true},
	} {
		var f wire.FlavorRef
		err := f.UnmarshalJSON([]byte(c.in))
		if c.bad != (err != nil) || (!c.bad && string(f) != c.want) {
			t.Errorf("%s: got %q, %v; want %q (error %v)", c.in, f, err, c.want, c.bad)
		}
	}
	// In a request, null leaves the pointer nil.
	var req wire.InstanceCreate
	if err := strict([]byte(`{"name":"x","flavorRef":null}`), &req); err != nil || req.FlavorRef != nil {
		t.Errorf("flavorRef null: %v, %v", req.FlavorRef, err)
	}
}
