package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ncw "github.com/ncw/swift/v2"

	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/local"
	"github.com/cairnproject/cairn/internal/objstore/objstoretest"
	"github.com/cairnproject/cairn/internal/objstore/s3"
	"github.com/cairnproject/cairn/internal/objstore/swift"
)

// storeKit is a kind of store the end-to-end tests run against: how to
// name a fresh repository there, the environment the binary needs, and a
// direct handle to damage objects behind cairn's back.
type storeKit struct {
	name string
	// fresh returns a new repository location and a backend on it; the
	// location is removed when the test ends.
	fresh func(t *testing.T, dir string) (location string, be objstore.Backend)
	env   []string
	// envFor, when set, returns more environment for the binary; it runs
	// in the test, so it can skip it.
	envFor func(t *testing.T) []string
	// initArgs are extra arguments for repo init.
	initArgs []string
}

// storeKits returns the stores available: always a directory; Swift and
// S3 when their servers are configured (./test.sh starts them), failing
// under CI=true when they are not.
func storeKits(t *testing.T) []storeKit {
	kits := []storeKit{{
		name: "local",
		fresh: func(t *testing.T, dir string) (string, objstore.Backend) {
			path := filepath.Join(dir, "repo")
			if err := os.MkdirAll(path, 0o700); err != nil {
				t.Fatal(err)
			}
			be, err := local.New(path, false)
			if err != nil {
				t.Fatal(err)
			}
			return path, be
		},
	}}
	kits = append(kits, storeKit{
		name: "swift",
		fresh: func(t *testing.T, dir string) (string, objstore.Backend) {
			objstoretest.Env(t, "CAIRN_TEST_SWIFT", "ST_AUTH", "ST_USER", "ST_KEY")
			container := objstoretest.UniqueName("cairn-e2e-")
			be, err := swift.New(t.Context(), swift.Config{Container: container})
			if err != nil {
				t.Fatal(err)
			}
			if err := be.EnsureContainer(t.Context()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { removeSwiftContainer(container) })
			return "swift://" + container + "/repo", prefixed{be, "repo/"}
		},
		// A single node lists what it stored at once.
		initArgs: []string{"--consistency-margin", "0s"},
	})
	kits = append(kits, storeKit{
		name: "s3",
		fresh: func(t *testing.T, dir string) (string, objstore.Backend) {
			env := objstoretest.Env(t, "CAIRN_TEST_S3_ENDPOINT", "CAIRN_TEST_S3_ACCESS_KEY", "CAIRN_TEST_S3_SECRET_KEY")
			bucket := objstoretest.UniqueName("cairn-e2e-")
			cfg := s3.Config{Bucket: bucket, Prefix: "repo", Endpoint: env["CAIRN_TEST_S3_ENDPOINT"], Region: "us-east-1",
				PathStyle: true, AccessKey: env["CAIRN_TEST_S3_ACCESS_KEY"], SecretKey: env["CAIRN_TEST_S3_SECRET_KEY"]}
			be, err := s3.New(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := be.EnsureBucket(t.Context()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { removeS3Bucket(cfg) })
			return "s3://" + bucket + "/repo", be
		},
		env: s3Env(),
	})
	return kits
}

func s3Env() []string {
	return []string{
		"CAIRN_S3_ENDPOINT=" + os.Getenv("CAIRN_TEST_S3_ENDPOINT"),
		"AWS_ACCESS_KEY_ID=" + os.Getenv("CAIRN_TEST_S3_ACCESS_KEY"),
		"AWS_SECRET_ACCESS_KEY=" + os.Getenv("CAIRN_TEST_S3_SECRET_KEY"),
		"AWS_REGION=us-east-1",
	}
}

// prefixed shows a backend's objects under a prefix, as a repository at
// swift://container/prefix sees them.
type prefixed struct {
	objstore.Backend
	prefix string
}

func (p prefixed) Put(ctx context.Context, name string, data []byte, o objstore.PutOptions) error {
	return p.Backend.Put(ctx, p.prefix+name, data, o)
}
func (p prefixed) Get(ctx context.Context, name string, off, n int64) (io.ReadCloser, error) {
	return p.Backend.Get(ctx, p.prefix+name, off, n)
}
func (p prefixed) Delete(ctx context.Context, name string) error {
	return p.Backend.Delete(ctx, p.prefix+name)
}
func (p prefixed) List(ctx context.Context, prefix string, fn func(objstore.ObjectInfo) error) error {
	return p.Backend.List(ctx, p.prefix+prefix, func(i objstore.ObjectInfo) error {
		i.Name = strings.TrimPrefix(i.Name, p.prefix)
		return fn(i)
	})
}

func removeSwiftContainer(container string) {
	ctx := context.Background()
	for _, c := range []string{container, container + "_segments"} {
		if be, err := swift.New(ctx, swift.Config{Container: c}); err == nil {
			_ = be.List(ctx, "", func(i objstore.ObjectInfo) error { return be.Delete(ctx, i.Name) })
		}
		conn := &ncw.Connection{}
		if conn.ApplyEnvironment() == nil && conn.Authenticate(ctx) == nil {
			_ = conn.ContainerDelete(ctx, c)
		}
	}
}

func removeS3Bucket(cfg s3.Config) {
	ctx := context.Background()
	cfg.Prefix = ""
	be, err := s3.New(ctx, cfg)
	if err != nil {
		return
	}
	_ = be.List(ctx, "", func(i objstore.ObjectInfo) error { return be.Delete(ctx, i.Name) })
	_ = be.RemoveBucket(ctx)
}

// chunkObjects lists the chunk objects of a repository.
func chunkObjects(t *testing.T, be objstore.Backend) []string {
	t.Helper()
	var names []string
	if err := be.List(t.Context(), "chunks/", func(i objstore.ObjectInfo) error { names = append(names, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	return names
}

// corruptObject flips one bit of an object in the store.
func corruptObject(t *testing.T, be objstore.Backend, name string, bit int) {
	t.Helper()
	data, err := objstore.ReadAll(t.Context(), be, name, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	data[bit/8%len(data)] ^= 1 << (bit % 8)
	if err := be.Put(t.Context(), name, data, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// keystoneKits are Swift through Keystone v3 (scripts/keystone.sh), once
// with a password and once with an application credential: the binary
// gets only the OS_* variables of an openrc, with the tempauth ST_*
// settings of the test environment blanked.
func keystoneKits() []storeKit {
	var kits []storeKit
	for _, auth := range []string{"password", "application credential"} {
		settings := func(t *testing.T) map[string]string {
			return objstoretest.Env(t, "CAIRN_TEST_KEYSTONE", "CAIRN_TEST_KEYSTONE_AUTH_URL",
				"CAIRN_TEST_KEYSTONE_USER", "CAIRN_TEST_KEYSTONE_PASSWORD", "CAIRN_TEST_KEYSTONE_PROJECT",
				"CAIRN_TEST_KEYSTONE_USER_DOMAIN", "CAIRN_TEST_KEYSTONE_PROJECT_DOMAIN",
				"CAIRN_TEST_KEYSTONE_APP_CRED_ID", "CAIRN_TEST_KEYSTONE_APP_CRED_SECRET", "CAIRN_TEST_KEYSTONE_REGION")
		}
		openrc := func(s map[string]string) map[string]string {
			env := map[string]string{"OS_AUTH_URL": s["CAIRN_TEST_KEYSTONE_AUTH_URL"], "OS_REGION_NAME": s["CAIRN_TEST_KEYSTONE_REGION"]}
			if auth == "password" {
				env["OS_USERNAME"], env["OS_PASSWORD"] = s["CAIRN_TEST_KEYSTONE_USER"], s["CAIRN_TEST_KEYSTONE_PASSWORD"]
				env["OS_PROJECT_NAME"], env["OS_USER_DOMAIN_NAME"] = s["CAIRN_TEST_KEYSTONE_PROJECT"], s["CAIRN_TEST_KEYSTONE_USER_DOMAIN"]
				env["OS_PROJECT_DOMAIN_NAME"] = s["CAIRN_TEST_KEYSTONE_PROJECT_DOMAIN"]
			} else {
				env["OS_AUTH_TYPE"] = "v3applicationcredential"
				env["OS_APPLICATION_CREDENTIAL_ID"] = s["CAIRN_TEST_KEYSTONE_APP_CRED_ID"]
				env["OS_APPLICATION_CREDENTIAL_SECRET"] = s["CAIRN_TEST_KEYSTONE_APP_CRED_SECRET"]
			}
			return env
		}
		kit := storeKit{
			name:     "swift-keystone-" + strings.ReplaceAll(auth, " ", "-"),
			initArgs: []string{"--consistency-margin", "0s"},
		}
		kit.fresh = func(t *testing.T, dir string) (string, objstore.Backend) {
			env := openrc(settings(t))
			getenv := func(k string) string { return env[k] }
			container := objstoretest.UniqueName("cairn-e2e-ks-")
			be, err := swift.New(t.Context(), swift.Config{Container: container, Getenv: getenv})
			if err != nil {
				t.Fatal(err)
			}
			if err := be.EnsureContainer(t.Context()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx := context.Background()
				_ = be.List(ctx, "", func(i objstore.ObjectInfo) error { return be.Delete(ctx, i.Name) })
				_ = be.RemoveContainer(ctx)
			})
			return "swift://" + container + "/repo", prefixed{be, "repo/"}
		}
		// The binary's environment: the tempauth settings blanked, the
		// openrc added.
		kit.envFor = func(t *testing.T) []string {
			out := []string{"ST_AUTH=", "ST_USER=", "ST_KEY="}
			for k, v := range openrc(settings(t)) {
				out = append(out, k+"="+v)
			}
			return out
		}
		kits = append(kits, kit)
	}
	return kits
}
