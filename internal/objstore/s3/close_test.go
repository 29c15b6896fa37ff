package s3_test

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/s3"
)

// Close closes the connections the backend's HTTP client keeps open:
// the server sees them end.
func TestCloseReleasesConnections(t *testing.T) {
	// The connection that served the object's GET must end.
	var mu sync.Mutex
	var getConn string
	closed := make(chan string, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1")
		w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			mu.Lock()
			getConn = r.RemoteAddr
			mu.Unlock()
			_, _ = w.Write([]byte("x"))
		}
	}))
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			closed <- c.RemoteAddr().String()
		}
	}
	srv.Start()
	defer srv.Close()
	b, err := s3.New(t.Context(), s3.Config{Bucket: "b", Endpoint: srv.URL, Region: "us-east-1", PathStyle: true, AccessKey: "a", SecretKey: "s"})
	if err != nil {
		t.Fatal(err)
	}
	// A GET leaves its connection open for the next request (HEAD
	// requests close theirs, for Swift's s3api).
	if data, err := objstore.ReadAll(t.Context(), b, "x", 0, -1); err != nil || string(data) != "x" {
		t.Fatalf("get: %q, %v", data, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	want := getConn
	mu.Unlock()
	timeout := time.After(30 * time.Second)
	for done := false; !done; {
		select {
		case addr := <-closed:
			done = addr == want
		case <-timeout:
			t.Fatal("the idle connection is still open 30 s after Close")
		}
	}
	if _, err := b.Stat(t.Context(), "x"); !errors.Is(err, objstore.ErrClosed) {
		t.Fatalf("stat after close: %v", err)
	}
}
