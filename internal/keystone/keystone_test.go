package keystone_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/keystone"
	"github.com/cairnproject/cairn/internal/keystone/keystonetest"
)

// fakeKeystone answers the two requests a Validator makes. It counts
// them, and can be told to refuse the service token or to fail.
type fakeKeystone struct {
	mu        sync.Mutex
	issued    int            // service tokens issued
	validated int            // validation requests
	service   string         // the valid service token
	users     map[string]any // subject token -> token body
	status    int            // non-zero: every request answers this
	body      string         // with this body
	expires   time.Time      // of service tokens
}

func newFake(t *testing.T, now time.Time) (*fakeKeystone, *httptest.Server) {
	f := &fakeKeystone{users: map[string]any{}, expires: now.Add(time.Hour)}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeKeystone) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.status != 0 {
		w.WriteHeader(f.status)
		fmt.Fprint(w, f.body)
		return
	}
	switch {
	case r.Method == "POST" && r.URL.Path == "/v3/auth/tokens":
		var req struct {
			Auth struct {
				Identity struct {
					Password struct {
						User struct{ Name, Password string }
					}
				}
			}
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Auth.Identity.Password.User.Password != "svc-pw" {
			http.Error(w, `{"error":{"code":401}}`, http.StatusUnauthorized)
			return
		}
		f.issued++
		f.service = fmt.Sprintf("svc-%d", f.issued)
		w.Header().Set("X-Subject-Token", f.service)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"token":{"expires_at":%q}}`, f.expires.Format("2006-01-02T15:04:05.000000Z"))
	case r.Method == "GET" && r.URL.Path == "/v3/auth/tokens":
		f.validated++
		if r.Header.Get("X-Auth-Token") != f.service {
			http.Error(w, `{"error":{"code":401}}`, http.StatusUnauthorized)
			return
		}
		body, ok := f.users[r.Header.Get("X-Subject-Token")]
		if !ok {
			http.Error(w, `{"error":{"code":404}}`, http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(body)
	default:
		http.NotFound(w, r)
	}
}

// do runs fn with f locked: the test and the server's goroutines share f.
func (f *fakeKeystone) do(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

// counts returns the service tokens issued and the validations asked.
func (f *fakeKeystone) counts() (issued, validated int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.issued, f.validated
}

func tokenBody(user, project string, expires time.Time, roles ...string) any {
	var rs []map[string]string
	for _, r := range roles {
		rs = append(rs, map[string]string{"id": "id-" + r, "name": r})
	}
	t := map[string]any{"expires_at": expires.Format("2006-01-02T15:04:05.000000Z"),
		"user": map[string]string{"id": user, "name": "name-" + user}, "roles": rs}
	if project != "" {
		t["project"] = map[string]string{"id": project, "name": "name-" + project}
	}
	return map[string]any{"token": t}
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func svcCreds() keystone.Credentials {
	return keystone.Credentials{Username: "cairn", Password: "svc-pw", UserDomainName: "Default", ProjectName: "service", ProjectDomainName: "Default"}
}

func TestValidate(t *testing.T) {
	clk := &clock{t: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}
	f, srv := newFake(t, clk.Now())
	f.users["alice"] = tokenBody("u-alice", "p-1", clk.Now().Add(2*time.Hour), "member", "Reader")
	f.users["unscoped"] = tokenBody("u-carol", "", clk.Now().Add(time.Hour))
	f.users["expired"] = tokenBody("u-dave", "p-1", clk.Now().Add(-time.Second), "member")
	v, err := keystone.New(keystone.Config{AuthURL: srv.URL + "/v3/", Credentials: svcCreds(), Now: clk.Now, CacheTime: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	id, err := v.Validate(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	want := cairn.Identity{UserID: "u-alice", UserName: "name-u-alice", ProjectID: "p-1", ProjectName: "name-p-1",
		Roles: []string{"member", "reader"}, ExpiresAt: clk.Now().Add(2 * time.Hour)}
	if fmt.Sprint(id) != fmt.Sprint(want) {
		t.Fatalf("identity\n got %+v\nwant %+v", id, want)
	}
	if !id.HasRole("reader") || id.HasRole("admin") {
		t.Fatalf("roles %v", id.Roles)
	}

	for _, tc := range []struct {
		token string
		want  error
	}{
		{"nobody", cairn.ErrUnauthenticated},
		{"unscoped", cairn.ErrUnauthenticated},
		{"expired", cairn.ErrUnauthenticated},
		{"", cairn.ErrUnauthenticated},
	} {
		if _, err := v.Validate(ctx, tc.token); !errors.Is(err, tc.want) {
			t.Errorf("token %q: %v, want %v", tc.token, err, tc.want)
		}
	}

	// Cached: no new request until the cache time has passed.
	_, before := f.counts()
	if _, err := v.Validate(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, n := f.counts(); n != before {
		t.Fatalf("a cached token was validated again (%d -> %d requests)", before, n)
	}
	clk.Add(5*time.Minute + time.Second)
	if _, err := v.Validate(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, n := f.counts(); n != before+1 {
		t.Fatalf("after the cache time: %d requests (want %d)", n, before+1)
	}

	// A token is cached no longer than it lives: revoked in Keystone
	// (gone from the fake), it is refused once it has expired.
	f.do(func() { f.users["short"] = tokenBody("u-bob", "p-2", clk.Now().Add(time.Minute), "admin") })
	if _, err := v.Validate(ctx, "short"); err != nil {
		t.Fatal(err)
	}
	f.do(func() { delete(f.users, "short") })
	clk.Add(time.Minute)
	if _, err := v.Validate(ctx, "short"); !errors.Is(err, cairn.ErrUnauthenticated) {
		t.Fatalf("an expired cached token: %v", err)
	}

	if n, _ := f.counts(); n != 1 {
		t.Fatalf("%d service tokens issued, want 1", n)
	}
}

func TestServiceToken(t *testing.T) {
	clk := &clock{t: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}
	f, srv := newFake(t, clk.Now())
	for i := range 3 {
		f.users[fmt.Sprint(i)] = tokenBody("u", "p", clk.Now().Add(48*time.Hour), "member")
	}
	v, err := keystone.New(keystone.Config{AuthURL: srv.URL, Credentials: svcCreds(), Now: clk.Now, CacheTime: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := v.Validate(ctx, "0"); err != nil {
		t.Fatal(err)
	}
	// Revoked before its expiry: renewed once, and the request succeeds.
	f.do(func() { f.service = "revoked" })
	if _, err := v.Validate(ctx, "1"); err != nil {
		t.Fatal(err)
	}
	if n, _ := f.counts(); n != 2 {
		t.Fatalf("%d service tokens issued, want 2 (renewed after a 401)", n)
	}
	// Near its expiry: renewed before use.
	clk.Add(59*time.Minute + time.Second)
	f.do(func() { f.expires = clk.Now().Add(time.Hour) })
	if _, err := v.Validate(ctx, "2"); err != nil {
		t.Fatal(err)
	}
	if n, _ := f.counts(); n != 3 {
		t.Fatalf("%d service tokens issued, want 3 (renewed before expiry)", n)
	}
}

func TestValidateKeystoneFails(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
	}{
		{"server error", http.StatusInternalServerError, "boom"},
		{"unavailable", http.StatusServiceUnavailable, ""},
		{"refuses the service user", http.StatusUnauthorized, `{"error":{"code":401}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, srv := newFake(t, time.Now())
			f.do(func() { f.status, f.body = tc.status, tc.body })
			v, err := keystone.New(keystone.Config{AuthURL: srv.URL + "/v3", Credentials: svcCreds()})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Validate(t.Context(), "anything"); !errors.Is(err, cairn.ErrUnavailable) {
				t.Fatalf("got %v, want ErrUnavailable", err)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		v, err := keystone.New(keystone.Config{AuthURL: url, Credentials: svcCreds()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Validate(t.Context(), "anything"); !errors.Is(err, cairn.ErrUnavailable) {
			t.Fatalf("got %v, want ErrUnavailable", err)
		}
	})
	t.Run("wrong service password", func(t *testing.T) {
		_, srv := newFake(t, time.Now())
		c := svcCreds()
		c.Password = "wrong"
		v, err := keystone.New(keystone.Config{AuthURL: srv.URL, Credentials: c})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Validate(t.Context(), "anything"); !errors.Is(err, cairn.ErrUnavailable) {
			t.Fatalf("got %v, want ErrUnavailable", err)
		}
	})
}

func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		url  string
		c    keystone.Credentials
	}{
		{"no scheme", "127.0.0.1:5000/v3", svcCreds()},
		{"ftp", "ftp://h/v3", svcCreds()},
		{"no credentials", "http://h/v3", keystone.Credentials{}},
	} {
		if _, err := keystone.New(keystone.Config{AuthURL: tc.url, Credentials: tc.c}); !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tc.name, err)
		}
	}
}

func TestParseCredentials(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     keystone.Credentials
		err      bool
	}{
		{name: "openrc", in: `# cairn's service user
export OS_AUTH_URL=http://127.0.0.1:5000/v3
export OS_USERNAME=cairn
export OS_PASSWORD='s3cr3t with spaces'
export OS_PROJECT_NAME="service"
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_REGION_NAME=RegionOne
export OS_IDENTITY_API_VERSION=3
`, want: keystone.Credentials{AuthURL: "http://127.0.0.1:5000/v3", Username: "cairn", Password: "s3cr3t with spaces",
			ProjectName: "service", UserDomainName: "Default", ProjectDomainName: "Default"}},
		{name: "application credential", in: "OS_APPLICATION_CREDENTIAL_ID=abc\nOS_APPLICATION_CREDENTIAL_SECRET=xyz\n",
			want: keystone.Credentials{ApplicationCredentialID: "abc", ApplicationCredentialSecret: "xyz"}},
		{name: "project id needs no domain", in: "OS_USERNAME=u\nOS_PASSWORD=p\nOS_USER_DOMAIN_ID=default\nOS_PROJECT_ID=123\n",
			want: keystone.Credentials{Username: "u", Password: "p", UserDomainID: "default", ProjectID: "123"}},
		{name: "no password", in: "OS_USERNAME=u\nOS_USER_DOMAIN_NAME=d\nOS_PROJECT_ID=1\n", err: true},
		{name: "no project", in: "OS_USERNAME=u\nOS_PASSWORD=p\nOS_USER_DOMAIN_NAME=d\n", err: true},
		{name: "project name without domain", in: "OS_USERNAME=u\nOS_PASSWORD=p\nOS_USER_DOMAIN_NAME=d\nOS_PROJECT_NAME=x\n", err: true},
		{name: "half an application credential", in: "OS_APPLICATION_CREDENTIAL_ID=abc\n", err: true},
		{name: "not an assignment", in: "OS_USERNAME\n", err: true},
		{name: "not OS_", in: "PASSWORD=x\n", err: true},
		{name: "shell expansion", in: "OS_PASSWORD=$SECRET\n", err: true},
		{name: "unterminated quote", in: "OS_PASSWORD='abc\n", err: true},
		{name: "empty", in: "", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := keystone.ParseCredentials([]byte(tc.in))
			if tc.err {
				if !errors.Is(err, cairn.ErrInvalid) {
					t.Fatalf("got %+v, %v; want ErrInvalid", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v\nwant %+v", got, err, tc.want)
			}
		})
	}
}

func TestParseToken(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       error
	}{
		{"not json", "<html>", cairn.ErrUnavailable},
		{"no token", `{}`, cairn.ErrUnavailable},
		{"bad expiry", `{"token":{"expires_at":"soon","user":{"id":"u"},"project":{"id":"p"}}}`, cairn.ErrUnavailable},
		{"no user", `{"token":{"expires_at":"2030-01-01T00:00:00Z","project":{"id":"p"}}}`, cairn.ErrUnavailable},
		{"domain scoped", `{"token":{"expires_at":"2030-01-01T00:00:00Z","user":{"id":"u"},"domain":{"id":"d"}}}`, cairn.ErrUnauthenticated},
		{"system scoped", `{"token":{"expires_at":"2030-01-01T00:00:00Z","user":{"id":"u"},"system":{"all":true}}}`, cairn.ErrUnauthenticated},
		{"ok", `{"token":{"expires_at":"2030-01-01T00:00:00.000000Z","user":{"id":"u"},"project":{"id":"p"},"roles":[{"name":"Admin"}]}}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := keystone.ParseToken([]byte(tc.body))
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.want == nil && (id.ProjectID != "p" || !id.HasRole("admin")) {
				t.Fatalf("identity %+v", id)
			}
		})
	}
}

// TestRealKeystone validates tokens of the Keystone scripts/keystone.sh
// runs: a member's and a reader's, a revoked one, and one of another
// user's project.
func TestRealKeystone(t *testing.T) {
	cloud := keystonetest.Connect(t)
	creds := cloud.ServiceUser(t)
	// The service user's credentials go through a file, as an operator's.
	file := filepath.Join(t.TempDir(), "openrc")
	rc := fmt.Sprintf("export OS_AUTH_URL=%s\nexport OS_USERNAME=%s\nexport OS_PASSWORD='%s'\nexport OS_USER_DOMAIN_NAME=Default\nexport OS_PROJECT_ID=%s\n",
		cloud.URL, creds.Username, creds.Password, creds.ProjectID)
	if err := os.WriteFile(file, []byte(rc), 0o600); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := keystone.ParseCredentials(data)
	if err != nil {
		t.Fatal(err)
	}
	v, err := keystone.New(keystone.Config{AuthURL: parsed.AuthURL, Credentials: parsed})
	if err != nil {
		t.Fatal(err)
	}
	project := cloud.Project(t, keystonetest.Unique("cairn-p"))
	member := keystonetest.Unique("member")
	memberID := cloud.User(t, member, "pw-member", project, "member")
	reader := keystonetest.Unique("reader")
	cloud.User(t, reader, "pw-reader", project, "reader")

	tok := cloud.Token(t, member, "pw-member", project, "")
	id, err := v.Validate(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if id.UserID != memberID || id.UserName != member || id.ProjectID != project || !id.HasRole("member") || id.HasRole("admin") {
		t.Fatalf("member's identity %+v", id)
	}
	if !id.ExpiresAt.After(time.Now()) {
		t.Fatalf("expires %v", id.ExpiresAt)
	}
	rid, err := v.Validate(t.Context(), cloud.Token(t, reader, "pw-reader", project, ""))
	if err != nil {
		t.Fatal(err)
	}
	if !rid.HasRole("reader") || rid.HasRole("member") {
		t.Fatalf("reader's roles %v", rid.Roles)
	}

	// Revoked, the token is refused by a validator that has not cached it.
	tok2 := cloud.Token(t, member, "pw-member", project, "")
	cloud.RevokeToken(t, tok2)
	if _, err := v.Validate(t.Context(), tok2); !errors.Is(err, cairn.ErrUnauthenticated) {
		t.Fatalf("revoked token: %v", err)
	}
	if _, err := v.Validate(t.Context(), "gAAAAAnot-a-token"); !errors.Is(err, cairn.ErrUnauthenticated) {
		t.Fatalf("garbage token: %v", err)
	}
}
