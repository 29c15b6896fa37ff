package api_test

import (
	"bytes"
	"reflect"
	"regexp"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
)

// TestVolumeTransfers: alpha offers a volume, beta accepts it with the
// key: the volume, its bytes and metadata are beta's, named by beta's
// user, and the transfer is gone. A wrong key, another project's look,
// a volume with snapshots or not available, accepting one's own, and a
// quota the volume does not fit are refused, each changing nothing; a
// deleted transfer makes the volume available again.
func TestVolumeTransfers(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	var created map[string]map[string]any
	e.must(202, e.tokA, "POST", "/v3/alpha/volumes", map[string]any{"volume": map[string]any{"size": 1, "name": "moving", "metadata": map[string]string{"k": "v"}}}, &created)
	vol := created["volume"]["id"].(string)
	e.wait(e.tokA, "alpha", "volume", vol)
	e.write(vol, 4096, bytes.Repeat([]byte("transfer"), 512))
	want := e.digest(vol, 1<<30)

	tr := object(t, "create", e.call(202, e.tokA, "POST", "/v3/alpha/os-volume-transfer", map[string]any{"transfer": map[string]any{"volume_id": vol, "name": "to beta"}}), "transfer")
	id, key := tr["id"].(string), tr["auth_key"].(string)
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(key) || tr["volume_id"] != vol || tr["name"] != "to beta" || tr["created_at"] == nil {
		t.Fatalf("create answered %v", tr)
	}
	members(t, "create", tr, []string{"auth_key", "created_at", "id", "links", "name", "volume_id"})
	if v := e.volumeShown(e.tokA, "alpha", vol); v.Status != string(cairn.StatusAwaitingTransfer) {
		t.Fatalf("volume after the transfer's create: %s", v.Status)
	}
	shown := object(t, "show", e.call(200, e.tokA, "GET", "/v3/alpha/os-volume-transfer/"+id, nil), "transfer")
	members(t, "show", shown, []string{"created_at", "id", "links", "name", "volume_id"})
	list := e.call(200, e.tokA, "GET", "/v3/alpha/os-volume-transfer", nil)["transfers"].([]any)
	if len(list) != 1 {
		t.Fatalf("list: %v", list)
	}
	members(t, "list", list[0].(map[string]any), []string{"id", "links", "name", "volume_id"})
	detail := e.call(200, e.tokA, "GET", "/v3/alpha/os-volume-transfer/detail", nil)["transfers"].([]any)
	members(t, "detail", detail[0].(map[string]any), []string{"created_at", "id", "links", "name", "volume_id"})

	// Beta neither sees it nor takes it without the key.
	before := e.state()
	for _, tc := range []struct {
		name, token, method, path string
		body                      any
		code                      int
	}{
		{"beta's show", e.tokB, "GET", "/v3/beta/os-volume-transfer/" + id, nil, 404},
		{"beta's delete", e.tokB, "DELETE", "/v3/beta/os-volume-transfer/" + id, nil, 404},
		{"a wrong key", e.tokB, "POST", "/v3/beta/os-volume-transfer/" + id + "/accept", map[string]any{"accept": map[string]any{"auth_key": "0123456789abcdef"}}, 400},
		{"no key", e.tokB, "POST", "/v3/beta/os-volume-transfer/" + id + "/accept", map[string]any{"accept": map[string]any{}}, 400},
		{"an unknown transfer", e.tokB, "POST", "/v3/beta/os-volume-transfer/nope/accept", map[string]any{"accept": map[string]any{"auth_key": key}}, 404},
		{"alpha accepting its own", e.tokA, "POST", "/v3/alpha/os-volume-transfer/" + id + "/accept", map[string]any{"accept": map[string]any{"auth_key": key}}, 400},
		{"a second transfer", e.tokA, "POST", "/v3/alpha/os-volume-transfer", map[string]any{"transfer": map[string]any{"volume_id": vol}}, 409},
		{"beta's transfer of alpha's volume", e.tokB, "POST", "/v3/beta/os-volume-transfer", map[string]any{"transfer": map[string]any{"volume_id": vol}}, 404},
		{"no volume_id", e.tokA, "POST", "/v3/alpha/os-volume-transfer", map[string]any{"transfer": map[string]any{}}, 400},
		{"an unknown member", e.tokA, "POST", "/v3/alpha/os-volume-transfer", map[string]any{"transfer": map[string]any{"volume_id": vol, "no_snapshots": true}}, 400},
	} {
		if code := e.do(tc.token, tc.method, tc.path, tc.body, nil); code != tc.code {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.code)
		}
	}
	if list := e.call(200, e.tokB, "GET", "/v3/beta/os-volume-transfer", nil)["transfers"].([]any); len(list) != 0 {
		t.Errorf("beta lists %v", list)
	}
	// A project the volume does not fit: 413.
	tokC := e.project("gamma", false, cairn.Quota{Volumes: 1, Gigabytes: 0, PerVolumeGigabytes: -1})
	if code := e.do(tokC, "POST", "/v3/gamma/os-volume-transfer/"+id+"/accept", map[string]any{"accept": map[string]any{"auth_key": key}}, nil); code != 413 {
		t.Errorf("accept over gamma's quota: %d, want 413", code)
	}
	if after := e.state(); !reflect.DeepEqual(before, after) {
		t.Errorf("refused calls changed the catalog")
	}

	acc := object(t, "accept", e.call(202, e.tokB, "POST", "/v3/beta/os-volume-transfer/"+id+"/accept", map[string]any{"accept": map[string]any{"auth_key": key}}), "transfer")
	members(t, "accept", acc, []string{"id", "links", "name", "volume_id"})
	beta, err := e.svc.Authenticate(ctx, e.tokB)
	if err != nil {
		t.Fatal(err)
	}
	v, err := e.svc.Volume(ctx, service.Caller{ProjectID: "beta"}, vol)
	if err != nil || v.ProjectID != "beta" || v.UserID != beta.UserID || v.Status != cairn.StatusAvailable || v.Metadata["k"] != "v" {
		t.Fatalf("the accepted volume: %+v %v", v, err)
	}
	if code := e.do(e.tokA, "GET", "/v3/alpha/volumes/"+vol, nil, nil); code != 404 {
		t.Errorf("alpha's show of the volume it gave: %d, want 404", code)
	}
	if e.digest(vol, 1<<30) != want {
		t.Error("the accepted volume's bytes changed")
	}
	if code := e.do(e.tokA, "GET", "/v3/alpha/os-volume-transfer/"+id, nil, nil); code != 404 {
		t.Errorf("the accepted transfer's show: %d, want 404", code)
	}

	// Withdrawn: the volume is available again.
	tr = object(t, "create", e.call(202, e.tokB, "POST", "/v3/beta/os-volume-transfer", map[string]any{"transfer": map[string]any{"volume_id": vol}}), "transfer")
	if tr["name"] != nil {
		t.Errorf("a transfer without a name: name %v, want null", tr["name"])
	}
	e.must(202, e.tokB, "DELETE", "/v3/beta/os-volume-transfer/"+tr["id"].(string), nil, nil)
	e.must(404, e.tokB, "DELETE", "/v3/beta/os-volume-transfer/"+tr["id"].(string), nil, nil)
	if v := e.volumeShown(e.tokB, "beta", vol); v.Status != "available" {
		t.Errorf("volume after its transfer's delete: %s", v.Status)
	}

	// A volume an admin force-deletes while it awaits its transfer takes
	// the transfer with it.
	gone := e.createVolume(e.tokA, "alpha", 1, "gone")
	tr = object(t, "create", e.call(202, e.tokA, "POST", "/v3/alpha/os-volume-transfer", map[string]any{"transfer": map[string]any{"volume_id": gone}}), "transfer")
	e.must(202, e.admin, "POST", "/v3/alpha/volumes/"+gone+"/action", map[string]any{"os-force_delete": map[string]any{}}, nil)
	if r := e.wait(e.tokA, "alpha", "volume", gone); r != nil {
		t.Fatalf("the force-deleted volume: %v", r)
	}
	if list := e.call(200, e.tokA, "GET", "/v3/alpha/os-volume-transfer", nil)["transfers"].([]any); len(list) != 0 {
		t.Errorf("transfers after their volume's force-delete: %v", list)
	}
	e.must(404, e.tokB, "POST", "/v3/beta/os-volume-transfer/"+tr["id"].(string)+"/accept", map[string]any{"accept": map[string]any{"auth_key": tr["auth_key"]}}, nil)

	// A volume with a snapshot is not transferred.
	var snap map[string]map[string]any
	e.must(202, e.tokB, "POST", "/v3/beta/snapshots", map[string]any{"snapshot": map[string]any{"volume_id": vol}}, &snap)
	e.wait(e.tokB, "beta", "snapshot", snap["snapshot"]["id"].(string))
	if code := e.do(e.tokB, "POST", "/v3/beta/os-volume-transfer", map[string]any{"transfer": map[string]any{"volume_id": vol}}, nil); code != 400 {
		t.Errorf("transfer of a volume with a snapshot: %d, want 400", code)
	}
}
