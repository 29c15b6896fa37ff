package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/api"
	"github.com/cairnproject/cairn/internal/wire"
)

// dbEnv is the database API's real handlers over fakeDatabases, with the
// service's real authentication (newEnv's projects and tokens).
type dbEnv struct {
	*env
	fake *fakeDatabases
	url  string
}

func newDBEnv(t *testing.T) *dbEnv {
	t.Helper()
	e := newEnv(t)
	fake := newFakeDatabases()
	srv := httptest.NewServer(api.New(e.svc, nil, nil, api.WithDatabases(fake)))
	t.Cleanup(srv.Close)
	return &dbEnv{env: e, fake: fake, url: srv.URL}
}

// call sends a request to the database API and decodes a JSON answer
// into out (if not nil). A string body is sent as it is.
func (d *dbEnv) call(token, method, path string, body any, out any) int {
	d.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		js, _ := json.Marshal(b)
		rd = bytes.NewReader(js)
	}
	req, _ := http.NewRequestWithContext(d.t.Context(), method, d.url+path, rd)
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			d.t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

func (d *dbEnv) mustCall(code int, token, method, path string, body any, out any) {
	d.t.Helper()
	var raw json.RawMessage
	if got := d.call(token, method, path, body, &raw); got != code {
		d.t.Fatalf("%s %s: %d %s, want %d", method, path, got, raw, code)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			d.t.Fatal(err)
		}
	}
}

// state is everything the fake holds, to show a refused request changed
// nothing.
func (f *fakeDatabases) state() any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return []any{len(f.instances), len(f.backups), len(f.strategies), fmtAll(f.instances), fmtAll(f.backups), fmtAll(f.strategies)}
}

func fmtAll[K comparable, V any](m map[K]V) string {
	js, _ := json.Marshal(m)
	return string(js)
}

// dbFixture is an ACTIVE instance with a COMPLETED backup, in alpha.
type dbFixture struct{ inst, backup string }

func (d *dbEnv) fixture() dbFixture {
	d.t.Helper()
	var in struct{ Instance wire.Instance }
	d.mustCall(202, d.tokA, "POST", "/v1.0/alpha/instances",
		`{"instance":{"name":"db","datastore":{"type":"postgresql"},"volume":{"size":2}}}`, &in)
	d.fake.setInstance(in.Instance.ID, func(v *cairn.Instance) {
		v.Status, v.OperatingStatus = cairn.InstanceActive, cairn.OperatingHealthy
	})
	var b struct{ Backup wire.DatabaseBackup }
	d.mustCall(202, d.tokA, "POST", "/v1.0/alpha/backups",
		`{"backup":{"name":"b","instance":"`+in.Instance.ID+`"}}`, &b)
	d.fake.setBackup(b.Backup.ID, func(b *cairn.DatabaseBackup) { b.Status, b.Size = cairn.DatabaseBackupCompleted, 1<<30 })
	return dbFixture{inst: in.Instance.ID, backup: b.Backup.ID}
}

// TestDatabaseAPIBadInput: every malformed or refused request to the
// database API is answered with the right status, one named error whose
// message says what was wrong, and changes nothing.
func TestDatabaseAPIBadInput(t *testing.T) {
	d := newDBEnv(t)
	fx := d.fixture()
	const A = "/v1.0/alpha"
	inst := func(body string) string {
		return `{"instance":{"name":"x","datastore":{"type":"postgresql"},` + body + `}}`
	}
	cases := []struct {
		name         string
		token        string
		method, path string
		body         string
		code         int
		says         string
	}{
		{"no token", "", "GET", A + "/instances", "", 401, "no token"},
		{"bad token", "cairn_nope", "GET", A + "/instances", "", 401, ""},
		{"another project's URL", d.tokB, "GET", A + "/instances", "", 404, "project alpha"},
		{"another project's instance", d.tokB, "GET", "/v1.0/beta/instances/" + fx.inst, "", 404, fx.inst},
		{"another project's backup", d.tokB, "DELETE", "/v1.0/beta/backups/" + fx.backup, "", 404, fx.backup},
		{"empty body", d.tokA, "POST", A + "/instances", ``, 400, "empty"},
		{"not JSON", d.tokA, "POST", A + "/instances", `{"instance":`, 400, "request body"},
		{"trailing data", d.tokA, "POST", A + "/instances", inst(`"volume":{"size":1}`) + ` {}`, 400, "after the JSON"},
		{"unknown member", d.tokA, "POST", A + "/instances", inst(`"volume":{"size":1},"nics":[{"net-id":"n"}]`), 400, `unknown field "nics"`},
		{"no name", d.tokA, "POST", A + "/instances", `{"instance":{"datastore":{"type":"postgresql"},"volume":{"size":1}}}`, 400, "instance.name is required"},
		{"no datastore", d.tokA, "POST", A + "/instances", `{"instance":{"name":"x","volume":{"size":1}}}`, 400, "instance.datastore.type is required"},
		{"no size", d.tokA, "POST", A + "/instances", inst(`"volume":{"type":null}`), 400, "instance.volume.size is required"},
		{"no volume", d.tokA, "POST", A + "/instances", inst(`"databases":[]`), 400, "instance.volume.size is required"},
		{"size zero", d.tokA, "POST", A + "/instances", inst(`"volume":{"size":0}`), 400, "want a positive number of GiB"},
		{"size a string", d.tokA, "POST", A + "/instances", inst(`"volume":{"size":"1"}`), 400, "size"},
		{"volume type", d.tokA, "POST", A + "/instances", inst(`"volume":{"size":1,"type":"ssd"}`), 400, "cairn has no volume types"},
		{"another flavor", d.tokA, "POST", A + "/instances", inst(`"volume":{"size":1},"flavorRef":"m1.small"`), 400, `cairn has one flavor, "host"`},
		{"an integer flavor", d.tokA, "POST", A + "/instances", inst(`"volume":{"size":1},"flavorRef":7`), 400, `flavorRef "7"`},
		{"a flavor object", d.tokA, "POST", A + "/instances", inst(`"volume":{"size":1},"flavorRef":{"id":"host"}`), 400, "flavorRef"},
		{"public", d.tokA, "POST", A + "/instances", inst(`"volume":{"size":1},"access":{"is_public":true}`), 400, "is_public and allowed_cidrs are not supported"},
		{"allowed cidrs", d.tokA, "POST", A + "/instances", inst(`"volume":{"size":1},"access":{"allowed_cidrs":["10.0.0.0/8"]}`), 400, "not supported"},
		{"database without a name", d.tokA, "POST", A + "/instances", inst(`"volume":{"size":1},"databases":[{"character_set":"utf8"}]`), 400, "instance.databases[0].name is required"},
		{"user without a password", d.tokA, "POST", A + "/instances", inst(`"volume":{"size":1},"users":[{"name":"u"}]`), 400, "instance.users[0]: name and password are required"},
		{"user's database without a name", d.tokA, "POST", A + "/instances", inst(`"volume":{"size":1},"users":[{"name":"u","password":"p","databases":[{}]}]`), 400, "instance.users[0].databases[0].name is required"},
		{"restore point without a backup", d.tokA, "POST", A + "/instances", inst(`"restorePoint":{}`), 400, "needs a backupRef, or a point_in_time"},
		{"restore from a missing backup", d.tokA, "POST", A + "/instances", inst(`"restorePoint":{"backupRef":"nope"}`), 404, "backup nope"},
		{"restore too small", d.tokA, "POST", A + "/instances", inst(`"volume":{"size":1},"restorePoint":{"backupRef":"` + fx.backup + `"}`), 400, "needs 2"},
		{"datastore not installed", d.tokA, "POST", A + "/instances", `{"instance":{"name":"x","datastore":{"type":"oracle"},"volume":{"size":1}}}`, 400, "datastore oracle: not installed"},
		{"version not installed", d.tokA, "POST", A + "/instances", `{"instance":{"name":"x","datastore":{"type":"postgresql","version":"9.6"},"volume":{"size":1}}}`, 400, "version 9.6"},
		{"delete a missing instance", d.tokA, "DELETE", A + "/instances/nope", "", 404, "instance nope"},
		{"backup without a name", d.tokA, "POST", A + "/backups", `{"backup":{"instance":"` + fx.inst + `"}}`, 400, "backup.name is required"},
		{"backup without an instance", d.tokA, "POST", A + "/backups", `{"backup":{"name":"b"}}`, 400, "backup.instance is required"},
		{"backup incremental 2", d.tokA, "POST", A + "/backups", `{"backup":{"name":"b","instance":"` + fx.inst + `","incremental":2}}`, 400, "backup.incremental 2: want 0 or 1"},
		{"backup incremental true", d.tokA, "POST", A + "/backups", `{"backup":{"name":"b","instance":"` + fx.inst + `","incremental":true}}`, 400, "incremental"},
		{"backup strategy unknown", d.tokA, "POST", A + "/backups", `{"backup":{"name":"b","instance":"` + fx.inst + `","strategy":"fast"}}`, 400, `backup.strategy "fast": want snapshot, physical or logical`},
		{"backup containers differ", d.tokA, "POST", A + "/backups", `{"backup":{"name":"b","instance":"` + fx.inst + `","container":"a","swift_container":"b"}}`, 400, "given twice with different values"},
		{"backup of a missing instance", d.tokA, "POST", A + "/backups", `{"backup":{"name":"b","instance":"nope"}}`, 404, "instance nope"},
		{"backup restore_from", d.tokA, "POST", A + "/backups", `{"backup":{"name":"b","restore_from":{"remote_location":"x"}}}`, 400, `unknown field "restore_from"`},
		{"strategy with nothing", d.tokA, "POST", A + "/backup_strategies", `{"backup_strategy":{"instance_id":"` + fx.inst + `"}}`, 400, "give swift_container (or container), strategy or both"},
		{"strategy unknown", d.tokA, "POST", A + "/backup_strategies", `{"backup_strategy":{"strategy":"fast"}}`, 400, "backup_strategy.strategy"},
		{"strategy of a missing instance", d.tokA, "POST", A + "/backup_strategies", `{"backup_strategy":{"instance_id":"nope","swift_container":"c"}}`, 404, "instance nope"},
		{"delete a missing strategy", d.tokA, "DELETE", A + "/backup_strategies?instance_id=" + fx.inst, "", 404, "backup strategy"},
		{"list bad limit", d.tokA, "GET", A + "/instances?limit=0", "", 400, "limit"},
		{"list limit too large", d.tokA, "GET", A + "/backups?limit=1001", "", 400, "limit 1001"},
		{"list unknown parameter", d.tokA, "GET", A + "/instances?sort=name", "", 400, `query parameter "sort": unknown here`},
		{"list repeated parameter", d.tokA, "GET", A + "/backups?instance_id=a&instance_id=b", "", 400, "given 2 times"},
		{"list include_clustered junk", d.tokA, "GET", A + "/instances?include_clustered=maybe", "", 400, "include_clustered"},
		{"list unknown marker", d.tokA, "GET", A + "/instances?marker=nope", "", 404, "marker nope"},
		{"all projects, not admin", d.tokA, "GET", A + "/backups?all_projects=True", "", 403, "for admins"},
		{"another project by project_id", d.tokA, "GET", A + "/backups?project_id=beta", "", 404, "project beta"},
		{"a missing project by project_id", d.admin, "GET", "/v1.0/admin/backup_strategies?project_id=nope", "", 404, "project nope"},
		{"datastores paged", d.tokA, "GET", A + "/datastores?limit=1", "", 400, `query parameter "limit": unknown here`},
		{"missing datastore", d.tokA, "GET", A + "/datastores/oracle", "", 404, "datastore oracle"},
		{"missing version", d.tokA, "GET", A + "/datastores/postgresql/versions/9.6", "", 404, "version 9.6"},
		{"missing flavor", d.tokA, "GET", A + "/flavors/1", "", 404, "cairn has one flavor, host"},
		{"wrong method", d.tokA, "PUT", A + "/instances/" + fx.inst, `{}`, 405, "allowed methods: GET, DELETE"},
		{"recover without a time", d.tokA, "POST", A + "/instances/" + fx.inst + "/recover", `{"recovery":{}}`, 400, "point_in_time is required"},
		{"recover, a malformed time", d.tokA, "POST", A + "/instances/" + fx.inst + "/recover", `{"recovery":{"point_in_time":"yesterday"}}`, 400, "request body"},
		{"recover, an unknown field", d.tokA, "POST", A + "/instances/" + fx.inst + "/recover", `{"recovery":{"point_in_time":"2026-12-05T10:15:30Z","force":true}}`, 400, "force"},
		{"recover, a missing backup", d.tokA, "POST", A + "/instances/" + fx.inst + "/recover", `{"recovery":{"point_in_time":"2026-12-05T10:15:30Z","backup":"nope"}}`, 404, "backup nope"},
		{"recover another project's instance", d.tokB, "POST", "/v1.0/beta/instances/" + fx.inst + "/recover", `{"recovery":{"point_in_time":"2026-12-05T10:15:30Z"}}`, 404, fx.inst},
		{"undo without a recover", d.tokA, "POST", A + "/instances/" + fx.inst + "/action", `{"undo_recover":{}}`, 409, "no completed recover"},
		{"an action cairn does not serve", d.tokA, "POST", A + "/instances/" + fx.inst + "/action", `{"restart":{}}`, 400, "cairn serves undo_recover"},
		{"two actions", d.tokA, "POST", A + "/instances/" + fx.inst + "/action", `{"undo_recover":{},"restart":{}}`, 400, "exactly one action"},
		{"undo with arguments", d.tokA, "POST", A + "/instances/" + fx.inst + "/action", `{"undo_recover":{"force":true}}`, 400, "empty object"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := d.fake.state()
			var body any
			if c.body != "" || c.method == "POST" {
				body = c.body
			}
			var out map[string]map[string]any
			code := d.call(c.token, c.method, c.path, body, &out)
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
			if after := d.fake.state(); !reflect.DeepEqual(before, after) {
				t.Fatalf("a refused request changed state:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

// TestDatabaseAPIAccepts: the forms of a request the API takes beyond
// what Trove's client sends, and what the service is asked for.
func TestDatabaseAPIAccepts(t *testing.T) {
	d := newDBEnv(t)
	fx := d.fixture()
	for _, c := range []struct {
		name, body string
		want       cairn.InstanceCreate
		size       int64 // the answer's volume size
	}{
		{"no flavor", `{"instance":{"name":"a","datastore":{"type":"mariadb","version":"10.11"},"volume":{"size":1}}}`,
			cairn.InstanceCreate{Name: "a", Datastore: "mariadb", DatastoreVersion: "10.11", VolumeSize: 1}, 1},
		{"flavor link", `{"instance":{"name":"b","flavorRef":"https://db.example/v1.0/alpha/flavors/host","datastore":{"type":"postgresql"},"volume":{"size":1,"type":""}}}`,
			cairn.InstanceCreate{Name: "b", Datastore: "postgresql", VolumeSize: 1}, 1},
		{"restore without a size", `{"instance":{"name":"c","datastore":{"type":"postgresql"},"restorePoint":{"backupRef":"` + fx.backup + `"}}}`,
			// The service gives it the backed-up instance's size.
			cairn.InstanceCreate{Name: "c", Datastore: "postgresql", BackupID: fx.backup}, 2},
		{"MariaDB users and databases", `{"instance":{"name":"d","datastore":{"type":"mariadb"},"volume":{"size":1},` +
			`"databases":[{"name":"shop","character_set":"utf8mb4","collate":"utf8mb4_bin"}],` +
			`"users":[{"name":"app","password":"pw","host":"127.0.0.1","databases":[{"name":"shop"}]}],"access":{"is_public":false,"allowed_cidrs":[]}}}`,
			cairn.InstanceCreate{Name: "d", Datastore: "mariadb", VolumeSize: 1,
				Databases: []cairn.DatabaseSpec{{Name: "shop", CharacterSet: "utf8mb4", Collate: "utf8mb4_bin"}},
				Users:     []cairn.DatabaseUser{{Name: "app", Password: "pw", Host: "127.0.0.1", Databases: []string{"shop"}}}}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out struct{ Instance wire.Instance }
			d.mustCall(202, d.tokA, "POST", "/v1.0/alpha/instances", c.body, &out)
			created, _ := d.fake.createdInputs()
			if got := created[len(created)-1]; !reflect.DeepEqual(got, c.want) {
				t.Errorf("the service was asked for\n%+v\nwant\n%+v", got, c.want)
			}
			if out.Instance.Status != "BUILD" || out.Instance.Flavor.ID != "host" || out.Instance.Volume.Size != c.size {
				t.Errorf("answer: %+v", out.Instance)
			}
		})
	}
	// Backups: swift_container and container agree; strategy passes.
	var b struct{ Backup wire.DatabaseBackup }
	d.mustCall(202, d.tokA, "POST", "/v1.0/alpha/backups",
		`{"backup":{"name":"p","instance":"`+fx.inst+`","incremental":0,"strategy":"physical","container":"c1","swift_container":"c1","parent_id":"`+fx.backup+`"}}`, &b)
	_, backups := d.fake.createdInputs()
	want := cairn.DatabaseBackupCreate{InstanceID: fx.inst, Name: "p", ParentID: fx.backup, Strategy: cairn.StrategyPhysical, Container: "c1"}
	if got := backups[len(backups)-1]; got != want {
		t.Errorf("the service was asked for %+v, want %+v", got, want)
	}
	if b.Backup.Status != "NEW" || b.Backup.Size != nil || b.Backup.Strategy != "physical" || b.Backup.ParentID == nil {
		t.Errorf("answer: %+v", b.Backup)
	}
}

// TestDatabaseAPIViews: what the API shows of the service's instances
// and backups as their tasks move them on.
func TestDatabaseAPIViews(t *testing.T) {
	d := newDBEnv(t)
	fx := d.fixture()
	show := func() wire.Instance {
		var out struct{ Instance wire.Instance }
		d.mustCall(200, d.tokA, "GET", "/v1.0/alpha/instances/"+fx.inst, nil, &out)
		return out.Instance
	}
	v := show()
	if v.IP != nil || v.Addresses != nil || v.Volume.Used != nil || v.Fault != nil || v.FailReason != nil {
		t.Errorf("an instance not listening yet: %+v", v)
	}
	if want := []wire.Link{{Rel: "self", Href: "/v1.0/alpha/instances/" + fx.inst}, {Rel: "bookmark", Href: "/instances/" + fx.inst}}; !reflect.DeepEqual(v.Links, want) {
		t.Errorf("links %v, want %v", v.Links, want)
	}
	d.fake.setInstance(fx.inst, func(v *cairn.Instance) {
		v.Address, v.Port, v.VolumeUsed = "10.1.2.3", 5433, 1<<29
	})
	v = show()
	if !reflect.DeepEqual(v.IP, []string{"10.1.2.3"}) || len(v.Addresses) != 1 || v.Addresses[0].Port != 5433 ||
		v.Volume.Used == nil || *v.Volume.Used != 0.5 {
		t.Errorf("a listening instance: %+v", v)
	}
	d.fake.setInstance(fx.inst, func(v *cairn.Instance) {
		v.Status, v.OperatingStatus, v.FailReason = cairn.InstanceError, cairn.OperatingFailed, "postgres: exit status 1"
	})
	v = show()
	if v.Status != "ERROR" || v.OperatingStatus != "FAILED" || v.FailReason == nil || *v.FailReason != "postgres: exit status 1" ||
		v.Fault == nil || v.Fault.Message != "postgres: exit status 1" || !v.Fault.Created.Equal(v.Updated) {
		t.Errorf("a failed instance: %+v (fault %+v)", v, v.Fault)
	}

	var bl struct{ Backups []wire.DatabaseBackup }
	d.mustCall(200, d.tokA, "GET", "/v1.0/alpha/instances/"+fx.inst+"/backups", nil, &bl)
	if len(bl.Backups) != 1 || bl.Backups[0].ID != fx.backup || bl.Backups[0].InstanceID != fx.inst {
		t.Errorf("the instance's backups: %+v", bl)
	}
	d.mustCall(404, d.tokA, "GET", "/v1.0/alpha/instances/nope/backups", nil, nil)

	var b struct{ Backup wire.DatabaseBackup }
	d.mustCall(200, d.tokA, "GET", "/v1.0/alpha/backups/"+fx.backup, nil, &b)
	if b.Backup.Size == nil || *b.Backup.Size != 1 || b.Backup.Datastore.VersionID != "postgresql-15" {
		t.Errorf("a completed backup: %+v", b.Backup)
	}
	d.fake.setBackup(fx.backup, func(b *cairn.DatabaseBackup) {
		b.Status, b.FailReason = cairn.DatabaseBackupDeleteFailed, "store: unreachable"
	})
	d.mustCall(200, d.tokA, "GET", "/v1.0/alpha/backups/"+fx.backup, nil, &b)
	if b.Backup.Size != nil || b.Backup.FailReason == nil || *b.Backup.FailReason != "store: unreachable" {
		t.Errorf("a backup whose deletion failed: %+v", b.Backup)
	}

	// Datastores, versions and the flavor.
	var ds struct{ Datastores []wire.Datastore }
	d.mustCall(200, d.tokA, "GET", "/v1.0/alpha/datastores", nil, &ds)
	if len(ds.Datastores) != 2 || ds.Datastores[1].DefaultVersion != "postgresql-15" || ds.Datastores[1].Versions[0].Datastore != "postgresql" {
		t.Errorf("datastores: %+v", ds)
	}
	var ver struct{ Version wire.DatastoreVersion }
	d.mustCall(200, d.tokA, "GET", "/v1.0/alpha/datastores/mariadb/versions/10.11", nil, &ver)
	if ver.Version.ID != "mariadb-10.11" || ver.Version.Version != "10.11.6" ||
		ver.Version.Links[0].Href != "/v1.0/alpha/datastores/mariadb/versions/mariadb-10.11" {
		t.Errorf("version: %+v", ver)
	}
	var fl struct{ Flavor wire.Flavor }
	d.mustCall(200, d.tokA, "GET", "/v1.0/alpha/flavors/host", nil, &fl)
	if fl.Flavor.ID != wire.HostFlavorID {
		t.Errorf("flavor: %+v", fl)
	}
	var vd struct{ Versions []wire.Version }
	d.mustCall(200, "", "GET", "/v1.0/", nil, &vd)
	if len(vd.Versions) != 1 || vd.Versions[0].ID != "v1.0" || vd.Versions[0].Status != "CURRENT" {
		t.Errorf("version document: %+v", vd)
	}
}

// TestDatabaseAPIPaging: a full page carries Trove's "links" with the
// next page's marker, which the client follows to the end.
func TestDatabaseAPIPaging(t *testing.T) {
	d := newDBEnv(t)
	var ids []string
	for _, name := range []string{"a", "b", "c"} {
		var out struct{ Instance wire.Instance }
		d.mustCall(202, d.tokA, "POST", "/v1.0/alpha/instances",
			`{"instance":{"name":"`+name+`","datastore":{"type":"postgresql"},"volume":{"size":1}}}`, &out)
		ids = append(ids, out.Instance.ID)
	}
	var page struct {
		Instances []wire.Instance
		Links     []wire.Link
	}
	d.mustCall(200, d.tokA, "GET", "/v1.0/alpha/instances?limit=2&include_clustered=False", nil, &page)
	// Newest first.
	if len(page.Instances) != 2 || page.Instances[0].ID != ids[2] || page.Instances[1].ID != ids[1] {
		t.Fatalf("first page: %+v", page.Instances)
	}
	if len(page.Links) != 1 || page.Links[0].Rel != "next" || !strings.Contains(page.Links[0].Href, "marker="+ids[1]) {
		t.Fatalf("first page's links: %+v", page.Links)
	}
	next, found := strings.CutPrefix(page.Links[0].Href, d.url)
	if !found {
		t.Fatalf("next link %q: not absolute, on %s", page.Links[0].Href, d.url)
	}
	page.Links = nil
	d.mustCall(200, d.tokA, "GET", next, nil, &page)
	if len(page.Instances) != 1 || page.Instances[0].ID != ids[0] || page.Links != nil {
		t.Fatalf("last page: %+v, links %+v", page.Instances, page.Links)
	}
	// /detail is the same list.
	d.mustCall(200, d.tokA, "GET", "/v1.0/alpha/instances/detail?limit=2", nil, &page)
	if len(page.Instances) != 2 || page.Instances[0].ID != ids[2] || len(page.Links) != 1 {
		t.Fatalf("detail: %+v, links %+v", page.Instances, page.Links)
	}

	// An admin reaches another project with project_id, and lists every
	// project's backups with all_projects.
	var strategies struct {
		BackupStrategies []wire.BackupStrategy `json:"backup_strategies"`
	}
	d.mustCall(202, d.tokA, "POST", "/v1.0/alpha/backup_strategies", `{"backup_strategy":{"strategy":"logical"}}`, nil)
	d.mustCall(200, d.admin, "GET", "/v1.0/admin/backup_strategies?project_id=alpha", nil, &strategies)
	if len(strategies.BackupStrategies) != 1 || strategies.BackupStrategies[0].ProjectID != "alpha" ||
		strategies.BackupStrategies[0].Strategy != "logical" || strategies.BackupStrategies[0].SwiftContainer != "" {
		t.Errorf("alpha's strategies as the admin sees them: %+v", strategies)
	}
	d.mustCall(200, d.admin, "GET", "/v1.0/admin/backups?all_projects=True", nil, nil)
	d.mustCall(202, d.admin, "DELETE", "/v1.0/admin/backup_strategies?project_id=alpha", nil, nil)
	d.mustCall(200, d.tokA, "GET", "/v1.0/alpha/backup_strategies", nil, &strategies)
	if len(strategies.BackupStrategies) != 0 {
		t.Errorf("after the admin deleted it: %+v", strategies)
	}
}

// TestDatabaseAPINotServed: without Databases the database API's routes
// answer 404 (after authentication), and the block storage API is
// unchanged.
func TestDatabaseAPINotServed(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/v1.0/alpha/instances", "/v1.0/alpha/flavors", "/v1.0/alpha/backup_strategies"} {
		var out map[string]wire.Fault
		if code := e.do(e.tokA, "GET", path, nil, &out); code != 404 || !strings.Contains(out["itemNotFound"].Message, "does not serve database instances") {
			t.Errorf("GET %s: %d %v", path, code, out)
		}
	}
	if code := e.do("", "GET", "/v1.0/alpha/instances", nil, nil); code != 401 {
		t.Errorf("without a token: %d", code)
	}
}

// TestRecoverAPI: a recover is accepted with the recovery's shape and
// shows on the instance; an undo of a completed one is accepted too.
func TestRecoverAPI(t *testing.T) {
	d := newDBEnv(t)
	fx := d.fixture()
	const A = "/v1.0/alpha"
	var out struct{ Recovery wire.Recovery }
	d.mustCall(202, d.tokA, "POST", A+"/instances/"+fx.inst+"/recover",
		`{"recovery":{"point_in_time":"2026-12-05T10:15:30+01:00","backup":"`+fx.backup+`"}}`, &out)
	rc := out.Recovery
	want := time.Date(2026, 12, 5, 9, 15, 30, 0, time.UTC)
	if rc.ID == "" || rc.InstanceID != fx.inst || rc.Name != "db" || rc.Status != "RUNNING" || rc.InstanceStatus != "RECOVER" ||
		rc.RecoveredFromBackup != fx.backup || !rc.PointInTime.Equal(want) || rc.Datastore.Type != "postgresql" {
		t.Fatalf("recovery %+v", rc)
	}
	var in struct{ Instance wire.Instance }
	d.mustCall(200, d.tokA, "GET", A+"/instances/"+fx.inst, nil, &in)
	if in.Instance.Status != "RECOVER" || in.Instance.Recovery == nil || in.Instance.Recovery.ID != rc.ID {
		t.Fatalf("instance during a recover: %+v", in.Instance)
	}
	d.mustCall(409, d.tokA, "POST", A+"/instances/"+fx.inst+"/recover", `{"recovery":{"point_in_time":"2026-12-05T10:15:30Z"}}`, nil)

	d.fake.setInstance(fx.inst, func(v *cairn.Instance) {
		v.Status, v.Recovery.Status, v.Recovery.SafetySnapshot = cairn.InstanceActive, cairn.RecoveryCompleted, "s1"
	})
	d.mustCall(202, d.tokA, "POST", A+"/instances/"+fx.inst+"/action", `{"undo_recover":{}}`, &out)
	if out.Recovery.ID != rc.ID || out.Recovery.Status != "UNDOING" || out.Recovery.InstanceStatus != "RECOVER" {
		t.Fatalf("undo %+v", out.Recovery)
	}
}
