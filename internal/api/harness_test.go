package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/api"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/catalog/postgres"
	"github.com/cairnproject/cairn/internal/catalog/postgres/pgtest"
	"github.com/cairnproject/cairn/internal/catalog/sqlite"
	"github.com/cairnproject/cairn/internal/catalog/sqlite/sqlitetest"
	"github.com/cairnproject/cairn/internal/crypto"
	"github.com/cairnproject/cairn/internal/metrics"
	"github.com/cairnproject/cairn/internal/notify"
	"github.com/cairnproject/cairn/internal/objstore/local"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/volume"
	"github.com/cairnproject/cairn/internal/volumectl"
	"github.com/cairnproject/cairn/internal/wire"
)

// env is one running service over a real SQLite catalog, a real volume
// engine and local repositories, with its API on a test HTTP server.
type env struct {
	t     testing.TB
	dir   string
	store string // backup store directory (shared by deployments)
	cat   catalog.Store
	eng   *volume.Engine
	// exports is the engine's export table: what the service exports.
	exports *volumectl.ExportTable
	svc     *service.Service
	srv     *httptest.Server
	events  *eventLog
	// members asks for cairn's own members (X-Cairn-Members), as
	// cairn's client does.
	members bool
	admin   string // token of the admin project
	tokA    string // token of project "alpha"
	tokB    string // token of project "beta"
	secret  repo.Secret

	closeOnce sync.Once
}

// eventLog records notifications.
type eventLog struct {
	ch chan notify.Event
}

func (l *eventLog) Notify(_ context.Context, e notify.Event) {
	select {
	case l.ch <- e:
	default:
	}
}

var testSecret = repo.Secret{Kind: format.KeyKindFile, Bytes: bytes.Repeat([]byte("k"), 32)}

func newEnv(t testing.TB) *env {
	return newEnvAt(t, t.TempDir(), filepath.Join(t.TempDir(), "backups"))
}

// newEnvAt is newEnv on the data directory dir and the backup store
// store; tune, if given, changes the service's configuration.
func newEnvAt(t testing.TB, dir, store string, tune ...func(*service.Config)) *env {
	return newEnvWith(t, dir, store, func() (catalog.Store, error) {
		path := filepath.Join(dir, "catalog.db")
		sqlitetest.Create(t, path)
		return sqlite.Open(t.Context(), path)
	}, tune...)
}

// newEnvPostgres is newEnv with a catalog in a fresh database of the
// PostgreSQL test server.
func newEnvPostgres(t *testing.T) *env {
	dsn := pgtest.FreshDatabase(t)
	return newEnvWith(t, t.TempDir(), filepath.Join(t.TempDir(), "backups"), func() (catalog.Store, error) {
		return postgres.Open(t.Context(), dsn)
	})
}

func newEnvWith(t testing.TB, dir, store string, openCatalog func() (catalog.Store, error), tune ...func(*service.Config)) *env {
	t.Helper()
	ctx := t.Context()
	e := &env{t: t, dir: dir, store: store, secret: testSecret, events: &eventLog{ch: make(chan notify.Event, 10000)}}
	var err error
	e.cat, err = openCatalog()
	if err != nil {
		t.Fatal(err)
	}
	e.eng, err = volume.Open(filepath.Join(dir, "volumes"), volume.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ropts := repo.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}}
	open := func(ctx context.Context, container string) (*repo.Repository, error) {
		// Containers that fail to open, as stores and keys do; each
		// message names the store's path, which no tenant may see.
		switch at := filepath.Join(store, container); container {
		case "unreachable":
			return nil, fmt.Errorf("store at %s: connection refused: %w", at, cairn.ErrUnavailable)
		case "broken":
			return nil, fmt.Errorf("store at %s: disk on fire", at)
		case "denied":
			return nil, fmt.Errorf("store at %s: 403 Forbidden: %w", at, cairn.ErrDenied)
		case "wrongkey":
			return nil, fmt.Errorf("repository at %s: %w", at, cairn.ErrWrongKey)
		}
		be, err := local.New(filepath.Join(store, container), true)
		if err != nil {
			return nil, err
		}
		if _, err := repo.ReadConfig(ctx, be); errors.Is(err, cairn.ErrNotRepository) {
			return repo.Init(ctx, be, e.secret, repo.InitOptions{ChunkSize: 1 << 20, GC: repo.DefaultGC}, ropts)
		} else if err != nil {
			return nil, err
		}
		return repo.Open(ctx, be, e.secret, ropts)
	}
	met := metrics.New()
	if e.exports, err = volumectl.OpenExportTable(filepath.Join(dir, "volumes"), e.eng); err != nil {
		t.Fatal(err)
	}
	ops := volumectl.Direct{E: e.eng, X: e.exports}
	cfg := service.Config{Catalog: e.cat, Engine: service.NewEngine(ops),
		OpenRepo: service.Repositories(open, ops, nil),
		Notifier: e.events, Observer: met, Workers: 8, NBDSocket: filepath.Join(dir, "nbd.sock")}
	for _, f := range tune {
		f(&cfg)
	}
	e.svc = service.New(cfg)
	if err := e.svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(api.New(e.svc, met, nil))
	t.Cleanup(e.close)
	e.admin = e.project("admin", true, cairn.Unlimited)
	e.tokA = e.project("alpha", false, cairn.Unlimited)
	e.tokB = e.project("beta", false, cairn.Unlimited)
	return e
}

// close stops the service and closes what it opened, once (a test that
// restarts the service closes it before the cleanup does).
func (e *env) close() {
	e.closeOnce.Do(func() {
		e.srv.Close()
		e.svc.Stop()
		_ = e.eng.Close()
		_ = e.cat.Close()
	})
}

// project makes a project (if missing) and returns a new token of it.
func (e *env) project(id string, admin bool, q cairn.Quota) string {
	e.t.Helper()
	ctx := e.t.Context()
	if _, err := service.CreateProject(ctx, e.cat, id, id, q, time.Now()); err != nil && !errors.Is(err, cairn.ErrExists) {
		e.t.Fatal(err)
	}
	secret, _, err := service.CreateToken(ctx, e.cat, cairn.Token{ProjectID: id, Name: "test", Admin: admin})
	if err != nil {
		e.t.Fatal(err)
	}
	return secret
}

// do sends a request and decodes a JSON answer into out (if not nil).
func (e *env) do(token, method, path string, body any, out any) int {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	default:
		js, _ := json.Marshal(b)
		rd = bytes.NewReader(js)
	}
	req, _ := http.NewRequestWithContext(e.t.Context(), method, e.srv.URL+path, rd)
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	if e.members {
		req.Header.Set(wire.MembersHeader, wire.MembersAll)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

// must sends a request and fails the test unless the status is want.
func (e *env) must(want int, token, method, path string, body any, out any) {
	e.t.Helper()
	var raw json.RawMessage
	code := e.do(token, method, path, body, &raw)
	if code != want {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, code, want, raw)
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatal(err)
		}
	}
}

// wait polls a resource until its status is not transient and returns it.
func (e *env) wait(token, project, kind, id string) map[string]any {
	e.t.Helper()
	deadline := e.deadline()
	for time.Now().Before(deadline) {
		var out map[string]map[string]any
		code := e.do(token, "GET", fmt.Sprintf("/v3/%s/%ss/%s", project, kind, id), nil, &out)
		if code == http.StatusNotFound {
			return nil
		}
		if code != http.StatusOK {
			e.t.Fatalf("GET %s %s: %d", kind, id, code)
		}
		r := out[kind]
		switch cairn.Status(r["status"].(string)) {
		case cairn.StatusAvailable, cairn.StatusInUse, cairn.StatusError, cairn.StatusErrorDeleting:
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("%s %s still transient at the test's deadline", kind, id)
	return nil
}

// deadline is how long a wait for a task may take: as long as a busy
// machine needs (a restore under the race detector, with both cores
// taken, takes minutes), until shortly before the test binary's own
// deadline (go test -timeout), so a task that never ends still fails
// with the test's message rather than the binary's panic.
func (e *env) deadline() time.Time {
	if t, ok := e.t.(interface{ Deadline() (time.Time, bool) }); ok {
		if d, ok := t.Deadline(); ok {
			return d.Add(-15 * time.Second)
		}
	}
	return time.Now().Add(24 * time.Hour)
}

// createVolume makes an available volume of gib GiB in project.
func (e *env) createVolume(token, project string, gib int64, name string) string {
	e.t.Helper()
	var out struct{ Volume wire.Volume }
	e.must(202, token, "POST", "/v3/"+project+"/volumes", map[string]any{"volume": map[string]any{"size": gib, "name": name}}, &out)
	if r := e.wait(token, project, "volume", out.Volume.ID); r["status"] != "available" {
		e.t.Fatalf("volume %s: %v", out.Volume.ID, r)
	}
	return out.Volume.ID
}

// engineID is a catalog volume's engine volume.
func (e *env) engineVolume(id string) cairn.ID {
	e.t.Helper()
	var v cairn.Volume
	err := e.cat.View(e.t.Context(), func(tx catalog.Tx) error {
		var err error
		v, err = tx.Volume(e.t.Context(), id)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	eid, err := cairn.ParseID(v.EngineID)
	if err != nil {
		e.t.Fatal(err)
	}
	return eid
}

// write writes p at off into a catalog volume through the engine.
func (e *env) write(id string, off int64, p []byte) {
	e.t.Helper()
	dev, err := e.eng.OpenVolume(e.engineVolume(id))
	if err != nil {
		e.t.Fatal(err)
	}
	defer dev.Close()
	if err := dev.WriteAt(e.t.Context(), p, off); err != nil {
		e.t.Fatal(err)
	}
	if err := dev.Flush(e.t.Context()); err != nil {
		e.t.Fatal(err)
	}
}

// digest hashes a catalog volume's first n bytes, read through the
// engine 4 MiB at a time (whole volumes in memory would not fit the race
// detector's budget).
func (e *env) digest(id string, n int64) [32]byte {
	e.t.Helper()
	dev, err := e.eng.OpenVolume(e.engineVolume(id))
	if err != nil {
		e.t.Fatal(err)
	}
	defer dev.Close()
	h := sha256.New()
	buf := make([]byte, 4<<20)
	for off := int64(0); off < n; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), n-off)]
		if err := dev.ReadAt(e.t.Context(), b, off); err != nil {
			e.t.Fatal(err)
		}
		h.Write(b)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// manifest finds catalog backup id's manifest in its container.
func (e *env) manifest(container, id string) *format.Manifest {
	e.t.Helper()
	ctx := e.t.Context()
	be, err := local.New(filepath.Join(e.store, container), false)
	if err != nil {
		e.t.Fatal(err)
	}
	r, err := repo.Open(ctx, be, e.secret, repo.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	list, err := r.Backups(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, m := range list.Backups {
		if m.Tags[service.TagBackup] == id {
			return m
		}
	}
	e.t.Fatalf("no manifest of backup %s in %s", id, container)
	return nil
}

// state is everything the catalog holds, for before/after comparisons.
type state struct {
	Volumes   []cairn.Volume
	Snapshots []cairn.Snapshot
	Backups   []cairn.Backup
	Tasks     []cairn.Task
	Policies  []cairn.Policy
	Engine    []volume.VolumeInfo
	EngSnaps  []volume.SnapshotInfo
}

func (e *env) state() state {
	e.t.Helper()
	var s state
	ctx := e.t.Context()
	err := e.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		if s.Volumes, err = tx.Volumes(ctx, catalog.Filter{}); err != nil {
			return err
		}
		if s.Snapshots, err = tx.Snapshots(ctx, catalog.Filter{}); err != nil {
			return err
		}
		if s.Backups, err = tx.Backups(ctx, catalog.Filter{}); err != nil {
			return err
		}
		if s.Policies, err = tx.Policies(ctx, ""); err != nil {
			return err
		}
		s.Tasks, err = tx.Tasks(ctx, catalog.Filter{})
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	s.Engine = e.eng.Volumes()
	s.EngSnaps = e.eng.Snapshots(cairn.ID{})
	for i := range s.Engine {
		s.Engine[i].Allocated = 0 // changes with writes we do not make here
	}
	return s
}

// settle waits until no task is pending or running.
func (e *env) settle() {
	e.t.Helper()
	deadline := e.deadline()
	for time.Now().Before(deadline) {
		var n int
		err := e.cat.View(e.t.Context(), func(tx catalog.Tx) error {
			l, err := tx.Tasks(e.t.Context(), catalog.Filter{TaskStates: []cairn.TaskState{cairn.TaskPending, cairn.TaskRunning}})
			n = len(l)
			return err
		})
		if err != nil {
			e.t.Fatal(err)
		}
		if n == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatal("tasks still running at the test's deadline")
}
