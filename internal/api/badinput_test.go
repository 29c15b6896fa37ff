package api_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/wire"
)

// fixture is one project's set of resources in every state a test needs.
type fixture struct {
	vol, snap, backup, task string
}

func (e *env) fixture(token, project string) fixture {
	e.t.Helper()
	var f fixture
	f.vol = e.createVolume(token, project, 1, "v")
	e.write(f.vol, 0, []byte("hello"))
	var s struct{ Snapshot wire.Snapshot }
	e.must(202, token, "POST", "/v3/"+project+"/snapshots", map[string]any{"snapshot": map[string]any{"volume_id": f.vol}}, &s)
	e.wait(token, project, "snapshot", s.Snapshot.ID)
	f.snap = s.Snapshot.ID
	var b struct{ Backup wire.Backup }
	e.must(202, token, "POST", "/v3/"+project+"/backups", map[string]any{"backup": map[string]any{"snapshot_id": f.snap}}, &b)
	e.wait(token, project, "backup", b.Backup.ID)
	f.backup = b.Backup.ID
	e.settle()
	var tasks struct{ Tasks []cairn.Task }
	e.must(200, token, "GET", "/v3/"+project+"/tasks?resource_id="+f.backup, nil, &tasks)
	if len(tasks.Tasks) == 0 {
		e.t.Fatal("the backup has no task")
	}
	f.task = tasks.Tasks[0].ID
	return f
}

// endpoints are every route of a project, with IDs of f and a valid body.
func endpoints(project string, f fixture) []struct{ method, path, body string } {
	v, s, b := f.vol, f.snap, f.backup
	P := "/v3/" + project
	return []struct{ method, path, body string }{
		{"GET", P + "/limits", ""},
		{"GET", P + "/tasks", ""},
		{"GET", P + "/tasks?resource_id=" + b, ""},
		{"GET", P + "/tasks/" + f.task, ""},
		{"GET", P + "/volumes", ""},
		{"GET", P + "/volumes/detail", ""},
		{"POST", P + "/volumes", `{"volume":{"size":1}}`},
		{"POST", P + "/volumes", `{"volume":{"snapshot_id":"` + s + `"}}`},
		{"POST", P + "/volumes", `{"volume":{"backup_id":"` + b + `"}}`},
		{"GET", P + "/volumes/" + v, ""},
		{"PUT", P + "/volumes/" + v, `{"volume":{"name":"x"}}`},
		{"DELETE", P + "/volumes/" + v, ""},
		{"POST", P + "/volumes/" + v + "/action", `{"os-extend":{"new_size":2}}`},
		{"POST", P + "/volumes/" + v + "/action", `{"os-attach":{}}`},
		{"POST", P + "/volumes/" + v + "/action", `{"os-detach":{}}`},
		{"POST", P + "/volumes/" + v + "/action", `{"os-reset_status":{"status":"error"}}`},
		{"GET", P + "/volumes/" + v + "/metadata", ""},
		{"POST", P + "/volumes/" + v + "/metadata", `{"metadata":{"k":"v"}}`},
		{"PUT", P + "/volumes/" + v + "/metadata", `{"metadata":{}}`},
		{"GET", P + "/volumes/" + v + "/metadata/k", ""},
		{"PUT", P + "/volumes/" + v + "/metadata/k", `{"meta":{"k":"v"}}`},
		{"DELETE", P + "/volumes/" + v + "/metadata/k", ""},
		{"GET", P + "/snapshots", ""},
		{"GET", P + "/snapshots/detail", ""},
		{"POST", P + "/snapshots", `{"snapshot":{"volume_id":"` + v + `"}}`},
		{"GET", P + "/snapshots/" + s, ""},
		{"PUT", P + "/snapshots/" + s, `{"snapshot":{"name":"x"}}`},
		{"DELETE", P + "/snapshots/" + s, ""},
		{"POST", P + "/snapshots/" + s + "/action", `{"os-reset_status":{"status":"error"}}`},
		{"GET", P + "/snapshots/" + s + "/metadata", ""},
		{"POST", P + "/snapshots/" + s + "/metadata", `{"metadata":{"k":"v"}}`},
		{"PUT", P + "/snapshots/" + s + "/metadata", `{"metadata":{}}`},
		{"GET", P + "/snapshots/" + s + "/metadata/k", ""},
		{"PUT", P + "/snapshots/" + s + "/metadata/k", `{"meta":{"k":"v"}}`},
		{"DELETE", P + "/snapshots/" + s + "/metadata/k", ""},
		{"GET", P + "/backups", ""},
		{"GET", P + "/backups/detail", ""},
		{"POST", P + "/backups", `{"backup":{"volume_id":"` + v + `"}}`},
		{"POST", P + "/backups", `{"backup":{"snapshot_id":"` + s + `"}}`},
		{"GET", P + "/backups/" + b, ""},
		{"DELETE", P + "/backups/" + b, ""},
		{"POST", P + "/backups/" + b + "/restore", `{"restore":{}}`},
		{"POST", P + "/backups/" + b + "/restore", `{"restore":{"volume_id":"` + v + `"}}`},
		{"GET", P + "/backups/" + b + "/export_record", ""},
		{"POST", P + "/backups/" + b + "/action", `{"os-reset_status":{"status":"error"}}`},
		{"GET", P + "/os-volume-transfer", ""},
		{"GET", P + "/os-volume-transfer/detail", ""},
		{"POST", P + "/os-volume-transfer", `{"transfer":{"volume_id":"` + v + `"}}`},
	}
}

// TestProjectIsolation: a token of beta can neither see nor change
// anything of alpha, on every endpoint: alpha's URLs answer 404 and
// alpha's IDs used in beta's URLs are not found either.
func TestProjectIsolation(t *testing.T) {
	e := newEnv(t)
	fa := e.fixture(e.tokA, "alpha")
	before := e.state()
	for _, ep := range endpoints("alpha", fa) {
		t.Run("alpha-url "+ep.method+" "+ep.path, func(t *testing.T) {
			var body any
			if ep.body != "" {
				body = ep.body
			}
			if code := e.do(e.tokB, ep.method, ep.path, body, nil); code != 404 {
				t.Errorf("beta's token on alpha's URL: %d, want 404", code)
			}
		})
	}
	for _, ep := range endpoints("beta", fa) {
		t.Run("beta-url "+ep.method+" "+ep.path, func(t *testing.T) {
			var body any
			if ep.body != "" {
				body = ep.body
			}
			var out map[string]any
			code := e.do(e.tokB, ep.method, ep.path, body, &out)
			switch {
			case ep.method == "GET" && (strings.HasSuffix(ep.path, "/tasks") || strings.Contains(ep.path, "/tasks?") ||
				!strings.Contains(ep.path, fa.vol) && !strings.Contains(ep.path, fa.snap) && !strings.Contains(ep.path, fa.backup) && !strings.Contains(ep.path, fa.task)):
				// beta's own lists: allowed, and empty.
				if code != 200 {
					t.Fatalf("list: %d", code)
				}
				js, _ := json.Marshal(out)
				for _, id := range []string{fa.vol, fa.snap, fa.backup} {
					if strings.Contains(string(js), id) {
						t.Errorf("beta's list shows alpha's %s: %s", id, js)
					}
				}
			case ep.method == "POST" && ep.path == "/v3/beta/volumes" && strings.Contains(ep.body, `"size":1}`):
				// beta may make its own volume; removed below.
				if code != 202 {
					t.Fatalf("beta creating its own volume: %d", code)
				}
			case strings.Contains(ep.path, "os-reset_status") || strings.Contains(ep.body, "os-reset_status"):
				if code != 403 && code != 404 {
					t.Errorf("reset-status by a non-admin: %d, want 403/404", code)
				}
			default:
				if code != 404 {
					t.Errorf("beta naming alpha's IDs: %d, want 404 (%v)", code, out)
				}
			}
		})
	}
	e.settle()
	after := e.state()
	// Only beta's own new volume may have appeared.
	var alphaAfter state
	alphaAfter.Engine, alphaAfter.EngSnaps = after.Engine, after.EngSnaps
	for _, v := range after.Volumes {
		if v.ProjectID == "alpha" {
			alphaAfter.Volumes = append(alphaAfter.Volumes, v)
		}
	}
	if !reflect.DeepEqual(before.Volumes, alphaAfter.Volumes) || !reflect.DeepEqual(before.Snapshots, after.Snapshots) ||
		!reflect.DeepEqual(before.Backups, after.Backups) {
		t.Fatalf("alpha's resources changed:\nbefore %+v\nafter  %+v", before, after)
	}
}

// TestAdminOnly: reset-status is refused to a project's token (403) and
// works for the admin's; all_tenants from a project's token is ignored
// (its own project's list, as the block storage API answers the name
// lookups the clients make with it) and lists every project for the
// admin's, in every spelling the clients send.
func TestAdminOnly(t *testing.T) {
	e := newEnv(t)
	fa := e.fixture(e.tokA, "alpha")
	for _, ep := range []struct{ path, body string }{
		{"/v3/alpha/volumes/" + fa.vol + "/action", `{"os-reset_status":{"status":"error"}}`},
		{"/v3/alpha/snapshots/" + fa.snap + "/action", `{"os-reset_status":{"status":"error"}}`},
		{"/v3/alpha/backups/" + fa.backup + "/action", `{"os-reset_status":{"status":"error"}}`},
	} {
		before := e.state()
		e.must(403, e.tokA, "POST", ep.path, ep.body, nil)
		if !reflect.DeepEqual(before, e.state()) {
			t.Fatalf("%s: a refused reset changed state", ep.path)
		}
		e.must(202, e.admin, "POST", ep.path, ep.body, nil)
		e.must(202, e.admin, "POST", ep.path, strings.Replace(ep.body, "error", "available", 1), nil)
	}
	vb := e.createVolume(e.tokB, "beta", 1, "beta's")
	for _, spelling := range []string{"1", "true", "True", "yes"} {
		var own struct{ Volumes []wire.Summary }
		e.must(200, e.tokA, "GET", "/v3/alpha/volumes?all_tenants="+spelling, nil, &own)
		if len(own.Volumes) != 1 || own.Volumes[0].ID != fa.vol {
			t.Fatalf("a project's all_tenants=%s: %+v, want its own volume only", spelling, own)
		}
		var all struct{ Volumes []wire.Summary }
		e.must(200, e.admin, "GET", "/v3/admin/volumes?all_tenants="+spelling, nil, &all)
		ids := []string{}
		for _, v := range all.Volumes {
			ids = append(ids, v.ID)
		}
		if len(ids) != 2 || !slices.Contains(ids, fa.vol) || !slices.Contains(ids, vb) {
			t.Fatalf("admin all_tenants=%s: %v, want %s and %s", spelling, ids, fa.vol, vb)
		}
	}
	// The admin acts in another project's URL.
	e.must(200, e.admin, "GET", "/v3/alpha/volumes/"+fa.vol, nil, nil)
	e.must(404, e.admin, "GET", "/v3/nosuchproject/volumes", nil, nil)
}

// TestBadInput: every malformed request gets a 4xx with a JSON error that
// says what is wrong, and changes nothing.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	fa := e.fixture(e.tokA, "alpha")
	quotaTok := e.project("small", false, cairn.Quota{Volumes: 1, Gigabytes: 2, Snapshots: 0, Backups: 0, BackupGigabytes: 0, PerVolumeGigabytes: -1})
	e.createVolume(quotaTok, "small", 1, "only")
	e.settle()
	A := "/v3/alpha"
	cases := []struct {
		name, token, method, path, body string
		code                            int
		says                            string
	}{
		{"no token", "", "GET", A + "/volumes", "", 401, "no token"},
		{"wrong token", "cairn_nope", "GET", A + "/volumes", "", 401, "unknown"},
		{"not a cairn token", "Bearer x", "GET", A + "/volumes", "", 401, "not a cairn token"},
		{"malformed json", e.tokA, "POST", A + "/volumes", `{"volume":`, 400, "request body"},
		{"not an object", e.tokA, "POST", A + "/volumes", `[1,2]`, 400, "request body"},
		{"trailing data", e.tokA, "POST", A + "/volumes", `{"volume":{"size":1}} {}`, 400, "after the JSON"},
		{"empty body", e.tokA, "POST", A + "/volumes", ``, 400, "empty"},
		{"unknown field", e.tokA, "POST", A + "/volumes", `{"volume":{"size":1,"colour":"red"}}`, 400, "colour"},
		{"unknown top field", e.tokA, "POST", A + "/volumes", `{"volume":{"size":1},"x":1}`, 400, "unknown field"},
		{"size zero", e.tokA, "POST", A + "/volumes", `{"volume":{"size":0}}`, 400, "size"},
		{"size negative", e.tokA, "POST", A + "/volumes", `{"volume":{"size":-5}}`, 400, "size"},
		{"size missing", e.tokA, "POST", A + "/volumes", `{"volume":{"name":"x"}}`, 400, "size"},
		{"size huge", e.tokA, "POST", A + "/volumes", `{"volume":{"size":99999999}}`, 400, "size"},
		{"size not a number", e.tokA, "POST", A + "/volumes", `{"volume":{"size":"1"}}`, 400, "size"},
		{"snapshot and backup", e.tokA, "POST", A + "/volumes", `{"volume":{"snapshot_id":"` + fa.snap + `","backup_id":"` + fa.backup + `"}}`, 400, "not both"},
		{"from unknown snapshot", e.tokA, "POST", A + "/volumes", `{"volume":{"snapshot_id":"nope"}}`, 404, "nope"},
		{"smaller than snapshot", e.tokA, "POST", A + "/volumes", `{"volume":{"size":1,"snapshot_id":"` + fa.snap + `"}}`, 0, ""},
		{"long name", e.tokA, "POST", A + "/volumes", `{"volume":{"size":1,"name":"` + strings.Repeat("n", 300) + `"}}`, 400, "name"},
		{"metadata empty key", e.tokA, "POST", A + "/volumes", `{"volume":{"size":1,"metadata":{"ok":"1","":"x"}}}`, 400, "empty key"},
		{"metadata long key", e.tokA, "POST", A + "/volumes", `{"volume":{"size":1,"metadata":{"` + strings.Repeat("ķ", 256) + `":"v"}}}`, 400, "256 characters"},
		{"metadata long value", e.tokA, "POST", A + "/volumes", `{"volume":{"size":1,"metadata":{"big":"` + strings.Repeat("v", 256) + `"}}}`, 400, `metadata key "big": value of 256 characters`},
		{"metadata too many", e.tokA, "POST", A + "/volumes", `{"volume":{"size":1,"metadata":` + manyMetadata(129) + `}}`, 400, "129 items"},
		{"metadata not strings", e.tokA, "POST", A + "/volumes", `{"volume":{"size":1,"metadata":{"a":1}}}`, 400, "metadata"},
		{"metadata not an object", e.tokA, "POST", A + "/volumes", `{"volume":{"size":1,"metadata":["a","b"]}}`, 400, "metadata"},
		{"unknown field beside metadata", e.tokA, "POST", A + "/volumes", `{"volume":{"size":1,"metadata":{},"multiattach":true}}`, 400, "multiattach"},
		{"volume type", e.tokA, "POST", A + "/volumes", `{"volume":{"size":1,"volume_type":"ssd"}}`, 404, "no such volume type"},
		{"availability zone", e.tokA, "POST", A + "/volumes", `{"volume":{"size":1,"availability_zone":"az-2"}}`, 400, "availability zones but nova"},
		{"volume type in another case", e.tokA, "POST", A + "/volumes", `{"volume":{"size":1,"volume_type":"__default__"}}`, 404, "no such volume type"},
		{"image", e.tokA, "POST", A + "/volumes", `{"volume":{"size":1,"imageRef":"x"}}`, 400, "images"},
		{"source volume unknown", e.tokA, "POST", A + "/volumes", `{"volume":{"source_volid":"nope"}}`, 404, "nope"},
		{"consistency group", e.tokA, "POST", A + "/volumes", `{"volume":{"size":1,"consistencygroup_id":"g"}}`, 400, "consistency groups"},
		{"update bad metadata", e.tokA, "PUT", A + "/volumes/" + fa.vol, `{"volume":{"name":"renamed","metadata":{"":"x"}}}`, 400, "empty key"},
		{"update metadata not strings", e.tokA, "PUT", A + "/volumes/" + fa.vol, `{"volume":{"metadata":{"a":true}}}`, 400, "metadata"},
		{"snapshot bad metadata", e.tokA, "POST", A + "/snapshots", `{"snapshot":{"volume_id":"` + fa.vol + `","metadata":{"k":"` + strings.Repeat("v", 256) + `"}}}`, 400, "value of 256 characters"},
		{"unknown volume", e.tokA, "GET", A + "/volumes/nope", "", 404, "nope"},
		{"metadata add without metadata", e.tokA, "POST", A + "/volumes/" + fa.vol + "/metadata", `{"meta":{"a":"b"}}`, 400, "unknown field"},
		{"metadata replace with a bad key", e.tokA, "PUT", A + "/snapshots/" + fa.snap + "/metadata", `{"metadata":{"":"x"}}`, 400, "empty key"},
		{"metadata item of another key", e.tokA, "PUT", A + "/volumes/" + fa.vol + "/metadata/a", `{"meta":{"b":"c"}}`, 400, `URL's key "a"`},
		{"metadata item missing", e.tokA, "GET", A + "/snapshots/" + fa.snap + "/metadata/a", "", 404, `metadata key "a"`},
		{"metadata delete missing", e.tokA, "DELETE", A + "/volumes/" + fa.vol + "/metadata/a", "", 404, `metadata key "a"`},
		{"metadata of an unknown snapshot", e.tokA, "GET", A + "/snapshots/nope/metadata", "", 404, "nope"},
		{"snapshot update nothing", e.tokA, "PUT", A + "/snapshots/" + fa.snap, `{"snapshot":{}}`, 400, "nothing to update"},
		{"snapshot update of an unknown one", e.tokA, "PUT", A + "/snapshots/nope", `{"snapshot":{"name":"x"}}`, 404, "nope"},
		{"list bad metadata filter", e.tokA, "GET", A + "/volumes/detail?metadata=a%3Db", "", 400, "Python dict"},
		{"list metadata filter of backups", e.tokA, "GET", A + "/backups?metadata=%7B%7D", "", 400, "metadata"},
		{"update nothing", e.tokA, "PUT", A + "/volumes/" + fa.vol, `{"volume":{}}`, 400, "nothing to update"},
		{"update nothing but nulls", e.tokA, "PUT", A + "/volumes/" + fa.vol, `{"volume":{"display_name":null,"display_description":null}}`, 400, "nothing to update"},
		{"update both names", e.tokA, "PUT", A + "/volumes/" + fa.vol, `{"volume":{"name":"a","display_name":"b"}}`, 400, "volume.name or volume.display_name, not both"},
		{"update both descriptions", e.tokA, "PUT", A + "/volumes/" + fa.vol, `{"volume":{"description":"a","display_description":"a"}}`, 400, "not both"},
		{"update long display name", e.tokA, "PUT", A + "/volumes/" + fa.vol, `{"volume":{"display_name":"` + strings.Repeat("n", 300) + `"}}`, 400, "name"},
		{"extend smaller", e.tokA, "POST", A + "/volumes/" + fa.vol + "/action", `{"os-extend":{"new_size":1}}`, 400, "larger"},
		{"two actions", e.tokA, "POST", A + "/volumes/" + fa.vol + "/action", `{"os-attach":{},"os-detach":{}}`, 400, "exactly one"},
		{"no action", e.tokA, "POST", A + "/volumes/" + fa.vol + "/action", `{}`, 400, "exactly one"},
		{"unknown action", e.tokA, "POST", A + "/volumes/" + fa.vol + "/action", `{"os-fly":{}}`, 400, "os-fly"},
		{"detach available", e.tokA, "POST", A + "/volumes/" + fa.vol + "/action", `{"os-detach":{}}`, 409, "available"},
		{"delete with snapshots", e.tokA, "DELETE", A + "/volumes/" + fa.vol, "", 409, "snapshots"},
		{"snapshot no volume", e.tokA, "POST", A + "/snapshots", `{"snapshot":{}}`, 400, "volume_id"},
		{"snapshot unknown volume", e.tokA, "POST", A + "/snapshots", `{"snapshot":{"volume_id":"nope"}}`, 404, "nope"},
		// The block storage API looks a null volume_id up (tempest's
		// test_create_snapshot_without_passing_volume_id).
		{"snapshot null volume", e.tokA, "POST", A + "/snapshots", `{"snapshot":{"volume_id":null}}`, 404, "volume null"},
		{"snapshot numeric volume", e.tokA, "POST", A + "/snapshots", `{"snapshot":{"volume_id":7}}`, 400, "volume_id: want a string"},
		{"backup of a snapshot naming another volume", e.tokA, "POST", A + "/backups", `{"backup":{"volume_id":"other","snapshot_id":"` + fa.snap + `"}}`, 400, "is of volume"},
		{"backup neither", e.tokA, "POST", A + "/backups", `{"backup":{"name":"x"}}`, 400, "volume_id or snapshot_id"},
		{"backup unknown volume", e.tokA, "POST", A + "/backups", `{"backup":{"volume_id":"nope"}}`, 404, "nope"},
		{"backup bad container", e.tokA, "POST", A + "/backups", `{"backup":{"volume_id":"` + fa.vol + `","container":"../x"}}`, 400, "container"},
		{"incremental without full", e.tokA, "POST", A + "/backups", `{"backup":{"volume_id":"` + fa.vol + `","incremental":true,"container":"other"}}`, 400, "full backup first"},
		{"restore unknown", e.tokA, "POST", A + "/backups/nope/restore", `{"restore":{}}`, 404, "nope"},
		{"restore into unknown", e.tokA, "POST", A + "/backups/" + fa.backup + "/restore", `{"restore":{"volume_id":"nope"}}`, 404, "nope"},
		{"restore bad field", e.tokA, "POST", A + "/backups/" + fa.backup + "/restore", `{"restore":{"size":3}}`, 400, "size"},
		{"import garbage", e.tokA, "POST", A + "/backups/import_record", `{"backup-record":{"backup_service":"cairn.repository","backup_url":"!!"}}`, 400, "base64"},
		{"import wrong service", e.tokA, "POST", A + "/backups/import_record", `{"backup-record":{"backup_service":"swift","backup_url":""}}`, 400, "backup_service"},
		{"import none", e.tokA, "POST", A + "/backups/import_record", `{}`, 400, "backup-record"},
		{"list bad limit", e.tokA, "GET", A + "/volumes?limit=-1", "", 400, "limit"},
		{"list bad sort", e.tokA, "GET", A + "/volumes?sort=colour", "", 400, "colour"},
		{"list bad dir", e.tokA, "GET", A + "/volumes?sort=name:up", "", 400, "up"},
		{"list unknown param", e.tokA, "GET", A + "/volumes?nmae=x", "", 400, "nmae"},
		{"list unknown marker", e.tokA, "GET", A + "/volumes?marker=nope", "", 404, "nope"},
		{"list another project's marker", e.tokB, "GET", "/v3/beta/volumes?marker=" + fa.vol, "", 404, fa.vol},
		{"list another project's marker (detail)", e.tokB, "GET", "/v3/beta/backups/detail?marker=" + fa.backup, "", 404, fa.backup},
		{"all_tenants junk", e.admin, "GET", "/v3/admin/volumes?all_tenants=maybe", "", 400, "all_tenants"},
		{"unknown path", e.tokA, "GET", A + "/widgets", "", 404, "no such resource"},
		{"wrong method", e.tokA, "PATCH", A + "/volumes/" + fa.vol, `{}`, 405, ""},
		{"quota volumes", quotaTok, "POST", "/v3/small/volumes", `{"volume":{"size":1}}`, 413, "volumes"},
		{"quota snapshots", quotaTok, "POST", "/v3/small/snapshots", `{"snapshot":{"volume_id":"VOL"}}`, 413, "snapshots"},
		{"quota backups", quotaTok, "POST", "/v3/small/backups", `{"backup":{"volume_id":"VOL"}}`, 413, "backups"},
		{"quota gigabytes", quotaTok, "POST", "/v3/small/volumes/VOL/action", `{"os-extend":{"new_size":5}}`, 413, "gigabytes"},
	}
	var small struct{ Volumes []wire.Summary }
	e.must(200, quotaTok, "GET", "/v3/small/volumes", nil, &small)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.state()
			path := strings.ReplaceAll(c.path, "VOL", small.Volumes[0].ID)
			body := strings.ReplaceAll(c.body, "VOL", small.Volumes[0].ID)
			var b any
			if c.body != "" {
				b = body
			}
			var out map[string]map[string]any
			code := e.do(c.token, c.method, path, b, &out)
			if c.code == 0 { // not an error case: just accepted or refused cleanly
				if code >= 500 {
					t.Fatalf("%d", code)
				}
				e.settle()
				return
			}
			if code != c.code {
				t.Fatalf("status %d, want %d: %v", code, c.code, out)
			}
			if len(out) != 1 {
				t.Fatalf("error body %v: want one named error", out)
			}
			for _, v := range out {
				msg, _ := v["message"].(string)
				if int(v["code"].(float64)) != code || !strings.Contains(msg, c.says) {
					t.Errorf("error %v: want code %d and a message saying %q", v, code, c.says)
				}
			}
			e.settle()
			if after := e.state(); !reflect.DeepEqual(before, after) {
				t.Fatalf("a refused request changed state:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
}

// TestBusyResource: a second operation on a resource a task is working
// on is refused with 409 and changes nothing.
func TestBusyResource(t *testing.T) {
	e := newEnv(t)
	fa := e.fixture(e.tokA, "alpha")
	// Hold the backup in "restoring" by starting a restore, and the
	// volume in backing-up by starting a backup; race the second request.
	var res struct{ Restore map[string]string }
	e.must(202, e.tokA, "POST", "/v3/alpha/backups/"+fa.backup+"/restore", `{"restore":{}}`, &res)
	code := e.do(e.tokA, "DELETE", "/v3/alpha/backups/"+fa.backup, nil, nil)
	if code != 409 && code != 202 {
		t.Fatalf("delete of a restoring backup: %d", code)
	}
	e.settle()
	if code == 409 {
		if r := e.wait(e.tokA, "alpha", "backup", fa.backup); r["status"] != "available" {
			t.Fatalf("backup after the restore: %v", r)
		}
	}
	var b struct{ Backup wire.Backup }
	e.must(202, e.tokA, "POST", "/v3/alpha/backups", map[string]any{"backup": map[string]any{"volume_id": fa.vol}}, &b)
	for _, req := range []struct{ method, path, body string }{
		{"DELETE", "/v3/alpha/volumes/" + fa.vol, ""},
		{"POST", "/v3/alpha/volumes/" + fa.vol + "/action", `{"os-extend":{"new_size":2}}`},
		{"POST", "/v3/alpha/volumes/" + fa.vol + "/action", `{"os-attach":{}}`},
		{"DELETE", "/v3/alpha/backups/" + b.Backup.ID, ""},
	} {
		var body any
		if req.body != "" {
			body = req.body
		}
		var out map[string]map[string]any
		code := e.do(e.tokA, req.method, req.path, body, &out)
		if code != 409 {
			// The backup may already have finished on a fast machine.
			if r := e.wait(e.tokA, "alpha", "backup", b.Backup.ID); code < 300 && r != nil && r["status"] == "available" {
				continue
			}
			t.Errorf("%s %s during a backup: %d %v", req.method, req.path, code, out)
		} else if msg := fmt.Sprint(out); !strings.Contains(msg, "backing-up") && !strings.Contains(msg, "creating") && !strings.Contains(msg, "snapshots") {
			t.Errorf("409 without the state: %v", out)
		}
	}
	e.settle()
}

// manyMetadata is a JSON object of n metadata items.
func manyMetadata(n int) string {
	m := make(map[string]string, n)
	for i := range n {
		m[fmt.Sprintf("k%03d", i)] = "v"
	}
	b, _ := json.Marshal(m)
	return string(b)
}
