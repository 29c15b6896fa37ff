package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/local"
	"github.com/cairnproject/cairn/internal/objstore/objstoretest"
	"github.com/cairnproject/cairn/internal/objstore/s3"
	"github.com/cairnproject/cairn/internal/objstore/swift"
	"github.com/cairnproject/cairn/internal/objstore/swift/swifttest"
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
	swifttest.RemoveContainer(context.Background(), swift.Config{Container: container})
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
		openrc := func(t *testing.T) map[string]string {
			if auth == "password" {
				return swifttest.PasswordEnv(swifttest.Keystone(t))
			}
			return swifttest.AppCredEnv(swifttest.Keystone(t))
		}
		kit := storeKit{
			name:     "swift-keystone-" + strings.ReplaceAll(auth, " ", "-"),
			initArgs: []string{"--consistency-margin", "0s"},
		}
		kit.fresh = func(t *testing.T, dir string) (string, objstore.Backend) {
			env := openrc(t)
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
				swifttest.RemoveContainer(context.Background(), swift.Config{Container: container, Getenv: getenv})
			})
			return "swift://" + container + "/repo", prefixed{be, "repo/"}
		}
		// The binary's environment: the tempauth settings blanked, the
		// openrc added.
		kit.envFor = func(t *testing.T) []string {
			out := []string{"ST_AUTH=", "ST_USER=", "ST_KEY="}
			for k, v := range openrc(t) {
				out = append(out, k+"="+v)
			}
			return out
		}
		kits = append(kits, kit)
	}
	return kits
}
