package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/dbhost"
	"github.com/cairnproject/cairn/internal/repo"
)

// Restore points are quiesced snapshots of an archived instance's volume,
// taken every restorePointSet.interval while its archiver runs, and kept
// on the host, the newest restorePointSet.keep of them. A recover in
// place reverts the volume to the newest one at or before its point in
// time (and after its backup) and replays the log from there: the replay,
// which is most of a recover's time, is then at most one interval of log
// instead of all the log since the last backup.
//
// A restore point is the snapshot half of a snapshot backup: the same
// quiesce (PostgreSQL's pg_backup_start with a fast checkpoint; MariaDB's
// BACKUP STAGE), the same record, and its overlay stored as a stream in
// the archive's container. The volume image is not stored: the point
// lives only as long as the volume. Its order of steps keeps the catalog
// naming only what exists: the snapshot, then the overlay, then the row;
// deletion goes the other way round. What a crash leaves between them (a
// snapshot or an overlay no row names) is removed when the instance's
// archiver starts again.

// restorePointSet is the service's restore point settings.
type restorePointSet struct {
	// interval is how often a point is taken (0: never); keep how many
	// of an instance's newest are kept.
	interval time.Duration
	keep     int
	after    func(time.Duration) <-chan time.Time
}

const (
	// defaultRestorePoints is how many restore points an instance keeps
	// when the configuration says nothing.
	defaultRestorePoints = 24
	// restorePointPrefix starts the engine name of a restore point's
	// snapshot, followed by its ID.
	restorePointPrefix = "restorepoint-"
	// TagRestorePoint tags a restore point's overlay stream with its ID.
	TagRestorePoint = "cairn.service.restore-point"
)

// restorePointSnapshotName is the engine name of restore point id's
// snapshot.
func restorePointSnapshotName(id string) string { return restorePointPrefix + id }

// keepRestorePoints takes a restore point of the archiver's instance
// every interval (from the start of one to the start of the next) until
// ctx ends, after clearing what an earlier process
// left half made. A failed point is logged and the next one taken on
// time.
func (ar *archiver) keepRestorePoints(ctx context.Context) {
	s := ar.s
	if err := s.sweepRestorePoints(ctx, ar.inst, ar.container); err != nil && ctx.Err() == nil {
		s.log.Warn("clearing what restore points left half made", "instance", ar.inst, "err", err)
	}
	ar.countRestorePoints(ctx)
	// Points start an interval apart, however long each takes (a fast
	// checkpoint under load takes seconds): the log a recover replays
	// from the newest point is then at most one interval's.
	next := s.now().Add(s.points.interval)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.points.after(max(0, next.Sub(s.now()))):
		}
		next = s.now().Add(s.points.interval)
		rp, taken, err := s.takeRestorePoint(ctx, ar)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil:
			s.log.Warn("taking a restore point", "instance", ar.inst, "err", err)
			ar.set(func(st *archiveView) { st.pointFailures++ })
		case taken:
			s.log.Info("restore point taken", "instance", ar.inst, "restore_point", rp.ID, "data_timestamp", rp.DataTimestamp)
			ar.set(func(st *archiveView) { st.pointFailures = 0 })
		}
		if err := s.pruneRestorePoints(ctx, ar.inst, s.points.keep); err != nil && ctx.Err() == nil {
			s.log.Warn("removing old restore points", "instance", ar.inst, "err", err)
		}
		ar.countRestorePoints(ctx)
	}
}

// countRestorePoints reads the instance's restore points into the
// archiver's view, for the metrics. A failed read leaves the last
// count.
func (ar *archiver) countRestorePoints(ctx context.Context) {
	list, err := ar.s.restorePoints(ctx, ar.inst)
	if err != nil {
		return
	}
	var sum cairn.RestorePointSummary
	if len(list) > 0 {
		sum = cairn.RestorePointSummary{Count: len(list), Oldest: list[0].DataTimestamp, Newest: list[len(list)-1].DataTimestamp}
	}
	ar.set(func(st *archiveView) { st.points = sum })
}

// takeRestorePoint takes a restore point of an ACTIVE instance whose
// archive is streaming; taken is false when the instance or its archive
// is not in a state to have one (nothing is done then).
func (s *Service) takeRestorePoint(ctx context.Context, ar *archiver) (cairn.RestorePoint, bool, error) {
	inst, err := s.instanceRow(ctx, ar.inst)
	if err != nil {
		return cairn.RestorePoint{}, false, err
	}
	if inst.Status != cairn.InstanceActive || inst.VolumeID == "" {
		return cairn.RestorePoint{}, false, nil
	}
	if v := ar.view(); !v.loaded || v.state != "streaming" {
		return cairn.RestorePoint{}, false, nil
	}
	rp := cairn.RestorePoint{ID: cairn.NewUUID(), ProjectID: inst.ProjectID, InstanceID: inst.ID,
		VolumeID: inst.VolumeID, Container: ar.container}
	sb, err := s.host.SnapshotInstance(ctx, inst.ID, dbhost.SnapshotOptions{
		Name: restorePointSnapshotName(rp.ID), Label: "cairn-" + rp.ID, Timeout: s.quiesce})
	if err != nil {
		return rp, false, fmt.Errorf("quiesced snapshot: %w", err)
	}
	// From here on, a failure deletes what was made, best effort: what
	// it leaves, the next sweep removes.
	undo := func(err error) (cairn.RestorePoint, bool, error) {
		dctx := context.WithoutCancel(ctx)
		if rp.Overlay != "" {
			if r, rerr := s.repoFor(dctx, rp.Container); rerr == nil {
				if id, perr := cairn.ParseID(rp.Overlay); perr == nil {
					err = errors.Join(err, r.Forget(dctx, []cairn.ID{id}))
				}
			}
		}
		if derr := s.eng.DeleteSnapshot(dctx, sb.Snapshot); derr != nil && !errors.Is(derr, cairn.ErrNotFound) {
			err = errors.Join(err, fmt.Errorf("deleting its snapshot: %w", derr))
		}
		return rp, false, err
	}
	rp.SnapshotID = sb.Snapshot.String()
	rp.DataTimestamp = sb.Record.Time.UTC().Truncate(time.Microsecond)
	if rp.Record, err = json.Marshal(sb.Record); err != nil {
		return undo(err)
	}
	if len(sb.Overlay) > 0 {
		r, err := s.repoFor(ctx, rp.Container)
		if err != nil {
			return undo(err)
		}
		m, err := r.BackupStream(ctx, bytes.NewReader(sb.Overlay), repo.StreamOptions{
			Name:     "instance-" + inst.ID + "/restore-point",
			Tags:     map[string]string{TagRestorePoint: rp.ID, TagProject: inst.ProjectID},
			DataTime: sb.Record.Time,
		})
		if err != nil {
			return undo(fmt.Errorf("storing the overlay: %w", err))
		}
		rp.Overlay = m.ID.String()
	}
	rp.CreatedAt = s.nowUTC()
	if err := s.cat.Update(ctx, func(tx catalog.Tx) error { return tx.InsertRestorePoint(ctx, rp) }); err != nil {
		return undo(fmt.Errorf("recording the restore point: %w", err))
	}
	return rp, true, nil
}

// restorePoints lists an instance's restore points, oldest first.
func (s *Service) restorePoints(ctx context.Context, instance string) ([]cairn.RestorePoint, error) {
	var list []cairn.RestorePoint
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		list, err = tx.RestorePoints(ctx, instance)
		return err
	})
	return list, err
}

// pruneRestorePoints deletes an instance's restore points but the newest
// keep, and every one of a volume the instance no longer has.
func (s *Service) pruneRestorePoints(ctx context.Context, instance string, keep int) error {
	inst, err := s.instanceRow(ctx, instance)
	if err != nil {
		return err
	}
	list, err := s.restorePoints(ctx, instance)
	if err != nil {
		return err
	}
	var errs []error
	for i, rp := range list {
		if len(list)-i > keep || rp.VolumeID != inst.VolumeID {
			errs = append(errs, s.deleteRestorePoint(ctx, rp))
		}
	}
	return errors.Join(errs...)
}

// dropRestorePoints deletes an instance's restore points that drop says
// to.
func (s *Service) dropRestorePoints(ctx context.Context, instance string, drop func(cairn.RestorePoint) bool) error {
	list, err := s.restorePoints(ctx, instance)
	if err != nil {
		return err
	}
	var errs []error
	for _, rp := range list {
		if drop(rp) {
			errs = append(errs, s.deleteRestorePoint(ctx, rp))
		}
	}
	return errors.Join(errs...)
}

// deleteRestorePoint deletes a restore point: its row first (a recover
// then no longer picks it), then its snapshot and its overlay.
func (s *Service) deleteRestorePoint(ctx context.Context, rp cairn.RestorePoint) error {
	err := s.cat.Update(ctx, func(tx catalog.Tx) error { return tx.DeleteRestorePoint(ctx, rp.ID) })
	if err != nil && !errors.Is(err, cairn.ErrNotFound) {
		return fmt.Errorf("restore point %s: %w", rp.ID, err)
	}
	if sid, err := cairn.ParseID(rp.SnapshotID); err == nil {
		if err := s.eng.DeleteSnapshot(ctx, sid); err != nil && !errors.Is(err, cairn.ErrNotFound) {
			return fmt.Errorf("restore point %s: deleting its snapshot: %w", rp.ID, err)
		}
	}
	if rp.Overlay == "" {
		return nil
	}
	oid, err := cairn.ParseID(rp.Overlay)
	if err != nil {
		return fmt.Errorf("restore point %s: overlay id: %w", rp.ID, err)
	}
	r, err := s.repoFor(ctx, rp.Container)
	if err != nil {
		return fmt.Errorf("restore point %s: %w", rp.ID, err)
	}
	if err := r.Forget(ctx, []cairn.ID{oid}); err != nil && !errors.Is(err, cairn.ErrNotFound) {
		return fmt.Errorf("restore point %s: forgetting its overlay: %w", rp.ID, err)
	}
	return nil
}

// sweepRestorePoints removes what a process that died while taking or
// deleting an instance's restore points left: snapshots of its volume and
// overlays in container that no row names.
func (s *Service) sweepRestorePoints(ctx context.Context, instance, container string) error {
	inst, err := s.instanceRow(ctx, instance)
	if err != nil {
		return err
	}
	list, err := s.restorePoints(ctx, instance)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, rp := range list {
		known[rp.ID] = true
	}
	snaps, err := s.eng.Snapshots(ctx)
	if err != nil {
		return fmt.Errorf("engine snapshots: %w", err)
	}
	var errs []error
	for _, sn := range snaps {
		id, ok := strings.CutPrefix(sn.Name, restorePointPrefix)
		if ok && sn.Volume.String() == inst.VolumeID && !known[id] {
			if err := s.eng.DeleteSnapshot(ctx, sn.ID); err != nil && !errors.Is(err, cairn.ErrNotFound) {
				errs = append(errs, fmt.Errorf("deleting stray restore point snapshot %s: %w", sn.Name, err))
			}
		}
	}
	r, err := s.repoFor(ctx, container)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	all, err := r.Backups(ctx)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list repository backups: %w", err))...)
	}
	var stray []cairn.ID
	for _, m := range all.Backups {
		if id := m.Tags[TagRestorePoint]; id != "" && m.Source == "instance-"+instance+"/restore-point" && !known[id] {
			stray = append(stray, m.ID)
		}
	}
	if len(stray) > 0 {
		if err := r.Forget(ctx, stray); err != nil {
			errs = append(errs, fmt.Errorf("forgetting stray restore point overlays: %w", err))
		}
	}
	return errors.Join(errs...)
}

// deleteRestorePointSnapshots deletes every restore point snapshot of an
// instance's volume, before the volume is deleted (its rows are gone).
func (s *Service) deleteRestorePointSnapshots(ctx context.Context, vol cairn.ID) error {
	snaps, err := s.eng.Snapshots(ctx)
	if err != nil {
		return fmt.Errorf("engine snapshots: %w", err)
	}
	for _, sn := range snaps {
		if sn.Volume == vol && strings.HasPrefix(sn.Name, restorePointPrefix) {
			if err := s.eng.DeleteSnapshot(ctx, sn.ID); err != nil && !errors.Is(err, cairn.ErrNotFound) {
				return fmt.Errorf("deleting restore point snapshot %s: %w", sn.Name, err)
			}
		}
	}
	return nil
}

// restorePointBase returns the newest restore point of the instance's
// volume vol that a recover in place to t can start from instead of
// backup b: taken after b and at or before t, its snapshot still on the
// host, and its log held by the archive without a hole. ok is false when
// there is none (the recover starts from b).
func (s *Service) restorePointBase(ctx context.Context, inst cairn.Instance, vol cairn.ID, b cairn.DatabaseBackup, t time.Time) (cairn.RestorePoint, cairn.DatabaseBackup, bool, error) {
	list, err := s.restorePoints(ctx, inst.ID)
	if err != nil {
		return cairn.RestorePoint{}, b, false, err
	}
	snaps, err := s.eng.Snapshots(ctx)
	if err != nil {
		return cairn.RestorePoint{}, b, false, fmt.Errorf("engine snapshots: %w", err)
	}
	onHost := map[string]bool{}
	for _, sn := range snaps {
		if sn.Volume == vol {
			onHost[sn.ID.String()] = true
		}
	}
	// The archive is read once, for the first candidate (every point of
	// an instance has its WAL segment size).
	var v *archiveView
	for i := len(list) - 1; i >= 0; i-- {
		rp := list[i]
		if rp.VolumeID != vol.String() || !onHost[rp.SnapshotID] || rp.DataTimestamp.After(t) || !rp.DataTimestamp.After(b.DataTimestamp) {
			continue
		}
		base := restorePointBackup(rp, b)
		rec, err := dbRecord(base)
		if err != nil {
			continue
		}
		if v == nil {
			var seg uint64
			if rec.PostgreSQL != nil {
				seg = uint64(rec.PostgreSQL.WALSegmentSize)
			}
			view, _, _, err := s.archiveViewOf(ctx, inst.ID, seg, inst.Recovery.ArchiveTimeline)
			if err != nil {
				return cairn.RestorePoint{}, b, false, err
			}
			v = &view
		}
		if v.rollsForward(base) {
			return rp, base, true, nil
		}
	}
	return cairn.RestorePoint{}, b, false, nil
}

// restorePointBackup is the snapshot backup a recover starts from when
// it starts from restore point rp instead of backup b: b's identity (for
// what it names in errors and events), rp's snapshot, overlay and record.
func restorePointBackup(rp cairn.RestorePoint, b cairn.DatabaseBackup) cairn.DatabaseBackup {
	b.Strategy, b.Container, b.Overlay, b.Data = cairn.StrategySnapshot, rp.Container, rp.Overlay, ""
	b.Record, b.DataTimestamp, b.VolumeID, b.SnapshotID = rp.Record, rp.DataTimestamp, rp.VolumeID, rp.SnapshotID
	b.ParentID = ""
	return b
}
