package mariadb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/binlog"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// A MariaDB point-in-time recovery is a replay: the restored server
// starts as it is, and once it answers, mariadb-binlog turns the
// archived binary log files into statements that the mariadb client runs
// on it. The statements keep each transaction's GTID, so the restored
// server's @@gtid_binlog_pos says how far a replay got, and a replay
// run again after it was cut short goes on from there.

var _ dbagent.PointInTime = (*Engine)(nil)

// replayMarker names the file PrepareRecovery writes in the data
// directory and FinishRecovery reads and removes.
const replayMarker = "cairn-binlog-replay.json"

// replay is what PrepareRecovery leaves for FinishRecovery.
type replay struct {
	// Dir holds Files, the binary log files to replay, in order.
	Dir   string              `json:"dir"`
	Files []string            `json:"files"`
	Start dbagent.BinlogStart `json:"start"`
}

// PrepareRecovery implements dbagent.PointInTime for a replay of binary
// log files: it checks that t.Dir holds binary log files following one
// another (the first named t.Binlog.File, when given), gives them to the
// server's OS user, and writes the replay's marker into the data
// directory. The server then starts as usual; FinishRecovery replays.
func (e *Engine) PrepareRecovery(ctx context.Context, cfg dbagent.Config, t dbagent.RecoveryTarget) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if t.Binlog == nil {
		return fmt.Errorf("recovery: no binary log start: %w", cairn.ErrInvalid)
	}
	if !t.Time.IsZero() {
		return fmt.Errorf("recovery: a MariaDB replay stops where its files end, not at a time: %w", cairn.ErrInvalid)
	}
	if !filepath.IsAbs(t.Dir) {
		return fmt.Errorf("recovery: binary log directory %q: %w", t.Dir, cairn.ErrInvalid)
	}
	start := *t.Binlog
	if _, err := parseGTIDList(start.GTID); err != nil {
		return fmt.Errorf("recovery: start GTID: %w", errors.Join(err, cairn.ErrInvalid))
	}
	if start.GTID == "" && start.File == "" {
		return fmt.Errorf("recovery: the start has neither a GTID position nor a file: %w", cairn.ErrInvalid)
	}
	if fi, err := os.Stat(filepath.Join(cfg.DataDir, "mysql")); err != nil || !fi.IsDir() {
		return fmt.Errorf("recovery: %s is not a MariaDB data directory: %w", cfg.DataDir, cairn.ErrCorrupt)
	}
	files, err := replayFiles(t.Dir)
	if err != nil {
		return err
	}
	if start.File != "" && files[0] != start.File {
		return fmt.Errorf("recovery: the binary logs given start with %s, the replay in %s: %w", files[0], start.File, cairn.ErrInvalid)
	}
	if start.GTID == "" {
		fi, err := os.Stat(filepath.Join(t.Dir, files[0]))
		if err != nil {
			return fmt.Errorf("recovery: %w", err)
		}
		if start.Pos > uint64(fi.Size()) {
			return fmt.Errorf("recovery: start position %d is past the end of %s (%d bytes): %w", start.Pos, files[0], fi.Size(), cairn.ErrInvalid)
		}
	}
	if err := os.Chmod(t.Dir, 0o700); err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	if err := e.user.OwnTree(t.Dir); err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	b, err := json.Marshal(replay{Dir: t.Dir, Files: files, Start: start})
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	marker := filepath.Join(cfg.DataDir, replayMarker)
	if err := os.WriteFile(marker, b, 0o600); err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	return e.user.Own(marker)
}

// replayFiles lists the binary log files in dir in order of their
// sequence numbers, checking that they share a base name, follow one
// another without a gap and each begins with the binary log's magic.
// Anything else in dir is refused.
func replayFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("recovery: binary log directory: %w", err)
	}
	type numbered struct {
		name string
		seq  uint64
	}
	var list []numbered
	base := ""
	for _, en := range entries {
		b, seq, err := splitBinlogName(en.Name())
		if err != nil || !en.Type().IsRegular() {
			return nil, fmt.Errorf("recovery: %s in the binary log directory is not a binary log file: %w", en.Name(), cairn.ErrInvalid)
		}
		if base != "" && b != base {
			return nil, fmt.Errorf("recovery: binary log files of two names, %s and %s: %w", base, b, cairn.ErrInvalid)
		}
		base = b
		list = append(list, numbered{en.Name(), seq})
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("recovery: no binary log files in %s: %w", dir, cairn.ErrInvalid)
	}
	slices.SortFunc(list, func(a, b numbered) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	names := make([]string, len(list))
	for k, n := range list {
		if k > 0 && n.seq != list[k-1].seq+1 {
			return nil, fmt.Errorf("recovery: binary log files %s and %s do not follow one another: %w", list[k-1].name, n.name, cairn.ErrInvalid)
		}
		if err := checkMagic(filepath.Join(dir, n.name)); err != nil {
			return nil, err
		}
		names[k] = n.name
	}
	return names, nil
}

func checkMagic(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	defer f.Close()
	var m [len(binlog.Magic)]byte
	if _, err := io.ReadFull(f, m[:]); err != nil || m != binlog.Magic {
		return fmt.Errorf("recovery: %s does not begin as a binary log: %w", filepath.Base(path), cairn.ErrCorrupt)
	}
	return nil
}

// FinishRecovery implements dbagent.PointInTime: once the server
// answers it replays the prepared binary log files, from the later (per
// GTID domain) of the prepared start and the server's own
// @@gtid_binlog_pos, so a replay run again after it was cut short does
// not apply a transaction twice; then it removes the marker. A data
// directory without a marker has nothing to replay (its replay
// finished). It fails when the replay does (with the client's standard
// error), when srv exits first or ctx ends.
func (e *Engine) FinishRecovery(ctx context.Context, cfg dbagent.Config, srv dbagent.Server) error {
	inst, err := e.Instance(cfg)
	if err != nil {
		return err
	}
	i := inst.(*Instance)
	marker := filepath.Join(cfg.DataDir, replayMarker)
	b, err := os.ReadFile(marker)
	if errors.Is(err, fs.ErrNotExist) {
		return i.Ready(ctx, srv)
	}
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	var r replay
	if err := json.Unmarshal(b, &r); err != nil || len(r.Files) == 0 || !filepath.IsAbs(r.Dir) {
		return fmt.Errorf("recovery: the replay marker %s: %w", marker, errors.Join(err, cairn.ErrCorrupt))
	}
	if err := i.Ready(ctx, srv); err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	db := i.openDB("")
	var serverPos string
	err = db.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&serverPos)
	db.Close()
	if err != nil {
		return fmt.Errorf("recovery: the server's GTID position: %w", err)
	}
	paths := make([]string, len(r.Files))
	for k, n := range r.Files {
		if _, _, err := splitBinlogName(n); err != nil {
			return fmt.Errorf("recovery: the replay marker %s: %w", marker, errors.Join(err, cairn.ErrCorrupt))
		}
		paths[k] = filepath.Join(r.Dir, n)
	}
	from, pos, ok, err := replayStart(paths, r.Start, serverPos)
	if err != nil {
		return err
	}
	if ok {
		if err := i.replay(ctx, srv, paths[from:], pos); err != nil {
			return err
		}
	}
	// The generation changes before the marker goes: a replay cut short
	// after it is run again, replays nothing and sets it again.
	if g := r.Start.Generation; g > 0 {
		if err := e.writeGeneration(cfg.DataDir, g); err != nil {
			return fmt.Errorf("recovery: %w", err)
		}
	}
	if err := os.Remove(marker); err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	return nil
}

// replayStart says where a replay of files begins: in files[from] at
// byte pos (0: from its start), or nowhere (ok false) when the server
// already holds every transaction the files do. With a GTID position,
// the prepared start's or the server's, it begins at the first
// transaction whose GTID lies beyond the later of the two in its
// domain: the transactions a binary log holds up to a backup's point, or
// up to where a replay was cut short, are the files' first ones. Without
// one it begins at start.Pos in the first file.
//
// mariadb-binlog's own GTID start (--start-position=<GTID list>) is not
// used: it exits with an error when a domain of the list has nothing
// after its GTID in the files, which is the case of a replay run again
// after it finished, and it insists on a GTID for every domain the files
// mention.
func replayStart(files []string, start dbagent.BinlogStart, serverPos string) (from int, pos uint64, ok bool, err error) {
	prepared, err := parseGTIDList(start.GTID)
	if err != nil {
		return 0, 0, false, fmt.Errorf("recovery: start GTID: %w", err)
	}
	server, err := parseGTIDList(serverPos)
	if err != nil {
		return 0, 0, false, fmt.Errorf("recovery: the server's @@gtid_binlog_pos: %w", err)
	}
	state := laterGTIDs(prepared, server)
	if len(state) == 0 {
		return 0, start.Pos, true, nil
	}
	applied := make(map[uint32]uint64, len(state))
	for _, g := range state {
		applied[g.Domain] = g.Seq
	}
	for k, path := range files {
		at, found, err := firstNewTransaction(path, applied)
		if err != nil {
			return 0, 0, false, err
		}
		if found {
			return k, at, true, nil
		}
	}
	return 0, 0, false, nil
}

// firstNewTransaction returns where in the binary log file at path the
// first transaction begins whose GTID's sequence number exceeds applied's
// in its domain (a domain not in applied has none applied).
func firstNewTransaction(path string, applied map[uint32]uint64) (uint64, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false, fmt.Errorf("recovery: %w", err)
	}
	defer f.Close()
	dec := binlog.NewDecoder()
	buf := make([]byte, 256<<10)
	for {
		n, rerr := f.Read(buf)
		events, err := dec.Write(buf[:n])
		for _, ev := range events {
			if ev.GTID == nil {
				continue
			}
			if seq, ok := applied[ev.GTID.Domain]; !ok || ev.GTID.Seq > seq {
				return ev.Pos, true, nil
			}
		}
		if err != nil {
			return 0, false, fmt.Errorf("recovery: %s: %v: %w", filepath.Base(path), err, cairn.ErrCorrupt)
		}
		if rerr == io.EOF {
			return 0, false, nil
		}
		if rerr != nil {
			return 0, false, fmt.Errorf("recovery: %w", rerr)
		}
	}
}

// laterGTIDs merges two GTID positions, keeping in each domain the GTID
// with the higher sequence number.
func laterGTIDs(a, b []GTID) []GTID {
	byDomain := map[uint32]GTID{}
	for _, list := range [][]GTID{a, b} {
		for _, g := range list {
			if have, ok := byDomain[g.Domain]; !ok || g.Seq > have.Seq {
				byDomain[g.Domain] = g
			}
		}
	}
	out := make([]GTID, 0, len(byDomain))
	for _, g := range byDomain {
		out = append(out, g)
	}
	slices.SortFunc(out, func(x, y GTID) int {
		switch {
		case x.Domain < y.Domain:
			return -1
		case x.Domain > y.Domain:
			return 1
		}
		return 0
	})
	return out
}

// replay replays files, from pos in the first, on the server: it fails
// when srv exits or ctx ends first, killing the replay's tools.
func (i *Instance) replay(ctx context.Context, srv dbagent.Server, files []string, pos uint64) error {
	g, gctx := errgroup.WithContext(ctx)
	finished := make(chan struct{})
	g.Go(func() error {
		select {
		case <-srv.Exited:
			return fmt.Errorf("recovery: the server exited during the binary log replay: %w", cairn.ErrUnavailable)
		case <-finished:
		case <-gctx.Done():
		}
		return nil
	})
	g.Go(func() error {
		defer close(finished)
		return i.pipeReplay(gctx, files, pos)
	})
	err := g.Wait()
	if ctx.Err() != nil {
		return fmt.Errorf("recovery: the binary log replay: %w", ctx.Err())
	}
	return err
}

// pipeReplay pipes mariadb-binlog's statements of files, from pos in the
// first, into the mariadb client on the server's socket, as the agent's
// account (in binary mode: the statements carry row images as they
// are). Both are killed when ctx ends.
func (i *Instance) pipeReplay(ctx context.Context, files []string, pos uint64) error {
	var args []string
	if pos > 0 {
		args = append(args, "--start-position="+strconv.FormatUint(pos, 10))
	}
	dump := i.e.tool(ctx, "mariadb-binlog", append(args, files...)...)
	client := i.e.tool(ctx, "mariadb", "--socket="+i.socket(), "--user="+i.e.admin,
		"--binary-mode", "--batch", "--max-allowed-packet=1G")
	dump.Dir, client.Dir = dbagent.ToolDir, dbagent.ToolDir
	dumpErr := &dbagent.TailBuffer{Max: 64 << 10}
	clientErr := &dbagent.TailBuffer{Max: 64 << 10}
	dump.Stderr, client.Stderr = dumpErr, clientErr
	dump.WaitDelay, client.WaitDelay = 10*time.Second, 10*time.Second
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	dump.Stdout, client.Stdin = pw, pr
	if err := client.Start(); err != nil {
		pr.Close()
		pw.Close()
		return fmt.Errorf("recovery: %w", err)
	}
	if err := dump.Start(); err != nil {
		pr.Close()
		pw.Close()
		// The client sees the end of its input and ends.
		_ = client.Wait()
		return fmt.Errorf("recovery: %w", err)
	}
	// The children hold their own ends: the client sees the end of its
	// input when mariadb-binlog exits, mariadb-binlog a broken pipe when
	// the client exits first.
	pr.Close()
	pw.Close()
	dumpWait := dump.Wait()
	clientWait := client.Wait()
	if clientWait != nil {
		return fmt.Errorf("recovery: replaying the binary log: %w", dbagent.ToolError(client, clientWait, clientErr.String()))
	}
	if dumpWait != nil {
		return fmt.Errorf("recovery: reading the binary log: %w", dbagent.ToolError(dump, dumpWait, dumpErr.String()))
	}
	return nil
}
