package mariadb

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbagent/dbagenttest"
)

// fixture is a real binary log whose transactions are GTIDs 0-7-1 to
// 0-7-55 (internal/binlog's test data).
const fixture = "../../binlog/testdata/bin.000001"

func TestReplayStart(t *testing.T) {
	dir := t.TempDir()
	damaged := filepath.Join(dir, "bin.000002")
	if err := os.WriteFile(damaged, []byte("\xfebin"+strings.Repeat("x", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	// The fixture's first four transactions.
	b, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	head := filepath.Join(dir, "bin.000000")
	if err := os.WriteFile(head, b[:1016], 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		files    []string
		start    dbagent.BinlogStart
		server   string
		from     int
		pos      uint64
		ok       bool
		mustFail error
	}{
		{name: "no GTID: the position", files: []string{fixture}, start: dbagent.BinlogStart{File: "bin.000001", Pos: 1016}, from: 0, pos: 1016, ok: true},
		{name: "after the start's GTID", files: []string{fixture}, start: dbagent.BinlogStart{GTID: "0-7-1"}, pos: 449, ok: true},
		{name: "the server's GTID is later", files: []string{fixture}, start: dbagent.BinlogStart{GTID: "0-7-1"}, server: "0-7-5", pos: 1339, ok: true},
		{name: "the start's GTID is later", files: []string{fixture}, start: dbagent.BinlogStart{GTID: "0-7-5"}, server: "0-7-1", pos: 1339, ok: true},
		{name: "only the server's GTID", files: []string{fixture}, start: dbagent.BinlogStart{File: "bin.000001", Pos: 4}, server: "0-7-3", pos: 791, ok: true},
		{name: "another domain replays all", files: []string{fixture}, start: dbagent.BinlogStart{GTID: "1-7-100"}, pos: 322, ok: true},
		{name: "in a later file", files: []string{head, fixture}, start: dbagent.BinlogStart{GTID: "0-7-2,1-7-1"}, server: "0-7-4", from: 1, pos: 1016, ok: true},
		{name: "in the first file", files: []string{head, fixture}, start: dbagent.BinlogStart{GTID: "0-7-2,1-7-1"}, pos: 624, ok: true},
		{name: "everything applied", files: []string{fixture}, start: dbagent.BinlogStart{GTID: "0-7-20"}, server: "0-7-55"},
		{name: "beyond the files", files: []string{fixture, fixture}, start: dbagent.BinlogStart{GTID: "0-7-60"}},
		{name: "damaged", files: []string{damaged}, start: dbagent.BinlogStart{GTID: "0-7-60"}, mustFail: cairn.ErrCorrupt},
		{name: "bad GTID", files: []string{fixture}, start: dbagent.BinlogStart{GTID: "0-7"}, mustFail: cairn.ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from, pos, ok, err := replayStart(tc.files, tc.start, tc.server)
			if tc.mustFail != nil {
				if !errors.Is(err, tc.mustFail) {
					t.Fatalf("err = %v, want %v", err, tc.mustFail)
				}
				return
			}
			if err != nil || from != tc.from || pos != tc.pos || ok != tc.ok {
				t.Fatalf("got file %d at %d, %v, %v; want file %d at %d, %v", from, pos, ok, err, tc.from, tc.pos, tc.ok)
			}
		})
	}
}

func TestLaterGTIDs(t *testing.T) {
	for _, tc := range []struct{ a, b, want string }{
		{"", "", ""},
		{"0-1-5", "", "0-1-5"},
		{"", "0-1-5", "0-1-5"},
		{"0-1-5", "0-2-7", "0-2-7"},
		{"0-1-9,2-1-3", "0-2-7,1-1-1", "0-1-9,1-1-1,2-1-3"},
	} {
		a, _ := parseGTIDList(tc.a)
		b, _ := parseGTIDList(tc.b)
		if got := formatGTIDList(laterGTIDs(a, b)); got != tc.want {
			t.Errorf("laterGTIDs(%s, %s) = %s, want %s", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestReplayFiles(t *testing.T) {
	magic := "\xfebin"
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
		err   error
	}{
		{"in order of sequence numbers", map[string]string{"b.999999": magic, "b.1000000": magic, "b.999998": magic}, "b.999998 b.999999 b.1000000", nil},
		{"one", map[string]string{"mysql-bin.000003": magic}, "mysql-bin.000003", nil},
		{"none", map[string]string{}, "", cairn.ErrInvalid},
		{"a gap", map[string]string{"b.000001": magic, "b.000003": magic}, "", cairn.ErrInvalid},
		{"two names", map[string]string{"a.000001": magic, "b.000002": magic}, "", cairn.ErrInvalid},
		{"something else", map[string]string{"b.000001": magic, "b.index": ""}, "", cairn.ErrInvalid},
		{"not a binary log", map[string]string{"b.000001": "<?xml"}, "", cairn.ErrCorrupt},
		{"empty", map[string]string{"b.000001": ""}, "", cairn.ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, s := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, n), []byte(s), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := replayFiles(dir)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil || strings.Join(got, " ") != tc.want {
				t.Fatalf("got %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

// binlogPoint is where the server writes next, and its GTID position.
type binlogPoint struct {
	file string
	pos  uint64
	gtid string
}

// testPointInTime restores a backup (a physical one, a quiesced
// snapshot), commits rows A and then B on the source, and replays the
// source's binary log from the backup's point to the end of A: the
// restored server holds A and not B. The replay is first cut short
// (the files end halfway through A), then run to the end of A, then
// run again: no transaction is applied twice, and a finished replay run
// again does nothing.
func testPointInTime(t *testing.T, env *dbagenttest.Env) {
	for _, method := range []dbagent.Method{dbagent.Physical, dbagent.Snapshot} {
		t.Run(string(method), func(t *testing.T) { testPointInTimeFrom(t, env, method) })
	}
}

func testPointInTimeFrom(t *testing.T, env *dbagenttest.Env, method dbagent.Method) {
	ctx := t.Context()
	e := env.Harness().Engine.(*Engine)
	src := env.Source(t, method == dbagent.Snapshot)
	insert := func(from, n int, payload string) {
		t.Helper()
		for id := from; id < from+n; id++ {
			if _, err := src.DB.ExecContext(ctx, "INSERT INTO writes (id, payload) VALUES (?, ?)", id, payload); err != nil {
				t.Fatal(err)
			}
		}
	}
	point := func() binlogPoint {
		t.Helper()
		var p binlogPoint
		var err error
		if p.file, p.pos, err = masterStatus(ctx, src.DB); err != nil {
			t.Fatal(err)
		}
		if err := src.DB.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&p.gtid); err != nil {
			t.Fatal(err)
		}
		return p
	}
	insert(1, 5, "before")

	// The backup, and how to restore it into cfg.
	var rec dbagent.Record
	var restore func(cfg dbagent.Config)
	var cfg dbagent.Config
	switch method {
	case dbagent.Physical:
		part := dbagenttest.BackupFile(t, "full", func(w io.Writer) (dbagent.Record, error) {
			return src.Inst.BackupPhysical(ctx, w, "pitr", nil)
		})
		rec = part.Record
		cfg = env.Config(t, filepath.Join(dbagenttest.ReachableTempDir(t), "data"))
		restore = func(cfg dbagent.Config) {
			if err := e.RestorePhysical(ctx, cfg, []dbagent.Part{part}); err != nil {
				t.Fatal(err)
			}
		}
	case dbagent.Snapshot:
		q, err := src.Inst.Quiesce(ctx, dbagent.QuiesceOptions{Label: "pitr", Timeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		mount := env.Harness().Volumes.Snapshot(t, ctx, filepath.Dir(src.Inst.Config().DataDir))
		var overlay bytes.Buffer
		if rec, err = q.Release(ctx, &overlay); err != nil {
			t.Fatal(err)
		}
		cfg = env.Config(t, filepath.Join(mount, "data"))
		restore = func(cfg dbagent.Config) {
			if err := e.RestoreSnapshot(ctx, cfg, rec, bytes.NewReader(overlay.Bytes())); err != nil {
				t.Fatal(err)
			}
		}
	}
	m := rec.MariaDB
	t.Logf("backup at %s:%d, GTID %s", m.BinlogFile, m.BinlogPos, m.GTIDBinlogPos)

	// Rows A, in two files; then rows B.
	insert(1000, 10, "A")
	mid := point()
	if _, err := src.DB.ExecContext(ctx, "FLUSH BINARY LOGS"); err != nil {
		t.Fatal(err)
	}
	insert(1010, 10, "A")
	end := point()
	insert(2000, 10, "B")
	t.Logf("A half-way at %s:%d (%s), A's end at %s:%d (%s)", mid.file, mid.pos, mid.gtid, end.file, end.pos, end.gtid)

	// The archive, as the service stages it: the source's files from the
	// backup's on, the last cut where the replay stops.
	stage := func(stop binlogPoint) string {
		t.Helper()
		dir := filepath.Join(dbagenttest.ReachableTempDir(t), "binlog")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		_, from, _ := splitBinlogName(m.BinlogFile)
		_, to, _ := splitBinlogName(stop.file)
		base, _, _ := splitBinlogName(stop.file)
		for seq := from; seq <= to; seq++ {
			name := fmt.Sprintf("%s.%06d", base, seq)
			b, err := os.ReadFile(filepath.Join(src.Inst.Config().DataDir, name))
			if err != nil {
				t.Fatal(err)
			}
			if seq == to {
				b = b[:stop.pos]
			}
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	start := &dbagent.BinlogStart{File: m.BinlogFile, Pos: m.BinlogPos, GTID: m.GTIDBinlogPos}

	restore(cfg)
	if err := e.PrepareRecovery(ctx, cfg, dbagent.RecoveryTarget{Dir: stage(end)}); !errors.Is(err, cairn.ErrInvalid) {
		t.Errorf("PrepareRecovery without a binary log start: %v, want ErrInvalid", err)
	}
	if err := e.PrepareRecovery(ctx, cfg, dbagent.RecoveryTarget{Dir: stage(mid), Binlog: start}); err != nil {
		t.Fatal(err)
	}
	inst := env.Open(t, cfg)
	srv := dbagenttest.StartNoWait(t, inst)
	if err := e.FinishRecovery(ctx, cfg, srv.Proc.Server()); err != nil {
		t.Fatal(err)
	}
	db := env.DB(t, inst, "app")
	check := func(what string, wantA int, wantGTID string) {
		t.Helper()
		var before, a, b int
		if err := db.QueryRowContext(ctx, "SELECT SUM(payload = 'before'), SUM(payload = 'A'), SUM(payload = 'B') FROM writes").Scan(&before, &a, &b); err != nil {
			t.Fatal(err)
		}
		var gtid string
		if err := db.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&gtid); err != nil {
			t.Fatal(err)
		}
		if before != 5 || a != wantA || b != 0 || gtid != wantGTID {
			t.Fatalf("%s: %d rows before the backup, %d of A, %d of B, GTID position %s; want 5, %d, 0, %s", what, before, a, b, gtid, wantA, wantGTID)
		}
		if _, err := os.Stat(filepath.Join(cfg.DataDir, replayMarker)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: the replay's marker is left: %v", what, err)
		}
	}
	check("replayed half-way", 10, mid.gtid)

	gen := func() uint32 {
		t.Helper()
		st, err := inst.(dbagent.BinlogSource).BinlogState(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.Generation
	}
	if g := gen(); g != 1 {
		t.Fatalf("generation %d after a replay that set none, want 1", g)
	}

	// Replayed again with a new generation: the server is on it after.
	full := stage(end)
	gstart := *start
	gstart.Generation = 3
	for _, what := range []string{"replayed again, to the end", "replayed once more"} {
		if err := e.PrepareRecovery(ctx, cfg, dbagent.RecoveryTarget{Dir: full, Binlog: &gstart}); err != nil {
			t.Fatal(err)
		}
		if err := e.FinishRecovery(ctx, cfg, srv.Proc.Server()); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		check(what, 20, end.gtid)
		if g := gen(); g != 3 {
			t.Fatalf("%s: generation %d, want 3", what, g)
		}
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO writes (id, payload) VALUES (9999, 'after')"); err != nil {
		t.Fatalf("the recovered server takes no write: %v", err)
	}
}
