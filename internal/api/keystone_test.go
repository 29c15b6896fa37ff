package api_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/service"
)

// TestKeystoneClients: the openstack and cinder commands log in to a
// real Keystone and find cairn in its catalog. The token's project
// becomes a cairn project with the default quota on first use; a member
// creates, lists, shows and deletes; the volume names its user; a reader
// lists but may not create (403); an admin of another project lists all
// projects' volumes; and a revoked token is refused.
func TestKeystoneClients(t *testing.T) {
	t.Parallel()
	k := newClientCloud(t, keystoneLogin)
	e := k.env
	member := k.member
	reader := k.keystoneUser(k.project, "reader", "reader")

	if ok, err := e.svc.ProjectExists(t.Context(), k.project); err != nil || ok {
		t.Fatalf("project %s exists before its first token: %v %v", k.project, ok, err)
	}
	var vol map[string]any
	if err := json.Unmarshal([]byte(k.ok(member, "openstack", "volume", "create", "--size", "1", "ks-one", "-f", "json")), &vol); err != nil {
		t.Fatal(err)
	}
	id, _ := vol["id"].(string)
	if id == "" {
		t.Fatalf("volume create printed %v", vol)
	}
	// Made on first use, with the block storage API's default quota.
	ps := service.NewProjects(e.cat)
	p, err := ps.Show(t.Context(), k.project)
	if err != nil {
		t.Fatalf("the Keystone project is not a cairn project: %v", err)
	}
	if p.Quota != service.DefaultIdentityQuota() {
		t.Errorf("project quota %+v, want %+v", p.Quota, service.DefaultIdentityQuota())
	}
	if r := e.wait(e.admin, k.project, "volume", id); r["status"] != "available" {
		t.Fatalf("volume %s: %v", id, r)
	}

	if err := json.Unmarshal([]byte(k.ok(member, "openstack", "volume", "show", id, "-f", "json")), &vol); err != nil {
		t.Fatal(err)
	}
	checkFields(t, "volume show", vol, map[string]any{"id": id, "name": "ks-one", "status": "available",
		"os-vol-tenant-attr:tenant_id": k.project, "user_id": member.id})
	if out := k.ok(member, "cinder", "list"); !strings.Contains(out, id) || !strings.Contains(out, "ks-one") {
		t.Errorf("cinder list does not show %s:\n%s", id, out)
	}

	// A reader reads, and may not write: 403, nothing created.
	if out := k.ok(reader, "openstack", "volume", "list", "-f", "value", "-c", "ID"); strings.TrimSpace(out) != id {
		t.Errorf("the reader's volume list: %q, want %s", out, id)
	}
	code, _, stderr, reqs := k.run(reader, "openstack", "volume", "create", "--size", "1", "ks-reader")
	if code == 0 {
		t.Fatalf("a reader created a volume")
	}
	if !strings.Contains(stderr, "403") && !strings.Contains(stderr, "may only read") {
		t.Errorf("reader's create: stderr %s", stderr)
	}
	if post := lastRequest(t, reqs, "POST"); post.Path != "/v3/"+k.project+"/volumes" {
		t.Errorf("reader's create sent %s", post)
	}
	vols, err := e.svc.Volumes(t.Context(), service.Caller{ProjectID: k.project}, catalog.Filter{})
	if err != nil || len(vols) != 1 {
		t.Fatalf("after the reader's create: %d volumes, %v", len(vols), err)
	}

	// An admin of another project sees every project's volumes.
	if out := k.ok(k.admin, "openstack", "volume", "list", "--all-projects", "-f", "value", "-c", "ID"); !slices.Contains(strings.Fields(out), id) {
		t.Errorf("admin's volume list --all-projects: %q, want %s in it", out, id)
	}

	// 401 before 404: an unknown path without a valid token says nothing
	// of what exists; with one, it is not found.
	tok := k.keystone.Token(t, member.name, member.password, k.project, "")
	for _, tc := range []struct {
		token string
		path  string
		want  int
	}{
		{"", "/v3/" + k.project + "/nothing", http.StatusUnauthorized},
		{"not-a-token", "/v3/" + k.project + "/nothing", http.StatusUnauthorized},
		{"", "/v3/" + k.project + "/volumes", http.StatusUnauthorized},
		{tok, "/v3/" + k.project + "/nothing", http.StatusNotFound},
		{tok, "/v3/" + k.project + "/volumes/" + id, http.StatusOK},
		{tok, "/v3/" + k.admin.project + "/volumes", http.StatusNotFound},
	} {
		if code := e.do(tc.token, "GET", tc.path, nil, nil); code != tc.want {
			t.Errorf("GET %s (token %.8q): %d, want %d", tc.path, tc.token, code, tc.want)
		}
	}

	k.ok(member, "openstack", "volume", "delete", id)
	if r := e.wait(e.admin, k.project, "volume", id); r != nil {
		t.Fatalf("volume %s after delete: %v", id, r)
	}
}
