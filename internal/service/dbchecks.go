package service

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// Checks of database backups: a verification reads back the chunks of a
// backup's data and overlay; a drill restores the backup into a scratch
// instance, has the host check it (pg_amcheck or mariadb-check, then the
// policy's query) and removes the instance, however the drill ends.

// dbCheckable returns a database backup a verify or drill task may
// check; ok is false when it is gone or not COMPLETED (the task then has
// nothing to do).
func (s *Service) dbCheckable(ctx context.Context, id string) (cairn.DatabaseBackup, bool, error) {
	b, err := s.dbBackupRow(ctx, id)
	if errors.Is(err, cairn.ErrNotFound) {
		return b, false, nil
	}
	if err != nil || b.Status != cairn.DatabaseBackupCompleted {
		return b, false, err
	}
	return b, true, nil
}

// runVerifyDatabaseBackup reads back the chunks of a database backup's
// data and overlay (the task's share of them) and records what it
// found. A physical incremental backup's parents are verified as backups
// of their own.
func (s *Service) runVerifyDatabaseBackup(ctx context.Context, t cairn.Task) error {
	p, err := checkParamsOf(t)
	if err != nil {
		return err
	}
	b, ok, err := s.dbCheckable(ctx, t.ResourceID)
	if err != nil || !ok {
		return err
	}
	r, err := s.repoFor(ctx, b.Container)
	if err != nil {
		return err
	}
	var parts []manifestPart
	for _, part := range []struct{ name, id string }{{"data", b.Data}, {"overlay", b.Overlay}} {
		if part.id == "" {
			continue
		}
		rm, err := readManifest(ctx, r, part.id)
		if err != nil {
			return fmt.Errorf("verify backup %s: %w", b.ID, err)
		}
		parts = append(parts, manifestPart{part.name, rm})
	}
	check := cairn.BackupCheck{State: cairn.CheckPassed}
	if len(parts) == 0 {
		check.State, check.Detail = cairn.CheckFailed, "the backup names no data in the repository"
	} else if err := verifyParts(ctx, r, parts, p.Share, &check); err != nil {
		return fmt.Errorf("verify backup %s: %w", b.ID, err)
	}
	check.At = s.nowUTC()
	return s.recordCheck(ctx, "dbbackup", "verify", b.ID, b.ProjectID, dbBackupPayload(b), check)
}

// DrillInstanceID is the ID of the scratch instance a drill task
// restores into: made from the task's ID, so a drill resumed after a
// crash finds (and removes) the instance its first run left.
func DrillInstanceID(taskID string) string {
	h := sha256.Sum256([]byte("cairn drill instance\x00" + taskID))
	h[6] = h[6]&0x0f | 0x80 // version 8: custom
	h[8] = h[8]&0x3f | 0x80 // RFC 9562 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// runDrillDatabaseBackup restores a database backup into a scratch
// instance (its ID made from the task's, named "drill of backup ID" and
// in BUILD all along: nothing archives it, the tenant sees it listed
// while the drill runs but cannot delete it), has the host check it and
// records the outcome: the datastore's check and the query's result,
// the restore's bytes and the seconds from the start of the restore to
// the end of the check. The scratch instance is removed
// however the drill ends; a drill resumed after a crash removes the one
// its first run left and starts again.
func (s *Service) runDrillDatabaseBackup(ctx context.Context, t cairn.Task) error {
	if s.host == nil {
		return errNoInstances
	}
	p, err := checkParamsOf(t)
	if err != nil {
		return err
	}
	scratchID := DrillInstanceID(t.ID)
	if err := s.removeDrillInstance(ctx, scratchID); err != nil {
		return err
	}
	b, ok, err := s.dbCheckable(ctx, t.ResourceID)
	if err != nil || !ok {
		return err
	}
	now := s.nowUTC()
	inst := cairn.Instance{ID: scratchID, ProjectID: b.ProjectID, Name: "drill of backup " + b.ID, Status: cairn.InstanceBuild,
		Datastore: b.Datastore, VolumeSize: b.VolumeSize, BackupID: b.ID, CreatedAt: now, UpdatedAt: now}
	if err := s.cat.Update(ctx, func(tx catalog.Tx) error { return tx.InsertInstance(ctx, inst) }); err != nil {
		return fmt.Errorf("drill instance: %w", err)
	}
	start := time.Now()
	check := cairn.BackupCheck{State: cairn.CheckPassed}
	_, _, perr := s.provisionInstance(ctx, t, inst, instanceParams{FromRepository: true})
	var rep dbagent.CheckReport
	if perr == nil {
		rep, perr = s.host.CheckInstance(ctx, scratchID, dbagent.CheckRequest{Database: p.Database, Query: p.Query})
	}
	check.Seconds = time.Since(start).Seconds()
	// The scratch instance goes whatever happened; a removal that fails
	// (the service stopping) is the resumed task's first step.
	if err := s.removeDrillInstance(ctx, scratchID); err != nil {
		return err
	}
	switch {
	case perr != nil && (ctx.Err() != nil || !errors.Is(perr, cairn.ErrCorrupt) && !errors.Is(perr, cairn.ErrNotFound)):
		return fmt.Errorf("drill of backup %s: %w", b.ID, perr)
	case perr != nil:
		// The backup's data is damaged or missing: that is the finding.
		check.State, check.Detail = cairn.CheckFailed, "restore: "+perr.Error()
	case !rep.Passed:
		check.State, check.Detail = cairn.CheckFailed, rep.Detail
	default:
		check.Detail = "restored; " + rep.Detail
	}
	check.Bytes = b.Size
	check.At = s.nowUTC()
	return s.recordCheck(ctx, "dbbackup", "drill", b.ID, b.ProjectID, dbBackupPayload(b), check)
}

// removeDrillInstance removes a drill's scratch instance, if there is
// one: on the host, its volume, its row.
func (s *Service) removeDrillInstance(ctx context.Context, id string) error {
	inst, err := s.instanceRow(ctx, id)
	if errors.Is(err, cairn.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := s.removeInstance(ctx, inst); err != nil {
		return fmt.Errorf("removing drill instance %s: %w", id, err)
	}
	return nil
}

// failDrillDatabaseBackup ends a drill that could not finish: its
// scratch instance is removed, and the backup's drill is marked failed
// with the cause. Unlike a verification that could not run, an
// instance's drill fails in ways that are findings (a server that does
// not start from the restored data, a recovery that stops) and that
// cannot be told from the host's own failures: either way the backup
// was not shown to restore, and the operator hears of it.
func (s *Service) failDrillDatabaseBackup(ctx context.Context, t cairn.Task, cause error) error {
	if s.host != nil {
		if err := s.removeDrillInstance(ctx, DrillInstanceID(t.ID)); err != nil {
			return err
		}
	}
	b, err := s.dbBackupRow(ctx, t.ResourceID)
	if errors.Is(err, cairn.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	check := cairn.BackupCheck{State: cairn.CheckFailed, At: s.nowUTC(), Detail: "the drill could not finish: " + failReason(cause)}
	return s.recordCheck(ctx, "dbbackup", "drill", b.ID, b.ProjectID, dbBackupPayload(b), check)
}
