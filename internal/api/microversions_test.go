package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// at sends a request at microversion version ("volume 3.N"; "" for none)
// and returns the status, the decoded answer and the request ID the
// answer carries.
func (e *env) at(version, token, method, path string, body any) (int, map[string]any, string) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		js, _ := json.Marshal(body)
		rd = bytes.NewReader(js)
	}
	req, _ := http.NewRequestWithContext(e.t.Context(), method, e.srv.URL+path, rd)
	req.Header.Set("X-Auth-Token", token)
	if version != "" {
		req.Header.Set("OpenStack-API-Version", version)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(data) > 0 {
		if err := json.Unmarshal(data, &out); err != nil {
			e.t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode, out, resp.Header.Get("X-Openstack-Request-Id")
}

// TestVolumeTypePlacement: a volume of a type whose extra specs ask for
// a capability cairn's backend lacks is accepted (202) and ends in
// error, its fail_reason naming the spec, as the block storage API's
// scheduler leaves it ("no valid backend"); types asking for what the
// backend has, or carrying descriptive specs only, make available
// volumes. No engine volume is made for the refused ones.
func TestVolumeTypePlacement(t *testing.T) {
	e := newEnv(t)
	e.members = true // fail_reason is cairn's own
	for _, tc := range []struct {
		name  string
		specs map[string]any
		place bool
		says  string
	}{
		{"matching", map[string]any{"storage_protocol": "nbd", "vendor_name": "cairn", "volume_backend_name": "cairn"}, true, ""},
		{"operators", map[string]any{"capabilities:vendor_name": "<in> air", "thin_provisioning_support": "<is> True",
			"storage_protocol": "<or> iSCSI <or> nbd", "reserved_percentage": "<= 10", "driver_version": "s== 1.0"}, true, ""},
		{"descriptive", map[string]any{"spec1": "val1", "RESKEY:availability_zones": "nova"}, true, ""},
		{"another protocol", map[string]any{"storage_protocol": "iSCSI"}, false, `storage_protocol "iSCSI"`},
		{"another backend", map[string]any{"capabilities:volume_backend_name": "lvm"}, false, "volume_backend_name"},
		{"multiattach", map[string]any{"multiattach": "<is> True"}, false, "multiattach"},
		{"a capability cairn lacks", map[string]any{"capabilities:compression": "<is> True"}, false, "capabilities:compression"},
		{"thick", map[string]any{"thick_provisioning_support": "<is> True"}, false, "thick_provisioning_support"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vt := e.createType(map[string]any{"name": "placement-" + strings.ReplaceAll(tc.name, " ", "-"), "extra_specs": tc.specs})
			engineBefore := len(e.state().Engine)
			var out map[string]map[string]any
			e.must(202, e.tokA, "POST", "/v3/alpha/volumes", map[string]any{"volume": map[string]any{"size": 1, "volume_type": vt["id"]}}, &out)
			r := e.wait(e.tokA, "alpha", "volume", out["volume"]["id"].(string))
			if tc.place {
				if r["status"] != "available" {
					t.Fatalf("volume of type %v: %v", tc.specs, r)
				}
				return
			}
			reason, _ := r["fail_reason"].(string)
			if r["status"] != "error" || !strings.Contains(reason, "no valid backend") || !strings.Contains(reason, tc.says) {
				t.Fatalf("volume of type %v: status %v, fail_reason %q; want error naming %s", tc.specs, r["status"], reason, tc.says)
			}
			if n := len(e.state().Engine); n != engineBefore {
				t.Errorf("the engine holds %d volumes, had %d", n, engineBefore)
			}
		})
	}
}

// TestMessages: from microversion 3.3 a failed task of a volume,
// snapshot or backup is a user message of its project: listed newest
// first, shown, deleted (the task stays); 404 below 3.3; another
// project sees none of them; paging from 3.5 only.
func TestMessages(t *testing.T) {
	e := newEnv(t)
	vt := e.createType(map[string]any{"name": "iscsi", "extra_specs": map[string]any{"storage_protocol": "iSCSI"}})
	const v33, v35 = "volume 3.3", "volume 3.5"
	var failed []string
	var requests []string
	for range 3 {
		code, out, rid := e.at("", e.tokA, "POST", "/v3/alpha/volumes", map[string]any{"volume": map[string]any{"size": 1, "volume_type": vt["id"]}})
		if code != 202 {
			t.Fatalf("create: %d %v", code, out)
		}
		id := object(t, "create", out, "volume")["id"].(string)
		if r := e.wait(e.tokA, "alpha", "volume", id); r["status"] != "error" {
			t.Fatalf("volume %s: %v", id, r)
		}
		failed, requests = append(failed, id), append(requests, rid)
	}
	e.createVolume(e.tokA, "alpha", 1, "fine") // a task that did not fail is no message

	for _, v := range []string{"", "volume 3.0", "volume 3.2"} {
		if code, out, _ := e.at(v, e.tokA, "GET", "/v3/alpha/messages", nil); code != 404 {
			t.Errorf("GET /messages at %q: %d %v, want 404", v, code, out)
		}
	}
	code, out, _ := e.at(v33, e.tokA, "GET", "/v3/alpha/messages", nil)
	msgs, _ := out["messages"].([]any)
	if code != 200 || len(msgs) != 3 {
		t.Fatalf("GET /messages at 3.3: %d %v", code, out)
	}
	// Newest first: the last volume's message.
	m := msgs[0].(map[string]any)
	created, _ := time.Parse(time.RFC3339, m["created_at"].(string))
	until, _ := time.Parse(time.RFC3339, m["guaranteed_until"].(string))
	if m["resource_uuid"] != failed[2] || m["resource_type"] != "VOLUME" || m["event_id"] != "VOLUME_VOLUME_CREATE" ||
		m["message_level"] != "ERROR" || m["request_id"] != requests[2] || !strings.Contains(m["user_message"].(string), "create volume: ") ||
		!strings.Contains(m["user_message"].(string), "no valid backend") || until.Sub(created) != 30*24*time.Hour {
		t.Errorf("message %v; want the failed create of %s by request %s", m, failed[2], requests[2])
	}
	id := m["id"].(string)
	code, out, _ = e.at(v33, e.tokA, "GET", "/v3/alpha/messages/"+id, nil)
	if shown := object(t, "show", out, "message"); code != 200 || shown["id"] != id || shown["resource_uuid"] != failed[2] {
		t.Errorf("GET /messages/%s: %d %v", id, code, out)
	}
	self := e.srv.URL + "/v3/alpha/messages/" + id
	if links, _ := json.Marshal(m["links"]); string(links) != `[{"href":"`+self+`","rel":"self"},{"href":"`+self+`","rel":"bookmark"}]` {
		t.Errorf("message links %s, want self and bookmark %s", links, self)
	}

	// Another project sees none of them, and deletes none.
	if code, out, _ := e.at(v33, e.tokB, "GET", "/v3/beta/messages", nil); code != 200 || len(out["messages"].([]any)) != 0 {
		t.Errorf("beta's messages: %d %v", code, out)
	}
	for _, method := range []string{"GET", "DELETE"} {
		if code, _, _ := e.at(v33, e.tokB, method, "/v3/beta/messages/"+id, nil); code != 404 {
			t.Errorf("%s of alpha's message by beta: %d, want 404", method, code)
		}
	}

	// Pages from 3.5.
	if code, _, _ := e.at(v33, e.tokA, "GET", "/v3/alpha/messages?limit=1", nil); code != 400 {
		t.Errorf("limit at 3.3: %d, want 400", code)
	}
	code, out, _ = e.at(v35, e.tokA, "GET", "/v3/alpha/messages?limit=2", nil)
	page, _ := out["messages"].([]any)
	links, _ := out["messages_links"].([]any)
	if code != 200 || len(page) != 2 || len(links) != 1 {
		t.Fatalf("limit=2 at 3.5: %d %v", code, out)
	}
	code, out, _ = e.at(v35, e.tokA, "GET", "/v3/alpha/messages?offset=2", nil)
	if page, _ := out["messages"].([]any); code != 200 || len(page) != 1 || page[0].(map[string]any)["resource_uuid"] != failed[0] {
		t.Errorf("offset=2 at 3.5: %d %v", code, out)
	}
	next, _ := url.Parse(links[0].(map[string]any)["href"].(string))
	code, out, _ = e.at(v35, e.tokA, "GET", next.RequestURI(), nil)
	if page, _ := out["messages"].([]any); code != 200 || len(page) != 1 || page[0].(map[string]any)["resource_uuid"] != failed[0] {
		t.Errorf("the next page %s: %d %v", next, code, out)
	}

	// Delete: gone from show and list; the task stays.
	if code, out, _ := e.at(v33, e.tokA, "DELETE", "/v3/alpha/messages/"+id, nil); code != 204 {
		t.Fatalf("DELETE: %d %v", code, out)
	}
	if code, _, _ := e.at(v33, e.tokA, "GET", "/v3/alpha/messages/"+id, nil); code != 404 {
		t.Errorf("GET of a deleted message: %d, want 404", code)
	}
	if code, _, _ := e.at(v33, e.tokA, "DELETE", "/v3/alpha/messages/"+id, nil); code != 404 {
		t.Errorf("DELETE of a deleted message: %d, want 404", code)
	}
	code, out, _ = e.at(v33, e.tokA, "GET", "/v3/alpha/messages", nil)
	if msgs, _ := out["messages"].([]any); code != 200 || len(msgs) != 2 {
		t.Errorf("messages after a delete: %d %v", code, out)
	}
	err := e.cat.View(t.Context(), func(tx catalog.Tx) error {
		task, err := tx.Task(t.Context(), id)
		if err == nil && (task.State != cairn.TaskFailed || !task.MessageDeleted || task.RequestID != requests[2]) {
			err = fmt.Errorf("task %+v", task)
		}
		return err
	})
	if err != nil {
		t.Errorf("the deleted message's task: %v", err)
	}
}

// TestMicroversionAdditions: the other APIs and filters of 3.1 to 3.10
// answer at their version and 404 (routes) or 400 (filters) below.
func TestMicroversionAdditions(t *testing.T) {
	e := newEnv(t)
	vol := e.createVolume(e.tokA, "alpha", 1, "one")
	for _, tc := range []struct {
		name, version, token, method, path string
		code                               int
		want                               string // a member of the answer, as JSON
	}{
		{"clusters", "volume 3.7", e.admin, "GET", "/v3/admin/clusters", 200, `"clusters":[]`},
		{"clusters in detail", "volume 3.7", e.admin, "GET", "/v3/admin/clusters/detail?binary=cinder-volume", 200, `"clusters":[]`},
		{"clusters below 3.7", "volume 3.6", e.admin, "GET", "/v3/admin/clusters", 404, ""},
		{"clusters, not an admin", "volume 3.7", e.tokA, "GET", "/v3/alpha/clusters", 403, ""},
		{"a cluster", "volume 3.7", e.admin, "GET", "/v3/admin/clusters/c1", 404, ""},
		{"services at 3.7", "volume 3.7", e.admin, "GET", "/v3/admin/os-services", 200, `"cluster":null`},
		{"manageable volumes", "volume 3.8", e.admin, "GET", "/v3/admin/manageable_volumes?host=h", 200, `"manageable-volumes":[]`},
		{"manageable snapshots", "volume 3.8", e.admin, "GET", "/v3/admin/manageable_snapshots/detail", 200, `"manageable-snapshots":[]`},
		{"manageable below 3.8", "volume 3.7", e.admin, "GET", "/v3/admin/manageable_volumes", 404, ""},
		{"manageable, not an admin", "volume 3.8", e.tokA, "GET", "/v3/alpha/manageable_volumes", 403, ""},
		{"glance_metadata", "volume 3.4", e.tokA, "GET", "/v3/alpha/volumes?glance_metadata=%7B%27k%27%3A+%27v%27%7D", 200, `"volumes":[]`},
		{"glance_metadata empty", "volume 3.4", e.tokA, "GET", "/v3/alpha/volumes/detail?glance_metadata=%7B%7D", 200, vol},
		{"glance_metadata below 3.4", "volume 3.3", e.tokA, "GET", "/v3/alpha/volumes?glance_metadata=%7B%7D", 400, ""},
		{"glance_metadata malformed", "volume 3.4", e.tokA, "GET", "/v3/alpha/volumes?glance_metadata=k", 400, ""},
		{"group_id", "volume 3.10", e.tokA, "GET", "/v3/alpha/volumes/detail?group_id=g", 200, `"volumes":[]`},
		{"group_id below 3.10", "volume 3.9", e.tokA, "GET", "/v3/alpha/volumes?group_id=g", 400, ""},
	} {
		code, out, _ := e.at(tc.version, tc.token, tc.method, tc.path, nil)
		js, _ := json.Marshal(out)
		if code != tc.code || !strings.Contains(string(js), tc.want) {
			t.Errorf("%s: %d %s; want %d with %s", tc.name, code, js, tc.code, tc.want)
		}
	}
	if _, out, _ := e.at("volume 3.6", e.admin, "GET", "/v3/admin/os-services", nil); strings.Contains(fmt.Sprint(out), "cluster") {
		t.Errorf("services at 3.6 show a cluster: %v", out)
	}
}
