package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/retention"
)

// Retention: a policy's rules applied, per target, to the backups the
// policy made (its slots' runs). Backups made by hand are never touched.

// ApplyRetention decides, for each of a policy's targets, which of the
// backups the policy made to keep and why; unless dryRun, it queues the
// deletion of the others (each deletion task frees what no other backup
// needs). The decisions and the deletions are one transaction.
func (s *Service) ApplyRetention(ctx context.Context, c Caller, id string, dryRun bool) (cairn.RetentionReport, error) {
	rep := cairn.RetentionReport{PolicyID: id, DryRun: dryRun}
	// The end of instances' recoverable windows is read before the
	// transaction (it asks the archivers).
	// The windows are those of every target the policy made backups of,
	// named or chosen by its tag (now or before).
	var p cairn.Policy
	var targets []string
	if err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		if p, err = getPolicy(ctx, tx, c, id); err != nil {
			return err
		}
		pbs, err := tx.PolicyBackups(ctx, p.ID)
		for _, pb := range pbs {
			if !slices.Contains(targets, pb.TargetID) {
				targets = append(targets, pb.TargetID)
			}
		}
		return err
	}); err != nil {
		return rep, err
	}
	windowEnd := map[string]time.Time{}
	if p.Target.Kind == cairn.TargetInstance && p.PITRWindowSeconds > 0 {
		for _, target := range targets {
			w, err := s.recoverableWindow(ctx, target)
			if err != nil {
				return rep, fmt.Errorf("instance %s: recoverable window: %w", target, err)
			}
			if w != nil {
				windowEnd[target] = w.To
			}
		}
	}
	var deleted []cairn.Backup
	var deletedDB []cairn.DatabaseBackup
	run := func(tx catalog.Tx) error {
		rep.Targets, rep.Kept, rep.Removed, rep.Deferred = nil, 0, 0, 0
		deleted, deletedDB = nil, nil
		p, err := getPolicy(ctx, tx, c, id)
		if err != nil {
			return err
		}
		loc, err := time.LoadLocation(p.TimeZone)
		if err != nil {
			return fmt.Errorf("policy %s: time zone: %w", p.ID, err)
		}
		pbs, err := tx.PolicyBackups(ctx, p.ID)
		if err != nil {
			return err
		}
		var order []string
		made := map[string][]string{} // target: backup IDs
		for _, pb := range pbs {
			if _, ok := made[pb.TargetID]; !ok {
				order = append(order, pb.TargetID)
			}
			made[pb.TargetID] = append(made[pb.TargetID], pb.BackupID)
		}
		for _, target := range order {
			t, err := s.retainTarget(ctx, tx, p, loc, target, made[target], windowEnd[target], dryRun, &deleted, &deletedDB)
			if err != nil {
				return err
			}
			for _, d := range t.Backups {
				switch d.Action {
				case cairn.ActionKeep:
					rep.Kept++
				case cairn.ActionRemove:
					rep.Removed++
				case cairn.ActionDeferred:
					rep.Deferred++
				}
			}
			rep.Targets = append(rep.Targets, t)
		}
		return nil
	}
	var err error
	if dryRun {
		err = s.cat.View(ctx, run)
	} else {
		err = s.update(ctx, run)
	}
	if err != nil {
		return rep, err
	}
	if !dryRun {
		for _, b := range deleted {
			s.event(ctx, "backup.delete.start", b.ProjectID, backupPayload(b))
		}
		for _, b := range deletedDB {
			s.event(ctx, "dbbackup.delete.start", b.ProjectID, dbBackupPayload(b))
		}
		s.event(ctx, "policy.retention", p.ProjectID, map[string]any{"policy_id": p.ID, "name": p.Name,
			"kept": rep.Kept, "removed": rep.Removed, "deferred": rep.Deferred})
	}
	return rep, nil
}

// retainTarget decides among one target's backups (those still there
// and complete; running and failed ones are left alone) and, unless
// dryRun, queues the removals.
func (s *Service) retainTarget(ctx context.Context, tx catalog.Tx, p cairn.Policy, loc *time.Location, target string, ids []string,
	windowEnd time.Time, dryRun bool, deleted *[]cairn.Backup, deletedDB *[]cairn.DatabaseBackup) (cairn.RetentionTarget, error) {
	out := cairn.RetentionTarget{TargetID: target, Backups: []cairn.RetentionDecision{}}
	// forget drops the record of a backup that is gone (in a real run).
	forget := func(id string) error {
		if dryRun {
			return nil
		}
		if err := tx.DeletePolicyBackup(ctx, p.ID, id); err != nil && !errors.Is(err, cairn.ErrNotFound) {
			return err
		}
		return nil
	}
	var items []retention.Backup
	vols := map[string]cairn.Backup{}
	dbs := map[string]cairn.DatabaseBackup{}
	// Each kind's rows of the target in one read, not one per backup.
	present := map[string]bool{}
	if p.Target.Kind == cairn.TargetVolume {
		list, err := tx.Backups(ctx, catalog.Filter{ProjectID: p.ProjectID, VolumeID: target})
		if err != nil {
			return out, err
		}
		for _, b := range list {
			present[b.ID] = true
			if b.Status == cairn.StatusAvailable {
				vols[b.ID] = b
			}
		}
	} else {
		list, err := tx.DatabaseBackups(ctx, catalog.Filter{ProjectID: p.ProjectID, InstanceID: target})
		if err != nil {
			return out, err
		}
		for _, b := range list {
			present[b.ID] = true
			if b.Status == cairn.DatabaseBackupCompleted {
				dbs[b.ID] = b
			}
		}
	}
	for _, id := range ids {
		switch {
		case !present[id]:
			if err := forget(id); err != nil {
				return out, err
			}
		case vols[id].ID != "":
			items = append(items, retention.Backup{ID: id, Time: vols[id].DataTimestamp})
		case dbs[id].ID != "":
			items = append(items, retention.Backup{ID: id, Time: dbDataTime(dbs[id])})
		}
	}
	// Only the policy's own backups are decided among (and kept as
	// parents): drop the others the reads brought.
	ours := map[string]bool{}
	for _, id := range ids {
		ours[id] = true
	}
	for id := range vols {
		if !ours[id] {
			delete(vols, id)
		}
	}
	for id := range dbs {
		if !ours[id] {
			delete(dbs, id)
		}
	}
	pitrFloor(items, p.PITRWindowSeconds, windowEnd)
	if err := markFloors(ctx, tx, items); err != nil {
		return out, err
	}
	decisions, err := retention.Decide(items, p.Retention, loc)
	if err != nil {
		return out, err
	}
	// An instance's incremental needs its parent's row: keep the parents
	// of what is kept.
	keep := map[string]bool{}
	for _, d := range decisions {
		keep[d.ID] = d.Keep
	}
	for i := range decisions {
		if !decisions[i].Keep {
			continue
		}
		for parent := dbs[decisions[i].ID].ParentID; parent != ""; parent = dbs[parent].ParentID {
			if _, ours := dbs[parent]; !ours || keep[parent] {
				break
			}
			keep[parent] = true
		}
	}
	for _, d := range decisions {
		rd := cairn.RetentionDecision{BackupID: d.ID, Time: d.Time, Action: cairn.ActionKeep, Reasons: d.Reasons}
		switch {
		case d.Keep:
		case keep[d.ID]:
			rd.Reasons = []string{cairn.FloorParentOfKept}
		default:
			rd.Action = cairn.ActionRemove
		}
		if rd.Action == cairn.ActionRemove && !dryRun {
			if b, ok := vols[d.ID]; ok {
				b, err := s.deleteBackupTx(ctx, tx, b)
				if err != nil {
					return out, err
				}
				*deleted = append(*deleted, b)
			} else {
				queued, err := s.deleteDatabaseBackupTx(ctx, tx, dbs[d.ID])
				switch {
				case errors.Is(err, cairn.ErrConflict):
					rd.Action = cairn.ActionDeferred
					rd.Reasons = append(rd.Reasons, failReason(err))
				case err != nil:
					return out, err
				case !queued:
					*deletedDB = append(*deletedDB, dbs[d.ID])
				}
			}
		}
		out.Backups = append(out.Backups, rd)
	}
	return out, nil
}

// dbDataTime is when a database backup's data was taken.
func dbDataTime(b cairn.DatabaseBackup) time.Time {
	if !b.DataTimestamp.IsZero() {
		return b.DataTimestamp
	}
	return b.CreatedAt
}

// pitrFloor keeps what a restore to any second of the window needs: the
// backups taken in it, and the newest one before it (the base the
// window's first second is replayed from). The window ends at the
// archive's newest second, or the newest backup's when later or unknown,
// so downtime never moves it.
func pitrFloor(items []retention.Backup, seconds int, end time.Time) {
	if seconds <= 0 || len(items) == 0 {
		return
	}
	for _, it := range items {
		if it.Time.After(end) {
			end = it.Time
		}
	}
	from := end.Add(-time.Duration(seconds) * time.Second)
	base := -1
	for i, it := range items {
		if !it.Time.Before(from) {
			items[i].Floors = append(items[i].Floors, cairn.FloorPITR)
		} else if base < 0 || it.Time.After(items[base].Time) {
			base = i
		}
	}
	if base >= 0 {
		items[base].Floors = append(items[base].Floors, cairn.FloorPITR)
	}
}

// markFloors adds the floors of the backups' marks: a protected backup,
// the newest whose last verification passed and the newest whose last
// drill passed are kept.
func markFloors(ctx context.Context, tx catalog.Tx, items []retention.Backup) error {
	verified, drilled := -1, -1
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.ID
	}
	marks, err := tx.BackupMarksOf(ctx, ids)
	if err != nil {
		return err
	}
	for i, it := range items {
		m := marks[it.ID]
		if m.Protected {
			items[i].Floors = append(items[i].Floors, cairn.FloorProtected)
		}
		if v := m.Verification; v != nil && v.State == cairn.CheckPassed && (verified < 0 || it.Time.After(items[verified].Time)) {
			verified = i
		}
		if d := m.Drill; d != nil && d.State == cairn.CheckPassed && (drilled < 0 || it.Time.After(items[drilled].Time)) {
			drilled = i
		}
	}
	if verified >= 0 {
		items[verified].Floors = append(items[verified].Floors, cairn.FloorNewestVerified)
	}
	if drilled >= 0 {
		items[drilled].Floors = append(items[drilled].Floors, cairn.FloorNewestDrilled)
	}
	return nil
}
