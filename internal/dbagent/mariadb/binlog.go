package mariadb

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// The binary log is archived with MariaDB's own client: mariadb-binlog
// --read-from-remote-server --raw --stop-never connects like a replica
// (a binlog dump over the unix socket, as the agent's account), writes
// every file it receives, event by event, to a file of the same name in
// a spool directory, and opens the next file when the server rotates.
// A tailer reads the spool files in order and hands their bytes on; a
// file is finished once the tool has created the next one (it closes a
// file before it opens the next).

var _ dbagent.BinlogSource = (*Instance)(nil)

// binlogSpoolDir is the spool's directory under the run directory. One
// StreamBinlog at a time uses it: each clears it when it starts.
const binlogSpoolDir = "binlog-spool"

// binlogSpoolPoll is how often the tailer looks for more bytes or the
// next file when it has found none.
const binlogSpoolPoll = 50 * time.Millisecond

// binlogChunk bounds the bytes of one message.
const binlogChunk = 256 << 10

// querier is what both a pool and a held connection answer.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// queryStrings runs a statement whose result is read by column name
// (SHOW statements, whose columns vary between versions) and returns
// its column names and rows, NULL as "".
func queryStrings(ctx context.Context, q querier, stmt string) ([]string, [][]string, error) {
	rows, err := q.QueryContext(ctx, stmt)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	columns, err := rows.Columns()
	if err != nil {
		return nil, nil, err
	}
	var out [][]string
	raw := make([]sql.NullString, len(columns))
	ptrs := make([]any, len(columns))
	for k := range raw {
		ptrs[k] = &raw[k]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, nil, err
		}
		values := make([]string, len(raw))
		for k, v := range raw {
			values[k] = v.String
		}
		out = append(out, values)
	}
	return columns, out, rows.Err()
}

// masterStatus reads where the server writes its binary log next.
func masterStatus(ctx context.Context, q querier) (string, uint64, error) {
	columns, rows, err := queryStrings(ctx, q, "SHOW MASTER STATUS")
	if err != nil {
		return "", 0, fmt.Errorf("SHOW MASTER STATUS: %w", err)
	}
	if len(rows) == 0 {
		return "", 0, fmt.Errorf("SHOW MASTER STATUS: no row (is the binary log off?): %w", cairn.ErrUnsupported)
	}
	return parseMasterStatus(columns, rows[0])
}

// binaryLogs lists the server's binary log files, oldest first.
func binaryLogs(ctx context.Context, q querier) ([]dbagent.BinlogFile, error) {
	columns, rows, err := queryStrings(ctx, q, "SHOW BINARY LOGS")
	if err != nil {
		return nil, fmt.Errorf("SHOW BINARY LOGS: %w", err)
	}
	return parseBinaryLogs(columns, rows)
}

// serverTime reads the server's clock, in UTC whatever the session's
// time zone.
func serverTime(ctx context.Context, q querier) (time.Time, error) {
	var s string
	if err := q.QueryRowContext(ctx, "SELECT UTC_TIMESTAMP(6)").Scan(&s); err != nil {
		return time.Time{}, fmt.Errorf("the server's clock: %w", err)
	}
	return parseServerTime(s)
}

// BinlogState implements dbagent.BinlogSource, on one connection. The
// clock is read first, so everything committed by Time lies before Pos
// in File.
func (i *Instance) BinlogState(ctx context.Context) (dbagent.BinlogState, error) {
	db := i.openDB("")
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return dbagent.BinlogState{}, fmt.Errorf("binary log state: %w", err)
	}
	defer conn.Close()
	var st dbagent.BinlogState
	if st.Time, err = serverTime(ctx, conn); err != nil {
		return st, fmt.Errorf("binary log state: %w", err)
	}
	if st.File, st.Pos, err = masterStatus(ctx, conn); err != nil {
		return st, fmt.Errorf("binary log state: %w", err)
	}
	if st.Files, err = binaryLogs(ctx, conn); err != nil {
		return st, fmt.Errorf("binary log state: %w", err)
	}
	if err := conn.QueryRowContext(ctx, "SELECT @@server_id, @@gtid_binlog_pos").Scan(&st.ServerID, &st.GTIDBinlogPos); err != nil {
		return st, fmt.Errorf("binary log state: %w", err)
	}
	if _, err := parseGTIDList(st.GTIDBinlogPos); err != nil {
		return st, fmt.Errorf("binary log state: @@gtid_binlog_pos: %w", err)
	}
	if st.Generation, err = readGeneration(i.cfg.DataDir); err != nil {
		return st, fmt.Errorf("binary log state: %w", err)
	}
	return st, nil
}

// StreamBinlog implements dbagent.BinlogSource: mariadb-binlog, run and
// killed by this call, writes the files to a fresh spool directory in the
// run directory, which a tailer hands on and empties as it goes; another
// goroutine hands on a status every req.StatusInterval. fn is called by
// one goroutine at a time. The spool holds the files the tool received
// that fn has not yet taken in full: about two while fn keeps up.
func (i *Instance) StreamBinlog(ctx context.Context, req dbagent.BinlogStreamRequest, fn func(dbagent.BinlogMessage) error) error {
	base, _, err := splitBinlogName(req.File)
	if err != nil {
		return fmt.Errorf("binary log stream: %w", err)
	}
	if strings.HasPrefix(req.File, "-") {
		// It would reach the tool's command line as an option.
		return fmt.Errorf("binary log stream: file name %q: %w", req.File, cairn.ErrInvalid)
	}
	interval := req.StatusInterval
	if interval <= 0 {
		interval = time.Second
	}
	db := i.openDB("")
	defer db.Close()
	db.SetMaxOpenConns(1)
	files, err := binaryLogs(ctx, db)
	if err != nil {
		return fmt.Errorf("binary log stream: %w", err)
	}
	if !hasBinlogFile(files, req.File) {
		return fmt.Errorf("binary log stream: the server has no file %s (it has %s): %w", req.File, describeFiles(files), cairn.ErrGone)
	}

	spool := filepath.Join(i.cfg.RunDir, binlogSpoolDir)
	// A stream that ended without cleaning up (the agent was killed)
	// leaves files the new tool would write over only in part.
	if err := os.RemoveAll(spool); err != nil {
		return fmt.Errorf("binary log stream: clearing the spool: %w", err)
	}
	if err := os.Mkdir(spool, 0o700); err != nil {
		return fmt.Errorf("binary log stream: %w", err)
	}
	defer os.RemoveAll(spool)

	g, gctx := errgroup.WithContext(ctx)
	// The tool runs as the agent's OS user: the unix_socket plugin
	// authenticates the agent's account by it.
	cmd := i.e.tool(gctx, "mariadb-binlog", "--read-from-remote-server", "--raw", "--stop-never",
		"--socket="+i.socket(), "--user="+i.e.admin, "--result-file="+spool+"/", req.File)
	cmd.Dir = dbagent.ToolDir
	stderr := &dbagent.TailBuffer{Max: 64 << 10}
	cmd.Stderr = stderr
	cmd.WaitDelay = 10 * time.Second
	// The tool dies with the process that streams: one left behind by a
	// killed data plane would hold the server's replication session (a
	// server_id of its own) until the next stream's connection ended
	// it. Linux sends the signal when the OS thread that started the
	// tool ends, which the Go runtime does only for a goroutine that
	// exits locked to its thread (none here), or with the process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("binary log stream: %w", err)
	}

	var fnMu sync.Mutex
	emit := func(m dbagent.BinlogMessage) error {
		fnMu.Lock()
		defer fnMu.Unlock()
		return fn(m)
	}
	g.Go(func() error {
		err := cmd.Wait()
		if gctx.Err() != nil {
			// Killed by this call: the context's cause is the error.
			return gctx.Err()
		}
		return toolEnded(cmd, err, stderr.String())
	})
	g.Go(func() error {
		t := spoolTailer{dir: spool, base: base, poll: binlogSpoolPoll, emit: emit}
		return t.run(gctx, req.File)
	})
	g.Go(func() error {
		return sendStatuses(gctx, db, interval, emit)
	})
	err = g.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// toolEnded describes mariadb-binlog ending on its own, which with
// --stop-never it does only when the server's stream breaks. A file the
// server no longer has (purged between the check and the dump) is
// cairn.ErrGone.
func toolEnded(cmd *exec.Cmd, err error, stderr string) error {
	if err == nil {
		err = errors.New("exited without an error")
	}
	err = fmt.Errorf("binary log stream: %w", dbagent.ToolError(cmd, err, stderr))
	if strings.Contains(stderr, "Could not find first log file name in binary log index file") {
		return fmt.Errorf("%w: %w", err, cairn.ErrGone)
	}
	return err
}

// sendStatuses hands emit a status now and every interval until ctx
// ends. The clock is read before the position, so the archive holding
// the log up to ServerPos holds everything committed by ServerTime.
func sendStatuses(ctx context.Context, db *sql.DB, interval time.Duration, emit func(dbagent.BinlogMessage) error) error {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		now, err := serverTime(ctx, db)
		if err != nil {
			return fmt.Errorf("binary log stream status: %w", err)
		}
		file, pos, err := masterStatus(ctx, db)
		if err != nil {
			return fmt.Errorf("binary log stream status: %w", err)
		}
		if err := emit(dbagent.BinlogMessage{ServerFile: file, ServerPos: pos, ServerTime: now}); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

// spoolTailer hands on the bytes of the files mariadb-binlog writes to
// dir, in order, each whole before the next, and removes each file once
// it has handed on all of it and the next exists.
type spoolTailer struct {
	dir  string
	base string // the files' base name, "mysql-bin"
	poll time.Duration
	emit func(dbagent.BinlogMessage) error
}

// run tails the files from first on until ctx ends or emit fails.
func (t *spoolTailer) run(ctx context.Context, first string) error {
	name := first
	_, seq, err := splitBinlogName(first)
	if err != nil {
		return err
	}
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	var off uint64
	buf := make([]byte, binlogChunk)
	for {
		if f == nil {
			f, err = os.Open(filepath.Join(t.dir, name))
			if errors.Is(err, fs.ErrNotExist) {
				// The tool has not received the file yet.
				if err := t.wait(ctx); err != nil {
					return err
				}
				continue
			}
			if err != nil {
				return fmt.Errorf("binary log spool: %w", err)
			}
			off = 0
		}
		n, err := t.drain(f, name, &off, buf)
		if err != nil {
			return err
		}
		next, nextSeq, err := t.next(seq)
		if err != nil {
			return err
		}
		if next != "" {
			// The tool closed this file before it created the next:
			// what it wrote since the drain above is there now.
			if _, err := t.drain(f, name, &off, buf); err != nil {
				return err
			}
			f.Close()
			f = nil
			if err := os.Remove(filepath.Join(t.dir, name)); err != nil {
				return fmt.Errorf("binary log spool: %w", err)
			}
			name, seq = next, nextSeq
			continue
		}
		if n == 0 {
			if err := t.wait(ctx); err != nil {
				return err
			}
		}
	}
}

// drain hands on what f holds from *off to its current end and returns
// how many bytes that was.
func (t *spoolTailer) drain(f *os.File, name string, off *uint64, buf []byte) (int, error) {
	total := 0
	for {
		n, err := f.Read(buf)
		if n > 0 {
			m := dbagent.BinlogMessage{File: name, Start: *off, Data: bytes.Clone(buf[:n])}
			*off += uint64(n)
			total += n
			if err := t.emit(m); err != nil {
				return total, err
			}
		}
		if err == io.EOF || n == 0 && err == nil {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("binary log spool: %w", err)
		}
	}
}

// next returns the spool's file that follows sequence number seq (the
// lowest sequence number above it), "" while there is none.
func (t *spoolTailer) next(seq uint64) (string, uint64, error) {
	entries, err := os.ReadDir(t.dir)
	if err != nil {
		return "", 0, fmt.Errorf("binary log spool: %w", err)
	}
	var name string
	var best uint64
	for _, e := range entries {
		b, s, err := splitBinlogName(e.Name())
		if err != nil || b != t.base || s <= seq {
			continue
		}
		if name == "" || s < best {
			name, best = e.Name(), s
		}
	}
	return name, best, nil
}

func (t *spoolTailer) wait(ctx context.Context) error {
	timer := time.NewTimer(t.poll)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// splitBinlogName splits a binary log file name, "mysql-bin.000012",
// into its base and its sequence number.
func splitBinlogName(name string) (string, uint64, error) {
	if !binlogFile.MatchString(name) {
		return "", 0, fmt.Errorf("binary log file name %q: %w", truncate(name, 100), cairn.ErrInvalid)
	}
	dot := strings.LastIndexByte(name, '.')
	seq, err := strconv.ParseUint(name[dot+1:], 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("binary log file name %q: %w", truncate(name, 100), cairn.ErrInvalid)
	}
	return name[:dot], seq, nil
}

func hasBinlogFile(files []dbagent.BinlogFile, name string) bool {
	for _, f := range files {
		if f.Name == name {
			return true
		}
	}
	return false
}

func describeFiles(files []dbagent.BinlogFile) string {
	switch len(files) {
	case 0:
		return "none"
	case 1:
		return files[0].Name
	}
	return files[0].Name + " to " + files[len(files)-1].Name
}

// parseBinaryLogs reads SHOW BINARY LOGS's rows, given as its column
// names and each row's values: Log_name and File_size.
func parseBinaryLogs(columns []string, rows [][]string) ([]dbagent.BinlogFile, error) {
	nameCol, sizeCol := -1, -1
	for k, c := range columns {
		switch c {
		case "Log_name":
			nameCol = k
		case "File_size":
			sizeCol = k
		}
	}
	if nameCol < 0 || sizeCol < 0 {
		return nil, fmt.Errorf("SHOW BINARY LOGS: columns %q: %w", truncate(strings.Join(columns, ","), 100), cairn.ErrCorrupt)
	}
	out := make([]dbagent.BinlogFile, 0, len(rows))
	for _, r := range rows {
		if len(r) != len(columns) {
			return nil, fmt.Errorf("SHOW BINARY LOGS: %d columns, %d values: %w", len(columns), len(r), cairn.ErrCorrupt)
		}
		name, size, err := checkBinlogPos(r[nameCol], r[sizeCol])
		if err != nil {
			return nil, fmt.Errorf("SHOW BINARY LOGS: %w", err)
		}
		out = append(out, dbagent.BinlogFile{Name: name, Size: size})
	}
	return out, nil
}

// parseServerTime reads a DATETIME(6) as the server prints it in UTC:
// "2025-03-01 12:34:56.789012".
func parseServerTime(s string) (time.Time, error) {
	t, err := time.ParseInLocation("2006-01-02 15:04:05.999999", s, time.UTC)
	if err != nil {
		return time.Time{}, fmt.Errorf("server time %q: %w", truncate(s, 40), cairn.ErrCorrupt)
	}
	return t, nil
}
