package dbhost

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbagent/dbagenttest"
	"github.com/cairnproject/cairn/internal/dbagent/mariadb"
	"github.com/cairnproject/cairn/internal/dbagent/postgres"
	"github.com/cairnproject/cairn/internal/testenv"
)

// loopAttacher attaches "volumes" that are sparse image files through
// real loop devices: the host's own steps (mkfs, mount, the server on
// it) run for real, without the NBD server the data plane adds (its
// end-to-end tests cover that).
type loopAttacher struct {
	dir string

	mu       sync.Mutex
	attached map[string]string // name to device
	detaches int               // of attached names
	// failAttach, when set, fails the next Attach.
	failAttach error
}

func (a *loopAttacher) image(id cairn.ID) string { return filepath.Join(a.dir, id.String()+".img") }

func (a *loopAttacher) create(t *testing.T, size int64) cairn.ID {
	t.Helper()
	id := cairn.NewID()
	f, err := os.Create(a.image(id))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return id
}

func (a *loopAttacher) Attach(ctx context.Context, name string, id cairn.ID) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.failAttach; err != nil {
		a.failAttach = nil
		return "", err
	}
	if dev, ok := a.attached[name]; ok {
		return dev, nil
	}
	out, err := exec.CommandContext(ctx, "losetup", "--find", "--show", a.image(id)).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	a.attached[name] = dev
	return dev, nil
}

func (a *loopAttacher) Detach(ctx context.Context, name string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	dev, ok := a.attached[name]
	if !ok {
		return nil
	}
	if out, err := exec.CommandContext(ctx, "losetup", "-d", dev).CombinedOutput(); err != nil {
		return fmt.Errorf("losetup -d: %v: %s", err, out)
	}
	delete(a.attached, name)
	a.detaches++
	return nil
}

func (a *loopAttacher) devices() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]string{}
	for k, v := range a.attached {
		out[k] = v
	}
	return out
}

// loopSnapshots takes snapshots of the attacher's images: it
// freezes the instance's file system (this test's own mount), copies
// the image and thaws, which is what an atomic block-level snapshot
// holds.
type loopSnapshots struct {
	a          *loopAttacher
	h          **Host
	instanceOf func(cairn.ID) string
}

func (s loopSnapshots) Delete(_ context.Context, id cairn.ID) error { return os.Remove(s.a.image(id)) }

func (s loopSnapshots) Create(ctx context.Context, id cairn.ID, name string) (cairn.ID, error) {
	mp := (*s.h).mountPoint(s.instanceOf(id))
	snap := cairn.NewID()
	if out, err := exec.CommandContext(ctx, "fsfreeze", "-f", mp).CombinedOutput(); err != nil {
		return cairn.ID{}, fmt.Errorf("fsfreeze: %v: %s", err, out)
	}
	out, cpErr := exec.CommandContext(ctx, "cp", "--sparse=always", s.a.image(id), s.a.image(snap)).CombinedOutput()
	if thaw, err := exec.Command("fsfreeze", "-u", mp).CombinedOutput(); err != nil {
		return cairn.ID{}, fmt.Errorf("fsfreeze -u: %v: %s", err, thaw)
	}
	if cpErr != nil {
		return cairn.ID{}, fmt.Errorf("cp: %v: %s", cpErr, out)
	}
	return snap, nil
}

// faultyFS fails the next Mount once when failMount is set.
type faultyFS struct {
	FileSystems
	mu        sync.Mutex
	failMount error
}

func (f *faultyFS) Mount(ctx context.Context, dev, dir string) error {
	f.mu.Lock()
	err := f.failMount
	f.failMount = nil
	f.mu.Unlock()
	if err != nil {
		return err
	}
	return f.FileSystems.Mount(ctx, dev, dir)
}

// events collects OnEvent calls and lets a test wait for one.
type events struct {
	mu   sync.Mutex
	seen map[string]int
	cond *sync.Cond
}

func newEvents() *events {
	e := &events{seen: map[string]int{}}
	e.cond = sync.NewCond(&e.mu)
	return e
}

func (e *events) on(id, ev string) {
	e.mu.Lock()
	e.seen[id+" "+ev]++
	e.mu.Unlock()
	e.cond.Broadcast()
}

// count says how many times event ev of id has been seen.
func (e *events) count(id, ev string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen[id+" "+ev]
}

// wait blocks until event ev of id has been seen n times; the test's
// deadline bounds it.
func (e *events) wait(t *testing.T, id, ev string, n int) {
	t.Helper()
	stop := context.AfterFunc(t.Context(), e.cond.Broadcast)
	defer stop()
	e.mu.Lock()
	defer e.mu.Unlock()
	for e.seen[id+" "+ev] < n {
		if t.Context().Err() != nil {
			t.Fatalf("instance %s: event %s seen %d times, want %d", id, ev, e.seen[id+" "+ev], n)
		}
		e.cond.Wait()
	}
}

type rig struct {
	t      *testing.T
	ds     datastore
	dir    string
	att    *loopAttacher
	fs     *faultyFS
	ev     *events
	eng    dbagent.Engine
	host   *Host
	vols   map[cairn.ID]string // volume to instance
	volsMu sync.Mutex
	delays chan time.Duration
}

// datastore is one engine the tests run instances of, and how they
// reach its servers.
type datastore struct {
	name     string
	engine   func(t *testing.T) dbagent.Engine
	settings map[string]string
	// open returns a pool to database app as the spec's user.
	open func(st State) (*sql.DB, error)
}

func datastores() []datastore {
	return []datastore{
		{
			name: "postgresql",
			engine: func(t *testing.T) dbagent.Engine {
				t.Helper()
				list, err := postgres.Find(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				for _, ds := range list {
					if ds.Version == "15" {
						e, err := postgres.New(ds)
						if err != nil {
							t.Fatal(err)
						}
						return e
					}
				}
				testenv.SkipOrFail(t, "PostgreSQL 15 is not installed (Debian package postgresql-15; test.sh installs it)")
				return nil
			},
			settings: map[string]string{"shared_buffers": "16MB", "max_connections": "40"},
			open: func(st State) (*sql.DB, error) {
				cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=alice password=s3cret-pw dbname=app sslmode=disable", st.Address, st.Port))
				if err != nil {
					return nil, err
				}
				return stdlib.OpenDB(*cfg), nil
			},
		},
		{
			name: "mariadb",
			engine: func(t *testing.T) dbagent.Engine {
				t.Helper()
				list, err := mariadb.Find(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				for _, ds := range list {
					if ds.Version == "10.11" {
						e, err := mariadb.New(ds)
						if err != nil {
							t.Fatal(err)
						}
						return e
					}
				}
				testenv.SkipOrFail(t, "MariaDB 10.11 is not installed (Debian package mariadb-server; test.sh installs it)")
				return nil
			},
			settings: map[string]string{"innodb-buffer-pool-size": "64M", "innodb-log-file-size": "16M", "max-connections": "40"},
			open: func(st State) (*sql.DB, error) {
				c := mysql.NewConfig()
				c.User, c.Passwd, c.Net, c.DBName = "alice", "s3cret-pw", "tcp", "app"
				c.Addr = net.JoinHostPort(st.Address, strconv.Itoa(st.Port))
				connector, err := mysql.NewConnector(c)
				if err != nil {
					return nil, err
				}
				return sql.OpenDB(connector), nil
			},
		},
	}
}

func newRig(t *testing.T, ds datastore) *rig {
	dbagenttest.NeedLoop(t)
	r := &rig{
		t:      t,
		ds:     ds,
		dir:    dbagenttest.ReachableTempDir(t),
		ev:     newEvents(),
		eng:    ds.engine(t),
		vols:   map[cairn.ID]string{},
		delays: make(chan time.Duration, 100),
	}
	r.att = &loopAttacher{dir: t.TempDir(), attached: map[string]string{}}
	r.fs = &faultyFS{FileSystems: hostFileSystems{}}
	r.open()
	t.Cleanup(func() {
		if err := r.host.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
		for name := range r.att.devices() {
			t.Errorf("%s still attached after Close", name)
		}
	})
	return r
}

// open makes a new Host over the rig's directory, as a restarted data
// plane does.
func (r *rig) open() {
	h, err := New(Options{
		Dir:       filepath.Join(r.dir, "host"),
		RunDir:    filepath.Join(r.dir, "run"),
		PortMin:   17600,
		PortMax:   17699,
		Engines:   []dbagent.Engine{r.eng},
		Settings:  map[string]map[string]string{"postgresql": {"shared_buffers": "16MB", "max_connections": "40"}},
		Attacher:  r.att,
		Snapshots: loopSnapshots{r.att, &r.host, r.instanceOf},
		FS:        r.fs,
		OnEvent:   r.ev.on,
		After: func(d time.Duration) <-chan time.Time {
			r.delays <- d
			ch := make(chan time.Time, 1)
			ch <- time.Time{}
			return ch
		},
	})
	if err != nil {
		r.t.Fatal(err)
	}
	r.host = h
}

func (r *rig) instanceOf(v cairn.ID) string {
	r.volsMu.Lock()
	defer r.volsMu.Unlock()
	return r.vols[v]
}

func (r *rig) spec(id string) Spec {
	v := r.att.create(r.t, 512<<20)
	r.volsMu.Lock()
	r.vols[v] = id
	r.volsMu.Unlock()
	ds := r.eng.Datastore()
	return Spec{
		ID: id, Datastore: ds.Type, Version: ds.Version, Volume: v, Source: SourceInit,
		Databases: []dbagent.Database{{Name: "app"}},
		Users:     []dbagent.User{{Name: "alice", Password: "s3cret-pw", Databases: []string{"app"}}},
	}
}

// connect logs in over TCP as the spec's user.
func (r *rig) connect(st State) *sql.DB {
	r.t.Helper()
	db, err := r.ds.open(st)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { db.Close() })
	if err := db.PingContext(r.t.Context()); err != nil {
		r.t.Fatalf("connecting to %s:%d: %v", st.Address, st.Port, err)
	}
	return db
}

func (r *rig) count(st State) int {
	r.t.Helper()
	var n int
	if err := r.connect(st).QueryRowContext(r.t.Context(), "SELECT count(*) FROM t").Scan(&n); err != nil {
		r.t.Fatal(err)
	}
	return n
}

// fill creates table t with n rows.
func (r *rig) fill(st State, n int) {
	r.t.Helper()
	db := r.connect(st)
	if _, err := db.ExecContext(r.t.Context(), "CREATE TABLE t (id int primary key, v varchar(64))"); err != nil {
		r.t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("INSERT INTO t (id, v) VALUES ")
	for i := 1; i <= n; i++ {
		if i > 1 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "(%d, 'row %d')", i, i)
	}
	if _, err := db.ExecContext(r.t.Context(), b.String()); err != nil {
		r.t.Fatal(err)
	}
	db.Close()
}

func TestInstanceLifecycle(t *testing.T) {
	for _, ds := range datastores() {
		t.Run(ds.name, func(t *testing.T) { testInstanceLifecycle(t, ds) })
	}
}

func testInstanceLifecycle(t *testing.T, ds datastore) {
	r := newRig(t, ds)
	ctx := t.Context()
	spec := r.spec("inst-a")

	// A failed step leaves the instance provisioning; the same spec
	// again resumes it.
	r.fs.failMount = errors.New("injected mount failure")
	if _, err := r.host.Provision(ctx, spec, nil); err == nil || !strings.Contains(err.Error(), "injected mount failure") {
		t.Fatalf("Provision with a failing mount: %v", err)
	}
	if st, _ := r.host.Instance("inst-a"); st.Phase != PhaseProvisioning || st.Error == "" {
		t.Fatalf("after a failed step: %+v", st)
	}
	other := spec
	other.Version = "99"
	if _, err := r.host.Provision(ctx, other, nil); err == nil {
		t.Fatal("Provision with another spec for the same ID succeeded")
	}
	st, err := r.host.Provision(ctx, spec, nil)
	if err != nil {
		t.Fatalf("Provision resumed: %v", err)
	}
	if st.Phase != PhaseReady || st.Operating != cairn.OperatingHealthy || st.Port < 17600 || st.Size == 0 || st.Error != "" {
		t.Fatalf("state after Provision: %+v", st)
	}
	r.fill(st, 1000)
	data, err := os.ReadFile(r.host.recordPath("inst-a"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "s3cret-pw") {
		t.Fatal("the instance record keeps the user's password after the user was created")
	}

	// The supervisor restarts a server that dies, after a backoff.
	before, _ := r.host.Instance("inst-a")
	pid := r.host.serverPID("inst-a")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r.ev.wait(t, "inst-a", "exited", 1)
	r.ev.wait(t, "inst-a", "healthy", 2)
	st, _ = r.host.Instance("inst-a")
	// A restart may itself fail while the killed server's backends
	// still hold its shared memory: at least one restart.
	if st.Restarts < before.Restarts+1 || st.Operating != cairn.OperatingHealthy || !strings.Contains(st.LastExit, "exited") {
		t.Fatalf("after the server was killed: %+v", st)
	}
	if d := <-r.delays; d != 500*time.Millisecond {
		t.Fatalf("first restart after %v, want the minimum backoff", d)
	}
	if n := r.count(st); n != 1000 {
		t.Fatalf("%d rows after the restart, want 1000", n)
	}

	// A snapshot backup restores into a new instance with every row.
	snap, err := r.host.Snapshot(ctx, "inst-a", SnapshotOptions{Name: "b1", Label: "b1"})
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if snap.Record.Method != dbagent.Snapshot || (ds.name == "postgresql") != (snap.Record.PostgreSQL != nil && len(snap.Overlay) > 0) {
		t.Fatalf("snapshot backup: %+v (overlay %d bytes)", snap.Record, len(snap.Overlay))
	}
	r.volsMu.Lock()
	r.vols[snap.Snapshot] = "inst-b"
	r.volsMu.Unlock()
	eds := r.eng.Datastore()
	rst, err := r.host.Provision(ctx, Spec{ID: "inst-b", Datastore: eds.Type, Version: eds.Version, Volume: snap.Snapshot,
		Source: SourceSnapshot, Record: &snap.Record, Overlay: snap.Overlay}, nil)
	if err != nil {
		t.Fatalf("Provision from the snapshot: %v", err)
	}
	if rst.Port == st.Port {
		t.Fatalf("the restored instance got the port of the first: %d", rst.Port)
	}
	if n := r.count(rst); n != 1000 {
		t.Fatalf("%d rows in the restored instance, want 1000", n)
	}

	// Physical and logical backups stream out of the instance and into
	// new ones.
	for _, m := range []dbagent.Method{dbagent.Physical, dbagent.Logical} {
		var dump bytes.Buffer
		rec, err := r.host.BackupStream(ctx, "inst-a", StreamOptions{Method: m, Label: "s-" + string(m)}, &dump)
		if err != nil {
			t.Fatalf("%s backup: %v", m, err)
		}
		id := "inst-" + string(m)
		spec := r.spec(id)
		spec.Databases, spec.Users = nil, nil
		var data bytes.Buffer
		switch m {
		case dbagent.Physical:
			spec.Source, spec.Parts = SourcePhysical, []dbagent.Record{rec}
			if err := WritePart(&data, bytes.NewReader(dump.Bytes()), int64(dump.Len())); err != nil {
				t.Fatal(err)
			}
		case dbagent.Logical:
			spec.Source, spec.Record = SourceLogical, &rec
			data.Write(dump.Bytes())
		}
		if _, err := r.host.Provision(ctx, spec, nil); err == nil {
			t.Fatalf("%s restore without its stream succeeded", m)
		}
		got, err := r.host.Provision(ctx, spec, &data)
		if err != nil {
			t.Fatalf("%s restore: %v", m, err)
		}
		if n := r.count(got); n != 1000 {
			t.Fatalf("%s restore: %d rows, want 1000", m, n)
		}
		if err := r.host.Remove(ctx, id); err != nil {
			t.Fatal(err)
		}
	}

	// A restarted data plane brings both back.
	if err := r.host.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if len(r.att.devices()) != 0 {
		t.Fatalf("attached after Close: %v", r.att.devices())
	}
	r.open()
	if err := r.host.Start(ctx); err != nil {
		t.Fatal(err)
	}
	r.ev.wait(t, "inst-a", "healthy", 3)
	r.ev.wait(t, "inst-b", "healthy", 2)
	for _, id := range []string{"inst-a", "inst-b"} {
		st, _ := r.host.Instance(id)
		if n := r.count(st); n != 1000 {
			t.Fatalf("%s: %d rows after the restart, want 1000", id, n)
		}
	}

	// Remove takes everything down and forgets the instance; again is
	// no error.
	for range 2 {
		if err := r.host.Remove(ctx, "inst-b"); err != nil {
			t.Fatalf("Remove: %v", err)
		}
	}
	if _, err := r.host.Instance("inst-b"); !errors.Is(err, cairn.ErrNotFound) {
		t.Fatalf("Instance after Remove: %v", err)
	}
	if _, ok := r.att.devices()["instance-inst-b"]; ok {
		t.Fatal("the removed instance's volume is still attached")
	}
	if _, ok := (hostFileSystems{}).Mounted(r.host.mountPoint("inst-b")); ok {
		t.Fatal("the removed instance's file system is still mounted")
	}
	if len(r.host.Instances()) != 1 {
		t.Fatalf("instances: %+v", r.host.Instances())
	}
}

func TestSpecValidate(t *testing.T) {
	v := cairn.NewID()
	rec := &dbagent.Record{Method: dbagent.Snapshot}
	when := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	pg := func(r *Recovery) Spec {
		return Spec{ID: "a", Volume: v, Datastore: dbagent.PostgreSQL, Source: SourceSnapshot, Record: rec, Recovery: r}
	}
	maria := func(r *Recovery) Spec {
		return Spec{ID: "a", Volume: v, Datastore: dbagent.MariaDB, Source: SourceSnapshot, Record: rec, Recovery: r}
	}
	for _, tc := range []struct {
		name string
		spec Spec
		ok   bool
	}{
		{"init", Spec{ID: "a", Volume: v, Source: SourceInit}, true},
		{"snapshot", Spec{ID: "a", Volume: v, Source: SourceSnapshot, Record: rec}, true},
		{"bad id", Spec{ID: "../x", Volume: v, Source: SourceInit}, false},
		{"no volume", Spec{ID: "a", Source: SourceInit}, false},
		{"no source", Spec{ID: "a", Volume: v}, false},
		{"init with record", Spec{ID: "a", Volume: v, Source: SourceInit, Record: rec}, false},
		{"snapshot without record", Spec{ID: "a", Volume: v, Source: SourceSnapshot}, false},
		{"snapshot of a dump", Spec{ID: "a", Volume: v, Source: SourceSnapshot, Record: &dbagent.Record{Method: dbagent.Logical}}, false},
		{"snapshot with users", Spec{ID: "a", Volume: v, Source: SourceSnapshot, Record: rec, Users: []dbagent.User{{Name: "u"}}}, false},
		{"volume", Spec{ID: "a", Volume: v, Source: SourceVolume, Port: 21000}, true},
		{"volume with a record", Spec{ID: "a", Volume: v, Source: SourceVolume, Record: rec}, false},
		{"volume with databases", Spec{ID: "a", Volume: v, Source: SourceVolume, Databases: []dbagent.Database{{Name: "d"}}}, false},
		{"volume with a recovery", Spec{ID: "a", Volume: v, Datastore: dbagent.PostgreSQL, Source: SourceVolume, Recovery: &Recovery{Timeline: 1}}, false},
		{"postgresql recovery", pg(&Recovery{Timeline: 2, Time: when}), true},
		{"postgresql recovery of every file", pg(&Recovery{Timeline: 1}), true},
		{"postgresql recovery without a timeline", pg(&Recovery{Time: when}), false},
		{"postgresql recovery with a binary log", pg(&Recovery{Timeline: 1, Binlog: &dbagent.BinlogStart{GTID: "0-1-5"}}), false},
		{"postgresql recovery of a dump", Spec{ID: "a", Volume: v, Datastore: dbagent.PostgreSQL, Source: SourceLogical,
			Record: &dbagent.Record{Method: dbagent.Logical}, Recovery: &Recovery{Timeline: 1}}, false},
		{"mariadb recovery after a GTID", maria(&Recovery{Binlog: &dbagent.BinlogStart{GTID: "0-1-5"}}), true},
		{"mariadb recovery after GTIDs", maria(&Recovery{Binlog: &dbagent.BinlogStart{GTID: "0-1-5,1-2-18446744073709551615"}}), true},
		{"mariadb recovery at a file's position", maria(&Recovery{Binlog: &dbagent.BinlogStart{File: "mysql-bin.000003", Pos: 328}}), true},
		{"mariadb recovery of a physical chain", Spec{ID: "a", Volume: v, Datastore: dbagent.MariaDB, Source: SourcePhysical,
			Parts: []dbagent.Record{{Method: dbagent.Physical}}, Recovery: &Recovery{Binlog: &dbagent.BinlogStart{GTID: "0-1-5"}}}, true},
		{"mariadb recovery without a start", maria(&Recovery{}), false},
		{"mariadb recovery with neither GTID nor file", maria(&Recovery{Binlog: &dbagent.BinlogStart{Pos: 4}}), false},
		{"mariadb recovery with a timeline", maria(&Recovery{Timeline: 1, Binlog: &dbagent.BinlogStart{GTID: "0-1-5"}}), false},
		{"mariadb recovery with a time", maria(&Recovery{Time: when, Binlog: &dbagent.BinlogStart{GTID: "0-1-5"}}), false},
		{"mariadb recovery from a path", maria(&Recovery{Binlog: &dbagent.BinlogStart{File: "../x.000001"}}), false},
		{"mariadb recovery after a bad GTID", maria(&Recovery{Binlog: &dbagent.BinlogStart{GTID: "0-1-5'; DROP TABLE t; --"}}), false},
		{"mariadb recovery from a volume", Spec{ID: "a", Volume: v, Datastore: dbagent.MariaDB, Source: SourceVolume,
			Recovery: &Recovery{Binlog: &dbagent.BinlogStart{GTID: "0-1-5"}}}, false},
		{"recovery of another datastore", Spec{ID: "a", Volume: v, Datastore: "mongodb", Source: SourceSnapshot, Record: rec,
			Recovery: &Recovery{Timeline: 1}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.Validate()
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, cairn.ErrInvalid)) {
				t.Fatalf("Validate: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestProcessStart(t *testing.T) {
	if processStart(os.Getpid()) == "" {
		t.Fatal("no start time for this process")
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if s := processStart(cmd.Process.Pid); s != "" {
		t.Fatalf("a process that ended has start time %q", s)
	}
}

// TestUnusableRunDir: a host whose run directory cannot be made still
// opens (the data plane serves its volumes), and refuses instances
// saying why.
func TestUnusableRunDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := New(Options{Dir: t.TempDir(), RunDir: filepath.Join(file, "run"), Attacher: &loopAttacher{attached: map[string]string{}}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	_, err = h.Provision(t.Context(), Spec{ID: "a", Datastore: "postgresql", Version: "15", Volume: cairn.NewID(), Source: SourceInit}, nil)
	if !errors.Is(err, cairn.ErrUnsupported) || !strings.Contains(err.Error(), "run directory") && !strings.Contains(err.Error(), "root") {
		t.Fatalf("Provision: %v", err)
	}
	if err := h.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestSettingsChecked: New refuses extra settings for an unknown
// datastore and those that would change what the agents give their
// servers themselves, before any instance runs with them; tuning is
// kept, and so are a known datastore's settings on a host without it.
func TestSettingsChecked(t *testing.T) {
	pg, err := postgres.New(dbagent.Datastore{Type: dbagent.PostgreSQL, Version: "15", Server: "/usr/lib/postgresql/15/bin/postgres"})
	if err != nil {
		t.Fatal(err)
	}
	maria, err := mariadb.New(dbagent.Datastore{Type: dbagent.MariaDB, Version: "10.11", Server: "/usr/sbin/mariadbd"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		engines  []dbagent.Engine
		settings map[string]map[string]string
		refused  string // the setting the error names; "" when kept
	}{
		{"tuning", []dbagent.Engine{pg, maria}, map[string]map[string]string{
			"postgresql": {"max_wal_size": "4GB", "shared_buffers": "1GB", "max_slot_wal_keep_size": "2GB"},
			"mariadb":    {"innodb_buffer_pool_size": "1G"},
		}, ""},
		{"a known datastore not installed", []dbagent.Engine{pg}, map[string]map[string]string{"mariadb": {"innodb_buffer_pool_size": "1G"}}, ""},
		{"an unknown datastore", []dbagent.Engine{pg}, map[string]map[string]string{"postgres": {"work_mem": "8MB"}}, `"postgres"`},
		{"fsync", []dbagent.Engine{pg}, map[string]map[string]string{"postgresql": {"fsync": "off"}}, "fsync"},
		{"port, in capitals", []dbagent.Engine{pg}, map[string]map[string]string{"postgresql": {"Port": "5432"}}, "Port"},
		{"wal_level", []dbagent.Engine{pg}, map[string]map[string]string{"postgresql": {"wal_level": "minimal"}}, "wal_level"},
		{"restore_command", []dbagent.Engine{pg}, map[string]map[string]string{"postgresql": {"restore_command": "true"}}, "restore_command"},
		{"a recovery target", []dbagent.Engine{pg}, map[string]map[string]string{"postgresql": {"recovery_target_lsn": "0/0"}}, "recovery_target_lsn"},
		{"archive_command", []dbagent.Engine{pg}, map[string]map[string]string{"postgresql": {"archive_command": "true"}}, "archive_command"},
		{"sync_binlog, with _", []dbagent.Engine{maria}, map[string]map[string]string{"mariadb": {"sync_binlog": "0"}}, "sync_binlog"},
		{"skip-log-bin", []dbagent.Engine{maria}, map[string]map[string]string{"mariadb": {"skip-log-bin": "1"}}, "skip-log-bin"},
		{"datadir", []dbagent.Engine{maria}, map[string]map[string]string{"mariadb": {"datadir": "/tmp"}}, "datadir"},
		{"a bad name", []dbagent.Engine{pg}, map[string]map[string]string{"postgresql": {"a b": "1"}}, `"a b"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			h, err := New(Options{Dir: dir, RunDir: filepath.Join(dir, "run"), Engines: c.engines, Settings: c.settings,
				Attacher: &loopAttacher{attached: map[string]string{}}})
			if c.refused == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if err := h.Close(t.Context()); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, cairn.ErrInvalid) || !strings.Contains(err.Error(), c.refused) {
				t.Fatalf("New: %v, want ErrInvalid naming %s", err, c.refused)
			}
		})
	}
}

// TestResumeAfterCrash: a data plane that died while provisioning left
// the volume attached over its own NBD socket, dead with it; the next
// one detaches that device before attaching the volume again, and
// finishes the instance.
func TestResumeAfterCrash(t *testing.T) {
	r := newRig(t, datastores()[0])
	ctx := t.Context()
	spec := r.spec("inst-c")
	r.fs.failMount = errors.New("injected mount failure")
	if _, err := r.host.Provision(ctx, spec, nil); err == nil {
		t.Fatal("Provision with a failing mount succeeded")
	}
	if _, ok := r.att.devices()["instance-inst-c"]; !ok {
		t.Fatal("the volume is not attached after the failed mount")
	}
	r.open() // the first host is gone, as after kill -9
	if err := r.host.Start(ctx); err != nil {
		t.Fatal(err)
	}
	r.att.mu.Lock()
	before := r.att.detaches
	r.att.mu.Unlock()
	st, err := r.host.Provision(ctx, spec, nil)
	if err != nil {
		t.Fatalf("Provision resumed by the next host: %v", err)
	}
	r.att.mu.Lock()
	after := r.att.detaches
	r.att.mu.Unlock()
	if after != before+1 || st.Operating != cairn.OperatingHealthy {
		t.Fatalf("detaches %d then %d (want the stale device detached once), state %+v", before, after, st)
	}
}

// TestResumeBeforeStart: a Provision resumed by the control plane as
// soon as a restarted data plane answers, before its Start, resumes from
// the record (the file system made once), and Start then leaves the
// instance to it: one owner, so Close stops its server and returns. It
// once made a second in-memory instance that Start replaced: the two
// unmounted each other's file system and Close waited for ever.
func TestResumeBeforeStart(t *testing.T) {
	r := newRig(t, datastores()[0])
	ctx := t.Context()
	spec := r.spec("inst-d")
	r.fs.failMount = errors.New("injected mount failure")
	if _, err := r.host.Provision(ctx, spec, nil); err == nil {
		t.Fatal("Provision with a failing mount succeeded")
	}
	r.ev.wait(t, "inst-d", "formatted", 1)
	r.open() // the first host is gone, as after kill -9
	if st, err := r.host.Instance("inst-d"); err != nil || st.Phase != PhaseProvisioning {
		t.Fatalf("instance before Start: %+v, %v", st, err)
	}
	st, err := r.host.Provision(ctx, spec, nil)
	if err != nil || st.Operating != cairn.OperatingHealthy {
		t.Fatalf("Provision resumed before Start: %+v, %v", st, err)
	}
	if err := r.host.Start(ctx); err != nil {
		t.Fatal(err)
	}
	r.host.starting.Wait()
	r.ev.mu.Lock()
	formatted, started := r.ev.seen["inst-d formatted"], r.ev.seen["inst-d started"]
	r.ev.mu.Unlock()
	if formatted != 1 || started != 1 {
		t.Fatalf("file system made %d times, server started %d times; want once each", formatted, started)
	}
	r.fill(st, 100)
	if n := r.count(st); n != 100 {
		t.Fatalf("%d rows written, want 100", n)
	}
}

// serverPID is the PID of an instance's server as last started.
func (h *Host) serverPID(id string) int {
	inst := h.get(id)
	inst.mu.Lock()
	defer inst.mu.Unlock()
	return inst.view.PID
}

// TestWaitHealthy: a backup asked for while the server restarts waits
// until it answers, and no longer than the limit; a server already
// answering does not start the clock.
func TestWaitHealthy(t *testing.T) {
	timeout := make(chan time.Time)
	var clocks atomic.Int32
	h := &Host{o: Options{After: func(time.Duration) <-chan time.Time { clocks.Add(1); return timeout }}}
	s := &supervisor{h: h, done: make(chan struct{}), healthy: make(chan struct{})}
	s.set(cairn.OperatingRestarting)
	waited := make(chan error, 1)
	go func() { waited <- s.waitHealthy(t.Context(), time.Minute) }()
	s.set(cairn.OperatingHealthy)
	if err := <-waited; err != nil {
		t.Fatalf("waitHealthy once healthy: %v", err)
	}
	before := clocks.Load()
	if err := s.waitHealthy(t.Context(), time.Minute); err != nil || clocks.Load() != before {
		t.Fatalf("waitHealthy while healthy: %v, clocks started %d", err, clocks.Load()-before)
	}
	// Leaving HEALTHY makes it wait again; the limit ends the wait.
	s.set(cairn.OperatingRestarting)
	go func() { waited <- s.waitHealthy(t.Context(), time.Minute) }()
	timeout <- time.Time{}
	if err := <-waited; !errors.Is(err, cairn.ErrConflict) || !strings.Contains(err.Error(), "RESTARTING") {
		t.Fatalf("waitHealthy past the limit: %v", err)
	}
	// A stopped supervisor ends the wait.
	close(s.done)
	if err := s.waitHealthy(t.Context(), time.Minute); !errors.Is(err, cairn.ErrConflict) {
		t.Fatalf("waitHealthy when stopped: %v", err)
	}
}

// TestAllocatePortWanted: a port asked for (an instance recovered in
// place keeps its own) is given when in range and no other instance's;
// otherwise refused, never swapped for another.
func TestAllocatePortWanted(t *testing.T) {
	h := &Host{o: Options{Address: "127.0.0.1", PortMin: 21000, PortMax: 21010},
		instances: map[string]*instance{"other": {rec: record{Port: 21003}}, "self": {rec: record{Port: 21005}}}}
	for _, tc := range []struct {
		name string
		want int
		ok   bool
	}{
		{"free", 21007, true},
		{"its own", 21005, true},
		{"another instance's", 21003, false},
		{"below the range", 20999, false},
		{"above the range", 21011, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := h.allocatePort("self", tc.want)
			if tc.ok && (err != nil || got != tc.want) || !tc.ok && !errors.Is(err, cairn.ErrConflict) {
				t.Fatalf("allocatePort(%d) = %d, %v", tc.want, got, err)
			}
		})
	}
}
