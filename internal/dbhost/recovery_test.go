package dbhost

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// pitrCase is a recovery to a point in time: the spec of instance
// "pitr", restored from a snapshot of instance "src" with src's WAL
// replayed to a time between two groups of commits, and that WAL as a
// provisioning stream.
type pitrCase struct {
	r      *rig
	spec   Spec
	stream []byte
}

// newPITRCase makes src, its snapshot, the two groups of commits and
// the stream.
func newPITRCase(t *testing.T) *pitrCase {
	r := newRig(t, datastores()[0])
	ctx := t.Context()
	st, err := r.host.Provision(ctx, r.spec("src"), nil)
	if err != nil {
		t.Fatal(err)
	}
	r.fill(st, 100)
	snap, err := r.host.Snapshot(ctx, "src", SnapshotOptions{Name: "b", Label: "b"})
	if err != nil {
		t.Fatal(err)
	}
	r.volsMu.Lock()
	r.vols[snap.Snapshot] = "pitr"
	r.volsMu.Unlock()
	db := r.connect(st)
	insert := func(from, n int) {
		for i := from; i < from+n; i++ {
			if _, err := db.ExecContext(ctx, "INSERT INTO t (id, v) VALUES ($1, 'pitr')", i); err != nil {
				t.Fatal(err)
			}
		}
	}
	insert(1000, 10)
	var target time.Time
	if err := db.QueryRowContext(ctx, "SELECT clock_timestamp()").Scan(&target); err != nil {
		t.Fatal(err)
	}
	insert(2000, 10)
	if _, err := db.ExecContext(ctx, "SELECT pg_switch_wal()"); err != nil {
		if !strings.Contains(err.Error(), "permission denied") {
			t.Fatal(err)
		}
	}
	// The source's WAL from the backup's segment on, as the archive
	// would hand it over (the superuser switches the segment: the app's
	// user may not).
	src := r.host.get("src")
	wal := filepath.Join(r.host.config(&src.rec).DataDir, "pg_wal")
	seg := regexp.MustCompile(`^[0-9A-F]{24}$`)
	entries, err := os.ReadDir(wal)
	if err != nil {
		t.Fatal(err)
	}
	p := snap.Record.PostgreSQL
	first := walFileNameOf(p.Timeline, uint64(p.StartLSN), uint64(p.WALSegmentSize))
	var names []string
	for _, e := range entries {
		if seg.MatchString(e.Name()) && e.Name() >= first {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	var stream bytes.Buffer
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(wal, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteWALFile(&stream, n, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteWALEnd(&stream); err != nil {
		t.Fatal(err)
	}

	eds := r.eng.Datastore()
	spec := Spec{ID: "pitr", Datastore: eds.Type, Version: eds.Version, Volume: snap.Snapshot,
		Source: SourceSnapshot, Record: &snap.Record, Overlay: snap.Overlay, Recovery: &Recovery{Time: target, Timeline: 1}}
	return &pitrCase{r: r, spec: spec, stream: stream.Bytes()}
}

// check checks the recovered instance: the first group in, the second
// not, writes taken, the WAL files gone.
func (c *pitrCase) check(t *testing.T, rst State) {
	t.Helper()
	r, ctx := c.r, t.Context()
	r.ev.wait(t, "pitr", "recovered", 1)
	rdb := r.connect(rst)
	var first1, second int
	if err := rdb.QueryRowContext(ctx, "SELECT count(*) FILTER (WHERE id BETWEEN 1000 AND 1009), count(*) FILTER (WHERE id >= 2000) FROM t").Scan(&first1, &second); err != nil {
		t.Fatal(err)
	}
	if first1 != 10 || second != 0 {
		t.Fatalf("after the recovery: %d rows of the first group, %d of the second; want 10 and 0", first1, second)
	}
	if r.count(rst) != 110 {
		t.Fatalf("%d rows, want 110", r.count(rst))
	}
	if _, err := rdb.ExecContext(ctx, "INSERT INTO t (id, v) VALUES (5000, 'after')"); err != nil {
		t.Fatalf("the recovered server takes no write: %v", err)
	}
	if _, err := os.Stat(r.host.spoolDir("pitr")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the recovery's WAL files are left: %v", err)
	}
}

// TestPointInTimeRestore: a snapshot of one instance, restored into a
// new one with the source's WAL replayed to a time between two groups of
// commits, comes up ready with the first group and not the second, its
// WAL files gone; a recovery asked for wrongly is refused.
func TestPointInTimeRestore(t *testing.T) {
	c := newPITRCase(t)
	r, spec, ctx := c.r, c.spec, t.Context()
	for _, bad := range []Spec{
		func() Spec { s := spec; s.Recovery = &Recovery{Time: spec.Recovery.Time}; return s }(),
		func() Spec { s := r.spec("init"); s.Recovery = &Recovery{Timeline: 1}; return s }(),
	} {
		if err := bad.Validate(); !errors.Is(err, cairn.ErrInvalid) {
			t.Fatalf("spec %+v: %v, want invalid", bad.Recovery, err)
		}
	}
	if _, err := r.host.Provision(ctx, spec, nil); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("a recovery without its WAL: %v, want invalid", err)
	}
	rst, err := r.host.Provision(ctx, spec, bytes.NewReader(c.stream))
	if err != nil {
		t.Fatalf("Provision with recovery: %v", err)
	}
	c.check(t, rst)
}

// TestPointInTimeRestoreStreamsWAL: the server starts before its WAL
// has come and replays it as it comes; a stream cut short fails the
// recovery, with the server stopped and nothing promoted, and the
// recovery resumed with the whole stream ends exactly at its target.
func TestPointInTimeRestoreStreamsWAL(t *testing.T) {
	c := newPITRCase(t)
	r, ctx := c.r, t.Context()

	// Cut short: the first file half sent, after the server started.
	errCut := errors.New("the stream was cut")
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := r.host.Provision(ctx, c.spec, pr)
		pr.CloseWithError(errors.New("the reader is done"))
		done <- err
	}()
	r.ev.wait(t, "pitr", "started", 1)
	waitForRestoreCommand(t, r.host.spoolDir("pitr"), func() bool { return r.ev.count("pitr", "exited") > 0 })
	if _, err := pw.Write(c.stream[:len(c.stream)/2]); err != nil {
		t.Fatal(err)
	}
	pw.CloseWithError(errCut)
	if err := <-done; !errors.Is(err, errCut) || !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("a recovery whose stream was cut: %v, want the cut, invalid", err)
	}
	r.ev.wait(t, "pitr", "stopped", 1)
	if r.ev.count("pitr", "recovered") != 0 {
		t.Fatal("a recovery whose stream was cut says it recovered")
	}
	if _, err := os.Stat(filepath.Join(r.host.spoolDir("pitr"), dbagent.LogsFailed)); err != nil {
		t.Fatalf("the cut stream is not marked failed for the server: %v", err)
	}

	// Resumed: the server is started again before any WAL comes, and
	// waits for it: it is started once (a server that took the missing
	// WAL for the archive's end would fail its start, and its
	// supervisor would start it again).
	starts, exits := r.ev.count("pitr", "started"), r.ev.count("pitr", "exited")
	pr, pw = io.Pipe()
	type result struct {
		st  State
		err error
	}
	res := make(chan result, 1)
	go func() {
		st, err := r.host.Provision(ctx, c.spec, pr)
		pr.CloseWithError(errors.New("the reader is done"))
		res <- result{st, err}
	}()
	r.ev.wait(t, "pitr", "started", starts+1)
	waitForRestoreCommand(t, r.host.spoolDir("pitr"), func() bool { return r.ev.count("pitr", "exited") > exits })
	if _, err := pw.Write(c.stream); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	got := <-res
	if got.err != nil {
		t.Fatalf("the resumed recovery: %v", got.err)
	}
	c.check(t, got.st)
	if n := r.ev.count("pitr", "started") - starts; n != 1 {
		t.Fatalf("the resumed recovery started its server %d times, want once", n)
	}

	// A spool left (a recovery that failed for good) goes with the
	// instance.
	left := filepath.Join(r.host.spoolDir("pitr"), "000000010000000000000009")
	if err := os.MkdirAll(filepath.Dir(left), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(left, []byte("wal"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.host.Remove(ctx, "pitr"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(r.host.spoolDir("pitr")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the removed instance's spool is left: %v", err)
	}
}

// waitForRestoreCommand waits until a server's restore_command for
// recovery directory dir runs (a shell whose command line names dir):
// the server is then waiting for a WAL file not there yet. It fails
// when exited says the server exited first.
func waitForRestoreCommand(t *testing.T, dir string, exited func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			b, err := os.ReadFile(p)
			if err == nil && bytes.Contains(b, []byte(`d="`+dir+`"`)) {
				return
			}
		}
		if exited() {
			t.Fatal("the server exited before it waited for its WAL")
		}
		select {
		case <-t.Context().Done():
			t.Fatal("the server never ran its restore_command")
		case <-tick.C:
		}
	}
}

func walFileNameOf(tli uint32, lsn, segSize uint64) string {
	perID := uint64(0x100000000) / segSize
	no := lsn / segSize
	return strings.ToUpper(strings.Join([]string{hex8(uint64(tli)), hex8(no / perID), hex8(no % perID)}, ""))
}

func hex8(v uint64) string {
	const digits = "0123456789ABCDEF"
	b := make([]byte, 8)
	for i := 7; i >= 0; i-- {
		b[i] = digits[v&15]
		v >>= 4
	}
	return string(b)
}

func TestReadWALFiles(t *testing.T) {
	var ok bytes.Buffer
	for _, f := range []struct{ name, data string }{{"000000010000000000000003", "seg"}, {"00000002.history", "1\t0/3000000\tx\n"}} {
		if err := WriteWALFile(&ok, f.name, []byte(f.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteWALEnd(&ok); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if n, err := ReadWALFiles(bytes.NewReader(ok.Bytes()), dir); err != nil || n != 2 {
		t.Fatalf("read %d files: %v", n, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "00000002.history")); string(b) != "1\t0/3000000\tx\n" {
		t.Fatalf("history %q", b)
	}
	for _, bad := range []string{"../../etc/passwd", "000000010000000000000003.partial", "x", ""} {
		if err := WriteWALFile(io.Discard, bad, nil); !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("writing %q: %v", bad, err)
		}
	}
	for cut := 0; cut < ok.Len(); cut++ {
		if _, err := ReadWALFiles(bytes.NewReader(ok.Bytes()[:cut]), t.TempDir()); !errors.Is(err, cairn.ErrInvalid) {
			t.Fatalf("stream cut at %d: %v", cut, err)
		}
	}
	evil := append([]byte{16}, "../../etc/passwd"...)
	if _, err := ReadWALFiles(bytes.NewReader(append(evil, 0)), dir); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("a path for a name: %v", err)
	}
}

// TestLogFileNames: the framed files of a recovery are named as a server
// names its log files, WAL or binary log, and never as a path.
func TestLogFileNames(t *testing.T) {
	long := strings.Repeat("a", 200)
	for _, tc := range []struct {
		name        string
		wal, binlog bool
	}{
		{"000000010000000000000003", true, false},
		{"00000002.history", true, false},
		{"mysql-bin.000001", false, true},
		{"mysql-bin.1234567", false, true},
		{"host_1-relay.log.000042", false, true},
		{long + ".000001", false, true},
		{long + "a.000001", false, false},                        // a base name of 201 bytes
		{"b." + strings.Repeat("1", maxLogName-2), false, true},  // NAME_MAX
		{"b." + strings.Repeat("1", maxLogName-1), false, false}, // one more
		{"../x.000001", false, false},
		{"x/y.000001", false, false},
		{"/x.000001", false, false},
		{"mysql-bin.00001", false, false}, // 5 digits
		{"mysql-bin.index", false, false},
		{"mysql-bin.000001.tmp", false, false},
		{".", false, false},
		{"..", false, false},
		{".000001", false, false},
		{"mysql bin.000001", false, false},
		{"mysql-bin.000001\n", false, false},
		{"000000010000000000000003.partial", false, false},
		{"0000000100000000000000a3", false, false},
		{"", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := walFileName(tc.name); got != tc.wal {
				t.Errorf("walFileName: %v, want %v", got, tc.wal)
			}
			if got := binlogFileName(tc.name); got != tc.binlog {
				t.Errorf("binlogFileName: %v, want %v", got, tc.binlog)
			}
			err := WriteWALFile(io.Discard, tc.name, nil)
			if ok := tc.wal || tc.binlog; (err == nil) != ok || (err != nil && !errors.Is(err, cairn.ErrInvalid)) {
				t.Errorf("WriteWALFile: %v, want ok=%v", err, ok)
			}
		})
	}
}

// TestReadLogFilesOfAKind: a recovery's stream holds the files of its
// datastore's log only.
func TestReadLogFilesOfAKind(t *testing.T) {
	var mixed bytes.Buffer
	for _, name := range []string{"mysql-bin.000003", "mysql-bin.000004", "000000010000000000000003"} {
		if err := WriteWALFile(&mixed, name, []byte(name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteWALEnd(&mixed); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if n, err := ReadWALFiles(bytes.NewReader(mixed.Bytes()), dir); err != nil || n != 3 {
		t.Fatalf("read %d files: %v", n, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "mysql-bin.000004")); err != nil || string(b) != "mysql-bin.000004" {
		t.Fatalf("mysql-bin.000004: %q %v", b, err)
	}
	for _, valid := range []func(string) bool{walFileName, binlogFileName} {
		if _, err := readLogFiles(bytes.NewReader(mixed.Bytes()), t.TempDir(), valid, nil); !errors.Is(err, cairn.ErrInvalid) {
			t.Fatalf("files of both kinds read as one: %v", err)
		}
	}
	// A name longer than any file's is refused before it is read.
	long := binary.AppendUvarint(nil, maxLogName+1)
	if _, err := ReadWALFiles(bytes.NewReader(append(long, strings.Repeat("1", maxLogName+1)...)), t.TempDir()); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("a name of %d bytes: %v", maxLogName+1, err)
	}
}

func FuzzReadWALFiles(f *testing.F) {
	var ok bytes.Buffer
	_ = WriteWALFile(&ok, "000000010000000000000003", []byte("segment"))
	_ = WriteWALEnd(&ok)
	f.Add(ok.Bytes())
	var binlogs bytes.Buffer
	_ = WriteWALFile(&binlogs, "mysql-bin.000003", []byte("\xfebin"))
	_ = WriteWALEnd(&binlogs)
	f.Add(binlogs.Bytes())
	f.Add([]byte{0})
	f.Add([]byte{24, '0', '0'})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		n, err := ReadWALFiles(bytes.NewReader(data), dir)
		if err != nil {
			if !errors.Is(err, cairn.ErrInvalid) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) > n {
			t.Fatalf("%d files in the directory for %d read", len(entries), n)
		}
		for _, e := range entries {
			if !logFileName(e.Name()) {
				t.Fatalf("wrote %q", e.Name())
			}
		}
	})
}
