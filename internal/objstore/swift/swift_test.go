package swift_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/objstoretest"
	"github.com/cairnproject/cairn/internal/objstore/swift"
	"github.com/cairnproject/cairn/internal/objstore/swift/swifttest"
)

func newBackend(t *testing.T, prefix string, segment int64) *swift.Backend {
	t.Helper()
	objstoretest.Env(t, "CAIRN_TEST_SWIFT", "ST_AUTH", "ST_USER", "ST_KEY")
	container := objstoretest.UniqueName("cairn-test-")
	b, err := swift.New(t.Context(), swift.Config{Container: container, Prefix: prefix, SegmentSize: segment})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.EnsureContainer(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeContainer(container) })
	return b
}

// removeContainer deletes a test container, its segments and the
// segment container.
func removeContainer(name string) {
	swifttest.RemoveContainer(context.Background(), swift.Config{Container: name})
}

func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prefix  string
		segment int64
	}{
		{"plain", "", 0},
		{"prefix", "repos/one", 0},
		// Objects over 1 MiB go up as static large objects.
		{"large objects", "", 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objstoretest.Run(t, objstoretest.Options{}, func(t *testing.T) objstore.Backend {
				return newBackend(t, tc.prefix, tc.segment)
			})
		})
	}
}

func TestLargeObjectDeleteRemovesSegments(t *testing.T) {
	b := newBackend(t, "", 1<<20)
	ctx := t.Context()
	data := bytes.Repeat([]byte("segmented "), 500000) // about 5 MiB
	if err := b.Put(ctx, "big", data, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := objstore.ReadAll(ctx, b, "big", 1<<20, 100)
	if err != nil || !bytes.Equal(got, data[1<<20:1<<20+100]) {
		t.Fatalf("ranged read across segments: %v", err)
	}
	if seg := segments(t, b); seg < 5 {
		t.Fatalf("%d segments for a 5 MiB object in 1 MiB segments", seg)
	}
	if err := b.Delete(ctx, "big"); err != nil {
		t.Fatal(err)
	}
	// Garbage collection's clean-up removes the orphaned segments.
	n, err := b.RemoveTemporary(ctx, 0)
	if err != nil || n < 5 {
		t.Fatalf("RemoveTemporary removed %d segments: %v", n, err)
	}
	if seg := segments(t, b); seg != 0 {
		t.Fatalf("%d segments left after deleting the large object", seg)
	}
}

func segments(t *testing.T, b *swift.Backend) int {
	t.Helper()
	loc := b.Location()
	container := strings.TrimPrefix(strings.Fields(loc)[0], "swift://")
	container = strings.SplitN(container, "/", 2)[0]
	sb, err := swift.New(t.Context(), swift.Config{Container: container + "_segments"})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	err = sb.List(t.Context(), "", func(objstore.ObjectInfo) error { n++; return nil })
	if err != nil && !errors.Is(err, cairn.ErrNotFound) {
		t.Fatal(err)
	}
	return n
}

func TestErrors(t *testing.T) {
	env := objstoretest.Env(t, "CAIRN_TEST_SWIFT", "ST_AUTH", "ST_USER", "ST_KEY")
	ctx := t.Context()
	getenv := func(k string) string {
		if k == "ST_KEY" {
			return "wrong-key-value"
		}
		return os.Getenv(k)
	}
	_, err := swift.New(ctx, swift.Config{Container: "x", Getenv: getenv})
	if !errors.Is(err, cairn.ErrDenied) {
		t.Fatalf("wrong key: %v", err)
	}
	if strings.Contains(err.Error(), "wrong-key-value") || strings.Contains(err.Error(), env["ST_KEY"]) {
		t.Fatalf("error message leaks the key: %v", err)
	}
	b, err := swift.New(ctx, swift.Config{Container: objstoretest.UniqueName("cairn-missing-")})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "config", []byte("x"), objstore.PutOptions{}); !errors.Is(err, cairn.ErrNotFound) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing container: %v", err)
	}
	unreachable := func(k string) string {
		if k == "ST_AUTH" {
			return "http://127.0.0.1:1/auth/v1.0"
		}
		return os.Getenv(k)
	}
	if _, err := swift.New(ctx, swift.Config{Container: "x", Getenv: unreachable}); !errors.Is(err, cairn.ErrUnavailable) {
		t.Fatalf("unreachable auth: %v", err)
	}
	if _, err := swift.New(ctx, swift.Config{Container: "x", Getenv: func(string) string { return "" }}); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("no credentials: %v", err)
	}
}

func TestCloudsYAML(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "clouds.yaml")
	yaml := "clouds:\n  lab:\n    auth:\n      auth_url: http://127.0.0.1:1/v3\n      username: u\n      password: p\n      project_name: proj\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: RegionTwo\n    identity_api_version: 3\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"OS_CLOUD": "lab", "OS_CLIENT_CONFIG_FILE": path}
	_, err := swift.New(t.Context(), swift.Config{Container: "c", Getenv: func(k string) string { return env[k] }})
	// The cloud's auth URL is unreachable: the connection was built from
	// the file and failed only on the network.
	if !errors.Is(err, cairn.ErrUnavailable) {
		t.Fatalf("clouds.yaml: %v", err)
	}
	env["OS_CLOUD"] = "other"
	if _, err := swift.New(t.Context(), swift.Config{Container: "c", Getenv: func(k string) string { return env[k] }}); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("unknown cloud: %v", err)
	}
}
