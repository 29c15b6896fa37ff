package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/wire"
)

// fakeAPI answers like the service's API from canned routes and records
// the requests it got.
type fakeAPI struct {
	t      *testing.T
	mu     sync.Mutex
	routes map[string]func(w http.ResponseWriter, r *http.Request, body []byte)
	got    []string // "METHOD PATH?QUERY BODY"
}

func newFake(t *testing.T) (*fakeAPI, *Client) {
	t.Helper()
	f := &fakeAPI{t: t, routes: map[string]func(http.ResponseWriter, *http.Request, []byte){}}
	f.on("GET /v3/auth/token", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 200, map[string]any{"token": wire.TokenInfo{ProjectID: "p1"}})
	})
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c := New(srv.URL+"/", "cairn_secret", srv.Client())
	c.PollInterval = time.Millisecond
	return f, c
}

func (f *fakeAPI) on(route string, h func(w http.ResponseWriter, r *http.Request, body []byte)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[route] = h
}

func (f *fakeAPI) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.got...)
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.Header.Get("X-Auth-Token") != "cairn_secret" {
		reply(w, 401, map[string]any{"unauthorized": map[string]any{"code": 401, "message": "no token"}})
		return
	}
	line := r.Method + " " + r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		line += "?" + r.URL.RawQuery
	}
	if len(body) > 0 {
		line += " " + strings.TrimSpace(string(body))
	}
	f.mu.Lock()
	f.got = append(f.got, line)
	h := f.routes[r.Method+" "+r.URL.EscapedPath()]
	f.mu.Unlock()
	if h == nil {
		reply(w, 404, map[string]any{"itemNotFound": map[string]any{"code": 404, "message": r.URL.Path + ": not found"}})
		return
	}
	h(w, r, body)
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func TestClientProjectFromToken(t *testing.T) {
	f, c := newFake(t)
	f.on("GET /v3/p1/volumes/v1", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 200, map[string]any{"volume": wire.Volume{ID: "v1", Status: "available", Size: 3}})
	})
	for range 2 {
		v, err := c.GetVolume(t.Context(), "v1")
		if err != nil || v.ID != "v1" || v.Size != 3 {
			t.Fatalf("GetVolume: %+v, %v", v, err)
		}
	}
	// The token's project is asked once.
	got := f.requests()
	if len(got) != 3 || got[0] != "GET /v3/auth/token" {
		t.Fatalf("requests: %q", got)
	}
	c.SetProject("other")
	if _, err := c.GetVolume(t.Context(), "v1"); !errors.Is(err, cairn.ErrNotFound) {
		t.Fatalf("another project's volume: %v", err)
	}
	if p, _ := c.Project(t.Context()); p != "other" {
		t.Fatalf("project %q", p)
	}
}

func TestClientErrors(t *testing.T) {
	f, c := newFake(t)
	c.SetProject("p")
	cases := []struct {
		code int
		name string
		is   error
	}{
		{400, "badRequest", cairn.ErrInvalid},
		{401, "unauthorized", cairn.ErrUnauthenticated},
		{403, "forbidden", cairn.ErrForbidden},
		{404, "itemNotFound", cairn.ErrNotFound},
		{409, "conflictingRequest", cairn.ErrConflict},
		{413, "overLimit", cairn.ErrQuota},
		{503, "serviceUnavailable", cairn.ErrUnavailable},
	}
	for _, tc := range cases {
		f.on("GET /v3/p/volumes/x", func(w http.ResponseWriter, r *http.Request, _ []byte) {
			reply(w, tc.code, map[string]any{tc.name: map[string]any{"code": tc.code, "message": "volume x: " + tc.name}})
		})
		_, err := c.GetVolume(t.Context(), "x")
		var ae *APIError
		if !errors.As(err, &ae) || ae.Code != tc.code || ae.Name != tc.name || ae.Message != "volume x: "+tc.name {
			t.Fatalf("%d: %#v", tc.code, err)
		}
		if !errors.Is(err, tc.is) || err.Error() != "volume x: "+tc.name {
			t.Fatalf("%d: %v does not match %v", tc.code, err, tc.is)
		}
	}
	// A 500 matches no sentinel; a body that is not the API's is kept.
	f.on("GET /v3/p/volumes/x", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		http.Error(w, "upstream broke", http.StatusBadGateway)
	})
	_, err := c.GetVolume(t.Context(), "x")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != 502 || !strings.Contains(err.Error(), "upstream broke") || ae.Unwrap() != nil {
		t.Fatalf("502: %#v", err)
	}
	// A wrong token.
	bad := New(strings.TrimSuffix(c.base, "/"), "cairn_wrong", nil)
	if _, err := bad.Whoami(t.Context()); !errors.Is(err, cairn.ErrUnauthenticated) {
		t.Fatalf("wrong token: %v", err)
	}
	// Nothing listening.
	down := New("http://127.0.0.1:1", "t", nil)
	if _, err := down.Whoami(t.Context()); err == nil {
		t.Fatal("no server: no error")
	}
}

// TestClientRequests checks each call's method, path and body.
func TestClientRequests(t *testing.T) {
	f, c := newFake(t)
	c.SetProject("p")
	ctx := t.Context()
	ok := func(w http.ResponseWriter, r *http.Request, _ []byte) { w.WriteHeader(202) }
	vol := func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 202, map[string]any{"volume": wire.Volume{ID: "v", Status: "creating"}})
	}
	f.on("POST /v3/p/volumes", vol)
	f.on("PUT /v3/p/volumes/v", vol)
	f.on("DELETE /v3/p/volumes/v", ok)
	f.on("POST /v3/p/volumes/v/action", func(w http.ResponseWriter, r *http.Request, body []byte) {
		if strings.Contains(string(body), "os-attach") {
			reply(w, 200, map[string]any{"attachment": wire.Attachment{VolumeID: "v", ExportName: "v", URIs: []string{"nbd://x/v"}}})
			return
		}
		w.WriteHeader(202)
	})
	f.on("GET /v3/p/volumes/detail", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 200, map[string]any{"volumes": []wire.Volume{{ID: "a"}, {ID: "b"}},
			"volumes_links": []wire.Link{{Rel: "next", Href: "/v3/p/volumes/detail?limit=2&marker=b"}}})
	})
	f.on("GET /v3/p/volumes", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 200, map[string]any{"volumes": []wire.Summary{{ID: "a", Name: "n"}}})
	})
	f.on("POST /v3/p/snapshots", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 202, map[string]any{"snapshot": wire.SnapshotSummary{ID: "s", VolumeID: "v"}})
	})
	f.on("GET /v3/p/snapshots/detail", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 200, map[string]any{"snapshots": []wire.Snapshot{{ID: "s"}}})
	})
	f.on("DELETE /v3/p/snapshots/s", ok)
	f.on("POST /v3/p/snapshots/s/action", ok)
	f.on("POST /v3/p/backups", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 202, map[string]any{"backup": wire.Summary{ID: "b", Name: "bn"}})
	})
	f.on("GET /v3/p/backups", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 200, map[string]any{"backups": []wire.Summary{{ID: "b"}}})
	})
	f.on("DELETE /v3/p/backups/b", ok)
	f.on("POST /v3/p/backups/b/action", ok)
	f.on("POST /v3/p/backups/b/restore", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 202, map[string]any{"restore": wire.RestoreResult{BackupID: "b", VolumeID: "nv", VolumeName: "r"}})
	})
	f.on("GET /v3/p/backups/b/export_record", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 200, map[string]any{"backup-record": wire.BackupRecord{BackupService: "svc", BackupURL: "url"}})
	})
	f.on("POST /v3/p/backups/import_record", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 201, map[string]any{"backup": wire.Summary{ID: "b2"}})
	})
	f.on("GET /v3/p/backups/b2", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 200, map[string]any{"backup": wire.Backup{ID: "b2", Status: "available"}})
	})
	f.on("GET /v3/p/limits", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 200, map[string]any{"limits": wire.NewLimitsAnswer(wire.Limits{Quota: cairn.Unlimited, Usage: cairn.Usage{Volumes: 2}})})
	})
	f.on("GET /v3/p/tasks", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 200, map[string]any{"tasks": []cairn.Task{{ID: "t", ResourceID: r.URL.Query().Get("resource_id")}}})
	})

	var vreq wire.VolumeCreateRequest
	size := int64(2)
	vreq.Volume.Size, vreq.Volume.Name = &size, "n"
	if v, err := c.CreateVolume(ctx, vreq); err != nil || v.ID != "v" {
		t.Fatalf("CreateVolume: %+v %v", v, err)
	}
	name := "m"
	if _, err := c.UpdateVolume(ctx, "v", &name, nil); err != nil {
		t.Fatal(err)
	}
	list, links, err := c.ListVolumes(ctx, true, url.Values{"limit": {"2"}})
	if err != nil || len(list) != 2 || NextMarker(links) != "b" {
		t.Fatalf("ListVolumes: %+v %+v %v", list, links, err)
	}
	list, links, err = c.ListVolumes(ctx, false, nil)
	if err != nil || len(list) != 1 || list[0].Name != "n" || NextMarker(links) != "" {
		t.Fatalf("ListVolumes summary: %+v %+v %v", list, links, err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.ExtendVolume(ctx, "v", 5))
	a, err := c.AttachVolume(ctx, "v")
	if err != nil || len(a.URIs) != 1 || a.ExportName != "v" {
		t.Fatalf("AttachVolume: %+v %v", a, err)
	}
	must(c.DetachVolume(ctx, "v"))
	must(c.ResetVolumeStatus(ctx, "v", "error"))
	must(c.DeleteVolume(ctx, "v"))

	var sreq wire.SnapshotCreateRequest
	sreq.Snapshot.VolumeID, sreq.Snapshot.Force = json.RawMessage(`"v"`), true
	if s, err := c.CreateSnapshot(ctx, sreq); err != nil || s.ID != "s" {
		t.Fatalf("CreateSnapshot: %+v %v", s, err)
	}
	if l, _, err := c.ListSnapshots(ctx, true, url.Values{"volume_id": {"v"}}); err != nil || len(l) != 1 {
		t.Fatalf("ListSnapshots: %+v %v", l, err)
	}
	must(c.ResetSnapshotStatus(ctx, "s", "available"))
	must(c.DeleteSnapshot(ctx, "s"))

	var breq wire.BackupCreateRequest
	breq.Backup.VolumeID, breq.Backup.Incremental = "v", true
	if b, err := c.CreateBackup(ctx, breq); err != nil || b.ID != "b" || b.Name != "bn" {
		t.Fatalf("CreateBackup: %+v %v", b, err)
	}
	if l, _, err := c.ListBackups(ctx, false, nil); err != nil || len(l) != 1 {
		t.Fatalf("ListBackups: %+v %v", l, err)
	}
	res, err := c.RestoreBackup(ctx, "b", "", "r")
	if err != nil || res.VolumeID != "nv" {
		t.Fatalf("RestoreBackup: %+v %v", res, err)
	}
	rec, err := c.ExportRecord(ctx, "b")
	if err != nil || rec.BackupService != "svc" || rec.BackupURL != "url" {
		t.Fatalf("ExportRecord: %+v %v", rec, err)
	}
	// The import answers a summary; the client reads the backup back.
	if b, err := c.ImportRecord(ctx, rec); err != nil || b.ID != "b2" || b.Status != "available" {
		t.Fatalf("ImportRecord: %+v %v", b, err)
	}
	must(c.ResetBackupStatus(ctx, "b", "error"))
	must(c.DeleteBackup(ctx, "b"))
	l, err := c.Limits(ctx)
	// The limits answer has no per-volume limit: it reads as zero.
	wantQuota := cairn.Unlimited
	wantQuota.PerVolumeGigabytes = 0
	if err != nil || l.Quota != wantQuota || l.Usage.Volumes != 2 {
		t.Fatalf("Limits: %+v %v", l, err)
	}
	tl, err := c.Tasks(ctx, "v")
	if err != nil || len(tl) != 1 || tl[0].ResourceID != "v" {
		t.Fatalf("Tasks: %+v %v", tl, err)
	}

	want := []string{
		`POST /v3/p/volumes {"volume":{"size":2,"name":"n","description":"","snapshot_id":"","backup_id":""}}`,
		`PUT /v3/p/volumes/v {"volume":{"name":"m","description":null}}`,
		`GET /v3/p/volumes/detail?limit=2`,
		`GET /v3/p/volumes`,
		`POST /v3/p/volumes/v/action {"os-extend":{"new_size":5}}`,
		`POST /v3/p/volumes/v/action {"os-attach":{}}`,
		`POST /v3/p/volumes/v/action {"os-detach":{}}`,
		`POST /v3/p/volumes/v/action {"os-reset_status":{"status":"error"}}`,
		`DELETE /v3/p/volumes/v`,
		`POST /v3/p/snapshots {"snapshot":{"volume_id":"v","force":true}}`,
		`GET /v3/p/snapshots/detail?volume_id=v`,
		`POST /v3/p/snapshots/s/action {"os-reset_status":{"status":"available"}}`,
		`DELETE /v3/p/snapshots/s`,
		`POST /v3/p/backups {"backup":{"volume_id":"v","snapshot_id":"","incremental":true,"container":"","name":"","description":"","force":false}}`,
		`GET /v3/p/backups`,
		`POST /v3/p/backups/b/restore {"restore":{"volume_id":"","name":"r"}}`,
		`GET /v3/p/backups/b/export_record`,
		`POST /v3/p/backups/import_record {"backup-record":{"backup_service":"svc","backup_url":"url"}}`,
		`GET /v3/p/backups/b2`,
		`POST /v3/p/backups/b/action {"os-reset_status":{"status":"error"}}`,
		`DELETE /v3/p/backups/b`,
		`GET /v3/p/limits`,
		`GET /v3/p/tasks?resource_id=v`,
	}
	got := f.requests()
	// The action bodies carry the unset actions as null: compare the set ones.
	nulls := regexp.MustCompile(`"os-[a-z_]+":null,?`)
	for i := range got {
		got[i] = strings.Replace(nulls.ReplaceAllString(got[i], ""), ",}", "}", 1)
	}
	if len(got) != len(want) {
		t.Fatalf("requests:\n%s", strings.Join(got, "\n"))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
}

// TestClientEscapes checks that IDs cannot change a request's path.
func TestClientEscapes(t *testing.T) {
	f, c := newFake(t)
	c.SetProject("p q")
	_, _ = c.GetVolume(t.Context(), "../x/y")
	got := f.requests()
	if len(got) != 1 || got[0] != "GET /v3/p%20q/volumes/..%2Fx%2Fy" {
		t.Fatalf("requests: %q", got)
	}
}

func TestClientWait(t *testing.T) {
	f, c := newFake(t)
	c.SetProject("p")
	var mu sync.Mutex
	states := []string{"creating", "creating", "creating", "available"}
	polls := 0
	f.on("GET /v3/p/volumes/v", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		mu.Lock()
		defer mu.Unlock()
		st := states[min(polls, len(states)-1)]
		polls++
		reply(w, 200, map[string]any{"volume": wire.Volume{ID: "v", Status: st}})
	})
	f.on("GET /v3/p/tasks", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		mu.Lock()
		defer mu.Unlock()
		reply(w, 200, map[string]any{"tasks": []cairn.Task{
			{ID: "old", State: cairn.TaskDone, ProgressDone: 9, ProgressTotal: 9},
			{ID: "now", State: cairn.TaskRunning, ProgressDone: int64(polls * 10), ProgressTotal: 100},
		}})
	})
	var seen []string
	st, err := c.Wait(t.Context(), Volume, "v", func(done, total int64) {
		seen = append(seen, fmt.Sprintf("%d/%d", done, total))
	})
	if err != nil || st != "available" {
		t.Fatalf("Wait: %q %v", st, err)
	}
	if strings.Join(seen, " ") != "10/100 20/100 30/100" {
		t.Fatalf("progress: %q", seen)
	}

	// An end in error carries the reason.
	reason := "disk full"
	f.on("GET /v3/p/backups/b", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 200, map[string]any{"backup": wire.Backup{ID: "b", Status: "error", FailReason: &reason}})
	})
	st, err = c.Wait(t.Context(), Backup, "b", nil)
	var fe *FailedError
	if st != "error" || !errors.As(err, &fe) || fe.Reason != "disk full" || !strings.Contains(err.Error(), "backup b ended in status error: disk full") {
		t.Fatalf("Wait on a failing backup: %q %v", st, err)
	}
	busy := "busy"
	f.on("GET /v3/p/snapshots/s", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 200, map[string]any{"snapshot": wire.Snapshot{ID: "s", Status: "error_deleting", FailReason: &busy}})
	})
	if st, err = c.Wait(t.Context(), Snapshot, "s", nil); st != "error_deleting" || !errors.As(err, &fe) || fe.Reason != "busy" {
		t.Fatalf("Wait on a failed delete: %q %v", st, err)
	}

	// A deleted resource is gone.
	if st, err = c.Wait(t.Context(), Snapshot, "gone", nil); st != Gone || err != nil {
		t.Fatalf("Wait on a deleted snapshot: %q %v", st, err)
	}
	// Other errors end the wait.
	f.on("GET /v3/p/volumes/broken", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 401, map[string]any{"unauthorized": map[string]any{"code": 401, "message": "revoked"}})
	})
	if _, err = c.Wait(t.Context(), Volume, "broken", nil); !errors.Is(err, cairn.ErrUnauthenticated) {
		t.Fatalf("Wait with a revoked token: %v", err)
	}
	if _, err = c.Wait(t.Context(), Kind("task"), "x", nil); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("Wait on an unknown kind: %v", err)
	}
}

func TestClientWaitCancel(t *testing.T) {
	f, c := newFake(t)
	c.SetProject("p")
	f.on("GET /v3/p/volumes/v", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		reply(w, 200, map[string]any{"volume": wire.Volume{ID: "v", Status: "extending"}})
	})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	st, err := c.Wait(ctx, Volume, "v", nil)
	if !errors.Is(err, context.DeadlineExceeded) || st != "extending" {
		t.Fatalf("Wait past its deadline: %q %v", st, err)
	}
}

func TestClientTransient(t *testing.T) {
	for st, want := range map[string]bool{"creating": true, "deleting": true, "extending": true, "backing-up": true,
		"restoring-backup": true, "restoring": true, "available": false, "in-use": false, "error": false,
		"error_deleting": false, "deleted": false} {
		if Transient(st) != want {
			t.Errorf("Transient(%q) = %v", st, !want)
		}
	}
}

func TestClientNextMarker(t *testing.T) {
	if m := NextMarker([]wire.Link{{Rel: "self", Href: "/x?marker=a"}, {Rel: "next", Href: "/v3/p/volumes?limit=1&marker=m%2F1"}}); m != "m/1" {
		t.Fatalf("marker %q", m)
	}
	if m := NextMarker(nil); m != "" {
		t.Fatalf("marker %q", m)
	}
}
