package pgwal_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbagent/dbagenttest"
	"github.com/cairnproject/cairn/internal/pgwal"
	"github.com/cairnproject/cairn/internal/testenv"
	"github.com/jackc/pgx/v5"
)

var update = flag.Bool("update", false, "rewrite the WAL fixture")

const fixtureSegSize = 1 << 20

// fixture is WAL a real server wrote, with what the decoder must find in
// it (testdata/wal.bin and wal.json, written by TestRealServer -update).
type fixture struct {
	Start   uint64      `json:"start"`
	SegSize uint64      `json:"seg_size"`
	Commits []time.Time `json:"commits"`
	Aborts  int         `json:"aborts"`
}

func TestFixture(t *testing.T) {
	wal, err := os.ReadFile(filepath.Join("testdata", "wal.bin"))
	if err != nil {
		t.Fatal(err)
	}
	js, err := os.ReadFile(filepath.Join("testdata", "wal.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx fixture
	if err := json.Unmarshal(js, &fx); err != nil {
		t.Fatal(err)
	}
	checkWAL(t, wal, fx)
}

// checkWAL decodes wal whole and in random pieces, from its start and
// from arbitrary places, and checks what it finds against fx.
func checkWAL(t *testing.T, wal []byte, fx fixture) {
	t.Helper()
	all, st := decodeAll(wal, fx.Start, fx.SegSize, false, 1<<30)
	if st.Damaged != 0 || st.Skipped >= pgwal.PageSize {
		t.Fatalf("decoding from a segment's start: %+v", st)
	}
	var commits []time.Time
	aborts := 0
	for i, e := range all {
		if i > 0 && e.LSN <= all[i-1].LSN {
			t.Fatalf("ends out of order: %+v after %+v", e, all[i-1])
		}
		if e.EndLSN <= e.LSN || e.EndLSN > fx.Start+uint64(len(wal)) {
			t.Fatalf("end %+v outside the WAL", e)
		}
		switch e.Kind {
		case pgwal.Commit:
			commits = append(commits, e.Time)
		case pgwal.Abort:
			aborts++
		}
	}
	for _, want := range fx.Commits {
		if !slices.ContainsFunc(commits, want.Equal) {
			t.Fatalf("commit at %s not found among %d decoded", want.Format(time.RFC3339Nano), len(commits))
		}
	}
	if aborts < fx.Aborts {
		t.Fatalf("%d aborts decoded, want at least %d", aborts, fx.Aborts)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		// In random pieces: the same ends.
		got, _ := decodeAll(wal, fx.Start, fx.SegSize, false, 1+rng.IntN(20000))
		if !slices.Equal(got, all) {
			t.Fatalf("decoding in pieces found %d ends, whole %d", len(got), len(all))
		}
		// From anywhere, out of step: a tail of the same ends.
		cut := rng.Uint64N(uint64(len(wal)))
		got, _ = decodeAll(wal[cut:], fx.Start+cut, fx.SegSize, false, 1+rng.IntN(20000))
		if len(got) > 0 {
			i := slices.IndexFunc(all, func(e pgwal.End) bool { return e.LSN == got[0].LSN })
			if i < 0 || !slices.Equal(got, all[i:]) {
				t.Fatalf("from %x: %d ends that are not a tail of the whole", fx.Start+cut, len(got))
			}
		}
		// Stopped anywhere, restarted at its boundary in step: the ends
		// from there on, none lost.
		d := pgwal.NewDecoder(fx.Start, fx.SegSize, true)
		var before []pgwal.End
		before = append(before, d.Write(wal[:cut])...)
		b, ok := d.Boundary()
		if !ok {
			continue
		}
		if b > fx.Start+cut || b < fx.Start {
			t.Fatalf("boundary %x outside [%x, %x]", b, fx.Start, fx.Start+cut)
		}
		after, st := decodeAll(wal[b-fx.Start:], b, fx.SegSize, true, 1+rng.IntN(20000))
		if st.Damaged != 0 {
			t.Fatalf("restart at the boundary %x: %+v", b, st)
		}
		merged := append(before, after...)
		merged = slices.CompactFunc(merged, func(a, b pgwal.End) bool { return a == b })
		if !slices.Equal(merged, all) {
			t.Fatalf("cut at %x, restarted at %x: %d ends, want %d", fx.Start+cut, b, len(merged), len(all))
		}
	}
}

func decodeAll(wal []byte, start, segSize uint64, atRecord bool, piece int) ([]pgwal.End, pgwal.Stats) {
	d := pgwal.NewDecoder(start, segSize, atRecord)
	var out []pgwal.End
	for len(wal) > 0 {
		n := min(piece, len(wal))
		out = append(out, d.Write(wal[:n])...)
		wal = wal[n:]
	}
	return out, d.Stats()
}

// TestRealServer has PostgreSQL 15 write WAL with commits, aborts,
// subtransactions, two-phase commits, large rows and segment switches,
// then decodes its segments and finds every commit time the server
// itself recorded (track_commit_timestamp).
func TestRealServer(t *testing.T) {
	bin := "/usr/lib/postgresql/15/bin"
	if _, err := os.Stat(filepath.Join(bin, "postgres")); err != nil {
		testenv.SkipOrFail(t, "PostgreSQL 15 is not installed")
	}
	ctx := t.Context()
	u, err := dbagent.ServerUser("postgres")
	if err != nil {
		testenv.SkipOrFail(t, err.Error())
	}
	dir := dbagenttest.ReachableTempDir(t)
	data, sock := filepath.Join(dir, "data"), filepath.Join(dir, "sock")
	for _, d := range []string{data, sock} {
		if err := u.MakeDir(d, true); err != nil {
			t.Fatal(err)
		}
	}
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, filepath.Join(bin, name), args...)
		u.RunAs(cmd)
		if out, err := cmd.CombinedOutput(); err != nil {
			log, _ := os.ReadFile(filepath.Join(data, "log"))
			t.Fatalf("%s: %v: %s\n%s", name, err, out, log)
		}
	}
	run("initdb", "-D", data, "-A", "trust", "-U", "postgres", "--wal-segsize=1", "--no-sync")
	run("pg_ctl", "-D", data, "-w", "-l", filepath.Join(data, "log"), "start", "-o",
		"-c listen_addresses='' -k "+sock+" -c track_commit_timestamp=on -c max_prepared_transactions=2 -c wal_keep_size=1GB -c fsync=off")
	t.Cleanup(func() {
		cmd := exec.Command(filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
		u.RunAs(cmd)
		_ = cmd.Run()
	})
	conn, err := pgx.Connect(ctx, "host="+sock+" user=postgres dbname=postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	exec1 := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var startLSN string
	exec1("CHECKPOINT")
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&startLSN); err != nil {
		t.Fatal(err)
	}
	exec1("CREATE TABLE t (id serial PRIMARY KEY, v text)")
	aborts := 0
	small := func(i int) {
		switch {
		case i%10 == 3:
			exec1("BEGIN")
			exec1("INSERT INTO t (v) VALUES ('aborted')")
			exec1("ROLLBACK")
			aborts++
		case i%10 == 5:
			exec1("BEGIN")
			exec1("INSERT INTO t (v) VALUES ('outer')")
			exec1("SAVEPOINT s")
			exec1("INSERT INTO t (v) VALUES ('inner')")
			exec1("RELEASE SAVEPOINT s")
			exec1("COMMIT")
		case i%50 == 9:
			exec1("BEGIN")
			exec1("INSERT INTO t (v) VALUES ('prepared')")
			exec1(fmt.Sprintf("PREPARE TRANSACTION 'p%d'", i))
			exec1(fmt.Sprintf("COMMIT PREPARED 'p%d'", i))
		default:
			exec1("INSERT INTO t (v) VALUES ($1)", fmt.Sprint(i))
		}
	}
	// The first segment: small transactions of every kind, then a
	// switch (the fixture is this segment and the next one's start).
	for i := range 200 {
		small(i)
	}
	exec1("SELECT pg_switch_wal()")
	firstAborts := aborts
	for i := range 200 {
		small(i + 200)
		if i%50 == 7 {
			// Records spanning pages, and segments.
			exec1("INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 20000) g")
			exec1("UPDATE t SET v = repeat('x', 3000) WHERE id % 97 = 0")
		}
		if i%100 == 11 {
			exec1("SELECT pg_switch_wal()")
		}
	}
	exec1("SELECT pg_switch_wal()")
	var endLSN string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&endLSN); err != nil {
		t.Fatal(err)
	}
	var commits []time.Time
	rows, err := conn.Query(ctx, "SELECT DISTINCT pg_xact_commit_timestamp(xmin) FROM t")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var ts time.Time
		if err := rows.Scan(&ts); err != nil {
			t.Fatal(err)
		}
		commits = append(commits, ts.UTC())
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(commits, func(a, b time.Time) int { return a.Compare(b) })
	if len(commits) < 250 {
		t.Fatalf("only %d commits", len(commits))
	}

	start, end := parseLSN(t, startLSN), parseLSN(t, endLSN)
	start -= start % fixtureSegSize
	wal := readWAL(t, filepath.Join(data, "pg_wal"), start, end)
	fx := fixture{Start: start, SegSize: fixtureSegSize, Commits: commits, Aborts: aborts}
	checkWAL(t, wal, fx)

	if *update {
		// The fixture, so the test needs no server: the first segment
		// and two pages of the next.
		cut := min(uint64(len(wal)), fixtureSegSize+2*pgwal.PageSize)
		small := fx
		small.Commits = nil
		got, _ := decodeAll(wal[:cut], start, fixtureSegSize, false, 1<<30)
		for _, e := range got {
			if e.Kind == pgwal.Commit && slices.ContainsFunc(commits, e.Time.Equal) && e.EndLSN <= start+cut {
				small.Commits = append(small.Commits, e.Time)
			}
		}
		small.Aborts = firstAborts
		js, err := json.MarshalIndent(small, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", "wal.bin"), wal[:cut], 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", "wal.json"), js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func parseLSN(t *testing.T, s string) uint64 {
	t.Helper()
	var hi, lo uint32
	if _, err := fmt.Sscanf(s, "%X/%X", &hi, &lo); err != nil {
		t.Fatalf("LSN %q: %v", s, err)
	}
	return uint64(hi)<<32 | uint64(lo)
}

// readWAL reads [start, end) of timeline 1 from a pg_wal directory.
func readWAL(t *testing.T, dir string, start, end uint64) []byte {
	t.Helper()
	var out []byte
	for seg := start; seg < end; seg += fixtureSegSize {
		no := seg / fixtureSegSize
		perID := uint64(0x100000000) / fixtureSegSize
		name := fmt.Sprintf("%08X%08X%08X", 1, no/perID, no%perID)
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b[:min(uint64(len(b)), end-seg)]...)
	}
	return out
}

func FuzzDecoder(f *testing.F) {
	if wal, err := os.ReadFile(filepath.Join("testdata", "wal.bin")); err == nil {
		// Small seeds: the fuzzer's minimizer is slow on large inputs.
		f.Add(wal[:min(len(wal), 600)], uint16(70), false)
		f.Add(wal[pgwal.PageSize-200:min(len(wal), pgwal.PageSize+300)], uint16(33), true)
	}
	page := make([]byte, 64)
	binary.LittleEndian.PutUint16(page[2:], 2)
	f.Add(page, uint16(10), false)
	f.Add([]byte(strings.Repeat("\xff", 100)), uint16(7), true)
	f.Fuzz(func(t *testing.T, wal []byte, piece uint16, atRecord bool) {
		const segSize = 1 << 20
		d := pgwal.NewDecoder(0, segSize, atRecord)
		n := max(1, int(piece))
		for len(wal) > 0 {
			k := min(n, len(wal))
			for _, e := range d.Write(wal[:k]) {
				if e.EndLSN <= e.LSN || e.EndLSN > d.Pos() {
					t.Fatalf("end %+v beyond the bytes fed (%d)", e, d.Pos())
				}
			}
			wal = wal[k:]
			if b, ok := d.Boundary(); ok && b > d.Pos() {
				t.Fatalf("boundary %d past the position %d", b, d.Pos())
			}
		}
	})
}
