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

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// A recovery's WAL files come in the provisioning stream (after a
// physical chain's parts), each framed as uvarint(len(name)) name
// uvarint(len(data)) data, and a zero-length name ends them. Names are
// PostgreSQL's: 24 hex digits for a segment, 8 and ".history" for a
// timeline's history.

var walFileName = regexp.MustCompile(`^([0-9A-F]{24}|[0-9A-F]{8}\.history)$`)

// maxWALFile bounds one file (PostgreSQL's largest segment is 1 GiB).
const maxWALFile = 1 << 30

// WriteWALFile writes one framed WAL file to w.
func WriteWALFile(w io.Writer, name string, data []byte) error {
	if !walFileName.MatchString(name) || len(data) > maxWALFile {
		return fmt.Errorf("WAL file %q of %d bytes: %w", name, len(data), cairn.ErrInvalid)
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

// WriteWALEnd ends the WAL files of a stream.
func WriteWALEnd(w io.Writer) error {
	_, err := w.Write([]byte{0})
	return err
}

// ReadWALFiles reads framed WAL files from r into dir (which must exist)
// until their end, and returns how many it wrote.
func ReadWALFiles(r io.Reader, dir string) (int, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	bad := func(err error) (int, error) {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("recovery's WAL files: %w: %w", err, cairn.ErrInvalid)
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
		if l > 64 {
			return bad(fmt.Errorf("a name of %d bytes", l))
		}
		name := make([]byte, l)
		if _, err := io.ReadFull(br, name); err != nil {
			return bad(err)
		}
		if !walFileName.Match(name) {
			return bad(fmt.Errorf("file name %q", name))
		}
		size, err := binary.ReadUvarint(br)
		if err != nil {
			return bad(err)
		}
		if size > maxWALFile {
			return bad(fmt.Errorf("%s of %d bytes", name, size))
		}
		path := filepath.Join(dir, string(name))
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return 0, fmt.Errorf("recovery's WAL files: %w", err)
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

// recoveryDir holds a recovering instance's WAL files: on its volume,
// beside the data directory.
func (h *Host) recoveryDir(id string) string {
	return filepath.Join(h.mountPoint(id), "cairn-recovery")
}

// prepareRecovery writes the stream's WAL files and has the engine set
// the data directory to replay them at its next start.
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
	n, err := ReadWALFiles(data, dir)
	if err != nil {
		return err
	}
	h.o.Logger.Info("recovery's WAL files written", "instance", rec.Spec.ID, "files", n)
	r := rec.Spec.Recovery
	if err := pit.PrepareRecovery(ctx, cfg, dbagent.RecoveryTarget{Time: r.Time, Timeline: r.Timeline, Dir: dir}); err != nil {
		return fmt.Errorf("preparing the recovery: %w", err)
	}
	return nil
}

// finishRecovery waits until the started server has replayed to its
// target and promoted, then removes the WAL files.
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
	// once it has given up (a target the WAL does not reach fails every
	// start).
	if err := pit.FinishRecovery(ctx, h.config(&inst.rec), dbagent.Server{Exited: sup.gaveUp}); err != nil {
		return fmt.Errorf("recovering to the point in time: %w", err)
	}
	if err := os.RemoveAll(h.recoveryDir(inst.rec.Spec.ID)); err != nil {
		return fmt.Errorf("recovery directory: %w", err)
	}
	return nil
}
