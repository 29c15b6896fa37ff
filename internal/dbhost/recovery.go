package dbhost

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"time"

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
	return readLogFiles(r, dir, logFileName)
}

// readLogFiles is ReadWALFiles taking only the names valid accepts.
func readLogFiles(r io.Reader, dir string, valid func(string) bool) (int, error) {
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
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
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
		n++
	}
}

// recoveryDir holds a recovering instance's log files: on its volume,
// beside the data directory.
func (h *Host) recoveryDir(id string) string {
	return filepath.Join(h.mountPoint(id), "cairn-recovery")
}

// prepareRecovery writes the stream's log files (binary log files for a
// MariaDB recovery, which has a Binlog start, WAL files otherwise) and
// has the engine set the data directory to replay them at its next
// start.
func (h *Host) prepareRecovery(ctx context.Context, eng dbagent.Engine, cfg dbagent.Config, rec *record, data io.Reader) error {
	pit, ok := eng.(dbagent.PointInTime)
	if !ok {
		return fmt.Errorf("instance %s: %s cannot recover to a point in time: %w", rec.Spec.ID, rec.Spec.Datastore, cairn.ErrUnsupported)
	}
	dir := h.recoveryDir(rec.Spec.ID)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("recovery directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("recovery directory: %w", err)
	}
	r := rec.Spec.Recovery
	valid := walFileName
	if r.Binlog != nil {
		valid = binlogFileName
	}
	began := time.Now()
	n, err := readLogFiles(data, dir, valid)
	if err != nil {
		return err
	}
	h.o.Logger.Info("recovery's log files written", "instance", rec.Spec.ID, "files", n, "took", time.Since(began).Round(time.Millisecond))
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

// finishRecovery waits until the started server has replayed to its
// target and accepts writes, then removes the log files.
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
	if err := os.RemoveAll(h.recoveryDir(inst.rec.Spec.ID)); err != nil {
		return fmt.Errorf("recovery directory: %w", err)
	}
	return nil
}
