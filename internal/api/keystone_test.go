package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cairnproject/cairn/internal/api"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/keystone"
	"github.com/cairnproject/cairn/internal/keystone/keystonetest"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/testenv"
)

// keystoneCloud is the API behind a real Keystone: cairn validates its
// tokens with a service user of its own, and its endpoints are in the
// catalog (a region of the test's) as block-storage and volumev3.
type keystoneCloud struct {
	t       *testing.T
	env     *env
	cloud   *keystonetest.Cloud
	capture *captureRequests
	region  string
	project string // a Keystone project, unknown to cairn at first
	home    string
}

// keystoneUser is a user of the test's Keystone project.
type keystoneUser struct {
	name, password, id string
}

func newKeystoneCloud(t *testing.T) *keystoneCloud {
	t.Helper()
	cloud := keystonetest.Connect(t)
	creds := cloud.ServiceUser(t)
	v, err := keystone.New(keystone.Config{AuthURL: cloud.URL, Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvAt(t, t.TempDir(), filepath.Join(t.TempDir(), "backups"), func(c *service.Config) { c.Identity = v })
	capture := &captureRequests{h: api.New(e.svc, nil, nil)}
	srv := httptest.NewServer(capture)
	t.Cleanup(srv.Close)
	url := srv.URL + "/v3/%(project_id)s"
	// openstack volume create (OSC 6.0) makes its image client, with the
	// image service's version discovery, before it looks at its
	// arguments: on a catalog without an image service it fails, --image
	// or not. A placeholder answers the discovery and nothing else.
	image := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"versions":[{"id":"v2.0","status":"CURRENT","links":[{"rel":"self","href":"http://%s/v2/"}]}]}`, r.Host)
	}))
	t.Cleanup(image.Close)
	region := cloud.Register(t, map[string]string{"block-storage": url, "volumev3": url, "image": image.URL})
	return &keystoneCloud{t: t, env: e, cloud: cloud, capture: capture, region: region,
		project: cloud.Project(t, keystonetest.Unique("cairn-ks")), home: t.TempDir()}
}

// user makes a user of the project with roles.
func (k *keystoneCloud) user(prefix string, roles ...string) keystoneUser {
	u := keystoneUser{name: keystonetest.Unique(prefix), password: keystonetest.Unique("pw")}
	u.id = k.cloud.User(k.t, u.name, u.password, k.project, roles...)
	return u
}

// run runs prog (openstack or cinder) as u: a password login to
// Keystone, and cairn's endpoint from the catalog.
func (k *keystoneCloud) run(u keystoneUser, prog string, args ...string) (int, string, string, []captured) {
	k.t.Helper()
	global := []string{"--os-auth-url", k.cloud.URL, "--os-username", u.name, "--os-password", u.password,
		"--os-user-domain-name", "Default", "--os-project-id", k.project}
	if prog == "openstack" {
		global = append(global, "--os-region-name", k.region, "--os-identity-api-version", "3", "--os-volume-api-version", "3")
	} else {
		// cinder's spelling (its --help hides it; OS_REGION_NAME works too).
		global = append(global, "--os_region_name", k.region)
	}
	return runClient(k.t, k.capture, k.home, prog, global, args)
}

func (k *keystoneCloud) ok(u keystoneUser, prog string, args ...string) string {
	k.t.Helper()
	code, stdout, stderr, _ := k.run(u, prog, args...)
	if code != 0 {
		k.t.Fatalf("%s %s: exit %d\nstdout: %s\nstderr: %s", prog, strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// TestKeystoneClients: the openstack and cinder commands log in to a
// real Keystone and find cairn in its catalog. The token's project
// becomes a cairn project with the default quota on first use; a member
// creates, lists, shows and deletes; the volume names its user; a reader
// lists but may not create (403); an admin of another project lists all
// projects' volumes; and a revoked token is refused.
func TestKeystoneClients(t *testing.T) {
	for _, prog := range []string{"openstack", "cinder"} {
		if _, err := exec.LookPath(prog); err != nil {
			testenv.SkipOrFail(t, "the "+prog+" command is missing: apt-get install python3-openstackclient python3-cinderclient")
		}
	}
	k := newKeystoneCloud(t)
	e := k.env
	member := k.user("member", "member")
	reader := k.user("reader", "reader")

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
	adminProject := k.cloud.Project(t, keystonetest.Unique("cairn-ks-admin"))
	admin := keystoneUser{name: keystonetest.Unique("admin"), password: keystonetest.Unique("pw")}
	admin.id = k.cloud.User(t, admin.name, admin.password, adminProject, "admin")
	adminRun := *k
	adminRun.project = adminProject
	if out := adminRun.ok(admin, "openstack", "volume", "list", "--all-projects", "-f", "value", "-c", "ID"); !slices.Contains(strings.Fields(out), id) {
		t.Errorf("admin's volume list --all-projects: %q, want %s in it", out, id)
	}

	// 401 before 404: an unknown path without a valid token says nothing
	// of what exists; with one, it is not found.
	tok := k.cloud.Token(t, member.name, member.password, k.project, "")
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
		{tok, "/v3/" + adminProject + "/volumes", http.StatusNotFound},
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
