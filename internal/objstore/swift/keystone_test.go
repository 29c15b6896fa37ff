package swift_test

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/objstoretest"
	"github.com/cairnproject/cairn/internal/objstore/retry"
	"github.com/cairnproject/cairn/internal/objstore/swift"
	"github.com/cairnproject/cairn/internal/objstore/swift/swifttest"
)

// The Keystone tests run against scripts/keystone.sh: a real Keystone v3
// and a Swift proxy that validates its tokens (authtoken, keystoneauth).
// Its catalog has the object-store endpoint in CAIRN_TEST_KEYSTONE_REGION
// and an unreachable one in CAIRN_TEST_KEYSTONE_DEAD_REGION.
//
// Each test hands swift.New an environment of its own (Config.Getenv),
// holding only the OS_* variables an openrc or clouds.yaml user would
// have: the process's own ST_* settings, which point at the tempauth
// proxy, must not mix in.

// with returns a copy of env with the given changes ("" removes).
func with(env map[string]string, kv ...string) map[string]string {
	out := maps.Clone(env)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(out, kv[i])
		} else {
			out[kv[i]] = kv[i+1]
		}
	}
	return out
}

func lookup(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// newKeystoneBackend returns a backend on a new container, authenticated
// through env, and removes the container when the test ends.
func newKeystoneBackend(t *testing.T, s, env map[string]string, cfg swift.Config) *swift.Backend {
	t.Helper()
	cfg.Container = objstoretest.UniqueName("cairn-ks-")
	cfg.Getenv = lookup(env)
	b, err := swift.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeKeystoneContainer(s, cfg.Container) })
	if err := b.EnsureContainer(t.Context()); err != nil {
		t.Fatal(err)
	}
	return b
}

// removeKeystoneContainer deletes a container of the test project, its
// segments and the segment container.
func removeKeystoneContainer(s map[string]string, name string) {
	swifttest.RemoveContainer(context.Background(), swift.Config{Container: name, Getenv: lookup(swifttest.PasswordEnv(s))})
}

// roundTrip writes an object and reads it back.
func roundTrip(t *testing.T, b *swift.Backend) {
	t.Helper()
	data := []byte("through keystone " + time.Now().String())
	if err := b.Put(t.Context(), "obj", data, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := objstore.ReadAll(t.Context(), b, "obj", 0, -1)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %q: %v", got, err)
	}
}

// noSecrets fails when msg carries any of the secrets.
func noSecrets(t *testing.T, msg string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(msg, s) {
			t.Fatalf("error message leaks a secret: %s", msg)
		}
	}
}

func TestKeystoneConformance(t *testing.T) {
	s := swifttest.Keystone(t)
	for _, tc := range []struct {
		name    string
		env     map[string]string
		segment int64
	}{
		{"password", swifttest.PasswordEnv(s), 0},
		{"application credential", swifttest.AppCredEnv(s), 0},
		// Static large objects: segments in a second container, the
		// manifest checked by the slo middleware behind keystoneauth.
		{"application credential large objects", swifttest.AppCredEnv(s), 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objstoretest.Run(t, objstoretest.Options{}, func(t *testing.T) objstore.Backend {
				return newKeystoneBackend(t, s, tc.env, swift.Config{SegmentSize: tc.segment})
			})
		})
	}
}

func TestKeystoneRegion(t *testing.T) {
	s := swifttest.Keystone(t)
	good, dead := s["CAIRN_TEST_KEYSTONE_REGION"], s["CAIRN_TEST_KEYSTONE_DEAD_REGION"]
	secrets := []string{s["CAIRN_TEST_KEYSTONE_PASSWORD"], s["CAIRN_TEST_KEYSTONE_APP_CRED_SECRET"]}
	for _, tc := range []struct {
		name   string
		env    map[string]string
		region string // Config.Region, as the CLI's ?region=
		want   error  // from the first request to the storage endpoint
	}{
		{"OS_REGION_NAME " + good, with(swifttest.PasswordEnv(s), "OS_REGION_NAME", good), "", nil},
		{"application credential OS_REGION_NAME " + good, with(swifttest.AppCredEnv(s), "OS_REGION_NAME", good), "", nil},
		// The dead region's endpoint refuses connections: the region
		// decides which endpoint is used.
		{"OS_REGION_NAME " + dead, with(swifttest.PasswordEnv(s), "OS_REGION_NAME", dead), "", cairn.ErrUnavailable},
		{"application credential OS_REGION_NAME " + dead, with(swifttest.AppCredEnv(s), "OS_REGION_NAME", dead), "", cairn.ErrUnavailable},
		// Config.Region overrides OS_REGION_NAME, both ways.
		{"Config.Region " + dead + " over OS_REGION_NAME", with(swifttest.PasswordEnv(s), "OS_REGION_NAME", good), dead, cairn.ErrUnavailable},
		{"Config.Region " + good + " over OS_REGION_NAME", with(swifttest.PasswordEnv(s), "OS_REGION_NAME", dead), good, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			container := objstoretest.UniqueName("cairn-ks-")
			t.Cleanup(func() { removeKeystoneContainer(s, container) })
			b, err := swift.New(ctx, swift.Config{Container: container, Region: tc.region, Getenv: lookup(tc.env)})
			if err != nil {
				// Authentication is Keystone's business and works in any region.
				t.Fatal(err)
			}
			err = b.EnsureContainer(ctx)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				roundTrip(t, b)
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			msg := err.Error()
			for _, w := range []string{"swift create container", "swift://" + container} {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			noSecrets(t, msg, secrets...)
			t.Logf("%s: %v", tc.name, err)
		})
	}
	t.Run("no such region", func(t *testing.T) {
		for _, env := range []map[string]string{swifttest.PasswordEnv(s), swifttest.AppCredEnv(s)} {
			_, err := swift.New(t.Context(), swift.Config{Container: "x", Getenv: lookup(with(env, "OS_REGION_NAME", "RegionNowhere"))})
			if !errors.Is(err, cairn.ErrInvalid) || !strings.Contains(err.Error(), "RegionNowhere") {
				t.Fatalf("got %v, want cairn.ErrInvalid naming the region", err)
			}
			noSecrets(t, err.Error(), secrets...)
			t.Log(err)
		}
	})
}

func TestKeystoneWrongCredentials(t *testing.T) {
	s := swifttest.Keystone(t)
	const wrong = "Wr0ng-s3cret-NOT-the-real-one"
	secrets := []string{wrong, s["CAIRN_TEST_KEYSTONE_PASSWORD"], s["CAIRN_TEST_KEYSTONE_APP_CRED_SECRET"]}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want error
	}{
		{"wrong password", with(swifttest.PasswordEnv(s), "OS_PASSWORD", wrong), cairn.ErrDenied},
		{"unknown user", with(swifttest.PasswordEnv(s), "OS_USERNAME", "nobody-"+wrong[:5]), cairn.ErrDenied},
		{"project not the user's", with(swifttest.PasswordEnv(s), "OS_PROJECT_NAME", "admin"), cairn.ErrDenied},
		// Keystone compares only the first 72 bytes of a secret (bcrypt):
		// this one differs from the first byte.
		{"wrong application credential secret", with(swifttest.AppCredEnv(s), "OS_APPLICATION_CREDENTIAL_SECRET", wrong), cairn.ErrDenied},
		// Keystone answers 404 for an application credential it does not
		// know; that is a denial, not a missing object.
		{"unknown application credential", with(swifttest.AppCredEnv(s), "OS_APPLICATION_CREDENTIAL_ID", "0123456789abcdef0123456789abcdef"), cairn.ErrDenied},
		{"auth URL that is not Keystone's", with(swifttest.PasswordEnv(s), "OS_AUTH_URL", strings.TrimSuffix(s["CAIRN_TEST_KEYSTONE_AUTH_URL"], "/v3")+"/nothing/v3"), cairn.ErrDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			start := time.Now()
			// As the CLI authenticates: transient failures are retried
			// for minutes, permanent ones must not be.
			err := retry.Policy{}.Do(ctx, "authenticate", "x", func(ctx context.Context) error {
				_, err := swift.New(ctx, swift.Config{Container: "x", Getenv: lookup(tc.env)})
				return err
			})
			if elapsed := time.Since(start); elapsed > 10*time.Second {
				t.Errorf("took %v to fail", elapsed)
			}
			if err == nil || retry.Retryable(err) || !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want a permanent error (%v)", err, tc.want)
			}
			if msg := err.Error(); !strings.Contains(msg, "swift authenticate swift://x") {
				t.Errorf("error %q does not name the operation and store", msg)
			}
			noSecrets(t, err.Error(), secrets...)
			t.Log(err)
		})
	}
}

// TestCloudsYAMLUnversionedAuthURL needs no server: a clouds.yaml auth_url
// without a version, as devstack writes it, gets "/v3" added.
func TestCloudsYAMLUnversionedAuthURL(t *testing.T) {
	paths := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths <- r.URL.Path
		http.Error(w, "no", http.StatusUnauthorized)
	}))
	defer srv.Close()
	for _, tc := range []struct{ url, want string }{
		{srv.URL + "/identity", "/identity/v3/auth/tokens"},
		{srv.URL + "/identity/", "/identity/v3/auth/tokens"},
		{srv.URL, "/v3/auth/tokens"},
		{srv.URL + "/v3", "/v3/auth/tokens"},
		{srv.URL + "/identity/v3/", "/identity/v3/auth/tokens"},
	} {
		path := filepath.Join(t.TempDir(), "clouds.yaml")
		yaml := "clouds:\n  lab:\n    auth:\n      auth_url: " + tc.url + "\n      username: u\n      password: p\n" +
			"      project_name: proj\n      user_domain_name: Default\n    identity_api_version: '3'\n"
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		env := map[string]string{"OS_CLOUD": "lab", "OS_CLIENT_CONFIG_FILE": path}
		_, err := swift.New(t.Context(), swift.Config{Container: "c", Getenv: lookup(env)})
		if !errors.Is(err, cairn.ErrDenied) {
			t.Fatalf("%s: %v", tc.url, err)
		}
		if got := <-paths; got != tc.want {
			t.Errorf("auth_url %s: request to %s, want %s", tc.url, got, tc.want)
		}
		for len(paths) > 0 { // ncw/swift tries twice on 401
			<-paths
		}
	}
	// The same from openrc-style variables: the version comes from
	// OS_IDENTITY_API_VERSION, or from fields only v3 has.
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"OS_IDENTITY_API_VERSION", map[string]string{"OS_IDENTITY_API_VERSION": "3", "OS_PROJECT_NAME": "p"}, "/identity/v3/auth/tokens"},
		{"OS_IDENTITY_API_VERSION 3.0", map[string]string{"OS_IDENTITY_API_VERSION": "3.0"}, "/identity/v3/auth/tokens"},
		{"user domain", map[string]string{"OS_USER_DOMAIN_NAME": "Default"}, "/identity/v3/auth/tokens"},
		{"application credential", map[string]string{"OS_APPLICATION_CREDENTIAL_ID": "id", "OS_APPLICATION_CREDENTIAL_SECRET": "s"}, "/identity/v3/auth/tokens"},
	} {
		env := map[string]string{"OS_AUTH_URL": srv.URL + "/identity", "OS_USERNAME": "u", "OS_PASSWORD": "p"}
		maps.Copy(env, tc.env)
		_, err := swift.New(t.Context(), swift.Config{Container: "c", Getenv: lookup(env)})
		if !errors.Is(err, cairn.ErrDenied) {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := <-paths; got != tc.want {
			t.Errorf("%s: request to %s, want %s", tc.name, got, tc.want)
		}
		for len(paths) > 0 {
			<-paths
		}
	}
	env := map[string]string{"OS_AUTH_URL": srv.URL, "OS_USERNAME": "u", "OS_PASSWORD": "p", "OS_IDENTITY_API_VERSION": "three"}
	if _, err := swift.New(t.Context(), swift.Config{Container: "c", Getenv: lookup(env)}); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("OS_IDENTITY_API_VERSION=three: %v", err)
	}
}

func TestKeystoneCloudsYAML(t *testing.T) {
	s := swifttest.Keystone(t)
	authURL := s["CAIRN_TEST_KEYSTONE_AUTH_URL"]
	password := "      username: " + s["CAIRN_TEST_KEYSTONE_USER"] + "\n" +
		"      password: " + s["CAIRN_TEST_KEYSTONE_PASSWORD"] + "\n" +
		"      project_name: " + s["CAIRN_TEST_KEYSTONE_PROJECT"] + "\n" +
		"      user_domain_name: " + s["CAIRN_TEST_KEYSTONE_USER_DOMAIN"] + "\n" +
		"      project_domain_name: " + s["CAIRN_TEST_KEYSTONE_PROJECT_DOMAIN"] + "\n"
	appCred := "      application_credential_id: " + s["CAIRN_TEST_KEYSTONE_APP_CRED_ID"] + "\n" +
		"      application_credential_secret: " + s["CAIRN_TEST_KEYSTONE_APP_CRED_SECRET"] + "\n"
	cloud := func(name, url, auth, extra string) string {
		return "  " + name + ":\n    auth:\n      auth_url: " + url + "\n" + auth +
			"    region_name: " + s["CAIRN_TEST_KEYSTONE_REGION"] + "\n" + extra
	}
	// What the OpenStack CLI and Horizon write: an auth URL with or
	// without the version (the clients then discover it).
	unversioned := strings.TrimSuffix(strings.TrimSuffix(authURL, "/"), "/v3")
	yaml := "clouds:\n" +
		cloud("password", authURL, password, "    identity_api_version: 3\n") +
		cloud("appcred", authURL, appCred, "    auth_type: v3applicationcredential\n    identity_api_version: 3\n") +
		cloud("unversioned", unversioned, password, "    identity_api_version: 3\n") +
		cloud("badpassword", authURL, strings.Replace(password, s["CAIRN_TEST_KEYSTONE_PASSWORD"], "not-the-password", 1), "    identity_api_version: 3\n")

	dir := t.TempDir()
	path := filepath.Join(dir, "clouds.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".config", "openstack"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".config", "openstack", "clouds.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{"password", map[string]string{"OS_CLOUD": "password", "OS_CLIENT_CONFIG_FILE": path}},
		{"application credential", map[string]string{"OS_CLOUD": "appcred", "OS_CLIENT_CONFIG_FILE": path}},
		{"unversioned auth_url", map[string]string{"OS_CLOUD": "unversioned", "OS_CLIENT_CONFIG_FILE": path}},
		{"from HOME", map[string]string{"OS_CLOUD": "appcred", "HOME": home}},
		// Environment variables override the file, as in the OpenStack CLI.
		{"OS_PASSWORD over clouds.yaml", map[string]string{"OS_CLOUD": "badpassword", "OS_CLIENT_CONFIG_FILE": path,
			"OS_PASSWORD": s["CAIRN_TEST_KEYSTONE_PASSWORD"]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			roundTrip(t, newKeystoneBackend(t, s, tc.env, swift.Config{}))
		})
	}
	t.Run("wrong password in clouds.yaml", func(t *testing.T) {
		env := map[string]string{"OS_CLOUD": "badpassword", "OS_CLIENT_CONFIG_FILE": path}
		_, err := swift.New(t.Context(), swift.Config{Container: "x", Getenv: lookup(env)})
		if !errors.Is(err, cairn.ErrDenied) {
			t.Fatalf("got %v, want cairn.ErrDenied", err)
		}
		noSecrets(t, err.Error(), "not-the-password", s["CAIRN_TEST_KEYSTONE_PASSWORD"])
	})
}
