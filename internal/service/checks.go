package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/blockdev"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
)

// Proving backups: protection from deletion, verification (a backup's
// chunks read back and checked) and restore drills (a backup restored to
// a scratch image and its file system checked). Verify and drill
// policies fire them on a schedule (policies.go); each is a durable task
// on the backup, whose outcome is recorded in the backup's marks,
// raises an event and counts in a metric.

// ProtectBackup sets whether a backup (of a volume or of an instance) is
// protected: a protected backup is never deleted, by a request or by
// retention.
func (s *Service) ProtectBackup(ctx context.Context, c Caller, id string, protected bool) (cairn.BackupMarks, error) {
	var m cairn.BackupMarks
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		if _, err := getBackup(ctx, tx, c, id); errors.Is(err, cairn.ErrNotFound) {
			if _, err := getDatabaseBackup(ctx, tx, c, id); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		var err error
		if m, err = tx.BackupMarks(ctx, id); err != nil {
			return err
		}
		m.Protected = protected
		return tx.PutBackupMarks(ctx, m)
	})
	return m, err
}

// BackupMarks returns a backup's marks (of a volume's or an instance's
// backup the caller may see).
func (s *Service) BackupMarks(ctx context.Context, c Caller, id string) (cairn.BackupMarks, error) {
	var m cairn.BackupMarks
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		if _, err := getBackup(ctx, tx, c, id); errors.Is(err, cairn.ErrNotFound) {
			if _, err := getDatabaseBackup(ctx, tx, c, id); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		var err error
		m, err = tx.BackupMarks(ctx, id)
		return err
	})
	return m, err
}

// refuseProtected is the deletion's check: cairn.ErrConflict for a
// protected backup.
func refuseProtected(ctx context.Context, tx catalog.Tx, id string) error {
	m, err := tx.BackupMarks(ctx, id)
	if err != nil {
		return err
	}
	if m.Protected {
		return fmt.Errorf("backup %s is protected; unprotect it first: %w", id, cairn.ErrConflict)
	}
	return nil
}

// checkParams are a verify or drill task's.
type checkParams struct {
	Share float64 `json:"share,omitempty"`
}

// queueCheck queues a verify or drill task ("backup.verify",
// "backup.drill") of volume backup b, unless one is queued or running:
// cairn.ErrConflict then.
func (s *Service) queueCheck(ctx context.Context, tx catalog.Tx, kind string, b cairn.Backup, params checkParams) error {
	running, err := tx.Tasks(ctx, catalog.Filter{ResourceID: b.ID, TaskStates: []cairn.TaskState{cairn.TaskPending, cairn.TaskRunning}})
	if err != nil {
		return err
	}
	for _, t := range running {
		if t.Kind == kind || t.Kind == "backup.delete" {
			return fmt.Errorf("backup %s: a %s of it is under way: %w", b.ID, t.Kind, cairn.ErrConflict)
		}
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return err
	}
	_, err = s.queue(ctx, tx, b.ProjectID, kind, b.ID, raw)
	return err
}

// checkable returns a volume backup a verify or drill task may read, and
// its manifest; ok is false when the backup is gone or not available
// (the task then has nothing to do).
func (s *Service) checkable(ctx context.Context, id string) (b cairn.Backup, r Repository, m *repoManifest, ok bool, err error) {
	b, err = s.backupRow(ctx, id)
	if errors.Is(err, cairn.ErrNotFound) {
		return b, nil, nil, false, nil
	}
	if err != nil || b.Status != cairn.StatusAvailable || b.RepoID == "" {
		return b, nil, nil, false, err
	}
	rid, err := cairn.ParseID(b.RepoID)
	if err != nil {
		return b, nil, nil, false, fmt.Errorf("backup %s: repository id: %w", b.ID, err)
	}
	if r, err = s.repoFor(ctx, b.Container); err != nil {
		return b, nil, nil, false, err
	}
	man, err := r.Manifest(ctx, rid)
	if err != nil {
		if errors.Is(err, cairn.ErrNotFound) || errors.Is(err, cairn.ErrCorrupt) {
			// The backup's record is gone or damaged: that is the finding.
			return b, r, &repoManifest{err: err}, true, nil
		}
		return b, nil, nil, false, fmt.Errorf("backup %s: manifest: %w", b.ID, err)
	}
	return b, r, &repoManifest{m: man}, true, nil
}

// repoManifest is a manifest, or why it could not be read.
type repoManifest struct {
	m   *format.Manifest
	err error
}

// recordCheck writes a check's outcome into the backup's marks (unless
// the backup is gone), and raises its event and metric.
func (s *Service) recordCheck(ctx context.Context, kind string, b cairn.Backup, check cairn.BackupCheck) error {
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		if _, err := tx.Backup(ctx, b.ID); err != nil {
			return err
		}
		m, err := tx.BackupMarks(ctx, b.ID)
		if err != nil {
			return err
		}
		if kind == "verify" {
			m.Verification = &check
		} else {
			m.Drill = &check
		}
		return tx.PutBackupMarks(ctx, m)
	})
	if errors.Is(err, cairn.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	s.obs.BackupChecked(kind, check.State)
	payload := backupPayload(b)
	payload[kind] = check
	if check.State == cairn.CheckPassed {
		s.event(ctx, "backup."+kind+".end", b.ProjectID, payload)
	} else {
		s.event(ctx, "backup."+kind+".error", b.ProjectID, payload)
		s.log.Error("backup "+kind+" failed", "backup", b.ID, "detail", check.Detail)
	}
	return nil
}

// runVerifyBackup reads the backup's chunks back (the task's share of
// them) and records what it found.
func (s *Service) runVerifyBackup(ctx context.Context, t cairn.Task) error {
	var p checkParams
	if len(t.Params) > 0 {
		if err := json.Unmarshal(t.Params, &p); err != nil {
			return fmt.Errorf("verify params: %w", err)
		}
	}
	b, r, rm, ok, err := s.checkable(ctx, t.ResourceID)
	if err != nil || !ok {
		return err
	}
	check := cairn.BackupCheck{State: cairn.CheckPassed}
	if rm.err != nil {
		check.State, check.Detail = cairn.CheckFailed, "manifest: "+rm.err.Error()
	} else {
		rep, err := r.VerifyBackup(ctx, rm.m, repo.VerifyOptions{Share: p.Share})
		if err != nil {
			return fmt.Errorf("verify backup %s: %w", b.ID, err)
		}
		check.Chunks, check.Bytes = rep.ChunksRead, rep.BytesRead
		if len(rep.Problems) > 0 {
			var ps []string
			for _, pr := range rep.Problems {
				ps = append(ps, pr.Kind+" "+pr.Object+": "+pr.Detail)
			}
			check.State, check.Detail = cairn.CheckFailed, fmt.Sprintf("%d of %d chunks read are damaged: %s",
				len(rep.Problems), rep.ChunksRead, strings.Join(ps, "; "))
		}
	}
	check.At = s.nowUTC()
	return s.recordCheck(ctx, "verify", b, check)
}

// drillImage is the scratch image a drill task restores to: named by the
// task, so a drill cut short by a crash finds (and removes) what it
// left.
func (s *Service) drillImage(t cairn.Task) string {
	return filepath.Join(s.scratch, "cairn-drill-"+t.ID+".img")
}

// runDrillBackup restores the backup into a scratch image and checks it:
// the restore checks every chunk's authentication and hash, and an ext2,
// ext3 or ext4 file system found in it is checked with e2fsck -fn. The
// image is removed however the drill ends; a drill resumed after a crash
// removes the one its first run left and starts again.
func (s *Service) runDrillBackup(ctx context.Context, t cairn.Task) error {
	img := s.drillImage(t)
	if err := os.Remove(img); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("drill image: %w", err)
	}
	defer os.Remove(img)
	b, r, rm, ok, err := s.checkable(ctx, t.ResourceID)
	if err != nil || !ok {
		return err
	}
	start := time.Now()
	check := cairn.BackupCheck{State: cairn.CheckPassed}
	if rm.err != nil {
		check.State, check.Detail = cairn.CheckFailed, "manifest: "+rm.err.Error()
	} else if check.Bytes, check.Detail, err = s.drill(ctx, r, rm.m, img); err != nil {
		if ctx.Err() != nil || !errors.Is(err, cairn.ErrCorrupt) && !errors.Is(err, errCheckFailed) {
			return fmt.Errorf("drill of backup %s: %w", b.ID, err)
		}
		check.State, check.Detail = cairn.CheckFailed, err.Error()
	}
	check.Seconds = time.Since(start).Seconds()
	check.At = s.nowUTC()
	return s.recordCheck(ctx, "drill", b, check)
}

// errCheckFailed: the restored image failed its file system check.
var errCheckFailed = errors.New("file system check failed")

// drill restores m into the image at path and checks it; it returns the
// bytes restored and what the check said.
func (s *Service) drill(ctx context.Context, r Repository, m *format.Manifest, path string) (int64, string, error) {
	f, err := blockdev.OpenTarget(path, m.Size, false)
	if err != nil {
		return 0, "", fmt.Errorf("drill image: %w", err)
	}
	stats, err := r.Restore(ctx, m, f, nil)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return 0, "", fmt.Errorf("restore: %w", err)
	}
	s.obs.BytesRestored(stats.Bytes)
	fs, err := extFileSystem(path)
	if err != nil {
		return stats.Bytes, "", err
	}
	if !fs {
		return stats.Bytes, "restored; every chunk authenticated and hashed; no ext file system found to check", nil
	}
	out, err := exec.CommandContext(ctx, "e2fsck", "-fn", path).CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return stats.Bytes, "", ctx.Err()
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return stats.Bytes, "", fmt.Errorf("e2fsck: %w", err)
		}
		return stats.Bytes, "", fmt.Errorf("e2fsck -fn: exit %d: %s: %w", ee.ExitCode(), lastLines(string(out), 5), errCheckFailed)
	}
	return stats.Bytes, "restored; e2fsck -fn found the file system clean: " + lastLines(string(out), 1), nil
}

// extFileSystem reports whether the image at path begins with an ext2,
// ext3 or ext4 superblock (its magic, 0xEF53, at byte 1080).
func extFileSystem(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var magic [2]byte
	if _, err := f.ReadAt(magic[:], 1080); err != nil {
		return false, nil // shorter than a superblock: not one
	}
	return magic[0] == 0x53 && magic[1] == 0xEF, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}

// failCheck ends a verify or drill task that could not run: the backup
// is left as it was (a check that did not run found nothing), and the
// task's error says why.
func (s *Service) failCheck(context.Context, cairn.Task, error) error { return nil }

// pickDrill chooses the backup a drill slot restores among a target's
// available backups, newest first.
func pickDrill(list []cairn.Backup, p cairn.Policy, now time.Time, rng *rand.Rand) (cairn.Backup, bool) {
	if len(list) == 0 {
		return cairn.Backup{}, false
	}
	if p.DrillPick != cairn.DrillRandom {
		return list[0], true
	}
	var in []cairn.Backup
	for _, b := range list {
		if p.DrillWithinSeconds == 0 || now.Sub(b.DataTimestamp) <= time.Duration(p.DrillWithinSeconds)*time.Second {
			in = append(in, b)
		}
	}
	if len(in) == 0 {
		return list[0], true
	}
	return in[rng.IntN(len(in))], true
}
