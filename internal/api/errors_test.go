package api_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/api"
	"github.com/cairnproject/cairn/internal/wire"
)

// logBuffer collects a JSON log, one object per line.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the log's lines that carry request_id id.
func (b *logBuffer) lines(t *testing.T, id string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["request_id"] == nil {
			t.Errorf("log line without request_id: %s", line)
		}
		if m["request_id"] == id {
			out = append(out, m)
		}
	}
	return out
}

var requestIDForm = regexp.MustCompile(`^req-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// serve sends one request to h and returns the answer's status, request
// ID and error body (name, code, message; empty for a success).
func serve(t *testing.T, h http.Handler, token, method, path, body string) (code int, id, name string, fault wire.Fault) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("X-Auth-Token", token)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	id = rec.Header().Get(wire.RequestIDHeader)
	if !requestIDForm.MatchString(id) {
		t.Errorf("%s %s: request ID %q, want req-<uuid>", method, path, id)
	}
	if rec.Code >= 400 {
		var doc map[string]wire.Fault
		if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil || len(doc) != 1 {
			t.Fatalf("%s %s: error body %q: %v", method, path, rec.Body.String(), err)
		}
		for n, f := range doc {
			name, fault = n, f
		}
	}
	return rec.Code, id, name, fault
}

// importBody is an import_record body naming a backup in container.
func importBody(container string) string {
	rec, _ := json.Marshal(map[string]any{"version": 1, "id": cairn.NewUUID(), "container": container,
		"size": 1, "repository_backup_id": cairn.NewID().String()})
	body, _ := json.Marshal(map[string]any{"backup-record": map[string]string{
		"backup_service": "cairn.repository", "backup_url": base64.StdEncoding.EncodeToString(rec)}})
	return string(body)
}

// TestServerErrorsHideTheirCause: a request whose service call fails for
// the service's own reasons (a store's error naming its path, a key that
// does not open a repository, a store refusing the service's
// credentials, a store down) answers 5xx with a generic message naming
// the request's ID, not the cause; the log has the cause under the same
// ID, at error level.
func TestServerErrorsHideTheirCause(t *testing.T) {
	e := newEnv(t)
	var log logBuffer
	h := api.New(e.svc, nil, slog.New(slog.NewJSONHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	cases := []struct {
		container string
		code      int
		name      string
		cause     string
	}{
		{"broken", 500, "computeFault", "disk on fire"},
		{"denied", 500, "computeFault", "403 Forbidden"},
		{"wrongkey", 500, "computeFault", "wrong password or key file"},
		{"unreachable", 503, "serviceUnavailable", "connection refused"},
	}
	for _, c := range cases {
		t.Run(c.container, func(t *testing.T) {
			code, id, name, fault := serve(t, h, e.tokA, "POST", "/v3/alpha/backups/import_record", importBody(c.container))
			if code != c.code || name != c.name || fault.Code != c.code {
				t.Fatalf("status %d, %s %+v; want %d %s", code, name, fault, c.code, c.name)
			}
			path := filepath.Join(e.store, c.container)
			if strings.Contains(fault.Message, path) || strings.Contains(fault.Message, c.cause) {
				t.Errorf("the answer tells the cause: %q", fault.Message)
			}
			if !strings.Contains(fault.Message, "request "+id+";") {
				t.Errorf("message %q does not name the request %s", fault.Message, id)
			}
			var cause map[string]any
			for _, l := range log.lines(t, id) {
				if l["level"] == "ERROR" {
					if cause != nil {
						t.Errorf("two error lines: %v and %v", cause, l)
					}
					cause = l
				}
			}
			msg, _ := cause["error"].(string)
			if !strings.Contains(msg, path) || !strings.Contains(msg, c.cause) || cause["code"] != float64(c.code) {
				t.Errorf("error log line of %s: %v; want the cause (%s: %s) and code %d", id, cause, path, c.cause, c.code)
			}
		})
	}

	// A 4xx keeps its specific message, and every answer has its own ID,
	// on every log line about the request.
	ids := map[string]bool{}
	for range 2 {
		code, id, name, fault := serve(t, h, e.tokA, "GET", "/v3/alpha/volumes/nope", "")
		if code != 404 || name != "itemNotFound" || !strings.Contains(fault.Message, "volume nope") {
			t.Errorf("missing volume: %d %s %+v", code, name, fault)
		}
		if ids[id] {
			t.Errorf("request ID %s given twice", id)
		}
		ids[id] = true
		lines := log.lines(t, id)
		if len(lines) == 0 {
			t.Errorf("no log line for request %s", id)
		}
		for _, l := range lines {
			if l["level"] == "ERROR" {
				t.Errorf("a 404 logged at error level: %v", l)
			}
		}
	}
	code, id, _, _ := serve(t, h, e.tokA, "GET", "/v3/alpha/volumes", "")
	if code != 200 || ids[id] {
		t.Errorf("list: %d, request ID %s", code, id)
	}
}

// TestGlobalRequestID: a well-formed request ID the caller sends is
// logged with the request as global_request_id; the answer carries the
// service's own ID. A malformed one is ignored.
func TestGlobalRequestID(t *testing.T) {
	e := newEnv(t)
	var log logBuffer
	h := api.New(e.svc, nil, slog.New(slog.NewJSONHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	for _, sent := range []string{"req-" + cairn.NewUUID(), "req-<script>", "x"} {
		req := httptest.NewRequest("GET", "/v3/alpha/volumes", nil)
		req.Header.Set("X-Auth-Token", e.tokA)
		req.Header.Set(wire.RequestIDHeader, sent)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		id := rec.Header().Get(wire.RequestIDHeader)
		if id == sent || !requestIDForm.MatchString(id) {
			t.Errorf("sent %q, answered with request ID %q", sent, id)
		}
		lines := log.lines(t, id)
		if len(lines) == 0 {
			t.Fatalf("no log line for request %s", id)
		}
		want := any(nil)
		if requestIDForm.MatchString(sent) {
			want = sent
		}
		for _, l := range lines {
			if l["global_request_id"] != want {
				t.Errorf("sent %q: logged global_request_id %v", sent, l["global_request_id"])
			}
		}
	}
}
