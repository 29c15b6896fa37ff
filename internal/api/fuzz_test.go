package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/api"
	"github.com/cairnproject/cairn/internal/catalog"
)

// FuzzRequests sends arbitrary bodies and query strings to every route
// that parses input, as a project whose quotas are all zero (so nothing
// valid gets created): the answer is never a 5xx, and every error is a
// JSON body naming one error with its code.
func FuzzRequests(f *testing.F) {
	routes := []struct{ method, path string }{
		{"POST", "/v3/fuzz/volumes"},
		{"PUT", "/v3/fuzz/volumes/V"},
		{"POST", "/v3/fuzz/volumes/V/action"},
		{"POST", "/v3/fuzz/snapshots"},
		{"POST", "/v3/fuzz/snapshots/S/action"},
		{"POST", "/v3/fuzz/backups"},
		{"POST", "/v3/fuzz/backups/B/restore"},
		{"POST", "/v3/fuzz/backups/import_record"},
		{"POST", "/v3/fuzz/backups/B/action"},
		{"GET", "/v3/fuzz/volumes"},
		{"GET", "/v3/fuzz/snapshots/detail"},
		{"GET", "/v3/fuzz/backups/detail"},
		{"GET", "/v3/fuzz/tasks"},
		// Appended, so the seeds above keep their routes.
		{"POST", "/v3/fuzz/volumes/V/metadata"},
		{"PUT", "/v3/fuzz/volumes/V/metadata"},
		{"PUT", "/v3/fuzz/volumes/V/metadata/k"},
		{"PUT", "/v3/fuzz/snapshots/S"},
		{"POST", "/v3/fuzz/snapshots/S/metadata"},
		{"PUT", "/v3/fuzz/snapshots/S/metadata/k"},
		{"GET", "/v3/fuzz/volumes/detail"},
		{"PUT", "/v3/fuzz/os-quota-sets/fuzz"},
		{"PUT", "/v3/fuzz/os-quota-class-sets/default"},
		{"GET", "/v3/fuzz/os-quota-sets/fuzz"},
	}
	// Routes sent at the highest microversion, appended.
	latestFrom := len(routes)
	routes = append(routes, []struct{ method, path string }{
		{"GET", "/v3/fuzz/messages"},
		{"DELETE", "/v3/fuzz/messages/M"},
		{"GET", "/v3/fuzz/volumes/detail"},
		{"PUT", "/v3/fuzz/backups/B"},
		{"POST", "/v3/fuzz/os-volume-transfer"},
		{"POST", "/v3/fuzz/os-volume-transfer/M/accept"},
		{"POST", "/v3/fuzz/backup-policies"},
		{"PUT", "/v3/fuzz/backup-policies/P"},
		{"POST", "/v3/fuzz/backup-policies/P/retention"},
		{"GET", "/v3/fuzz/backup-policies/P/slots"},
	}...)
	seeds := []struct {
		route       uint8
		query, body string
	}{
		{0, "", `{"volume":{"size":1}}`},
		{0, "", `{"volume":{"size":1,"snapshot_id":"x","backup_id":"y"}}`},
		{1, "", `{"volume":{"name":"n","description":"d"}}`},
		{2, "", `{"os-extend":{"new_size":3}}`},
		{2, "", `{"os-attach":{},"os-detach":{}}`},
		{3, "", `{"snapshot":{"volume_id":"V","force":true}}`},
		{5, "", `{"backup":{"volume_id":"V","incremental":true,"container":"c"}}`},
		{6, "", `{"restore":{"volume_id":"V","name":"x"}}`},
		{7, "", `{"backup-record":{"backup_service":"cairn.repository","backup_url":"eyJ2ZXJzaW9uIjoxfQ=="}}`},
		{8, "", `{"os-reset_status":{"status":"available"}}`},
		{9, "limit=5&sort=name:asc,created_at&marker=V", ""},
		{10, "all_tenants=1&status=available", ""},
		{11, "sort_key=data_timestamp&sort_dir=asc&volume_id=V", ""},
		{12, "resource_id=V", ""},
		{0, "", `{"volume":{"size":1,"metadata":{"a":"b","":"x"}}}`},
		// The cinder command's create, every member it sends.
		{0, "", `{"volume": {"size": 1, "consistencygroup_id": null, "snapshot_id": null, "name": "one", "description": null, "volume_type": null, "availability_zone": null, "metadata": {"a": "b"}, "imageRef": null, "source_volid": null, "backup_id": null}}`},
		// The openstack command's create and rename.
		{0, "", `{"volume": {"size": 1, "consistencygroup_id": null, "snapshot_id": null, "name": "one", "description": null, "volume_type": null, "availability_zone": null, "metadata": {}, "imageRef": null, "source_volid": null, "backup_id": null}}`},
		{1, "", `{"volume": {"display_name": "two"}}`},
		{0, "", `{"volume":{"size":1,"volume_type":"__DEFAULT__","availability_zone":"nova"}}`},
		{1, "", `{"volume":{"metadata":{"k":"v"}}}`},
		{1, "", `{"volume":{"name":"n","metadata":null}}`},
		{3, "", `{"snapshot": {"volume_id": "V", "force": null, "name": "s1", "description": null, "metadata": {"x": "y"}}}`},
		{0, "", `{"volume":{"size":1e400}}`},
		{0, "", "\x00\xff{"},
		// The metadata calls, as the cinder and openstack commands make
		// them, and bodies they refuse.
		{13, "", `{"metadata": {"e": "f"}}`},
		{13, "", `{"metadata":{"a":"b","":"x"}}`},
		{14, "", `{"metadata": {"x": "y", "z": ""}}`},
		{14, "", `{"metadata":null}`},
		{15, "", `{"meta":{"k":"v"}}`},
		{15, "", `{"meta":{"k":"v","l":"w"}}`},
		{16, "", `{"snapshot": {"name": "s2"}}`},
		{16, "", `{"snapshot":{"display_name":"a","display_description":"b","name":null}}`},
		{17, "", `{"metadata": {"p": "q"}}`},
		{18, "", `{"meta":{"k":""}}`},
		// The list filter as the cinder command sends it, and forms it
		// does not.
		{19, "metadata=%7B%27a%27%3A+%27b%27%7D", ""},
		{10, `metadata={'a': 'b', "it's": '\x00\u200b'}`, ""},
		{9, "metadata={'a': 1}&limit=1", ""},
		// Quota sets: the parser runs before the admin check.
		{20, "", `{"quota_set": {"volumes": 11, "per_volume_gigabytes": "1009", "groups": 0}}`},
		{20, "", `{"quota_set": {"volumes_gold": 1, "backups": 1.5}}`},
		{21, "", `{"quota_class_set": {"gigabytes": -1}}`},
		{22, "usage=true", ""},
		{23, "limit=1&marker=x&offset=2", ""},
		{24, "", ""},
		{25, "glance_metadata=%7B%27a%27%3A+%27b%27%7D&group_id=g&sort=name", ""},
		{26, "", `{"backup":{"name":"n","description":"d"}}`},
		{27, "", `{"transfer":{"volume_id":"V","name":"t"}}`},
		{28, "", `{"accept":{"auth_key":"0123456789abcdef"}}`},
		// Snapshot actions and a retype.
		{4, "", `{"os-update_snapshot_status": {"status": "error", "progress": "80%"}}`},
		{4, "", `{"os-force_delete": {}}`},
		{2, "", `{"os-retype": {"new_type": "gold", "migration_policy": "never"}}`},
		// Backup policies, and a backup's protection.
		{29, "", `{"policy":{"name":"n","target":{"kind":"volume","ids":["V"]},"schedule":"30 2 * * *","time_zone":"Europe/Berlin","retention":{"keep_daily":7,"keep_within":"36h"}}}`},
		{29, "", `{"policy":{"name":"v","action":"verify","target":{"kind":"volume","tag":"a=b"},"schedule":"@daily","verify_share":0.5,"reverify_days":30}}`},
		{29, "", `{"policy":{"name":"d","action":"drill","target":{"kind":"volume","ids":["V"]},"schedule":"0 5 * * 0","drill_pick":"random","drill_within_seconds":86400,"jitter_seconds":600}}`},
		{30, "", `{"policy":{"name":"m","enabled":false,"target":{"kind":"instance","ids":["I"]},"schedule":"0 * * * *","catch_up":"skip","pitr_window_seconds":3600}}`},
		{31, "", `{"retention":{"dry_run":true}}`},
		{32, "limit=10", ""},
		{8, "", `{"cairn-protect":{"protected":true}}`},
	}
	for _, s := range seeds {
		f.Add(s.route, s.query, s.body)
	}
	// A project with one volume and a snapshot of it, then no quota left
	// for anything.
	e := newEnv(f)
	tok := e.project("fuzz", false, cairn.Unlimited)
	vol := e.createVolume(tok, "fuzz", 1, "")
	var snap struct{ Snapshot struct{ ID string } }
	e.must(202, tok, "POST", "/v3/fuzz/snapshots", map[string]any{"snapshot": map[string]any{"volume_id": vol}}, &snap)
	e.wait(tok, "fuzz", "snapshot", snap.Snapshot.ID)
	err := e.cat.Update(f.Context(), func(tx catalog.Tx) error {
		p, err := tx.Project(f.Context(), "fuzz")
		if err != nil {
			return err
		}
		p.Quota = cairn.Quota{}
		return tx.UpdateProject(f.Context(), p)
	})
	if err != nil {
		f.Fatal(err)
	}
	handler := api.New(e.svc, nil, nil)
	f.Fuzz(func(t *testing.T, route uint8, query, body string) {
		r := routes[int(route)%len(routes)]
		path := strings.NewReplacer("/V", "/"+vol, "/S", "/"+snap.Snapshot.ID, "/B", "/nope", "/M", "/nope", "/P", "/nope").Replace(r.path)
		req := httptest.NewRequest(r.method, "/", bytes.NewBufferString(body))
		req.URL.Path = path
		req.URL.RawQuery = strings.ReplaceAll(query, "V", vol)
		body = strings.ReplaceAll(body, `"V"`, `"`+vol+`"`)
		req.Body = io.NopCloser(bytes.NewBufferString(body))
		req.Header.Set("X-Auth-Token", tok)
		if int(route)%len(routes) >= latestFrom {
			req.Header.Set("OpenStack-API-Version", "volume latest")
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		checkFuzzAnswer(t, fmt.Sprintf("%s %s?%s %q", r.method, path, query, body), rec)
		if rec.Code < 300 && r.method == "POST" && (path == "/v3/fuzz/volumes" || path == "/v3/fuzz/snapshots" || path == "/v3/fuzz/backups") {
			t.Fatalf("%s %s %q: %d: created something beyond the quota", r.method, path, body, rec.Code)
		}
	})
}

// checkFuzzAnswer fails t when a fuzzed request's answer is a 5xx, or an
// error whose body is not one named error carrying the status as its
// code.
func checkFuzzAnswer(t *testing.T, what string, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 {
		t.Fatalf("%s: %d %s", what, rec.Code, rec.Body.String())
	}
	if rec.Code < 400 {
		return
	}
	var out map[string]map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || len(out) != 1 {
		t.Fatalf("%s: error body %q: %v", what, rec.Body.String(), err)
	}
	for _, v := range out {
		if c, _ := v["code"].(float64); int(c) != rec.Code {
			t.Fatalf("%s: error body %q: code %v, status %d", what, rec.Body.String(), v["code"], rec.Code)
		}
	}
}
