// Package swifttest gives tests the Keystone that scripts/keystone.sh
// runs: its settings, and the OS_* environments an openrc would hold.
package swifttest

import (
	"context"
	"testing"

	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/objstoretest"
	"github.com/cairnproject/cairn/internal/objstore/swift"
)

// Keystone returns the settings keystone.sh writes (CAIRN_TEST_KEYSTONE_*),
// skipping t, or failing it under CI=true, when they are absent. Its
// catalog has the object-store endpoint in CAIRN_TEST_KEYSTONE_REGION and
// an unreachable one in CAIRN_TEST_KEYSTONE_DEAD_REGION.
func Keystone(t *testing.T) map[string]string {
	t.Helper()
	return objstoretest.Env(t, "CAIRN_TEST_KEYSTONE",
		"CAIRN_TEST_KEYSTONE_AUTH_URL", "CAIRN_TEST_KEYSTONE_USER", "CAIRN_TEST_KEYSTONE_PASSWORD",
		"CAIRN_TEST_KEYSTONE_PROJECT", "CAIRN_TEST_KEYSTONE_USER_DOMAIN", "CAIRN_TEST_KEYSTONE_PROJECT_DOMAIN",
		"CAIRN_TEST_KEYSTONE_APP_CRED_ID", "CAIRN_TEST_KEYSTONE_APP_CRED_SECRET",
		"CAIRN_TEST_KEYSTONE_REGION", "CAIRN_TEST_KEYSTONE_DEAD_REGION")
}

// PasswordEnv is an openrc for the test user: password, project scope.
func PasswordEnv(s map[string]string) map[string]string {
	return map[string]string{
		"OS_AUTH_URL":            s["CAIRN_TEST_KEYSTONE_AUTH_URL"],
		"OS_USERNAME":            s["CAIRN_TEST_KEYSTONE_USER"],
		"OS_PASSWORD":            s["CAIRN_TEST_KEYSTONE_PASSWORD"],
		"OS_PROJECT_NAME":        s["CAIRN_TEST_KEYSTONE_PROJECT"],
		"OS_USER_DOMAIN_NAME":    s["CAIRN_TEST_KEYSTONE_USER_DOMAIN"],
		"OS_PROJECT_DOMAIN_NAME": s["CAIRN_TEST_KEYSTONE_PROJECT_DOMAIN"],
		"OS_REGION_NAME":         s["CAIRN_TEST_KEYSTONE_REGION"],
	}
}

// AppCredEnv is an openrc for the test user's application credential, as
// Horizon writes one: no user, project or domain.
func AppCredEnv(s map[string]string) map[string]string {
	return map[string]string{
		"OS_AUTH_TYPE":                     "v3applicationcredential",
		"OS_AUTH_URL":                      s["CAIRN_TEST_KEYSTONE_AUTH_URL"],
		"OS_APPLICATION_CREDENTIAL_ID":     s["CAIRN_TEST_KEYSTONE_APP_CRED_ID"],
		"OS_APPLICATION_CREDENTIAL_SECRET": s["CAIRN_TEST_KEYSTONE_APP_CRED_SECRET"],
		"OS_REGION_NAME":                   s["CAIRN_TEST_KEYSTONE_REGION"],
	}
}

// RemoveContainer deletes every object in cfg's container and in its
// segment container (where large objects' segments stay after their
// manifests are deleted), then both containers. It is a test's clean-up,
// so errors are ignored.
func RemoveContainer(ctx context.Context, cfg swift.Config) {
	cfg.Prefix = ""
	for _, c := range []string{cfg.Container, cfg.Container + "_segments"} {
		cfg.Container = c
		b, err := swift.New(ctx, cfg)
		if err != nil {
			return
		}
		_ = b.List(ctx, "", func(i objstore.ObjectInfo) error { return b.Delete(ctx, i.Name) })
		_ = b.RemoveContainer(ctx)
	}
}
