package dbhost

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// A recovery's log files come in the provisioning stream (after a
// physical chain's parts), each framed as uvarint(len(name)) name
// uvarint(len(data)) data, and a zero-length name ends them. Names are
// the server's own, and are file names in the recovery directory, never
// paths: PostgreSQL's WAL (24 hex digits for a segment, 8 and ".history"
// for a timeline's history) or MariaDB's binary log (the log's base name,
// a dot and its sequence number of 6 digits or more, as mysql-bin.000003).

var (
	walFileRE    = regexp.MustCompile(`^([0-9A-F]{24}|[0-9A-F]{8}\.history)$`)
	binlogFileRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,200}\.[0-9]{6,}$`)
)

// maxLogName bounds a file's name (NAME_MAX); binlogFileRE alone would
// let its sequence number run on.
const maxLogName = 255

// walFileName reports whether name is a WAL segment's or a timeline
// history's.
func walFileName(name string) bool { return walFileRE.MatchString(name) }

// binlogFileName reports whether name is a MariaDB binary log file's. Its
// characters hold no path separator, and its ending dot and digits rule
// out "." and "..".
func binlogFileName(name string) bool {
	return len(name) <= maxLogName && binlogFileRE.MatchString(name)
}

// logFileName reports whether name is a log file's of either kind.
func logFileName(name string) bool { return walFileName(name) || binlogFileName(name) }

// maxLogFile bounds one file (PostgreSQL's largest segment is 1 GiB, as
// is MariaDB's largest binary log file, max_binlog_size).
const maxLogFile = 1 << 30

// WriteWALFile writes one framed log file to w: a WAL segment or
// history file, or a binary log file.
func WriteWALFile(w io.Writer, name string, data []byte) error {
	if !logFileName(name) || len(data) > maxLogFile {
		return fmt.Errorf("log file %q of %d bytes: %w", name, len(data), cairn.ErrInvalid)
	}
	var hdr []byte
	hdr = binary.AppendUvarint(hdr, uint64(len(name)))
	hdr = append(hdr, name...)
	hdr = binary.AppendUvarint(hdr, uint64(len(data)))
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}

// WriteWALEnd ends the log files of a stream.
func WriteWALEnd(w io.Writer) error {
	_, err := w.Write([]byte{0})
	return err
}

// ReadWALFiles reads framed log files of either kind from r into dir
// (which must exist) until their end, and returns how many it wrote.
func ReadWALFiles(r io.Reader, dir string) (int, error) {
	return readLogFiles(r, dir, logFileName, nil)
}

// readLogFiles is ReadWALFiles taking only the names valid accepts. Each
// file is written under a temporary name and renamed into place whole,
// so a reader of dir never sees part of one, and one rewritten (a
// resumed recovery reads its stream again) is replaced, never changed
// under a reader. arrived, if not nil, is called with each file's name
// once it is in place; an error it returns ends the read.
func readLogFiles(r io.Reader, dir string, valid func(string) bool, arrived func(name string) error) (int, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	bad := func(err error) (int, error) {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("recovery's log files: %w: %w", err, cairn.ErrInvalid)
	}
	n := 0
	for {
		l, err := binary.ReadUvarint(br)
		if err != nil {
			return bad(err)
		}
		if l == 0 {
			return n, nil
		}
		if l > maxLogName {
			return bad(fmt.Errorf("a name of %d bytes", l))
		}
		name := make([]byte, l)
		if _, err := io.ReadFull(br, name); err != nil {
			return bad(err)
		}
		if !valid(string(name)) {
			return bad(fmt.Errorf("file name %q", name))
		}
		size, err := binary.ReadUvarint(br)
		if err != nil {
			return bad(err)
		}
		if size > maxLogFile {
			return bad(fmt.Errorf("%s of %d bytes", name, size))
		}
		path := filepath.Join(dir, string(name))
		// Readable by the server's user, which owns dir (private): the
		// files may arrive after PrepareRecovery gave it dir.
		f, err := os.OpenFile(path+partSuffix, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return 0, fmt.Errorf("recovery's log files: %w", err)
		}
		m, err := io.Copy(f, io.LimitReader(br, int64(size)))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil && m != int64(size) {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return bad(fmt.Errorf("%s: %w", name, err))
		}
		if err := os.Rename(path+partSuffix, path); err != nil {
			return 0, fmt.Errorf("recovery's log files: %w", err)
		}
		n++
		if arrived != nil {
			if err := arrived(string(name)); err != nil {
				return n, err
			}
		}
	}
}

// partSuffix names a log file being written; no valid name ends so.
const partSuffix = ".part"

// recoveryDir holds a recovering instance's log files: a PostgreSQL
// recovery's WAL in the host's spool (spoolDir), a MariaDB recovery's
// binary logs on its volume, beside the data directory, where they are
// durable before the server starts.
func (h *Host) recoveryDir(rec *record) string {
	if rec.Spec.Recovery != nil && rec.Spec.Recovery.Binlog != nil {
		return filepath.Join(h.mountPoint(rec.Spec.ID), "cairn-recovery")
	}
	return h.spoolDir(rec.Spec.ID)
}

// spoolDir is instance id's directory in the host's spool.
func (h *Host) spoolDir(id string) string { return filepath.Join(h.o.SpoolDir, id) }

// prepareRecovery makes the recovery directory and has the engine set
// the data directory to replay its files at its next start. A MariaDB
// recovery (a Binlog start) reads its binary log files from data here,
// all of them, before the server starts; a PostgreSQL one reads its WAL
// files while the server replays them (recoverWAL).
func (h *Host) prepareRecovery(ctx context.Context, eng dbagent.Engine, cfg dbagent.Config, rec *record, data io.Reader) error {
	pit, ok := eng.(dbagent.PointInTime)
	if !ok {
		return fmt.Errorf("instance %s: %s cannot recover to a point in time: %w", rec.Spec.ID, rec.Spec.Datastore, cairn.ErrUnsupported)
	}
	dir := h.recoveryDir(rec)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("recovery directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("recovery directory: %w", err)
	}
	r := rec.Spec.Recovery
	if r.Binlog != nil {
		began := time.Now()
		n, err := readLogFiles(data, dir, binlogFileName, nil)
		if err != nil {
			return err
		}
		h.o.Logger.Info("recovery's log files written", "instance", rec.Spec.ID, "files", n, "took", time.Since(began).Round(time.Millisecond))
	}
	t := dbagent.RecoveryTarget{Time: r.Time, Timeline: r.Timeline, Dir: dir}
	if r.Binlog != nil {
		b := *r.Binlog
		t.Binlog = &b
	}
	if err := pit.PrepareRecovery(ctx, cfg, t); err != nil {
		return fmt.Errorf("preparing the recovery: %w", err)
	}
	return nil
}

// recoverWAL starts a PostgreSQL recovery's server and reads its WAL
// files from data into the recovery directory while the server replays
// them (the engine's restore_command waits for a file still to come),
// then waits until the server has recovered. The server's start and
// replay so overlap the copy, where they used to wait for all of it.
//
// The files are not made durable: a recovery cut short is resumed with
// its stream sent again (Provision's contract), read again from its
// first file, each file replacing its copy whole. On failure the server
// is stopped, and a resumed recovery starts it again; its replay goes
// on from its last restartpoint.
func (h *Host) recoverWAL(ctx context.Context, inst *instance, eng dbagent.Engine, data io.Reader, started func()) error {
	id, dir := inst.rec.Spec.ID, h.recoveryDir(&inst.rec)
	// Gone if the spool was emptied since the recovery was prepared (a
	// reboot, on a tmpfs): there before the server looks in it, and the
	// server's user reads the files by name.
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return fmt.Errorf("recovery directory: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return h.receiveWAL(gctx, id, dir, data) })
	g.Go(func() error {
		if err := h.startServer(gctx, inst, eng, true); err != nil {
			return err
		}
		started()
		return h.finishRecovery(gctx, inst, eng)
	})
	err := g.Wait()
	if err != nil {
		if serr := h.stopServer(context.WithoutCancel(ctx), inst); serr != nil {
			err = errors.Join(err, fmt.Errorf("stopping the recovering server: %w", serr))
		}
	}
	return err
}

// receiveWAL reads framed WAL files from data into dir, the recovery
// directory of instance id, and marks their progress there
// (dbagent.LogsHistories, LogsEnd, or LogsFailed when the read fails).
// Timeline histories must come before segments: the server is told no
// other history will come once the first segment has.
func (h *Host) receiveWAL(ctx context.Context, id, dir string, data io.Reader) (err error) {
	for _, m := range []string{dbagent.LogsHistories, dbagent.LogsEnd, dbagent.LogsFailed} {
		if err := os.Remove(filepath.Join(dir, m)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("recovery directory: %w", err)
		}
	}
	mark := func(m string) error {
		if err := os.WriteFile(filepath.Join(dir, m), nil, 0o644); err != nil {
			return fmt.Errorf("recovery directory: %w", err)
		}
		return nil
	}
	defer func() {
		if err != nil {
			if merr := mark(dbagent.LogsFailed); merr != nil {
				err = errors.Join(err, merr)
			}
		}
	}()
	began := time.Now()
	segments := false
	n, err := readLogFiles(data, dir, walFileName, func(name string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		history := strings.HasSuffix(name, ".history")
		switch {
		case history && segments:
			return fmt.Errorf("recovery's log files: history %s after a segment: %w", name, cairn.ErrInvalid)
		case !history && !segments:
			segments = true
			return mark(dbagent.LogsHistories)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !segments {
		if err := mark(dbagent.LogsHistories); err != nil {
			return err
		}
	}
	if err := mark(dbagent.LogsEnd); err != nil {
		return err
	}
	h.o.Logger.Info("recovery's log files written", "instance", id, "files", n, "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// finishRecovery waits until the started server has replayed to its
// target and accepts writes.
func (h *Host) finishRecovery(ctx context.Context, inst *instance, eng dbagent.Engine) error {
	pit, ok := eng.(dbagent.PointInTime)
	if !ok {
		return fmt.Errorf("instance %s: %s cannot recover to a point in time: %w", inst.rec.Spec.ID, inst.rec.Spec.Datastore, cairn.ErrUnsupported)
	}
	inst.mu.Lock()
	sup := inst.sup
	inst.mu.Unlock()
	if sup == nil {
		return fmt.Errorf("instance %s: no server to recover: %w", inst.rec.Spec.ID, cairn.ErrUnavailable)
	}
	// The supervisor restarts a server that exits; the recovery fails
	// once it has given up (a target the log given does not reach fails
	// every start).
	if err := pit.FinishRecovery(ctx, h.config(&inst.rec), dbagent.Server{Exited: sup.gaveUp}); err != nil {
		return fmt.Errorf("recovering to the point in time: %w", err)
	}
	return nil
}
