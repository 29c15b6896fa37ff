// Package dbagenttest is the conformance suite every dbagent.Engine runs
// against a real server: init, serve, databases and users, the quiesce
// and a real snapshot, physical and logical backups, and their restores,
// each restore checked row by row against a writer that ran during the
// backup.
package dbagenttest

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// Harness is what the suite needs of an engine besides the interface:
// how its tests reach the server, and what its positions mean.
type Harness struct {
	// Engine is the engine under test; Find lists the installed versions.
	Engine dbagent.Engine
	Find   dbagent.Finder
	// Settings go into every instance's Config (small memory and logs).
	Settings map[string]string
	// Volumes hold the data directories that are snapshotted.
	Volumes Volumes
	// Open returns a pool of connections to database db of a running
	// instance, as the superuser.
	Open func(ctx context.Context, inst dbagent.Instance, db string) (*sql.DB, error)
	// Login connects to db over TCP as user with password and creates and
	// drops a table; it fails when the server refuses any of it.
	Login func(ctx context.Context, inst dbagent.Instance, user, password, db string) error
	// Commit runs stmt in a transaction on conn, commits, and returns the
	// bounds of the commit's position.
	Commit func(ctx context.Context, conn *sql.Conn, stmt string) (Bounds, error)
	// Covered says whether a commit with bounds b must be in (in) or must
	// not be in (out) a restore of rec; neither when b straddles its point.
	Covered func(b Bounds, rec dbagent.Record) (in, out bool)
	// Block starts something that keeps Quiesce from being acquired (a
	// lock held by a session of db) and returns the function that ends it.
	Block func(t *testing.T, ctx context.Context, inst dbagent.Instance, db *sql.DB) (release func())
	// CheckRestored checks what a restored server says of its own point
	// against rec (db is a pool to its database "app").
	CheckRestored func(t *testing.T, ctx context.Context, db *sql.DB, rec dbagent.Record)
	// Leftover describes what a quiesce left held on the server (db is a
	// pool to its database "app"), "" when nothing; nil when the engine
	// has no way to tell but a new quiesce.
	Leftover func(ctx context.Context, db *sql.DB) (string, error)
	// Charset is a character set and collation the engine knows.
	Charset dbagent.Database
	// Incremental is whether physical backups may be incremental.
	Incremental bool
	// Extra are the engine's own tests, run after the suite's.
	Extra []ExtraTest
}

// Run runs the suite. The engine initialises one template data
// directory; every test starts from a copy of it.
func Run(t *testing.T, h *Harness) {
	s := &Env{h: h}
	ctx := t.Context()
	began := time.Now()
	s.template = filepath.Join(ReachableTempDir(t), "template")
	cfg := s.Config(t, s.template)
	if err := h.Engine.Init(ctx, cfg); err != nil {
		t.Fatalf("Init: %v", err)
	}
	t.Logf("Init of %s %s took %v", h.Engine.Datastore().Type, h.Engine.Datastore().Release, time.Since(began).Round(time.Millisecond))
	if err := h.Engine.Init(ctx, cfg); !errors.Is(err, cairn.ErrExists) {
		t.Errorf("Init of a directory in use = %v, want ErrExists", err)
	}

	t.Run("Datastores", s.testDatastores)
	t.Run("ServeStopRestart", s.testServe)
	t.Run("ReadyFailsWhenServerExits", s.testReadyFails)
	t.Run("DatabasesAndUsers", s.testDatabasesAndUsers)
	t.Run("QuiesceSnapshotRestore", s.testSnapshot)
	t.Run("QuiesceEnds", s.testQuiesceEnds)
	t.Run("PhysicalRestore", s.testPhysical)
	t.Run("LogicalRestore", s.testLogical)
	t.Run("Check", s.testCheck)
	for _, x := range h.Extra {
		t.Run(x.Name, func(t *testing.T) { x.Run(t, s) })
	}
}

// Env is the suite's environment, which engine-specific tests (Harness.
// Extra) share: the harness and the template data directory.
type Env struct {
	h        *Harness
	template string
}

// Harness returns the harness the suite runs with.
func (s *Env) Harness() *Harness { return s.h }

// ExtraTest is an engine-specific test run with the suite's Env.
type ExtraTest struct {
	Name string
	Run  func(t *testing.T, env *Env)
}

// runDir returns a new run directory with a short path (for sockets).
func runDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "cdb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// FreePort returns a TCP port on 127.0.0.1 nothing listens on now.
func FreePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *Env) Config(t *testing.T, dataDir string) dbagent.Config {
	return dbagent.Config{DataDir: dataDir, RunDir: runDir(t), Address: "127.0.0.1", Port: FreePort(t), Settings: s.h.Settings}
}

// copyTemplate copies the template data directory to dst, keeping owners.
func (s *Env) CopyTemplate(t *testing.T, dst string) {
	if out, err := exec.Command("cp", "-a", s.template, dst).CombinedOutput(); err != nil {
		t.Fatalf("copying the template: %v: %s", err, out)
	}
}

// instance returns the instance of a copy of the template in a new
// directory, on a volume when onVolume is set.
func (s *Env) Instance(t *testing.T, onVolume bool) dbagent.Instance {
	var dir string
	if onVolume {
		dir = s.h.Volumes.New(t)
	} else {
		dir = ReachableTempDir(t)
	}
	data := filepath.Join(dir, "data")
	s.CopyTemplate(t, data)
	return s.Open(t, s.Config(t, data))
}

func (s *Env) Open(t *testing.T, cfg dbagent.Config) dbagent.Instance {
	inst, err := s.h.Engine.Instance(cfg)
	if err != nil {
		t.Fatalf("Instance: %v", err)
	}
	return inst
}

// Started is a server a test started, stopped by pid when the test ends.
type Started struct {
	Proc *dbagent.Process
	Log  string
}

// Start starts inst's server and waits until it is ready; the server is
// stopped when t ends.
func Start(t *testing.T, inst dbagent.Instance) *Started {
	t.Helper()
	srv := StartNoWait(t, inst)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if err := inst.Ready(ctx, srv.Proc.Server()); err != nil {
		t.Fatalf("Ready: %v\nserver log:\n%s", err, srv.tail())
	}
	return srv
}

// StartNoWait starts inst's server; it is stopped when t ends.
func StartNoWait(t *testing.T, inst dbagent.Instance) *Started {
	t.Helper()
	cmd, err := inst.Command()
	if err != nil {
		t.Fatalf("Command: %v", err)
	}
	if cmd.Dir != dbagent.ToolDir {
		t.Fatalf("the server starts in %q, want %q: a data plane serving the data directory's volume could deadlock on the change of directory before exec", cmd.Dir, dbagent.ToolDir)
	}
	logPath := filepath.Join(t.TempDir(), "server.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	proc, err := dbagent.Start(cmd)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	srv := &Started{Proc: proc, Log: logPath}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := inst.Stop(ctx, proc.Server()); err != nil {
			t.Errorf("Stop (pid %d): %v", proc.Pid(), err)
		}
		if t.Failed() {
			t.Logf("server log %s:\n%s", logPath, srv.tail())
		}
	})
	return srv
}

func (s *Started) tail() string {
	b, _ := os.ReadFile(s.Log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (s *Env) testDatastores(t *testing.T) {
	ctx := t.Context()
	list, err := dbagent.Datastores(ctx, s.h.Find)
	if err != nil {
		t.Fatal(err)
	}
	want := s.h.Engine.Datastore()
	if !slices.Contains(list, want) {
		t.Fatalf("Datastores = %+v, want it to hold %+v", list, want)
	}
	inst := s.Instance(t, false)
	Start(t, inst)
	db := s.DB(t, inst, "")
	var version string
	if err := db.QueryRowContext(ctx, "SELECT version()").Scan(&version); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(version, want.Release) || !strings.HasPrefix(want.Release, want.Version+".") {
		t.Errorf("server says version %q; the datastore says %s, release %s", version, want.Version, want.Release)
	}
}

func (s *Env) DB(t *testing.T, inst dbagent.Instance, name string) *sql.DB {
	t.Helper()
	db, err := s.h.Open(t.Context(), inst, name)
	if err != nil {
		t.Fatalf("Open %s: %v", name, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func (s *Env) testServe(t *testing.T) {
	ctx := t.Context()
	inst := s.Instance(t, false)
	for round := 0; round < 2; round++ {
		cmd, err := inst.Command()
		if err != nil {
			t.Fatal(err)
		}
		proc, err := dbagent.Start(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if err := inst.Ready(ctx, proc.Server()); err != nil {
			_ = inst.Stop(ctx, proc.Server())
			t.Fatalf("round %d: Ready: %v", round, err)
		}
		db, err := s.h.Open(ctx, inst, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := db.PingContext(ctx); err != nil {
			t.Errorf("round %d: ping: %v", round, err)
		}
		db.Close()
		if err := inst.Stop(ctx, proc.Server()); err != nil {
			t.Fatalf("round %d: Stop: %v", round, err)
		}
		select {
		case <-proc.Exited():
		default:
			t.Fatalf("round %d: Stop returned before the process exited", round)
		}
		// Stopping a stopped server is a no-op.
		if err := inst.Stop(ctx, proc.Server()); err != nil {
			t.Errorf("round %d: second Stop: %v", round, err)
		}
	}
}

// testReadyFails: a server that cannot start (its port is taken) makes
// Ready fail as soon as the process exits, long before its context ends.
func (s *Env) testReadyFails(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := ReachableTempDir(t)
	cfg := s.Config(t, filepath.Join(dir, "data"))
	cfg.Port = l.Addr().(*net.TCPAddr).Port
	s.CopyTemplate(t, cfg.DataDir)
	inst := s.Open(t, cfg)
	srv := StartNoWait(t, inst)
	ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
	defer cancel()
	err = inst.Ready(ctx, srv.Proc.Server())
	if err == nil {
		t.Fatal("Ready succeeded on a server whose port is taken")
	}
	if ctx.Err() != nil {
		t.Fatalf("Ready waited for its context: %v", err)
	}
	select {
	case <-srv.Proc.Exited():
	default:
		t.Fatalf("Ready failed (%v) while the server runs", err)
	}
	t.Logf("Ready: %v", err)
}

func (s *Env) testDatabasesAndUsers(t *testing.T) {
	ctx := t.Context()
	inst := s.Instance(t, false)
	Start(t, inst)
	cs := s.h.Charset
	cs.Name = "my-db"
	if err := inst.CreateDatabases(ctx, []dbagent.Database{{Name: "app"}, cs}); err != nil {
		t.Fatal(err)
	}
	// A password that would break naive quoting.
	tricky := `p'w"\x; DROP DATABASE app; -- ` + "é"
	users := []dbagent.User{
		{Name: "alice", Password: tricky, Databases: []string{"app"}},
		{Name: "bob_2", Password: "bob-secret", Databases: []string{"my-db"}},
	}
	if err := inst.CreateUsers(ctx, users); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		user, password, db string
		ok                 bool
	}{
		{"alice", tricky, "app", true},
		{"alice", tricky, "my-db", false},
		{"alice", "wrong", "app", false},
		{"bob_2", "bob-secret", "my-db", true},
		{"bob_2", "bob-secret", "app", false},
	}
	for _, c := range checks {
		err := s.h.Login(ctx, inst, c.user, c.password, c.db)
		if c.ok && err != nil {
			t.Errorf("login %s to %s: %v", c.user, c.db, err)
		}
		if !c.ok && err == nil {
			t.Errorf("login %s (password %q) to %s succeeded, want refused", c.user, c.password, c.db)
		}
	}
	if err := inst.CreateDatabases(ctx, []dbagent.Database{{Name: "app"}}); !errors.Is(err, cairn.ErrExists) {
		t.Errorf("creating app again = %v, want ErrExists", err)
	}
	if err := inst.CreateUsers(ctx, users[:1]); !errors.Is(err, cairn.ErrExists) {
		t.Errorf("creating alice again = %v, want ErrExists", err)
	}
	bad := []struct {
		name  string
		dbs   []dbagent.Database
		users []dbagent.User
	}{
		{"quote in name", []dbagent.Database{{Name: `x"; DROP DATABASE app; --`}}, nil},
		{"backtick in name", []dbagent.Database{{Name: "x`y"}}, nil},
		{"empty name", []dbagent.Database{{Name: ""}}, nil},
		{"long name", []dbagent.Database{{Name: strings.Repeat("a", 64)}}, nil},
		{"twice", []dbagent.Database{{Name: "dup"}, {Name: "DUP"}}, nil},
		{"charset injection", []dbagent.Database{{Name: "cs", CharacterSet: "utf8'; DROP"}}, nil},
		{"user quote", nil, []dbagent.User{{Name: "o'brien", Password: "x"}}},
		{"empty password", nil, []dbagent.User{{Name: "carol", Password: ""}}},
		{"newline in password", nil, []dbagent.User{{Name: "carol", Password: "a\nb"}}},
		{"bad granted db", nil, []dbagent.User{{Name: "carol", Password: "x", Databases: []string{"a;b"}}}},
	}
	for _, b := range bad {
		var err error
		if b.dbs != nil {
			err = inst.CreateDatabases(ctx, b.dbs)
		} else {
			err = inst.CreateUsers(ctx, b.users)
		}
		if !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", b.name, err)
		}
	}
	if err := s.h.Login(ctx, inst, "alice", tricky, "app"); err != nil {
		t.Errorf("app is gone after the refused requests: %v", err)
	}
}

// source is a running instance with data: a static table, a user, and
// the table the writer fills.
type Source struct {
	Inst   dbagent.Instance
	Srv    *Started
	DB     *sql.DB // database app
	Static dbagent.TableChecksum
}

const (
	staticRows = 500
	userName   = "alice"
	userPass   = "alice-pw"
)

func (s *Env) Source(t *testing.T, onVolume bool) *Source {
	ctx := t.Context()
	inst := s.Instance(t, onVolume)
	srv := Start(t, inst)
	if err := inst.CreateDatabases(ctx, []dbagent.Database{{Name: "app"}}); err != nil {
		t.Fatal(err)
	}
	if err := inst.CreateUsers(ctx, []dbagent.User{{Name: userName, Password: userPass, Databases: []string{"app"}}}); err != nil {
		t.Fatal(err)
	}
	db := s.DB(t, inst, "app")
	var values []string
	for i := 1; i <= staticRows; i++ {
		values = append(values, fmt.Sprintf("(%d, 'static-%d', %d.%02d)", i, i*7919%1000, i*31, i%100))
	}
	for _, stmt := range []string{
		"CREATE TABLE static_rows (id BIGINT PRIMARY KEY, payload VARCHAR(100), amount NUMERIC(12,2))",
		"INSERT INTO static_rows VALUES " + strings.Join(values, ", "),
		"CREATE TABLE writes (id BIGINT PRIMARY KEY, payload VARCHAR(100))",
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%.60s: %v", stmt, err)
		}
	}
	src := &Source{Inst: inst, Srv: srv, DB: db}
	src.Static = s.staticSum(t, inst)
	if src.Static.Rows != staticRows || src.Static.Sum == "" {
		t.Fatalf("checksum of static_rows = %+v", src.Static)
	}
	return src
}

func (s *Env) staticSum(t *testing.T, inst dbagent.Instance) dbagent.TableChecksum {
	t.Helper()
	sums, err := inst.Checksums(t.Context())
	if err != nil {
		t.Fatalf("Checksums: %v", err)
	}
	for _, c := range sums {
		if c.Database == "app" && (c.Table == "static_rows" || strings.HasSuffix(c.Table, ".static_rows")) {
			return c
		}
	}
	t.Fatalf("Checksums has no app static_rows: %+v", sums)
	return dbagent.TableChecksum{}
}

// verify checks a restored, running instance against the source and the
// writer's log: the static table's checksum, the user's login, and that
// the writer's rows are exactly those rec's point covers.
func (s *Env) Verify(t *testing.T, restored dbagent.Instance, src *Source, rec dbagent.Record, log []Commit) {
	t.Helper()
	ctx := t.Context()
	db := s.DB(t, restored, "app")
	// First, before anything here writes to the restored server.
	if s.h.CheckRestored != nil {
		s.h.CheckRestored(t, ctx, db, rec)
	}
	if got := s.staticSum(t, restored); got != src.Static {
		t.Errorf("static_rows after restore = %+v, want %+v", got, src.Static)
	}
	if err := s.h.Login(ctx, restored, userName, userPass, "app"); err != nil {
		t.Errorf("login as %s after restore: %v", userName, err)
	}
	rows, err := db.QueryContext(ctx, "SELECT id, payload FROM writes ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	have := map[int64]bool{}
	var maxID int64
	for rows.Next() {
		var id int64
		var p string
		if err := rows.Scan(&id, &p); err != nil {
			t.Fatal(err)
		}
		if p != payload(id) {
			t.Errorf("row %d: payload %q, want %q", id, p, payload(id))
		}
		have[id] = true
		maxID = max(maxID, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if int64(len(have)) != maxID {
		t.Errorf("restored rows are not 1..%d: %d rows", maxID, len(have))
	}
	var in, out int
	for _, c := range log {
		mustIn, mustOut := s.h.Covered(c.Bounds, rec)
		switch {
		case mustIn:
			in++
			if !have[c.ID] {
				t.Errorf("row %d (commit %+v) is covered by the backup's point but not restored", c.ID, c.Bounds)
			}
		case mustOut:
			out++
			if have[c.ID] {
				t.Errorf("row %d (commit %+v) came after the backup's point but was restored", c.ID, c.Bounds)
			}
		}
	}
	if maxID > int64(len(log)) {
		t.Errorf("restored row %d was never committed (%d commits)", maxID, len(log))
	}
	if in == 0 || out == 0 {
		t.Errorf("the check is vacuous: %d commits certainly covered, %d certainly not", in, out)
	}
	t.Logf("restored %d of %d committed rows (%d certainly in, %d certainly out)", len(have), len(log), in, out)
}

// testSnapshot quiesces a server under writes, snapshots its volume,
// releases, and restores the snapshot into a new server: every row
// committed before the quiesce is there, none committed after release,
// and the rows agree with the recorded point.
func (s *Env) testSnapshot(t *testing.T) {
	ctx := t.Context()
	src := s.Source(t, true)
	w := StartWriter(t, ctx, s.h, src.DB, "writes")
	if err := w.WaitFor(ctx, 20); err != nil {
		t.Fatal(err)
	}
	q, err := src.Inst.Quiesce(ctx, dbagent.QuiesceOptions{Label: "suite snapshot", Timeout: time.Minute})
	if err != nil {
		t.Fatalf("Quiesce: %v", err)
	}
	mount := s.h.Volumes.Snapshot(t, ctx, filepath.Dir(src.Inst.Config().DataDir))
	var overlay bytes.Buffer
	rec, err := q.Release(ctx, &overlay)
	if err != nil {
		t.Fatalf("Release: %v", err)
	}
	select {
	case <-q.Done():
	default:
		t.Error("Done not closed after Release")
	}
	t.Logf("quiesce: acquire %v, held %v, release %v; overlay %d bytes",
		rec.Quiesce.Acquire, rec.Quiesce.Held, rec.Quiesce.Release, overlay.Len())
	// Commits go on after the release.
	if err := w.WaitFor(ctx, w.Committed()+20); err != nil {
		t.Fatal(err)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Release(ctx, io.Discard); !errors.Is(err, cairn.ErrConflict) {
		t.Errorf("second Release = %v, want ErrConflict", err)
	}

	cfg := s.Config(t, filepath.Join(mount, "data"))
	if err := s.h.Engine.RestoreSnapshot(ctx, cfg, rec, bytes.NewReader(overlay.Bytes())); err != nil {
		t.Fatalf("RestoreSnapshot: %v", err)
	}
	restored := s.Open(t, cfg)
	Start(t, restored)
	s.Verify(t, restored, src, rec, w.Log())
}

// testQuiesceEnds: however a quiesce ends (it could not be had, nobody
// released it, its release came on an ended context, it was aborted) the
// server is left with nothing held: commits go on and the next quiesce is
// had at once. The cases share one server, each after the one before.
func (s *Env) testQuiesceEnds(t *testing.T) {
	src := s.Source(t, false)
	t.Run("Blocked", func(t *testing.T) { s.testQuiesceBlocked(t, src) })
	t.Run("MaxHold", func(t *testing.T) { s.testQuiesceMaxHold(t, src) })
	t.Run("ReleaseCancelled", func(t *testing.T) { s.testReleaseCancelled(t, src) })
	t.Run("Abort", func(t *testing.T) { s.testAbort(t, src) })
}

// testQuiesceBlocked: when something keeps the quiesce from being had,
// Quiesce fails within its bound, commits go on, and nothing stays held:
// once the blocker is gone a quiesce succeeds at once.
func (s *Env) testQuiesceBlocked(t *testing.T, src *Source) {
	ctx := t.Context()
	release := s.h.Block(t, ctx, src.Inst, src.DB)
	const bound = 2 * time.Second
	began := time.Now()
	q, err := src.Inst.Quiesce(ctx, dbagent.QuiesceOptions{Timeout: bound, ReleaseTimeout: 30 * time.Second})
	took := time.Since(began)
	if err == nil {
		q.Abort()
		release()
		t.Fatal("Quiesce succeeded while blocked")
	}
	if !errors.Is(err, cairn.ErrConflict) {
		t.Errorf("Quiesce while blocked = %v, want ErrConflict", err)
	}
	// The bound, plus ending the session.
	if took > bound+10*time.Second {
		t.Errorf("Quiesce failed after %v, bound %v", took, bound)
	}
	t.Logf("blocked Quiesce failed after %v: %v", took, err)
	s.noLeftover(t, src)
	// Commits go on while the blocker still holds its lock.
	conn, err := src.DB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var id int64
	if err := conn.QueryRowContext(ctx, "SELECT COALESCE(MAX(id), 0) + 1 FROM writes").Scan(&id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.h.Commit(ctx, conn, fmt.Sprintf("INSERT INTO writes (id, payload) VALUES (%d, '%s')", id, payload(id))); err != nil {
		t.Fatalf("commit after the failed quiesce: %v", err)
	}
	release()
	s.commitsAndQuiesceAgain(t, src)
}

// testQuiesceMaxHold: a quiesce nobody releases is released by the agent
// after MaxHold; the late Release fails.
func (s *Env) testQuiesceMaxHold(t *testing.T, src *Source) {
	ctx := t.Context()
	q, err := src.Inst.Quiesce(ctx, dbagent.QuiesceOptions{Timeout: time.Minute, MaxHold: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-q.Done():
	case <-ctx.Done():
		t.Fatal("the quiesce was not released after MaxHold")
	}
	if _, err := q.Release(ctx, io.Discard); !errors.Is(err, cairn.ErrConflict) {
		t.Errorf("Release after MaxHold = %v, want ErrConflict", err)
	}
	s.commitsAndQuiesceAgain(t, src)
}

// noLeftover checks that no quiesce holds anything on the server.
func (s *Env) noLeftover(t *testing.T, src *Source) {
	t.Helper()
	if s.h.Leftover == nil {
		return
	}
	left, err := s.h.Leftover(t.Context(), src.DB)
	if err != nil {
		t.Fatal(err)
	}
	if left != "" {
		t.Errorf("the quiesce left %s", left)
	}
}

// commitsAndQuiesceAgain checks the server is not left quiesced: nothing
// is held, a commit goes through and a new quiesce is had at once.
func (s *Env) commitsAndQuiesceAgain(t *testing.T, src *Source) {
	t.Helper()
	ctx := t.Context()
	s.noLeftover(t, src)
	conn, err := src.DB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var id int64
	if err := conn.QueryRowContext(ctx, "SELECT COALESCE(MAX(id), 0) + 1 FROM writes").Scan(&id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.h.Commit(ctx, conn, fmt.Sprintf("INSERT INTO writes (id, payload) VALUES (%d, '%s')", id, payload(id))); err != nil {
		t.Fatalf("commit: %v", err)
	}
	q, err := src.Inst.Quiesce(ctx, dbagent.QuiesceOptions{Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("Quiesce again: %v", err)
	}
	if _, err := q.Release(ctx, io.Discard); err != nil {
		t.Fatalf("Release: %v", err)
	}
	s.noLeftover(t, src)
}

// testReleaseCancelled: Release on an ended context still releases.
func (s *Env) testReleaseCancelled(t *testing.T, src *Source) {
	q, err := src.Inst.Quiesce(t.Context(), dbagent.QuiesceOptions{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ended, cancel := context.WithCancel(t.Context())
	cancel()
	rec, err := q.Release(ended, io.Discard)
	if err != nil {
		t.Fatalf("Release on an ended context: %v", err)
	}
	if rec.Method != dbagent.Snapshot || rec.Quiesce == nil {
		t.Errorf("record = %+v", rec)
	}
	s.commitsAndQuiesceAgain(t, src)
}

// testAbort: Abort ends the quiesce; Abort again does nothing; Release
// after it fails.
func (s *Env) testAbort(t *testing.T, src *Source) {
	q, err := src.Inst.Quiesce(t.Context(), dbagent.QuiesceOptions{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := q.Abort(); err != nil {
		t.Errorf("second Abort: %v", err)
	}
	if _, err := q.Release(t.Context(), io.Discard); !errors.Is(err, cairn.ErrConflict) {
		t.Errorf("Release after Abort = %v, want ErrConflict", err)
	}
	s.commitsAndQuiesceAgain(t, src)
}

// BackupFile streams a backup into a file and returns a Part reading it.
func BackupFile(t *testing.T, name string, backup func(w io.Writer) (dbagent.Record, error)) dbagent.Part {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := backup(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("backup %s: %v", name, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != rec.Bytes {
		t.Errorf("backup %s: record says %d bytes, file %v (%v)", name, rec.Bytes, fi, err)
	}
	return dbagent.Part{Record: rec, Open: func(context.Context) (io.ReadCloser, error) { return os.Open(path) }}
}

// testPhysical streams physical backups under writes (a full and, where
// the engine has them, two incrementals) and restores the chain.
func (s *Env) testPhysical(t *testing.T) {
	ctx := t.Context()
	src := s.Source(t, false)
	w := StartWriter(t, ctx, s.h, src.DB, "writes")
	if err := w.WaitFor(ctx, 20); err != nil {
		t.Fatal(err)
	}
	chain := []dbagent.Part{BackupFile(t, "full", func(f io.Writer) (dbagent.Record, error) {
		return src.Inst.BackupPhysical(ctx, f, "suite full", nil)
	})}
	if s.h.Incremental {
		for n := 1; n <= 2; n++ {
			if err := w.WaitFor(ctx, w.Committed()+20); err != nil {
				t.Fatal(err)
			}
			parent := chain[len(chain)-1].Record
			chain = append(chain, BackupFile(t, fmt.Sprintf("inc%d", n), func(f io.Writer) (dbagent.Record, error) {
				return src.Inst.BackupPhysical(ctx, f, "suite incremental", &parent)
			}))
		}
	} else {
		parent := chain[0].Record
		if _, err := src.Inst.BackupPhysical(ctx, io.Discard, "", &parent); !errors.Is(err, cairn.ErrUnsupported) {
			t.Errorf("incremental backup = %v, want ErrUnsupported", err)
		}
	}
	if err := w.WaitFor(ctx, w.Committed()+20); err != nil {
		t.Fatal(err)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, p := range chain {
		t.Logf("physical backup: %d bytes, %+v %+v", p.Record.Bytes, p.Record.PostgreSQL, p.Record.MariaDB)
	}
	if len(chain) == 3 {
		moved := chain[2]
		moved.Record.MariaDB = new(*chain[2].Record.MariaDB)
		moved.Record.MariaDB.FromLSN++
		for name, bad := range map[string][]dbagent.Part{
			"no full backup first":            chain[1:],
			"a full backup after the first":   {chain[0], chain[0]},
			"a part not starting at its base": {chain[0], chain[1], moved},
		} {
			cfg := s.Config(t, filepath.Join(ReachableTempDir(t), "data"))
			if err := s.h.Engine.RestorePhysical(ctx, cfg, bad); !errors.Is(err, cairn.ErrInvalid) {
				t.Errorf("restoring a chain with %s = %v, want ErrInvalid", name, err)
			}
		}
	}
	cfg := s.Config(t, filepath.Join(ReachableTempDir(t), "data"))
	if err := s.h.Engine.RestorePhysical(ctx, cfg, chain); err != nil {
		t.Fatalf("RestorePhysical: %v", err)
	}
	restored := s.Open(t, cfg)
	Start(t, restored)
	s.Verify(t, restored, src, chain[len(chain)-1].Record, w.Log())
}

// testLogical streams a logical backup under writes and loads it into a
// fresh server.
func (s *Env) testLogical(t *testing.T) {
	ctx := t.Context()
	src := s.Source(t, false)
	w := StartWriter(t, ctx, s.h, src.DB, "writes")
	if err := w.WaitFor(ctx, 20); err != nil {
		t.Fatal(err)
	}
	part := BackupFile(t, "dump", func(f io.Writer) (dbagent.Record, error) {
		return src.Inst.BackupLogical(ctx, f, "suite logical")
	})
	if err := w.WaitFor(ctx, w.Committed()+20); err != nil {
		t.Fatal(err)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("logical backup: %d bytes, %+v %+v", part.Record.Bytes, part.Record.PostgreSQL, part.Record.MariaDB)
	restored := s.Instance(t, false)
	Start(t, restored)
	r, err := part.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := restored.RestoreLogical(ctx, r); err != nil {
		t.Fatalf("RestoreLogical: %v", err)
	}
	s.Verify(t, restored, src, part.Record, w.Log())
}

// testCheck: the datastore's check passes on a sound instance and runs
// the query (its first column returned); a query that fails, returns no
// row or writes fails the check without an error; a check cut short by
// its context is an error, not a verdict.
func (s *Env) testCheck(t *testing.T) {
	src := s.Source(t, false)
	ctx := t.Context()
	for _, c := range []struct {
		name   string
		req    dbagent.CheckRequest
		passed bool
		result string
		detail string
	}{
		{"no query", dbagent.CheckRequest{}, true, "", ""},
		{"count", dbagent.CheckRequest{Database: "app", Query: "SELECT count(*) FROM static_rows"}, true, fmt.Sprint(staticRows), ""},
		{"missing table", dbagent.CheckRequest{Database: "app", Query: "SELECT count(*) FROM no_such_table"}, false, "", "no_such_table"},
		{"no row", dbagent.CheckRequest{Database: "app", Query: "SELECT id FROM static_rows WHERE id < 0"}, false, "", "returned no row"},
		{"read only", dbagent.CheckRequest{Database: "app", Query: "DELETE FROM static_rows"}, false, "", "failed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep, err := src.Inst.Check(ctx, c.req)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if rep.Passed != c.passed || rep.Result != c.result || rep.Tool == "" || !strings.Contains(rep.Detail, c.detail) {
				t.Fatalf("Check(%+v) = %+v; want passed %v, result %q, detail with %q", c.req, rep, c.passed, c.result, c.detail)
			}
		})
	}
	if got := s.staticSum(t, src.Inst); got != src.Static {
		t.Fatalf("the checks changed static_rows: %+v, was %+v", got, src.Static)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if rep, err := src.Inst.Check(cctx, dbagent.CheckRequest{}); err == nil {
		t.Fatalf("a cancelled check: %+v, no error", rep)
	}
}
