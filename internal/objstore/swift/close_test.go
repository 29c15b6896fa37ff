package swift_test

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/swift"
)

// Close closes the connections of the transport New built: a server
// standing in for Swift with tempauth sees them end.
func TestCloseReleasesConnections(t *testing.T) {
	// The connection that served the object's GET must end.
	var mu sync.Mutex
	var getConn string
	closed := make(chan string, 16)
	var srv *httptest.Server
	srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/auth/v1.0":
			w.Header().Set("X-Storage-Url", srv.URL+"/v1/AUTH_test")
			w.Header().Set("X-Auth-Token", "token")
		case "/v1/AUTH_test/c/x":
			w.Header().Set("Content-Length", "1")
			w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodGet {
				mu.Lock()
				getConn = r.RemoteAddr
				mu.Unlock()
				_, _ = w.Write([]byte("x"))
			}
		default:
			http.NotFound(w, r)
		}
	}))
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			closed <- c.RemoteAddr().String()
		}
	}
	srv.Start()
	defer srv.Close()
	env := map[string]string{"ST_AUTH": srv.URL + "/auth/v1.0", "ST_USER": "test:tester", "ST_KEY": "testing"}
	b, err := swift.New(t.Context(), swift.Config{Container: "c", Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
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
