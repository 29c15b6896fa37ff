package s3_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/objstoretest"
	"github.com/cairnproject/cairn/internal/objstore/s3"
)

// servers are the S3 implementations the suite runs against: versitygw,
// and OpenStack Swift's s3api.
var servers = []struct{ name, endpoint, access, secret string }{
	{"versitygw", "CAIRN_TEST_S3_ENDPOINT", "CAIRN_TEST_S3_ACCESS_KEY", "CAIRN_TEST_S3_SECRET_KEY"},
	{"swift-s3api", "CAIRN_TEST_SWIFT_S3_ENDPOINT", "CAIRN_TEST_SWIFT_S3_ACCESS_KEY", "CAIRN_TEST_SWIFT_S3_SECRET_KEY"},
}

func newBackend(t *testing.T, env map[string]string, endpoint, access, secret, prefix string) *s3.Backend {
	t.Helper()
	cfg := s3.Config{
		Bucket:    objstoretest.UniqueName("cairn-test-"),
		Prefix:    prefix,
		Endpoint:  env[endpoint],
		Region:    "us-east-1",
		PathStyle: true,
		AccessKey: env[access],
		SecretKey: env[secret],
	}
	b, err := s3.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.EnsureBucket(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeBucket(t, cfg) })
	return b
}

func removeBucket(t *testing.T, cfg s3.Config) {
	ctx := context.Background()
	b, err := s3.New(ctx, s3.Config{Bucket: cfg.Bucket, Endpoint: cfg.Endpoint, Region: cfg.Region, PathStyle: true, AccessKey: cfg.AccessKey, SecretKey: cfg.SecretKey})
	if err != nil {
		return
	}
	_ = b.List(ctx, "", func(i objstore.ObjectInfo) error { return b.Delete(ctx, i.Name) })
	_ = b.RemoveBucket(ctx)
}

func TestConformance(t *testing.T) {
	for _, srv := range servers {
		for _, prefix := range []string{"", "some/prefix"} {
			t.Run(srv.name+"/prefix="+prefix, func(t *testing.T) {
				env := objstoretest.Env(t, srv.endpoint, srv.access, srv.secret)
				objstoretest.Run(t, objstoretest.Options{}, func(t *testing.T) objstore.Backend {
					return newBackend(t, env, srv.endpoint, srv.access, srv.secret, prefix)
				})
			})
		}
	}
}

func TestErrors(t *testing.T) {
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			env := objstoretest.Env(t, srv.endpoint, srv.access, srv.secret)
			ctx := t.Context()
			// Wrong secret: refused at once, and the message carries no secret.
			b, err := s3.New(ctx, s3.Config{Bucket: "cairn-nonexistent", Endpoint: env[srv.endpoint], Region: "us-east-1",
				PathStyle: true, AccessKey: env[srv.access], SecretKey: "wrong-secret-value"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = b.Stat(ctx, "config")
			if !errors.Is(err, cairn.ErrDenied) && !errors.Is(err, cairn.ErrNotFound) {
				t.Fatalf("wrong secret: %v", err)
			}
			for _, s := range []string{"wrong-secret-value", env[srv.secret]} {
				if containsFold(err.Error(), s) {
					t.Fatalf("error message leaks a secret: %v", err)
				}
			}
			// Missing bucket: a clear, permanent error naming it.
			b, _ = s3.New(ctx, s3.Config{Bucket: "cairn-missing-bucket", Endpoint: env[srv.endpoint], Region: "us-east-1",
				PathStyle: true, AccessKey: env[srv.access], SecretKey: env[srv.secret]})
			err = b.Put(ctx, "config", []byte("x"), objstore.PutOptions{})
			if err == nil || errors.Is(err, cairn.ErrUnavailable) || !containsFold(err.Error(), "cairn-missing-bucket") {
				t.Fatalf("missing bucket: %v", err)
			}
			// Unreachable endpoint: transient, so the retry wrapper retries.
			b, _ = s3.New(ctx, s3.Config{Bucket: "x", Endpoint: "http://127.0.0.1:1", Region: "us-east-1", PathStyle: true, AccessKey: "a", SecretKey: "b"})
			if _, err := b.Stat(ctx, "config"); !errors.Is(err, cairn.ErrUnavailable) {
				t.Fatalf("unreachable endpoint: %v", err)
			}
		})
	}
}

func containsFold(s, sub string) bool {
	return sub != "" && strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// cutBody sends only the first n bytes of every request body, then fails,
// as a client killed mid-upload would.
type cutBody struct {
	n  int64
	rt http.RoundTripper
}

func (c cutBody) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut && req.Body != nil && req.ContentLength > c.n {
		req.Body = io.NopCloser(io.MultiReader(io.LimitReader(req.Body, c.n), errReader{}))
	}
	return c.rt.RoundTrip(req)
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("client killed") }

// TestInterruptedUploadLeavesNothing: an upload cut short must not leave
// a truncated object that a later backup would take for a stored chunk.
func TestInterruptedUploadLeavesNothing(t *testing.T) {
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			env := objstoretest.Env(t, srv.endpoint, srv.access, srv.secret)
			t.Setenv("AWS_CA_BUNDLE", "")
			good := newBackend(t, env, srv.endpoint, srv.access, srv.secret, "")
			bucket := strings.TrimPrefix(strings.Fields(good.Location())[0], "s3://")
			cut, err := s3.New(t.Context(), s3.Config{Bucket: bucket, Endpoint: env[srv.endpoint], Region: "us-east-1", PathStyle: true,
				AccessKey: env[srv.access], SecretKey: env[srv.secret],
				HTTPClient: &http.Client{Transport: cutBody{n: 100 << 10, rt: http.DefaultTransport.(*http.Transport).Clone()}}})
			if err != nil {
				t.Fatal(err)
			}
			data := bytes.Repeat([]byte("chunk data "), 100000) // about 1 MiB
			if err := cut.Put(t.Context(), "chunks/aa/x", data, objstore.PutOptions{}); err == nil {
				t.Fatal("an upload cut short reported success")
			}
			time.Sleep(200 * time.Millisecond)
			if info, err := good.Stat(t.Context(), "chunks/aa/x"); !errors.Is(err, cairn.ErrNotFound) {
				t.Fatalf("after an interrupted upload: %+v, %v", info, err)
			}
		})
	}
}
