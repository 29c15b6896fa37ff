// Package keystonetest gives tests a real Keystone (scripts/keystone.sh)
// to work in: projects, users with roles, tokens and catalog entries,
// each made for one test under a unique name and removed when it ends.
package keystonetest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/keystone"
	"github.com/cairnproject/cairn/internal/testenv"
)

// Cloud is the test Keystone, reached as its admin.
type Cloud struct {
	// URL is the identity v3 endpoint, http://127.0.0.1:15000/v3.
	URL   string
	admin string
	roles map[string]string
	hc    *http.Client
}

// Connect returns the Keystone scripts/keystone.sh runs, from the
// settings it prints (CAIRN_TEST_KEYSTONE_*); without them the test is
// skipped, or failed when CI=true.
func Connect(t testing.TB) *Cloud {
	t.Helper()
	if os.Getenv("CAIRN_TEST_KEYSTONE") == "" || os.Getenv("CAIRN_TEST_KEYSTONE_ADMIN_PASSWORD") == "" {
		testenv.SkipOrFail(t, "no Keystone: run scripts/keystone.sh start and source its env (CAIRN_TEST_KEYSTONE_*)")
	}
	// One request per connection: the test Keystone's uWSGI closes each
	// (scripts/keystone.sh), and a reused one fails with EOF.
	c := &Cloud{URL: strings.TrimSuffix(os.Getenv("CAIRN_TEST_KEYSTONE_AUTH_URL"), "/"),
		hc: &http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}}
	c.admin = c.Token(t, os.Getenv("CAIRN_TEST_KEYSTONE_ADMIN_USER"), os.Getenv("CAIRN_TEST_KEYSTONE_ADMIN_PASSWORD"), "", os.Getenv("CAIRN_TEST_KEYSTONE_ADMIN_PROJECT"))
	var roles struct {
		Roles []struct{ ID, Name string } `json:"roles"`
	}
	c.call(t, "GET", "/roles", c.admin, nil, &roles, http.StatusOK)
	c.roles = map[string]string{}
	for _, r := range roles.Roles {
		c.roles[r.Name] = r.ID
	}
	return c
}

// Unique returns prefix with a random suffix: names in the shared
// Keystone never collide between tests or runs.
func Unique(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// Project creates a project and returns its ID; it is deleted when t ends.
func (c *Cloud) Project(t testing.TB, name string) string {
	t.Helper()
	var out struct {
		Project struct{ ID string } `json:"project"`
	}
	c.call(t, "POST", "/projects", c.admin, map[string]any{"project": map[string]any{"name": name, "domain_id": "default"}}, &out, http.StatusCreated)
	t.Cleanup(func() { c.cleanup(t, "/projects/"+out.Project.ID) })
	return out.Project.ID
}

// User creates a user with roles in project and returns its ID; it is
// deleted when t ends.
func (c *Cloud) User(t testing.TB, name, password, project string, roles ...string) string {
	t.Helper()
	var out struct {
		User struct{ ID string } `json:"user"`
	}
	c.call(t, "POST", "/users", c.admin, map[string]any{"user": map[string]any{"name": name, "password": password, "domain_id": "default"}}, &out, http.StatusCreated)
	t.Cleanup(func() { c.cleanup(t, "/users/"+out.User.ID) })
	for _, r := range roles {
		id, ok := c.roles[r]
		if !ok {
			t.Fatalf("keystone has no role %q", r)
		}
		c.call(t, "PUT", fmt.Sprintf("/projects/%s/users/%s/roles/%s", project, out.User.ID, id), c.admin, nil, nil, http.StatusNoContent)
	}
	return out.User.ID
}

// Token returns a token of user scoped to a project, named by ID
// (projectID) or by name in the Default domain.
func (c *Cloud) Token(t testing.TB, user, password, projectID, projectName string) string {
	t.Helper()
	project := map[string]any{"id": projectID}
	if projectID == "" {
		project = map[string]any{"name": projectName, "domain": map[string]any{"name": "Default"}}
	}
	body := map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"}, "password": map[string]any{"user": map[string]any{
			"name": user, "password": password, "domain": map[string]any{"name": "Default"}}}},
		"scope": map[string]any{"project": project}}}
	h := c.call(t, "POST", "/auth/tokens?nocatalog", "", body, nil, http.StatusCreated)
	return h.Get("X-Subject-Token")
}

// RevokeToken revokes a token.
func (c *Cloud) RevokeToken(t testing.TB, token string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "DELETE", c.URL+"/auth/tokens", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", c.admin)
	req.Header.Set("X-Subject-Token", token)
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke token: %s", resp.Status)
	}
}

// ServiceUser creates a service user (role admin in a project of its
// own), as an operator makes one for cairn, and returns its credentials.
func (c *Cloud) ServiceUser(t testing.TB) keystone.Credentials {
	t.Helper()
	name := Unique("cairn-svc")
	pw := Unique("pw")
	project := c.Project(t, name)
	c.User(t, name, pw, project, "admin")
	return keystone.Credentials{AuthURL: c.URL, Username: name, Password: pw, UserDomainName: "Default", ProjectID: project}
}

// Register puts endpoints into the catalog in a region of the test's own
// (so parallel tests and runs never see each other's): each service type
// (block-storage, volumev3, database, ...) at its URL. They are removed
// when t ends. It returns the region's name.
func (c *Cloud) Register(t testing.TB, endpoints map[string]string) string {
	t.Helper()
	region := Unique("cairn-test")
	c.call(t, "POST", "/regions", c.admin, map[string]any{"region": map[string]any{"id": region}}, nil, http.StatusCreated)
	t.Cleanup(func() { c.cleanup(t, "/regions/"+region) })
	for typ, url := range endpoints {
		var svc struct {
			Service struct{ ID string } `json:"service"`
		}
		c.call(t, "POST", "/services", c.admin, map[string]any{"service": map[string]any{"type": typ, "name": "cairn-" + typ}}, &svc, http.StatusCreated)
		// Services go last: endpoints first (LIFO cleanup).
		t.Cleanup(func() { c.cleanup(t, "/services/"+svc.Service.ID) })
		for _, iface := range []string{"public", "internal", "admin"} {
			var ep struct {
				Endpoint struct{ ID string } `json:"endpoint"`
			}
			c.call(t, "POST", "/endpoints", c.admin, map[string]any{"endpoint": map[string]any{
				"service_id": svc.Service.ID, "interface": iface, "region_id": region, "url": url}}, &ep, http.StatusCreated)
			t.Cleanup(func() { c.cleanup(t, "/endpoints/"+ep.Endpoint.ID) })
		}
	}
	return region
}

// cleanup deletes path, reporting a failure without stopping the other
// cleanups. A delete is idempotent (404 is done), so a dropped
// connection or a 5xx (Keystone on SQLite answers 500 when its database
// is busy; a busy uWSGI drops connections) is retried with backoff.
func (c *Cloud) cleanup(t testing.TB, path string) {
	var last string
	for attempt := range 10 {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 200 * time.Millisecond) // backoff, not a wait for an event
		}
		req, err := http.NewRequest("DELETE", c.URL+path, nil)
		if err != nil {
			t.Error(err)
			return
		}
		req.Header.Set("X-Auth-Token", c.admin)
		resp, err := c.hc.Do(req)
		if err != nil {
			last = err.Error()
			continue
		}
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotFound:
			return
		case resp.StatusCode >= 500:
			last = resp.Status
			continue
		}
		t.Errorf("keystone cleanup %s: %s", path, resp.Status)
		return
	}
	t.Errorf("keystone cleanup %s: %s (10 attempts)", path, last)
}

// call makes one request and decodes the answer into out; a status other
// than want fails t. Keystone on SQLite answers 500 when its database is
// busy, having written nothing: that is retried.
func (c *Cloud) call(t testing.TB, method, path, token string, body, out any, want int) http.Header {
	t.Helper()
	var data []byte
	if body != nil {
		var err error
		if data, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(t.Context(), method, c.URL+path, bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("X-Auth-Token", token)
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatalf("keystone %s %s: %v", method, path, err)
		}
		answer, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("keystone %s %s: %v", method, path, err)
		}
		if resp.StatusCode == http.StatusInternalServerError && attempt < 9 {
			time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond) // backoff, not a wait for an event
			continue
		}
		if resp.StatusCode != want {
			t.Fatalf("keystone %s %s: %s: %s", method, path, resp.Status, answer)
		}
		if out != nil {
			if err := json.Unmarshal(answer, out); err != nil {
				t.Fatalf("keystone %s %s: %v", method, path, err)
			}
		}
		return resp.Header
	}
}
