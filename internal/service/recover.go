package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/dbhost"
	"github.com/cairnproject/cairn/internal/repo"
)

// Recover in place brings a running instance back to a point in time on
// its own volume and port:
//
//  1. the server is stopped and the volume detached (the host forgets
//     the instance), and a safety snapshot of the volume is taken, so
//     the recover can be undone and a failed one rolled back;
//  2. the volume is reverted to the base backup's snapshot when the host
//     still has it (O(1)), or else the backup's image is written over it
//     from the repository, only the blocks that differ;
//  3. the host provisions the instance again from that data, replays
//     the archive's WAL to the point, promotes and starts the server.
//
// The task runs again from step 1 after a crash: the safety snapshot is
// taken once (named by the recovery), and steps 2 and 3 start over from
// it. A recover that fails for good is rolled back: the volume reverted
// to the safety snapshot and the server started as it was. Undo does
// the same on request, after a recover completed.

// recoverParams are an instance.recover task's.
type recoverParams struct {
	RecoveryID string `json:"recovery_id"`
	// Previous is the safety snapshot of the recover before, deleted
	// once this one completes.
	Previous string `json:"previous,omitempty"`
}

// safetySnapshotName names the snapshot a recovery takes of the volume
// before it starts.
func safetySnapshotName(recovery string) string { return "recover-" + recovery }

// hostAttempts bounds how often a host call that met the data plane gone
// (killed, and being started again by the service) is made again.
const hostAttempts = 6

// onHost calls fn until it succeeds, fails otherwise than with the host
// unavailable, or has been tried hostAttempts times, with backoff.
func (s *Service) onHost(ctx context.Context, what string, fn func() error) error {
	pause := time.Second
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || !errors.Is(err, cairn.ErrUnavailable) || attempt == hostAttempts {
			return err
		}
		s.log.Warn(what+" met the instance host unavailable; trying again", "attempt", attempt, "in", pause, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.after(pause):
		}
		pause *= 2
	}
}

// RecoverInstance accepts the recover in place of an active PostgreSQL
// instance to in.PointInTime, from in.BackupID or the latest backup its
// archive rolls forward to that time. The instance goes to RECOVER; a
// time outside its recoverable window is refused, naming the window.
func (s *Service) RecoverInstance(ctx context.Context, c Caller, id string, in cairn.InstanceRecoverRequest) (cairn.Instance, error) {
	if s.host == nil {
		return cairn.Instance{}, errNoInstances
	}
	if in.PointInTime.IsZero() {
		return cairn.Instance{}, errorf(cairn.ErrInvalid, "a recover needs point_in_time")
	}
	var inst cairn.Instance
	if err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		inst, err = getInstance(ctx, tx, c, id)
		return err
	}); err != nil {
		return cairn.Instance{}, err
	}
	if in.BackupID != "" {
		b, err := s.dbBackupRow(ctx, in.BackupID)
		if err != nil || b.ProjectID != c.ProjectID && !c.Admin {
			return cairn.Instance{}, errorf(cairn.ErrNotFound, "backup %s not found", in.BackupID)
		}
		if b.InstanceID != id {
			return cairn.Instance{}, errorf(cairn.ErrInvalid, "backup %s is of instance %s, not %s", in.BackupID, b.InstanceID, id)
		}
	}
	tli := s.serverTimeline(inst)
	b, err := s.planPointInTime(ctx, c, id, in.BackupID, in.PointInTime, tli)
	if err != nil {
		return cairn.Instance{}, err
	}
	now := s.nowUTC()
	rc := &cairn.InstanceRecovery{ID: cairn.NewUUID(), Status: cairn.RecoveryRunning, PointInTime: in.PointInTime.UTC(),
		BackupID: b.ID, ArchiveTimeline: tli, CreatedAt: now, UpdatedAt: now}
	err = s.update(ctx, func(tx catalog.Tx) error {
		var err error
		if inst, err = getInstance(ctx, tx, c, id); err != nil {
			return err
		}
		if inst.Status != cairn.InstanceActive {
			return fmt.Errorf("instance %s is %s; only an ACTIVE instance is recovered: %w", id, inst.Status, cairn.ErrConflict)
		}
		p := recoverParams{RecoveryID: rc.ID}
		if prev := inst.Recovery; prev != nil && prev.Status == cairn.RecoveryCompleted {
			p.Previous = prev.SafetySnapshot
		}
		params, err := json.Marshal(p)
		if err != nil {
			return err
		}
		inst.Status, inst.OperatingStatus, inst.FailReason = cairn.InstanceRecover, cairn.OperatingShutdown, ""
		inst.Recovery, inst.UpdatedAt = rc, now
		if err := tx.UpdateInstance(ctx, inst); err != nil {
			return err
		}
		_, err = s.queue(ctx, tx, inst.ProjectID, "instance.recover", inst.ID, params)
		return err
	})
	if err != nil {
		return cairn.Instance{}, err
	}
	s.event(ctx, "instance.recover.start", inst.ProjectID, recoveryPayload(inst))
	return inst, nil
}

// UndoRecover accepts putting an instance back as it was when its last
// recover in place began: its volume reverted to the recover's safety
// snapshot and its server started on it. Writes made since the recover
// are lost with it (they are in the archive, on the recovered timeline).
func (s *Service) UndoRecover(ctx context.Context, c Caller, id string) (cairn.Instance, error) {
	if s.host == nil {
		return cairn.Instance{}, errNoInstances
	}
	var inst cairn.Instance
	err := s.update(ctx, func(tx catalog.Tx) error {
		var err error
		if inst, err = getInstance(ctx, tx, c, id); err != nil {
			return err
		}
		rc := inst.Recovery
		if rc == nil || rc.Status != cairn.RecoveryCompleted || rc.SafetySnapshot == "" {
			return fmt.Errorf("instance %s has no completed recover to undo: %w", id, cairn.ErrConflict)
		}
		if inst.Status != cairn.InstanceActive {
			return fmt.Errorf("instance %s is %s; only an ACTIVE instance's recover is undone: %w", id, inst.Status, cairn.ErrConflict)
		}
		params, err := json.Marshal(recoverParams{RecoveryID: rc.ID})
		if err != nil {
			return err
		}
		inst.Status, inst.OperatingStatus, inst.FailReason = cairn.InstanceRecover, cairn.OperatingShutdown, ""
		rc.Status, rc.UpdatedAt = cairn.RecoveryUndoing, s.nowUTC()
		inst.UpdatedAt = rc.UpdatedAt
		if err := tx.UpdateInstance(ctx, inst); err != nil {
			return err
		}
		_, err = s.queue(ctx, tx, inst.ProjectID, "instance.undo_recover", inst.ID, params)
		return err
	})
	if err != nil {
		return cairn.Instance{}, err
	}
	s.event(ctx, "instance.undo_recover.start", inst.ProjectID, recoveryPayload(inst))
	return inst, nil
}

// recoveryOf reads a recover task's instance and checks that the task
// is still its current one; done reports a task finished by an earlier
// attempt (or overtaken).
func (s *Service) recoveryOf(ctx context.Context, t cairn.Task, want cairn.RecoveryStatus) (inst cairn.Instance, p recoverParams, done bool, err error) {
	if err := json.Unmarshal(t.Params, &p); err != nil {
		return inst, p, false, fmt.Errorf("task params: %w", err)
	}
	inst, err = s.instanceRow(ctx, t.ResourceID)
	if err != nil {
		return inst, p, false, err
	}
	if inst.Status != cairn.InstanceRecover || inst.Recovery == nil || inst.Recovery.ID != p.RecoveryID || inst.Recovery.Status != want {
		return inst, p, true, nil
	}
	return inst, p, false, nil
}

// runRecoverInstance runs a recover in place; see the top of the file.
func (s *Service) runRecoverInstance(ctx context.Context, t cairn.Task) error {
	inst, p, done, err := s.recoveryOf(ctx, t, cairn.RecoveryRunning)
	if err != nil || done {
		return err
	}
	rc := *inst.Recovery
	vol, err := cairn.ParseID(inst.VolumeID)
	if err != nil {
		return fmt.Errorf("instance %s: volume id: %w", inst.ID, err)
	}
	b, err := s.dbBackupRow(ctx, rc.BackupID)
	if err != nil {
		return err
	}
	s.stopArchiver(inst.ID)
	// 1. The instance as it is, kept.
	began := time.Now()
	if err := s.onHost(ctx, "stopping an instance to recover it", func() error { return s.host.RemoveInstance(ctx, inst.ID) }); err != nil {
		return fmt.Errorf("stopping the instance: %w", err)
	}
	s.log.Info("recover: instance stopped and detached", "instance", inst.ID, "took", time.Since(began).Round(time.Millisecond))
	if rc.SafetySnapshot == "" {
		snap, found, err := s.engineSnapshot(ctx, safetySnapshotName(rc.ID))
		if err != nil {
			return err
		}
		if !found {
			if snap, err = s.eng.CreateSnapshot(ctx, vol, safetySnapshotName(rc.ID)); err != nil {
				return fmt.Errorf("the safety snapshot: %w", err)
			}
		}
		inst, err = s.setInstance(ctx, inst.ID, func(in *cairn.Instance) {
			in.Recovery.SafetySnapshot, in.Recovery.UpdatedAt = snap.ID.String(), s.nowUTC()
		})
		if err != nil {
			return err
		}
		rc = *inst.Recovery
	}
	// 2. The base: the newest restore point between the backup and the
	// point when there is one, else the backup.
	rp, base, fromPoint, err := s.restorePointBase(ctx, inst, vol, b, rc.PointInTime)
	if err != nil {
		return err
	}
	inst, err = s.setInstance(ctx, inst.ID, func(in *cairn.Instance) {
		in.Recovery.RestorePoint, in.Recovery.BaseTime = rp.ID, base.DataTimestamp
	})
	if err != nil {
		return err
	}
	if fromPoint {
		sid, err := cairn.ParseID(rp.SnapshotID)
		if err != nil {
			return fmt.Errorf("restore point %s: snapshot id: %w", rp.ID, err)
		}
		if err := s.eng.RevertVolume(ctx, vol, sid); err != nil {
			return fmt.Errorf("reverting to restore point %s: %w", rp.ID, err)
		}
		s.log.Info("recover: volume reverted to a restore point", "instance", inst.ID, "restore_point", rp.ID,
			"data_timestamp", rp.DataTimestamp, "backup", b.ID)
	} else if err := s.recoverBase(ctx, t, inst, vol, b); err != nil {
		return err
	}
	// 3. The WAL to the point, on the host.
	st, err := s.provisionRecovered(ctx, inst, vol, base, rc.PointInTime)
	if err != nil {
		return err
	}
	inst, err = s.setInstance(ctx, inst.ID, func(in *cairn.Instance) {
		in.Status, in.OperatingStatus = cairn.InstanceActive, st.Operating
		in.Address, in.Port, in.FailReason = st.Address, st.Port, ""
		in.Recovery.Status, in.Recovery.UpdatedAt = cairn.RecoveryCompleted, s.nowUTC()
	})
	if err != nil {
		return err
	}
	// The restore points after the point hold the history the recover
	// left: a later recover must not start from them.
	if err := s.dropRestorePoints(ctx, inst.ID, func(p cairn.RestorePoint) bool {
		return p.DataTimestamp.After(rc.PointInTime)
	}); err != nil {
		s.log.Warn("removing the restore points a recover passed over", "instance", inst.ID, "err", err)
	}
	s.startArchiver(inst)
	if p.Previous != "" && p.Previous != rc.SafetySnapshot {
		s.deleteSafetySnapshot(ctx, p.Previous)
	}
	s.event(ctx, "instance.recover.end", inst.ProjectID, recoveryPayload(inst))
	return nil
}

// recoverBase brings the stopped instance's volume back to backup b: a
// revert to b's snapshot when the host has it, else b's image written
// over the volume where it differs. A physical backup's data directory
// is restored by the host (step 3) onto a new file system instead.
func (s *Service) recoverBase(ctx context.Context, t cairn.Task, inst cairn.Instance, vol cairn.ID, b cairn.DatabaseBackup) error {
	if b.Strategy != cairn.StrategySnapshot {
		return nil
	}
	if es, found, err := s.engineSnapshot(ctx, DBSnapshotName(b.ID)); err != nil {
		return err
	} else if found && es.Volume == vol {
		if err := s.eng.RevertVolume(ctx, vol, es.ID); err != nil {
			return fmt.Errorf("reverting to backup %s's snapshot: %w", b.ID, err)
		}
		s.log.Info("recover: volume reverted to the backup's snapshot", "instance", inst.ID, "backup", b.ID)
		return nil
	}
	r, err := s.repoFor(ctx, b.Container)
	if err != nil {
		return err
	}
	rid, err := cairn.ParseID(b.Data)
	if err != nil {
		return fmt.Errorf("backup %s: repository id: %w", b.ID, err)
	}
	m, err := r.Manifest(ctx, rid)
	if err != nil {
		return fmt.Errorf("backup %s: %w", b.ID, err)
	}
	ev, ok, err := s.engineVolume(ctx, inst.ID)
	if err != nil {
		return err
	}
	if !ok || ev.ID != vol {
		return fmt.Errorf("instance %s: its volume %s: %w", inst.ID, vol.Short(), cairn.ErrNotFound)
	}
	if ev.Size < m.Size {
		if err := s.eng.ExtendVolume(ctx, vol, m.Size); err != nil {
			return fmt.Errorf("extending the volume to the backup's size: %w", err)
		}
	}
	dev, err := s.eng.OpenVolume(ctx, vol)
	if err != nil {
		return fmt.Errorf("open volume: %w", err)
	}
	prog := &repo.Progress{}
	stop := s.trackProgress(ctx, t.ID, prog)
	stats, err := r.Restore(ctx, m, DeviceTarget(ctx, dev, false), prog)
	stop()
	if cerr := dev.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("restoring backup %s over the volume: %w", b.ID, err)
	}
	s.obs.BytesRestored(stats.Bytes)
	s.log.Info("recover: backup written over the volume where it differed", "instance", inst.ID, "backup", b.ID,
		"written", stats.Bytes, "skipped", stats.BytesSkipped)
	return nil
}

// provisionRecovered has the host make the instance again from its
// volume, as b left it, and replay the archive's WAL to t.
func (s *Service) provisionRecovered(ctx context.Context, inst cairn.Instance, vol cairn.ID, b cairn.DatabaseBackup, t time.Time) (dbhost.State, error) {
	if b.Strategy != cairn.StrategySnapshot && b.Strategy != cairn.StrategyPhysical {
		return dbhost.State{}, fmt.Errorf("backup %s is %s: a recover starts from a snapshot or physical backup: %w", b.ID, b.Strategy, cairn.ErrInvalid)
	}
	spec := dbhost.Spec{ID: inst.ID, Datastore: inst.Datastore.Type, Version: inst.Datastore.Version,
		Volume: vol, Port: inst.Port}
	chain, err := s.restoreSource(ctx, &spec, b)
	if err != nil {
		return dbhost.State{}, err
	}
	if b.Overlay != "" {
		if spec.Overlay, err = s.readOverlay(ctx, b); err != nil {
			return dbhost.State{}, err
		}
	}
	var walStream func(ctx context.Context, w io.Writer) error
	if spec.Recovery, walStream, err = s.recoveryPlan(ctx, inst.ID, b, t, true, inst.Recovery.ArchiveTimeline); err != nil {
		return dbhost.State{}, err
	}
	var st dbhost.State
	err = s.onHost(ctx, "provisioning a recovered instance", func() error {
		var err error
		st, err = s.provisionFromStream(ctx, spec, b, chain, walStream)
		return err
	})
	if err != nil {
		return st, fmt.Errorf("provisioning: %w", err)
	}
	return st, nil
}

// putBack makes the instance what its recovery's safety snapshot holds:
// the host forgets it, the volume is reverted, and the host starts the
// server on it as it is.
func (s *Service) putBack(ctx context.Context, inst cairn.Instance) (dbhost.State, error) {
	vol, err := cairn.ParseID(inst.VolumeID)
	if err != nil {
		return dbhost.State{}, fmt.Errorf("instance %s: volume id: %w", inst.ID, err)
	}
	snap, err := cairn.ParseID(inst.Recovery.SafetySnapshot)
	if err != nil {
		return dbhost.State{}, fmt.Errorf("instance %s: safety snapshot id: %w", inst.ID, err)
	}
	if err := s.onHost(ctx, "stopping an instance to put it back", func() error { return s.host.RemoveInstance(ctx, inst.ID) }); err != nil {
		return dbhost.State{}, fmt.Errorf("stopping the instance: %w", err)
	}
	if err := s.eng.RevertVolume(ctx, vol, snap); err != nil {
		return dbhost.State{}, fmt.Errorf("reverting to the safety snapshot: %w", err)
	}
	return s.startFromVolume(ctx, inst, vol)
}

// startFromVolume has the host start the instance's server on its
// volume as it is.
func (s *Service) startFromVolume(ctx context.Context, inst cairn.Instance, vol cairn.ID) (dbhost.State, error) {
	spec := dbhost.Spec{ID: inst.ID, Datastore: inst.Datastore.Type, Version: inst.Datastore.Version,
		Volume: vol, Port: inst.Port, Source: dbhost.SourceVolume}
	var st dbhost.State
	err := s.onHost(ctx, "starting an instance from its volume", func() error {
		var err error
		st, err = s.host.Provision(ctx, spec, nil)
		return err
	})
	if err != nil {
		return st, fmt.Errorf("starting the server: %w", err)
	}
	return st, nil
}

// runUndoRecover puts the instance back as its last recover found it.
func (s *Service) runUndoRecover(ctx context.Context, t cairn.Task) error {
	inst, _, done, err := s.recoveryOf(ctx, t, cairn.RecoveryUndoing)
	if err != nil || done {
		return err
	}
	s.stopArchiver(inst.ID)
	st, err := s.putBack(ctx, inst)
	if err != nil {
		return err
	}
	safety := inst.Recovery.SafetySnapshot
	// The restore points taken since the recover hold the history the
	// undo leaves.
	began := inst.Recovery.CreatedAt
	if err := s.dropRestorePoints(ctx, inst.ID, func(p cairn.RestorePoint) bool { return p.CreatedAt.After(began) }); err != nil {
		return err
	}
	// So is the log the recover began: a restore of this instance after
	// it is gone from the catalog, or from another deployment, reads the
	// store alone, and must follow the history the server went back to.
	if tli := inst.Recovery.ArchiveTimeline; tli > 0 {
		if err := s.abandonLogs(ctx, inst.ID, tli, inst.Datastore.Type == cairn.DatastoreMariaDB); err != nil {
			return err
		}
	}
	inst, err = s.setInstance(ctx, inst.ID, func(in *cairn.Instance) {
		in.Status, in.OperatingStatus = cairn.InstanceActive, st.Operating
		in.Address, in.Port, in.FailReason = st.Address, st.Port, ""
		in.Recovery.Status, in.Recovery.SafetySnapshot, in.Recovery.UpdatedAt = cairn.RecoveryUndone, "", s.nowUTC()
	})
	if err != nil {
		return err
	}
	s.startArchiver(inst)
	// The volume is what the snapshot held: it has done its work.
	s.deleteSafetySnapshot(ctx, safety)
	s.event(ctx, "instance.undo_recover.end", inst.ProjectID, recoveryPayload(inst))
	return nil
}

// failRecover rolls back a recover or an undo that failed for good: the
// instance is put back as it was when the recover began (from its
// safety snapshot), or, when none was taken, started again as it is.
// Only when that fails too is the instance left in ERROR.
func (s *Service) failRecover(event string) func(ctx context.Context, t cairn.Task, cause error) error {
	return func(ctx context.Context, t cairn.Task, cause error) error {
		var p recoverParams
		_ = json.Unmarshal(t.Params, &p)
		inst, err := s.instanceRow(ctx, t.ResourceID)
		if errors.Is(err, cairn.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if inst.Status != cairn.InstanceRecover || inst.Recovery == nil || inst.Recovery.ID != p.RecoveryID {
			return nil
		}
		s.stopArchiver(inst.ID)
		undoing := inst.Recovery.Status == cairn.RecoveryUndoing
		var st dbhost.State
		var rerr error
		switch {
		case inst.Recovery.SafetySnapshot != "" && !undoing:
			st, rerr = s.putBack(ctx, inst)
			// Back on the history it left: a timeline the recover began
			// before it failed is not the server's.
			if tli := inst.Recovery.ArchiveTimeline; rerr == nil && tli > 0 {
				if err := s.abandonLogs(ctx, inst.ID, tli, inst.Datastore.Type == cairn.DatastoreMariaDB); err != nil {
					s.log.Warn("marking a failed recover's log abandoned", "instance", inst.ID, "err", err)
				}
			}
		default:
			// Nothing changed on the volume yet (no safety snapshot), or
			// an undo failed, whose volume is the recovered one or the
			// snapshot's: started as it is.
			var vol cairn.ID
			if vol, rerr = cairn.ParseID(inst.VolumeID); rerr == nil {
				rerr = s.onHost(ctx, "stopping an instance", func() error { return s.host.RemoveInstance(ctx, inst.ID) })
			}
			if rerr == nil {
				st, rerr = s.startFromVolume(ctx, inst, vol)
			}
		}
		reason := failReason(cause)
		inst, err = s.setInstance(ctx, inst.ID, func(in *cairn.Instance) {
			in.Recovery.UpdatedAt = s.nowUTC()
			if !undoing {
				in.Recovery.Status, in.Recovery.FailReason = cairn.RecoveryFailed, reason
			} else {
				in.Recovery.Status, in.Recovery.FailReason = cairn.RecoveryCompleted, "undo failed: "+reason
			}
			if rerr != nil {
				in.Status, in.FailReason = cairn.InstanceError, reason+"; putting the instance back failed too: "+failReason(rerr)
				return
			}
			in.Status, in.OperatingStatus = cairn.InstanceActive, st.Operating
			in.Address, in.Port = st.Address, st.Port
			in.FailReason = "recover failed, the instance is as it was before: " + reason
			if undoing {
				in.FailReason = "undo failed, the instance is as the recover left it: " + reason
			}
		})
		if err != nil {
			return err
		}
		if inst.Status == cairn.InstanceActive {
			s.startArchiver(inst)
		}
		s.event(ctx, event, inst.ProjectID, recoveryPayload(inst))
		return nil
	}
}

// deleteSafetySnapshot removes a recovery's safety snapshot that is no
// longer needed; a failure only leaves it behind (the instance's delete
// removes it).
func (s *Service) deleteSafetySnapshot(ctx context.Context, id string) {
	sid, err := cairn.ParseID(id)
	if err != nil {
		return
	}
	if err := s.eng.DeleteSnapshot(ctx, sid); err != nil && !errors.Is(err, cairn.ErrNotFound) {
		s.log.Warn("deleting a recover's safety snapshot", "snapshot", id, "err", err)
	}
}

// deleteRecoverSnapshots removes every safety snapshot of an instance's
// volume (before the volume is deleted).
func (s *Service) deleteRecoverSnapshots(ctx context.Context, vol cairn.ID) error {
	list, err := s.eng.Snapshots(ctx)
	if err != nil {
		return fmt.Errorf("engine snapshots: %w", err)
	}
	for _, sn := range list {
		if sn.Volume == vol && strings.HasPrefix(sn.Name, "recover-") {
			if err := s.eng.DeleteSnapshot(ctx, sn.ID); err != nil && !errors.Is(err, cairn.ErrNotFound) {
				return fmt.Errorf("deleting safety snapshot %s: %w", sn.Name, err)
			}
		}
	}
	return nil
}

// recoveryPayload is an instance's event payload with its recovery.
func recoveryPayload(inst cairn.Instance) map[string]any {
	p := instancePayload(inst)
	if rc := inst.Recovery; rc != nil {
		p["recovery_id"], p["point_in_time"], p["recovered_from_backup"] = rc.ID, rc.PointInTime, rc.BackupID
		p["recovery_status"] = string(rc.Status)
		if rc.FailReason != "" {
			p["recovery_fail_reason"] = rc.FailReason
		}
	}
	return p
}
