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
	"github.com/cairnproject/cairn/internal/dbagent"
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
		if err := findAnyBackup(ctx, tx, c, id); err != nil {
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
		if err := findAnyBackup(ctx, tx, c, id); err != nil {
			return err
		}
		var err error
		m, err = tx.BackupMarks(ctx, id)
		return err
	})
	return m, err
}

// findAnyBackup finds id among the volume backups and the database
// backups c may see: cairn.ErrNotFound, naming it a backup of either
// kind, when it is neither.
func findAnyBackup(ctx context.Context, tx catalog.Tx, c Caller, id string) error {
	_, err := getBackup(ctx, tx, c, id)
	if !errors.Is(err, cairn.ErrNotFound) {
		return err
	}
	_, err = getDatabaseBackup(ctx, tx, c, id)
	if errors.Is(err, cairn.ErrNotFound) {
		return fmt.Errorf("backup %s (of a volume or an instance): %w", id, cairn.ErrNotFound)
	}
	return err
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

// checkParams are a verify or drill task's: the share of chunks a
// verification reads; the query an instance's drill runs.
type checkParams struct {
	Share    float64 `json:"share,omitempty"`
	Query    string  `json:"query,omitempty"`
	Database string  `json:"database,omitempty"`
}

// checkTarget is a backup a verify or drill slot may check: a volume
// backup or a database backup, taken at at.
type checkTarget struct {
	id, project string
	at          time.Time
}

// queueCheck queues a verify or drill task (kind "backup.verify",
// "backup.drill", "dbbackup.verify" or "dbbackup.drill") of backup b,
// unless one is queued or running, or b is being deleted:
// cairn.ErrConflict then.
func (s *Service) queueCheck(ctx context.Context, tx catalog.Tx, kind string, b checkTarget, params checkParams) error {
	running, err := tx.Tasks(ctx, catalog.Filter{ResourceID: b.id, TaskStates: []cairn.TaskState{cairn.TaskPending, cairn.TaskRunning}})
	if err != nil {
		return err
	}
	for _, t := range running {
		if t.Kind == kind || strings.HasSuffix(t.Kind, ".delete") {
			return fmt.Errorf("backup %s: a %s of it is under way: %w", b.id, t.Kind, cairn.ErrConflict)
		}
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return err
	}
	_, err = s.queue(ctx, tx, b.project, kind, b.id, raw)
	return err
}

// volumeCheck is what a verify or drill task of a volume backup reads:
// the backup, its repository and its manifest (or why it could not be
// read: a finding).
type volumeCheck struct {
	b  cairn.Backup
	r  Repository
	rm *repoManifest
}

// checkable returns the volume backup a verify or drill task reads; nil
// when the backup is gone or not available (the task then has nothing
// to do).
func (s *Service) checkable(ctx context.Context, id string) (*volumeCheck, error) {
	b, err := s.backupRow(ctx, id)
	if errors.Is(err, cairn.ErrNotFound) {
		return nil, nil
	}
	if err != nil || b.Status != cairn.StatusAvailable || b.RepoID == "" {
		return nil, err
	}
	r, err := s.repoFor(ctx, b.Container)
	if err != nil {
		return nil, err
	}
	rm, err := readManifest(ctx, r, b.RepoID)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", b.ID, err)
	}
	return &volumeCheck{b: b, r: r, rm: rm}, nil
}

// repoManifest is a manifest, or why it could not be read.
type repoManifest struct {
	m   *format.Manifest
	err error
}

// recordCheck writes a check's outcome into a backup's marks (unless
// the backup is gone), and raises its event (prefix "backup" or
// "dbbackup", then kind, then end or error) and metric.
func (s *Service) recordCheck(ctx context.Context, prefix, kind, id, project string, payload map[string]any, check cairn.BackupCheck) error {
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		var err error
		if prefix == "dbbackup" {
			_, err = tx.DatabaseBackup(ctx, id)
		} else {
			_, err = tx.Backup(ctx, id)
		}
		if err != nil {
			return err
		}
		m, err := tx.BackupMarks(ctx, id)
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
	payload[kind] = check
	if check.State == cairn.CheckPassed {
		s.event(ctx, prefix+"."+kind+".end", project, payload)
	} else {
		s.event(ctx, prefix+"."+kind+".error", project, payload)
		s.log.Error("backup "+kind+" failed", "backup", id, "detail", check.Detail)
	}
	return nil
}

// runVerifyBackup reads the backup's chunks back (the task's share of
// them) and records what it found.
func (s *Service) runVerifyBackup(ctx context.Context, t cairn.Task) error {
	p, err := checkParamsOf(t)
	if err != nil {
		return err
	}
	vc, err := s.checkable(ctx, t.ResourceID)
	if err != nil || vc == nil {
		return err
	}
	b := vc.b
	check := cairn.BackupCheck{State: cairn.CheckPassed}
	if err := verifyParts(ctx, vc.r, []manifestPart{{"", vc.rm}}, p.Share, &check); err != nil {
		return fmt.Errorf("verify backup %s: %w", b.ID, err)
	}
	check.At = s.nowUTC()
	return s.recordCheck(ctx, "backup", "verify", b.ID, b.ProjectID, backupPayload(b), check)
}

func checkParamsOf(t cairn.Task) (checkParams, error) {
	var p checkParams
	if len(t.Params) > 0 {
		if err := json.Unmarshal(t.Params, &p); err != nil {
			return p, fmt.Errorf("check params: %w", err)
		}
	}
	return p, nil
}

// manifestPart is one repository backup of a backup: a volume backup's
// one (name ""), a database backup's data and overlay.
type manifestPart struct {
	name string
	m    *repoManifest
}

// verifyParts reads back the chunks of each part (share of them) into
// check: the chunks and bytes read, and, when any is damaged or a
// manifest could not be read, the failed state and what was found.
func verifyParts(ctx context.Context, r Repository, parts []manifestPart, share float64, check *cairn.BackupCheck) error {
	var found []string
	damaged := 0
	for _, part := range parts {
		label := ""
		if part.name != "" {
			label = part.name + " "
		}
		if part.m.err != nil {
			found = append(found, label+"manifest: "+part.m.err.Error())
			continue
		}
		rep, err := r.VerifyBackup(ctx, part.m.m, repo.VerifyOptions{Share: share})
		if err != nil {
			return err
		}
		check.Chunks += rep.ChunksRead
		check.Bytes += rep.BytesRead
		for _, pr := range rep.Problems {
			damaged++
			found = append(found, label+pr.Kind+" "+pr.Object+": "+pr.Detail)
		}
	}
	if len(found) > 0 {
		check.State = cairn.CheckFailed
		check.Detail = strings.Join(found, "; ")
		if damaged > 0 {
			check.Detail = fmt.Sprintf("%d of %d chunks read are damaged: %s", damaged, check.Chunks, check.Detail)
		}
	}
	return nil
}

// readManifest reads a repository backup's manifest: a manifest missing
// or damaged is a finding (in the result), other errors are the
// error's.
func readManifest(ctx context.Context, r Repository, id string) (*repoManifest, error) {
	rid, err := cairn.ParseID(id)
	if err != nil {
		return &repoManifest{err: fmt.Errorf("repository id %q: %w", id, cairn.ErrCorrupt)}, nil
	}
	m, err := r.Manifest(ctx, rid)
	if errors.Is(err, cairn.ErrNotFound) || errors.Is(err, cairn.ErrCorrupt) {
		return &repoManifest{err: err}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", id, err)
	}
	return &repoManifest{m: m}, nil
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
	vc, err := s.checkable(ctx, t.ResourceID)
	if err != nil || vc == nil {
		return err
	}
	b := vc.b
	start := time.Now()
	check := cairn.BackupCheck{State: cairn.CheckPassed}
	if vc.rm.err != nil {
		check.State, check.Detail = cairn.CheckFailed, "manifest: "+vc.rm.err.Error()
	} else if check.Bytes, check.Detail, err = s.drill(ctx, vc.r, vc.rm.m, img); err != nil {
		if ctx.Err() != nil || !errors.Is(err, cairn.ErrCorrupt) && !errors.Is(err, errCheckFailed) {
			return fmt.Errorf("drill of backup %s: %w", b.ID, err)
		}
		check.State, check.Detail = cairn.CheckFailed, err.Error()
	}
	check.Seconds = time.Since(start).Seconds()
	check.At = s.nowUTC()
	return s.recordCheck(ctx, "backup", "drill", b.ID, b.ProjectID, backupPayload(b), check)
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
		return stats.Bytes, "", fmt.Errorf("e2fsck -fn: exit %d: %s: %w", ee.ExitCode(), dbagent.LastLines(string(out), 5), errCheckFailed)
	}
	return stats.Bytes, "restored; e2fsck -fn found the file system clean: " + dbagent.LastLines(string(out), 1), nil
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

// failCheck ends a verify or drill task that could not run: the backup
// is left as it was (a check that did not run found nothing), and the
// task's error says why.
func (s *Service) failCheck(context.Context, cairn.Task, error) error { return nil }

// pickDrill chooses the backup a drill slot restores among a target's
// backups, newest first.
func pickDrill(list []checkTarget, p cairn.Policy, now time.Time, rng *rand.Rand) (checkTarget, bool) {
	if len(list) == 0 {
		return checkTarget{}, false
	}
	if p.DrillPick != cairn.DrillRandom {
		return list[0], true
	}
	var in []checkTarget
	for _, b := range list {
		if p.DrillWithinSeconds == 0 || now.Sub(b.at) <= time.Duration(p.DrillWithinSeconds)*time.Second {
			in = append(in, b)
		}
	}
	if len(in) == 0 {
		return list[0], true
	}
	return in[rng.IntN(len(in))], true
}
