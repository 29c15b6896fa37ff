package api_test

import (
	"bytes"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

// volumeShown is GET of a volume, decoded.
func (e *env) volumeShown(token, project, id string) wire.Volume {
	e.t.Helper()
	var out struct{ Volume wire.Volume }
	e.must(200, token, "GET", "/v3/"+project+"/volumes/"+id, nil, &out)
	return out.Volume
}

// TestVolumeActions: the actions tempest and the clients send, with the
// bodies they send (null from the cinder command, {} from tempest), and
// what each shows.
func TestVolumeActions(t *testing.T) {
	e := newEnv(t)
	const A = "/v3/alpha"
	vol := e.createVolume(e.tokA, "alpha", 1, "v")
	act := A + "/volumes/" + vol + "/action"
	status := func() string { return e.volumeShown(e.tokA, "alpha", vol).Status }
	steps := []struct {
		body   string
		code   int
		status string
	}{
		{`{"os-reserve": null}`, 202, "attaching"},
		{`{"os-reserve": {}}`, 400, "attaching"}, // InvalidVolume, as the block storage API
		{`{"os-unreserve": {}}`, 202, "available"},
		{`{"os-reserve": {}}`, 202, "attaching"},
		{`{"os-attach": {}}`, 200, "in-use"},
		{`{"os-begin_detaching": null}`, 202, "detaching"},
		{`{"os-roll_detaching": {}}`, 202, "in-use"},
		{`{"os-begin_detaching": {}}`, 202, "detaching"},
		{`{"os-detach": {}}`, 202, "available"},
		{`{"os-roll_detaching": {}}`, 400, "available"},
		{`{"os-reserve": {"x": 1}}`, 400, "available"},
		{`{"os-reserve": true}`, 400, "available"},
		{`{"os-reserve": {}, "os-unreserve": {}}`, 400, "available"},
		{`{"os-set_bootable": {"bootable": true}}`, 200, "available"},
		{`{"os-set_bootable": {"bootable": "maybe"}}`, 400, "available"},
		{`{"os-set_bootable": {}}`, 400, "available"},
		{`{"os-set_bootable": {"bootable": 1}}`, 400, "available"},
		{`{"os-set_bootable": {"bootable": true, "x": 1}}`, 400, "available"},
		{`{"os-update_readonly_flag": {"readonly": true}}`, 202, "available"},
		{`{"os-update_readonly_flag": {"readonly": "yes please"}}`, 400, "available"},
		{`{"os-force_delete": {}}`, 403, "available"},
	}
	for _, s := range steps {
		var out map[string]any
		if code := e.do(e.tokA, "POST", act, s.body, &out); code != s.code {
			t.Fatalf("%s: %d %v, want %d", s.body, code, out, s.code)
		}
		if got := status(); got != s.status {
			t.Fatalf("after %s: %s, want %s", s.body, got, s.status)
		}
	}
	v := e.volumeShown(e.tokA, "alpha", vol)
	if v.Bootable != "true" || !reflect.DeepEqual(v.Metadata, map[string]string{"readonly": "True"}) {
		t.Errorf("bootable %q, metadata %v; want \"true\" and readonly True", v.Bootable, v.Metadata)
	}
	// The flags in their string spellings; the tenant's metadata calls
	// neither show nor change the read-only flag, which shows over the
	// tenant's own item.
	e.must(200, e.tokA, "POST", act, `{"os-set_bootable": {"bootable": "False"}}`, nil)
	e.must(202, e.tokA, "POST", act, `{"os-update_readonly_flag": {"readonly": "false"}}`, nil)
	e.must(200, e.tokA, "PUT", A+"/volumes/"+vol+"/metadata", map[string]any{"metadata": map[string]string{"readonly": "True", "k": "v"}}, nil)
	var md wire.AllMetadata
	e.must(200, e.tokA, "GET", A+"/volumes/"+vol+"/metadata", nil, &md)
	if !reflect.DeepEqual(md.Metadata, map[string]string{"readonly": "True", "k": "v"}) {
		t.Errorf("the tenant's metadata: %v", md.Metadata)
	}
	v = e.volumeShown(e.tokA, "alpha", vol)
	if v.Bootable != "false" || !reflect.DeepEqual(v.Metadata, map[string]string{"readonly": "False", "k": "v"}) {
		t.Errorf("bootable %q, metadata %v; want \"false\" and readonly False over the tenant's", v.Bootable, v.Metadata)
	}
	// Another project sees none of it.
	if code := e.do(e.tokB, "POST", "/v3/beta/volumes/"+vol+"/action", `{"os-reserve": {}}`, nil); code != 404 {
		t.Errorf("beta reserving alpha's volume: %d", code)
	}
	// The admin resets to every status tempest uses, then force-deletes.
	for _, st := range []string{"error", "available", "maintenance", "creating", "attaching", "RESERVED"} {
		e.must(202, e.admin, "POST", act, map[string]any{"os-reset_status": map[string]any{"status": st}}, nil)
		if got := status(); got != strings.ToLower(st) {
			t.Errorf("reset to %s: %s", st, got)
		}
	}
	for _, body := range []string{`{"os-reset_status": {"status": "bogus"}}`, `{"os-reset_status": {}}`,
		`{"os-reset_status": {"attach_status": "maybe"}}`, `{"os-reset_status": {"status": "available", "colour": "red"}}`} {
		if code := e.do(e.admin, "POST", act, body, nil); code != 400 {
			t.Errorf("%s: %d, want 400", body, code)
		}
	}
	e.must(202, e.admin, "POST", act, `{"os-reset_status": {"status": null, "attach_status": "detached", "migration_status": null}}`, nil)
	e.must(202, e.admin, "POST", act, `{"os-force_delete": null}`, nil)
	if r := e.wait(e.tokA, "alpha", "volume", vol); r != nil {
		t.Errorf("force-deleted volume still there: %v", r)
	}
	e.settle()
}

// TestResetStatusOfSnapshotsAndBackups: their statuses, in any case; a
// volume's attach status refused.
func TestResetStatusOfSnapshotsAndBackups(t *testing.T) {
	e := newEnv(t)
	fa := e.fixture(e.tokA, "alpha")
	snapAct := "/v3/alpha/snapshots/" + fa.snap + "/action"
	for _, st := range cairn.SnapshotStatuses {
		e.must(202, e.admin, "POST", snapAct, map[string]any{"os-reset_status": map[string]any{"status": strings.ToUpper(string(st))}}, nil)
		var out struct{ Snapshot wire.Snapshot }
		e.must(200, e.tokA, "GET", "/v3/alpha/snapshots/"+fa.snap, nil, &out)
		if out.Snapshot.Status != string(st) {
			t.Errorf("snapshot reset to %s: %s", st, out.Snapshot.Status)
		}
	}
	backupAct := "/v3/alpha/backups/" + fa.backup + "/action"
	for _, tc := range []struct {
		path, body string
		code       int
	}{
		{snapAct, `{"os-reset_status": {"status": "in-use"}}`, 400},
		{snapAct, `{"os-reset_status": {"status": "available", "attach_status": "detached"}}`, 400},
		{backupAct, `{"os-reset_status": {"status": "restoring"}}`, 400},
		{backupAct, `{"os-reset_status": {"status": "available", "migration_status": "none"}}`, 400},
		{backupAct, `{"os-reset_status": {"status": "Error"}}`, 202},
		{backupAct, `{"os-reset_status": {"status": "available"}}`, 202},
		{snapAct, `{"os-reset_status": {"status": "available"}}`, 202},
	} {
		if code := e.do(e.admin, "POST", tc.path, tc.body, nil); code != tc.code {
			t.Errorf("%s %s: %d, want %d", tc.path, tc.body, code, tc.code)
		}
	}
	e.settle()
}

// TestCloneFromSourceVolume: source_volid makes a volume with the
// source's bytes, shows where it came from, and leaves no snapshot.
func TestCloneFromSourceVolume(t *testing.T) {
	e := newEnv(t)
	const A = "/v3/alpha"
	src := e.createVolume(e.tokA, "alpha", 1, "src")
	data := bytes.Repeat([]byte("cairn clone "), 100000)
	e.write(src, 3<<20, data)
	snapsBefore := len(e.eng.Snapshots(cairn.ID{}))
	var out struct{ Volume wire.Volume }
	e.must(202, e.tokA, "POST", A+"/volumes", `{"volume": {"size": 2, "source_volid": "`+src+`", "name": "clone", "snapshot_id": null, "backup_id": null, "imageRef": null}}`, &out)
	clone := out.Volume.ID
	if r := e.wait(e.tokA, "alpha", "volume", clone); r["status"] != "available" {
		t.Fatalf("clone: %v", r)
	}
	v := e.volumeShown(e.tokA, "alpha", clone)
	if v.SourceVolID == nil || *v.SourceVolID != src || v.Size != 2 {
		t.Errorf("clone shows source_volid %v, size %d", v.SourceVolID, v.Size)
	}
	if e.digest(clone, 1<<30) != e.digest(src, 1<<30) {
		t.Error("the clone's first GiB differs from its source")
	}
	if n := len(e.eng.Snapshots(cairn.ID{})); n != snapsBefore {
		t.Errorf("%d engine snapshots after the clone, %d before", n, snapsBefore)
	}
	for _, tc := range []struct {
		token, body string
		code        int
	}{
		{e.tokA, `{"volume": {"size": 1, "source_volid": "nope"}}`, 404},
		{e.tokB, `{"volume": {"source_volid": "` + src + `"}}`, 404},
		{e.tokA, `{"volume": {"source_volid": "` + src + `", "snapshot_id": "` + src + `"}}`, 400},
	} {
		project := "alpha"
		if tc.token == e.tokB {
			project = "beta"
		}
		before := e.state()
		if code := e.do(tc.token, "POST", "/v3/"+project+"/volumes", tc.body, nil); code != tc.code {
			t.Errorf("%s: %d, want %d", tc.body, code, tc.code)
		}
		if after := e.state(); !reflect.DeepEqual(before, after) {
			t.Errorf("%s: a refused create changed state", tc.body)
		}
	}
	e.settle()
}

// TestCascadeDeleteAPI: DELETE ?cascade=true takes the snapshots along;
// without it they refuse the delete; a bad cascade is 400.
func TestCascadeDeleteAPI(t *testing.T) {
	e := newEnv(t)
	const A = "/v3/alpha"
	vol := e.createVolume(e.tokA, "alpha", 1, "v")
	var snaps []string
	for i := range 2 {
		var out struct{ Snapshot wire.SnapshotSummary }
		e.must(202, e.tokA, "POST", A+"/snapshots", map[string]any{"snapshot": map[string]any{"volume_id": vol, "name": fmt.Sprint(i)}}, &out)
		e.wait(e.tokA, "alpha", "snapshot", out.Snapshot.ID)
		snaps = append(snaps, out.Snapshot.ID)
	}
	for _, tc := range []struct {
		query string
		code  int
	}{{"", 409}, {"?cascade=false", 409}, {"?cascade=perhaps", 400}, {"?force=true", 400}, {"?cascade=true&cascade=true", 400}} {
		if code := e.do(e.tokA, "DELETE", A+"/volumes/"+vol+tc.query, nil, nil); code != tc.code {
			t.Errorf("DELETE%s: %d, want %d", tc.query, code, tc.code)
		}
	}
	// A snapshot that cannot be deleted: 400, as the block storage API.
	e.must(202, e.admin, "POST", A+"/snapshots/"+snaps[1]+"/action", `{"os-reset_status": {"status": "creating"}}`, nil)
	if code := e.do(e.tokA, "DELETE", A+"/volumes/"+vol+"?cascade=true", nil, nil); code != 400 {
		t.Errorf("cascade over a creating snapshot: %d, want 400", code)
	}
	e.must(202, e.admin, "POST", A+"/snapshots/"+snaps[1]+"/action", `{"os-reset_status": {"status": "error"}}`, nil)
	e.must(202, e.tokA, "DELETE", A+"/volumes/"+vol+"?cascade=True", nil, nil)
	e.settle()
	for _, p := range []string{"/volumes/" + vol, "/snapshots/" + snaps[0], "/snapshots/" + snaps[1]} {
		if code := e.do(e.tokA, "GET", A+p, nil, nil); code != 404 {
			t.Errorf("GET %s after the cascade: %d", p, code)
		}
	}
	if n := len(e.eng.Snapshots(cairn.ID{})); n != 0 {
		t.Errorf("%d engine snapshots after the cascade", n)
	}
}

// TestListFiltersAPI: limit=0, a capped limit, offset, display_name
// sorting, and the bootable, availability_zone, status and project_id
// filters.
func TestListFiltersAPI(t *testing.T) {
	e := newEnv(t)
	const A = "/v3/alpha"
	var vols []string
	for _, name := range []string{"c", "a", "d", "b"} {
		vols = append(vols, e.createVolume(e.tokA, "alpha", 1, name))
	}
	e.createVolume(e.tokB, "beta", 1, "beta's")
	e.must(200, e.tokA, "POST", A+"/volumes/"+vols[1]+"/action", `{"os-set_bootable": {"bootable": "true"}}`, nil)
	names := func(token, path string) []string {
		t.Helper()
		var out struct{ Volumes []wire.Summary }
		e.must(200, token, "GET", path, nil, &out)
		var got []string
		for _, v := range out.Volumes {
			got = append(got, v.Name)
		}
		return got
	}
	for _, tc := range []struct {
		token, query string
		want         []string
	}{
		{e.tokA, "?limit=0", nil},
		{e.tokA, "?limit=0&sort=name:asc", nil},
		{e.tokA, "?limit=1000000&sort=name:asc", []string{"a", "b", "c", "d"}},
		{e.tokA, "?limit=99999999999999999999999&sort=name", []string{"d", "c", "b", "a"}},
		{e.tokA, "?sort_key=display_name&sort_dir=asc", []string{"a", "b", "c", "d"}},
		{e.tokA, "?sort=display_name:asc&offset=1&limit=2", []string{"b", "c"}},
		{e.tokA, "?sort=name:asc&offset=3", []string{"d"}},
		{e.tokA, "?sort=name:asc&offset=9", nil},
		{e.tokA, "?sort=name:asc&marker=" + vols[1] + "&offset=1", []string{"c", "d"}},
		{e.tokA, "?bootable=true", []string{"a"}},
		{e.tokA, "?bootable=False&sort=name:asc", []string{"b", "c", "d"}},
		{e.tokA, "?availability_zone=nova&name=c", []string{"c"}},
		{e.tokA, "?availability_zone=elsewhere", nil},
		{e.tokA, "?status=available&name=d", []string{"d"}},
		{e.tokA, "?status=error", nil},
		{e.tokA, "?project_id=alpha&name=a", []string{"a"}},
		{e.tokA, "?project_id=beta", nil},
		{e.admin, "?all_tenants=1&project_id=beta", []string{"beta's"}},
		{e.admin, "?project_id=beta", nil},
	} {
		project := "alpha"
		if tc.token == e.admin {
			project = "admin"
		}
		for _, list := range []string{"/volumes", "/volumes/detail"} {
			path := "/v3/" + project + list + tc.query
			if got := names(tc.token, path); !slices.Equal(got, tc.want) {
				t.Errorf("%s: %v, want %v", path, got, tc.want)
			}
		}
	}
	// A full page's next link carries the marker and drops the offset.
	var out struct {
		Volumes []wire.Summary
		Links   []wire.Link `json:"volumes_links"`
	}
	e.must(200, e.tokA, "GET", A+"/volumes?sort=name:asc&limit=2&offset=1", nil, &out)
	if len(out.Links) != 1 || strings.Contains(out.Links[0].Href, "offset") || !strings.Contains(out.Links[0].Href, "marker="+out.Volumes[1].ID) {
		t.Errorf("next link of an offset page: %+v", out.Links)
	}
	// Snapshots and backups take their filters; bad values are 400.
	for _, tc := range []struct {
		path string
		code int
	}{
		{A + "/snapshots?availability_zone=nova&project_id=alpha&offset=2&limit=0", 200},
		{A + "/backups/detail?project_id=alpha&offset=1", 200},
		{A + "/backups?availability_zone=nova", 400},
		{A + "/snapshots?bootable=true", 400},
		{A + "/volumes?bootable=sometimes", 400},
		{A + "/volumes?limit=-1", 400},
		{A + "/volumes?limit=ten", 400},
		{A + "/volumes?offset=-1", 400},
		{A + "/volumes?offset=x", 400},
	} {
		if code := e.do(e.tokA, "GET", tc.path, nil, nil); code != tc.code {
			t.Errorf("GET %s: %d, want %d", tc.path, code, tc.code)
		}
	}
}

// TestBackupUpdateVersion: PUT /backups/{id} is the block storage API's
// from microversion 3.9; below it answers 404 as that API does, and
// changes nothing; from 3.9 it renames. The creator's user shows on
// volumes and is kept on snapshots and backups.
func TestBackupUpdateVersion(t *testing.T) {
	e := newEnv(t)
	fa := e.fixture(e.tokA, "alpha")
	before := e.state()
	put := func(h, name string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), "PUT", e.srv.URL+"/v3/alpha/backups/"+fa.backup,
			strings.NewReader(`{"backup": {"name": "`+name+`"}}`))
		req.Header.Set("X-Auth-Token", e.tokA)
		if h != "" {
			req.Header.Set("OpenStack-API-Version", h)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, h := range []string{"", "volume 3.0", "volume 3.8"} {
		if code := put(h, "renamed"); code != 404 {
			t.Errorf("PUT backup at %q: %d, want 404", h, code)
		}
	}
	if after := e.state(); !reflect.DeepEqual(before, after) {
		t.Error("a refused backup update changed state")
	}
	for _, h := range []string{"volume 3.9", "volume latest"} {
		if code := put(h, "at "+h); code != 200 {
			t.Errorf("PUT backup at %q: %d, want 200", h, code)
		}
		if b, err := e.svc.Backup(t.Context(), service.Caller{ProjectID: "alpha"}, fa.backup); err != nil || b.Backup.Name != "at "+h {
			t.Errorf("after the update at %q the backup is %+v %v", h, b.Backup, err)
		}
	}
	// user_id: the token's ID, which Authenticate names the caller by.
	c, err := e.svc.Authenticate(t.Context(), e.tokA)
	if err != nil {
		t.Fatal(err)
	}
	if v := e.volumeShown(e.tokA, "alpha", fa.vol); v.UserID != c.UserID || c.UserID == "" {
		t.Errorf("volume user_id %q, want the token's %q", v.UserID, c.UserID)
	}
	err = e.cat.View(t.Context(), func(tx catalog.Tx) error {
		s, err := tx.Snapshot(t.Context(), fa.snap)
		if err != nil {
			return err
		}
		b, err := tx.Backup(t.Context(), fa.backup)
		if err != nil {
			return err
		}
		if s.UserID != c.UserID || b.UserID != c.UserID {
			t.Errorf("snapshot user %q, backup user %q; want %q", s.UserID, b.UserID, c.UserID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if wire.AvailabilityZone != service.AvailabilityZone {
		t.Errorf("the zone answered (%s) is not the one filtered (%s)", wire.AvailabilityZone, service.AvailabilityZone)
	}
}
