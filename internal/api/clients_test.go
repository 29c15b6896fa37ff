package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/api"
	"github.com/cairnproject/cairn/internal/keystone"
	"github.com/cairnproject/cairn/internal/keystone/keystonetest"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/testenv"
)

// clientAuth is how the OpenStack clients of a test log in.
type clientAuth int

const (
	// cairnTokens: keystoneauth's admin_token plugin sends a project's
	// cairn token as X-Auth-Token to an endpoint given on the command
	// line. No Keystone is involved: cairn's embedded default.
	cairnTokens clientAuth = iota
	// keystoneLogin: a password login to a real Keystone, which holds
	// cairn's endpoints in its catalog (a region of the test's own); cairn
	// validates the Keystone token with a service user of its own.
	keystoneLogin
)

func (a clientAuth) String() string {
	if a == keystoneLogin {
		return "keystone"
	}
	return "cairn-token"
}

// forEachAuth runs test once with cairn's own tokens and once through
// Keystone, each against a fresh API and catalog. The tests run in
// parallel with the package's other parallel tests: each client command
// mostly waits (for Python to start, for Keystone), and nothing of one
// test's is another's.
func forEachAuth(t *testing.T, test func(t *testing.T, c *clientCloud)) {
	t.Parallel()
	for _, auth := range []clientAuth{cairnTokens, keystoneLogin} {
		t.Run(auth.String(), func(t *testing.T) {
			t.Parallel()
			test(t, newClientCloud(t, auth))
		})
	}
}

// clientUser is who runs a client command: a project's cairn token, or
// a Keystone user with a role in a project.
type clientUser struct {
	project string
	token   string // cairnTokens
	// keystoneLogin
	name, password, id string
}

// clientCloud is the block storage and database APIs (the database API
// over fakeDatabases) as the real clients reach them: the `openstack`
// command (python3-openstackclient, with python3-troveclient's plugin),
// the `trove` command (python3-troveclient's own, for what the plugin
// lacks: instance metadata), the `cinder` command and cinderclient's
// Python API.
type clientCloud struct {
	t       *testing.T
	auth    clientAuth
	env     *env
	fake    *fakeDatabases
	capture *captureRequests
	url     string // the API server's
	home    string
	// project is the member's: alpha, or a Keystone project that cairn
	// first sees in the test's first command.
	project string
	// quota is the project's: alpha's is unlimited, a Keystone project
	// starts with the block storage API's default quota.
	quota cairn.Quota
	// member is a member of project, other a member of another project,
	// admin an admin (of a third project).
	member, other, admin clientUser

	keystone *keystonetest.Cloud // keystoneLogin
	region   string              // keystoneLogin: the catalog's region of cairn's endpoints
}

func newClientCloud(t *testing.T, auth clientAuth) *clientCloud {
	t.Helper()
	for _, prog := range []string{"openstack", "cinder"} {
		if _, err := exec.LookPath(prog); err != nil {
			testenv.SkipOrFail(t, "the "+prog+" command is missing: apt-get install python3-openstackclient python3-cinderclient python3-troveclient")
		}
	}
	c := &clientCloud{t: t, auth: auth, home: t.TempDir()}
	if auth == keystoneLogin {
		c.keystone = keystonetest.Connect(t)
		c.project, c.quota = c.keystone.Project(t, keystonetest.Unique("cairn-ks")), service.DefaultIdentityQuota()
		c.member = c.keystoneUser(c.project, "member", "member")
		c.other = c.keystoneUser(c.keystone.Project(t, keystonetest.Unique("cairn-ks-other")), "other", "member")
		c.admin = c.keystoneUser(c.keystone.Project(t, keystonetest.Unique("cairn-ks-admin")), "admin", "admin")
	}
	c.start(filepath.Join(t.TempDir(), "backups"))
	return c
}

// sibling starts a second deployment for the same users: a catalog of
// its own, and backups in the same store (containers), as another
// deployment that imports backup records has. Through Keystone its
// endpoints are in a region of their own.
func (c *clientCloud) sibling() *clientCloud {
	c.t.Helper()
	s := &clientCloud{t: c.t, auth: c.auth, home: c.home, keystone: c.keystone, project: c.project, quota: c.quota,
		member: c.member, other: c.other, admin: c.admin}
	s.start(c.env.store)
	return s
}

// start brings up the deployment: the service, with its backups in
// store, and the API; with cairnTokens, the users are the projects
// alpha, beta and admin; through Keystone, cairn validates tokens with a
// service user of its own and its endpoints are registered.
func (c *clientCloud) start(store string) {
	t := c.t
	var tune []func(*service.Config)
	if c.auth == keystoneLogin {
		v, err := keystone.New(keystone.Config{AuthURL: c.keystone.URL, Credentials: c.keystone.ServiceUser(t)})
		if err != nil {
			t.Fatal(err)
		}
		tune = append(tune, func(cfg *service.Config) { cfg.Identity = v })
	}
	c.env = newEnvAt(t, t.TempDir(), store, tune...)
	c.fake = newFakeDatabases()
	c.capture = &captureRequests{h: api.New(c.env.svc, nil, nil, api.WithDatabases(c.fake))}
	srv := httptest.NewServer(c.capture)
	t.Cleanup(srv.Close)
	c.url = srv.URL

	if c.auth == cairnTokens {
		c.project, c.quota = "alpha", cairn.Unlimited
		c.member = clientUser{project: "alpha", token: c.env.tokA}
		c.other = clientUser{project: "beta", token: c.env.tokB}
		c.admin = clientUser{project: "admin", token: c.env.admin}
		return
	}
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
	volumes := srv.URL + "/v3/%(project_id)s"
	c.region = c.keystone.Register(t, map[string]string{"block-storage": volumes, "volumev3": volumes,
		"database": srv.URL + "/v1.0/%(project_id)s", "image": image.URL})
}

// keystoneUser makes a Keystone user with roles in project.
func (c *clientCloud) keystoneUser(project, prefix string, roles ...string) clientUser {
	c.t.Helper()
	u := clientUser{project: project, name: keystonetest.Unique(prefix), password: keystonetest.Unique("pw")}
	u.id = c.keystone.User(c.t, u.name, u.password, project, roles...)
	return u
}

// caller is the member's project, as the service sees it.
func (c *clientCloud) caller() service.Caller { return service.Caller{ProjectID: c.project} }

// wait waits for a resource of the member's project to settle (see
// env.wait), reading it as cairn's admin.
func (c *clientCloud) wait(kind, id string) map[string]any {
	c.t.Helper()
	return c.env.wait(c.env.admin, c.project, kind, id)
}

// run runs prog (openstack or cinder) with args as u, and returns its
// exit status, output and the requests it made. Its environment holds
// no OS_* variable of the test's.
func (c *clientCloud) run(u clientUser, prog string, args ...string) (code int, stdout, stderr string, reqs []captured) {
	c.t.Helper()
	var global []string
	switch c.auth {
	case cairnTokens:
		endpoint := c.url + "/v3/" + u.project
		if prog == "trove" || prog == "openstack" && len(args) > 0 && (args[0] == "database" || args[0] == "datastore") {
			endpoint = c.url + "/v1.0/" + u.project
		}
		global = []string{"--os-auth-type", "admin_token", "--os-endpoint", endpoint, "--os-token", u.token}
	case keystoneLogin:
		global = []string{"--os-auth-url", c.keystone.URL, "--os-username", u.name, "--os-password", u.password,
			"--os-user-domain-name", "Default", "--os-project-id", u.project}
		switch prog {
		case "openstack":
			global = append(global, "--os-region-name", c.region, "--os-identity-api-version", "3")
		case "trove":
			global = append(global, "--os-region-name", c.region)
		default:
			// cinder's spelling (its --help hides it; OS_REGION_NAME works too).
			global = append(global, "--os_region_name", c.region)
		}
	}
	switch prog {
	case "openstack":
		// Block storage API version 3; the microversion it asks for is
		// then 3.0.
		global = append(global, "--os-volume-api-version", "3")
	case "cinder":
		if c.auth == cairnTokens {
			global = append(global, "--os-project-id", u.project)
		}
	}
	return runClient(c.t, c.capture, c.home, prog, global, args)
}

// ok runs a command that must succeed and returns its output.
func (c *clientCloud) ok(u clientUser, prog string, args ...string) string {
	c.t.Helper()
	code, stdout, stderr, _ := c.run(u, prog, args...)
	if code != 0 {
		c.t.Fatalf("%s %s: exit %d\nstdout: %s\nstderr: %s", prog, strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// okJSON runs a command that must succeed and prints JSON (-f json), and
// decodes what it printed into out (when not nil). It returns the
// requests the command made.
func (c *clientCloud) okJSON(u clientUser, out any, prog string, args ...string) []captured {
	c.t.Helper()
	code, stdout, stderr, reqs := c.run(u, prog, args...)
	if code != 0 {
		c.t.Fatalf("%s %s: exit %d\nstdout: %s\nstderr: %s", prog, strings.Join(args, " "), code, stdout, stderr)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(stdout), out); err != nil {
			c.t.Fatalf("%s %s: output %q: %v", prog, strings.Join(args, " "), stdout, err)
		}
	}
	return reqs
}

// openstack runs `openstack ARGS...` as the member; it must succeed and
// print JSON, which is decoded into out.
func (c *clientCloud) openstack(out any, args ...string) []captured {
	c.t.Helper()
	return c.okJSON(c.member, out, "openstack", args...)
}

// cinder runs `cinder ARGS...` as the member; it must succeed.
func (c *clientCloud) cinder(args ...string) string {
	c.t.Helper()
	return c.ok(c.member, "cinder", args...)
}
