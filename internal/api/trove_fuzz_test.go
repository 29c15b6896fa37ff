package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/api"
)

// FuzzDatabaseRequests sends arbitrary bodies and query strings to every
// route of the database API that parses input, over fakeDatabases: the
// answer is never a 5xx, every error is a JSON body naming one error with
// its code, and a 2xx create answers the resource it made.
func FuzzDatabaseRequests(f *testing.F) {
	routes := []struct{ method, path string }{
		{"POST", "/v1.0/alpha/instances"},
		{"POST", "/v1.0/alpha/backups"},
		{"POST", "/v1.0/alpha/backup_strategies"},
		{"GET", "/v1.0/alpha/instances"},
		{"GET", "/v1.0/alpha/backups"},
		{"GET", "/v1.0/alpha/backup_strategies"},
		{"DELETE", "/v1.0/alpha/backup_strategies"},
		{"GET", "/v1.0/alpha/instances/I/backups"},
		{"GET", "/v1.0/alpha/datastores"},
		{"POST", "/v1.0/alpha/instances/I/metadata/tier"},
		{"PUT", "/v1.0/alpha/instances/I/metadata/tier"},
		{"PATCH", "/v1.0/alpha/instances/I/metadata/tier"},
		{"GET", "/v1.0/alpha/instances/I/metadata"},
	}
	seeds := []struct {
		route       uint8
		query, body string
	}{
		// What Trove's client sends (internal/wire/testdata/troveclient).
		{0, "", `{"instance": {"name": "orders", "flavorRef": "host", "volume": {"size": 2, "type": null}, "databases": [{"name": "shop"}], "users": [{"name": "app", "password": "secret", "databases": [{"name": "shop"}]}], "datastore": {"type": "postgresql", "version": "15"}, "access": {"is_public": false}}}`},
		{0, "", `{"instance": {"name": "restored", "flavorRef": "host", "volume": {"size": 3, "type": null}, "restorePoint": {"backupRef": "B"}, "datastore": {"type": "postgresql"}, "access": {"is_public": false}}}`},
		{1, "", `{"backup": {"name": "nightly", "incremental": 1, "instance": "I", "description": "d", "swift_container": "dbs"}}`},
		{2, "", `{"backup_strategy": {"instance_id": "I", "swift_container": "nightly-dbs"}}`},
		{3, "include_clustered=False", ""},
		{4, "instance_id=I&datastore=postgresql&limit=1", ""},
		{5, "instance_id=I&project_id=alpha", ""},
		{6, "instance_id=I", ""},
		{7, "marker=B&limit=5", ""},
		{8, "", ""},
		{0, "", `{"instance":{"name":"x","flavorRef":1e400,"datastore":{"type":"mariadb"}}}`},
		{1, "", `{"backup":{"name":"b","instance":"I","incremental":-1,"strategy":"logical","container":"a","swift_container":"b"}}`},
		{0, "", "\x00\xff{"},
		{9, "", `{"metadata": {"value": "gold"}}`},
		{10, "", `{"metadata": {"key": "replicas", "value": "two"}}`},
		{11, "", `{"metadata": {"value": {"a": [1, 2.5e3, null]}}}`},
		{9, "", `{"metadata": {"value": null}}`},
		{12, "", ""},
	}
	for _, s := range seeds {
		f.Add(s.route, s.query, s.body)
	}
	e := newEnv(f)
	fake := newFakeDatabases()
	handler := api.New(e.svc, nil, nil, api.WithDatabases(fake))
	// An ACTIVE instance I with a COMPLETED backup B, for requests to
	// name.
	c := callerAlpha
	inst, err := fake.CreateInstance(f.Context(), c, cairn.InstanceCreate{Name: "i", Datastore: "postgresql", VolumeSize: 1})
	if err != nil {
		f.Fatal(err)
	}
	fake.setInstance(inst.ID, func(v *cairn.Instance) { v.Status = cairn.InstanceActive })
	b, err := fake.CreateDatabaseBackup(f.Context(), c, cairn.DatabaseBackupCreate{InstanceID: inst.ID, Name: "b"})
	if err != nil {
		f.Fatal(err)
	}
	fake.setBackup(b.ID, func(b *cairn.DatabaseBackup) { b.Status = cairn.DatabaseBackupCompleted })
	ids := strings.NewReplacer("I", inst.ID, "B", b.ID)

	f.Fuzz(func(t *testing.T, route uint8, query, body string) {
		r := routes[int(route)%len(routes)]
		req := httptest.NewRequest(r.method, "/", bytes.NewBufferString(ids.Replace(body)))
		req.URL.Path = ids.Replace(r.path)
		req.URL.RawQuery = ids.Replace(query)
		req.Header.Set("X-Auth-Token", e.tokA)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		checkFuzzAnswer(t, fmt.Sprintf("%s %s?%s %q", r.method, req.URL.Path, query, body), rec)
		if rec.Code >= 400 {
			return
		}
		if r.method == "POST" {
			var out map[string]map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || len(out) != 1 {
				t.Fatalf("%s %s %q: %d %q: %v", r.method, r.path, body, rec.Code, rec.Body.String(), err)
			}
		}
	})
}
