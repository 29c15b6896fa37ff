package mariadb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/binlog"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbagent/dbagenttest"
)

func TestParseBinaryLogs(t *testing.T) {
	cols := []string{"Log_name", "File_size"}
	for _, tc := range []struct {
		name    string
		columns []string
		rows    [][]string
		want    []dbagent.BinlogFile
		err     error
	}{
		{"two files", cols, [][]string{{"mysql-bin.000001", "863"}, {"mysql-bin.000002", "328"}},
			[]dbagent.BinlogFile{{Name: "mysql-bin.000001", Size: 863}, {Name: "mysql-bin.000002", Size: 328}}, nil},
		{"columns in another order, and more", []string{"File_size", "Encrypted", "Log_name"}, [][]string{{"4", "No", "b.1000000"}},
			[]dbagent.BinlogFile{{Name: "b.1000000", Size: 4}}, nil},
		{"none", cols, nil, []dbagent.BinlogFile{}, nil},
		{"no size column", []string{"Log_name"}, [][]string{{"mysql-bin.000001"}}, nil, cairn.ErrCorrupt},
		{"short row", cols, [][]string{{"mysql-bin.000001"}}, nil, cairn.ErrCorrupt},
		{"bad size", cols, [][]string{{"mysql-bin.000001", "-1"}}, nil, cairn.ErrCorrupt},
		{"path in the name", cols, [][]string{{"../mysql-bin.000001", "4"}}, nil, cairn.ErrCorrupt},
		{"no sequence number", cols, [][]string{{"mysql-bin", "4"}}, nil, cairn.ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseBinaryLogs(tc.columns, tc.rows)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestParseServerTime(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2026-12-06 07:16:53.609519", time.Date(2026, 12, 6, 7, 16, 53, 609519000, time.UTC), true},
		{"2026-12-06 07:16:53", time.Date(2026, 12, 6, 7, 16, 53, 0, time.UTC), true},
		{"2026-12-06T07:16:53", time.Time{}, false},
		{"", time.Time{}, false},
		{"2026-13-06 07:16:53.1", time.Time{}, false},
	} {
		got, err := parseServerTime(tc.in)
		if tc.ok != (err == nil) || tc.ok && (!got.Equal(tc.want) || got.Location() != time.UTC) {
			t.Errorf("parseServerTime(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if !tc.ok && !errors.Is(err, cairn.ErrCorrupt) {
			t.Errorf("parseServerTime(%q): %v, want ErrCorrupt", tc.in, err)
		}
	}
}

func TestSplitBinlogName(t *testing.T) {
	for _, tc := range []struct {
		name string
		base string
		seq  uint64
		ok   bool
	}{
		{"mysql-bin.000012", "mysql-bin", 12, true},
		{"mysql-bin.1000000", "mysql-bin", 1000000, true},
		{"a.b.000001", "a.b", 1, true},
		{"mysql-bin.00012", "", 0, false},
		{"mysql-bin", "", 0, false},
		{"", "", 0, false},
		{"dir/mysql-bin.000001", "", 0, false},
		{"mysql-bin.000001\n", "", 0, false},
		{"mysql-bin.99999999999999999999999", "", 0, false},
	} {
		base, seq, err := splitBinlogName(tc.name)
		if tc.ok != (err == nil) || base != tc.base || seq != tc.seq {
			t.Errorf("splitBinlogName(%q) = %q, %d, %v", tc.name, base, seq, err)
		}
		if !tc.ok && !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("splitBinlogName(%q): %v, want ErrInvalid", tc.name, err)
		}
	}
}

func FuzzParseBinaryLogs(f *testing.F) {
	f.Add("mysql-bin.000001", "863", "mysql-bin.000002", "4")
	f.Fuzz(func(t *testing.T, n1, s1, n2, s2 string) {
		files, err := parseBinaryLogs([]string{"Log_name", "File_size"}, [][]string{{n1, s1}, {n2, s2}})
		if err != nil {
			return
		}
		for _, f := range files {
			if _, _, err := splitBinlogName(f.Name); err != nil {
				t.Fatalf("accepted %q", f.Name)
			}
		}
	})
}

// tailed collects what a spoolTailer hands on.
type tailed struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced at every message
	files   []string
	data    map[string][]byte
}

func newTailed() *tailed {
	return &tailed{changed: make(chan struct{}), data: map[string][]byte{}}
}

func (c *tailed) emit(m dbagent.BinlogMessage) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer func() { close(c.changed); c.changed = make(chan struct{}) }()
	if len(c.files) == 0 || c.files[len(c.files)-1] != m.File {
		c.files = append(c.files, m.File)
	}
	if m.Start != uint64(len(c.data[m.File])) {
		return fmt.Errorf("bytes of %s from %d, want %d", m.File, m.Start, len(c.data[m.File]))
	}
	c.data[m.File] = append(c.data[m.File], m.Data...)
	return nil
}

// waitFor waits until cond, called under the lock, holds after some
// message, or the tailer ends.
func (c *tailed) waitFor(t *testing.T, ended <-chan struct{}, what string, cond func() bool) {
	t.Helper()
	for {
		c.mu.Lock()
		ok, changed := cond(), c.changed
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-ended:
			t.Fatalf("the tailer ended before %s", what)
		}
	}
}

// TestSpoolTailer plays mariadb-binlog's part: it writes spool files
// and the tailer hands on each file's bytes in order, moves on once the
// next file exists, reading the finished one to its end, and removes
// what it has handed on.
func TestSpoolTailer(t *testing.T) {
	dir := t.TempDir()
	c := newTailed()
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	var g errgroup.Group
	ended := make(chan struct{})
	g.Go(func() error {
		defer close(ended)
		tl := spoolTailer{dir: dir, base: "mysql-bin", poll: time.Millisecond, emit: c.emit}
		return tl.run(ctx, "mysql-bin.000009")
	})
	appendTo := func(name, s string) {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	has := func(name, s string) func() bool { return func() bool { return string(c.data[name]) == s } }
	// An unrelated file and an older one are left alone.
	appendTo("other.000010", "x")
	appendTo("mysql-bin.000008", "old")
	appendTo("mysql-bin.000009", "\xfebin")
	c.waitFor(t, ended, "the first bytes", has("mysql-bin.000009", "\xfebin"))
	appendTo("mysql-bin.000009", "-one")
	c.waitFor(t, ended, "more bytes", has("mysql-bin.000009", "\xfebin-one"))
	// The tool writes the file's last bytes, closes it, and opens the
	// next (with a sequence number of 7 digits).
	appendTo("mysql-bin.000009", "-end")
	appendTo("mysql-bin.0000010", "\xfebin-two")
	c.waitFor(t, ended, "the next file", has("mysql-bin.0000010", "\xfebin-two"))
	c.mu.Lock()
	first := string(c.data["mysql-bin.000009"])
	files := fmt.Sprint(c.files)
	c.mu.Unlock()
	if first != "\xfebin-one-end" || files != "[mysql-bin.000009 mysql-bin.0000010]" {
		t.Fatalf("handed on %q of the first file, files %s", first, files)
	}
	if _, err := os.Stat(filepath.Join(dir, "mysql-bin.000009")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the finished file is still in the spool: %v", err)
	}
	for _, name := range []string{"other.000010", "mysql-bin.000008", "mysql-bin.0000010"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	stop()
	if err := g.Wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("tailer after cancel: %v", err)
	}
}

// streamed collects a binary log stream: each file's bytes, checked to
// come whole and in order, decoded as they come.
type streamed struct {
	mu       sync.Mutex
	changed  chan struct{} // closed and replaced at every message
	files    []string      // in the order their bytes came
	data     map[string][]byte
	decoders map[string]*binlog.Decoder
	pending  uint64 // the sequence number of the transaction being read
	commited uint64 // the sequence number of the last commit read
	commits  int
	statuses []dbagent.BinlogMessage
}

func newStreamed() *streamed {
	return &streamed{changed: make(chan struct{}), data: map[string][]byte{}, decoders: map[string]*binlog.Decoder{}}
}

func (s *streamed) add(m dbagent.BinlogMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() { close(s.changed); s.changed = make(chan struct{}) }()
	if len(m.Data) == 0 {
		if m.File != "" || m.Start != 0 {
			return fmt.Errorf("a status with file %q start %d", m.File, m.Start)
		}
		s.statuses = append(s.statuses, m)
		return nil
	}
	if len(s.files) == 0 || s.files[len(s.files)-1] != m.File {
		if len(s.files) > 0 {
			_, prev, _ := splitBinlogName(s.files[len(s.files)-1])
			_, seq, err := splitBinlogName(m.File)
			if err != nil || seq != prev+1 {
				return fmt.Errorf("bytes of %s after %s", m.File, s.files[len(s.files)-1])
			}
		}
		s.files = append(s.files, m.File)
		s.decoders[m.File] = binlog.NewDecoder()
	}
	if m.Start != uint64(len(s.data[m.File])) {
		return fmt.Errorf("bytes of %s from %d, want %d", m.File, m.Start, len(s.data[m.File]))
	}
	s.data[m.File] = append(s.data[m.File], m.Data...)
	events, err := s.decoders[m.File].Write(m.Data)
	if err != nil {
		return fmt.Errorf("decoding %s: %w", m.File, err)
	}
	for _, e := range events {
		if e.GTID != nil {
			s.pending = e.GTID.Seq
		}
		if e.Commit {
			s.commits++
			s.commited = s.pending
		}
	}
	return nil
}

// waitFor waits until cond, called under the lock, holds after some
// message, or the stream ends.
func (s *streamed) waitFor(t *testing.T, done <-chan error, what string, cond func() bool) {
	t.Helper()
	for {
		s.mu.Lock()
		ok, changed := cond(), s.changed
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case err := <-done:
			t.Fatalf("the stream ended before %s: %v", what, err)
		}
	}
}

// gtidSeq returns the server's domain 0 sequence number.
func gtidSeq(t *testing.T, ctx context.Context, q querier) uint64 {
	t.Helper()
	var pos string
	if err := q.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
		t.Fatal(err)
	}
	return seqOf(pos)
}

// testStreamBinlog streams a server's binary log from its first file
// while rows are committed and the log rotates: every commit shows in
// the decoded stream, a finished file's bytes are the server's file,
// the stream follows a rotation from the new file's first byte, statuses
// catch up with SHOW MASTER STATUS, and cancelling ends the stream and
// removes its spool. A file the server has not, or no longer, is gone.
func testStreamBinlog(t *testing.T, env *dbagenttest.Env) {
	ctx := t.Context()
	src := env.Source(t, false)
	bs := src.Inst.(dbagent.BinlogSource)
	cfg := src.Inst.Config()
	st, err := bs.BinlogState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := st.Files[0].Name
	nop := func(dbagent.BinlogMessage) error { return nil }
	for _, name := range []string{"", "mysql-bin", "../mysql-bin.000001", "-mysql-bin.000001"} {
		if err := bs.StreamBinlog(ctx, dbagent.BinlogStreamRequest{File: name}, nop); !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("stream of %q: %v, want ErrInvalid", name, err)
		}
	}
	if err := bs.StreamBinlog(ctx, dbagent.BinlogStreamRequest{File: "mysql-bin.999999"}, nop); !errors.Is(err, cairn.ErrGone) {
		t.Errorf("stream of a file the server has not: %v, want ErrGone", err)
	}

	s := newStreamed()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- bs.StreamBinlog(sctx, dbagent.BinlogStreamRequest{File: first, StatusInterval: 20 * time.Millisecond}, s.add)
	}()
	insert := func(from, n int) uint64 {
		t.Helper()
		for id := from; id < from+n; id++ {
			if _, err := src.DB.ExecContext(ctx, "INSERT INTO writes (id, payload) VALUES (?, ?)", id, fmt.Sprint("binlog-", id)); err != nil {
				t.Fatal(err)
			}
		}
		return gtidSeq(t, ctx, src.DB)
	}
	target := insert(1, 20)
	s.waitFor(t, done, "the first commits", func() bool { return s.commited >= target })

	if _, err := src.DB.ExecContext(ctx, "FLUSH BINARY LOGS"); err != nil {
		t.Fatal(err)
	}
	target = insert(100, 5)
	files := len(st.Files) + 1
	s.waitFor(t, done, "the commits after the rotation", func() bool { return s.commited >= target && len(s.files) == files })
	s.mu.Lock()
	names := slices.Clone(s.files)
	data := maps.Clone(s.data)
	commits := s.commits
	s.mu.Unlock()
	finished, current := names[len(names)-2], names[len(names)-1]
	if names[0] != first || !bytes.HasPrefix(data[current], binlog.Magic[:]) {
		t.Fatalf("files %s, the last beginning %x", names, data[current][:min(4, len(data[current]))])
	}
	// Every file but the last is finished: its bytes are the server's.
	for _, name := range names[:len(names)-1] {
		want, err := os.ReadFile(filepath.Join(cfg.DataDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data[name], want) {
			t.Fatalf("streamed %d bytes of %s, the server's file has %d, or they differ", len(data[name]), name, len(want))
		}
		if _, err := os.Stat(filepath.Join(cfg.RunDir, binlogSpoolDir, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the finished file %s is still in the spool: %v", name, err)
		}
	}
	t.Logf("streamed %s, %d commits; %s rotated to %s", names, commits, finished, current)

	// The server is idle: a status soon says where SHOW MASTER STATUS does.
	file, pos, err := masterStatus(ctx, src.DB)
	if err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, done, "a status at "+file, func() bool {
		for _, m := range s.statuses {
			if m.ServerFile == file && m.ServerPos == pos {
				return true
			}
		}
		return false
	})
	s.mu.Lock()
	last := s.statuses[len(s.statuses)-1]
	s.mu.Unlock()
	if last.ServerTime.IsZero() || last.ServerTime.Location() != time.UTC {
		t.Errorf("status time %v", last.ServerTime)
	}

	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("stream after cancel: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.RunDir, binlogSpoolDir)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the spool outlived the stream: %v", err)
	}

	// fn's error ends the stream and is returned.
	errStop := errors.New("enough")
	if err := bs.StreamBinlog(ctx, dbagent.BinlogStreamRequest{File: current}, func(m dbagent.BinlogMessage) error {
		if len(m.Data) > 0 {
			return errStop
		}
		return nil
	}); err != errStop {
		t.Errorf("stream whose fn fails: %v, want fn's error", err)
	}

	if _, err := src.DB.ExecContext(ctx, "PURGE BINARY LOGS TO '"+current+"'"); err != nil {
		t.Fatal(err)
	}
	if err := bs.StreamBinlog(ctx, dbagent.BinlogStreamRequest{File: first}, nop); !errors.Is(err, cairn.ErrGone) {
		t.Errorf("stream of a purged file: %v, want ErrGone", err)
	}
}

// testBinlogState: the server's files, position, GTID position and clock.
func testBinlogState(t *testing.T, env *dbagenttest.Env) {
	ctx := t.Context()
	src := env.Source(t, false)
	bs := src.Inst.(dbagent.BinlogSource)
	before := time.Now()
	st, err := bs.BinlogState(ctx)
	after := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if st.ServerID != "1" {
		t.Errorf("server id %q", st.ServerID)
	}
	if st.Time.Before(before.Truncate(time.Microsecond)) || st.Time.After(after) || st.Time.Location() != time.UTC {
		t.Errorf("server time %v, asked between %v and %v", st.Time, before, after)
	}
	var gtid string
	if err := src.DB.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&gtid); err != nil {
		t.Fatal(err)
	}
	if st.GTIDBinlogPos != gtid || gtid == "" {
		t.Errorf("GTID position %q, the server says %q", st.GTIDBinlogPos, gtid)
	}
	if len(st.Files) == 0 || st.Files[len(st.Files)-1].Name != st.File || st.Files[len(st.Files)-1].Size != st.Pos {
		t.Fatalf("files %+v, writing at %s:%d", st.Files, st.File, st.Pos)
	}
	if _, err := src.DB.ExecContext(ctx, "FLUSH BINARY LOGS"); err != nil {
		t.Fatal(err)
	}
	st2, err := bs.BinlogState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st2.Files) != len(st.Files)+1 || st2.File == st.File || st2.Files[len(st2.Files)-1].Name != st2.File {
		t.Fatalf("after a rotation: files %+v, writing in %s; before %+v", st2.Files, st2.File, st.Files)
	}
	for _, f := range st2.Files[:len(st2.Files)-1] {
		fi, err := os.Stat(filepath.Join(src.Inst.Config().DataDir, f.Name))
		if err != nil {
			t.Fatal(err)
		}
		if uint64(fi.Size()) != f.Size {
			t.Errorf("%s: %d bytes, the server says %d", f.Name, fi.Size(), f.Size)
		}
	}
	if !st2.Time.After(st.Time) && !st2.Time.Equal(st.Time) {
		t.Errorf("the server's clock went back from %v to %v", st.Time, st2.Time)
	}
}
