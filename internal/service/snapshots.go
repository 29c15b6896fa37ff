package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// SnapshotCreate is a request for a snapshot of a volume.
type SnapshotCreate struct {
	VolumeID          string
	Name, Description string
	// Force allows a snapshot of an in-use (attached) volume; the
	// snapshot then holds what the volume's writers had flushed.
	Force bool
	// Metadata is the snapshot's own: it does not take the volume's.
	Metadata map[string]string
}

// Snapshots lists the caller's snapshots.
func (s *Service) Snapshots(ctx context.Context, c Caller, f catalog.Filter) ([]cairn.Snapshot, error) {
	f = scope(c, f)
	var list []cairn.Snapshot
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		list, err = tx.Snapshots(ctx, f)
		return err
	})
	return list, err
}

// Snapshot returns one of the caller's snapshots.
func (s *Service) Snapshot(ctx context.Context, c Caller, id string) (cairn.Snapshot, error) {
	var v cairn.Snapshot
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		v, err = getSnapshot(ctx, tx, c, id)
		return err
	})
	return v, err
}

// SnapshotUpdate changes a snapshot's name or description (nil:
// unchanged).
type SnapshotUpdate struct {
	Name, Description *string
}

// UpdateSnapshot renames or redescribes one of the caller's snapshots, in
// any status, as UpdateVolume does a volume.
func (s *Service) UpdateSnapshot(ctx context.Context, c Caller, id string, req SnapshotUpdate) (cairn.Snapshot, error) {
	if req.Name == nil && req.Description == nil {
		return cairn.Snapshot{}, errorf(cairn.ErrInvalid, "nothing to update: give a name or a description")
	}
	if req.Name != nil {
		if err := validText("name", *req.Name, 255); err != nil {
			return cairn.Snapshot{}, err
		}
	}
	if req.Description != nil {
		if err := validText("description", *req.Description, 4096); err != nil {
			return cairn.Snapshot{}, err
		}
	}
	var snap cairn.Snapshot
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		var err error
		if snap, err = getSnapshot(ctx, tx, c, id); err != nil {
			return err
		}
		if req.Name != nil {
			snap.Name = *req.Name
		}
		if req.Description != nil {
			snap.Description = *req.Description
		}
		snap.UpdatedAt = s.nowUTC()
		return tx.UpdateSnapshot(ctx, snap)
	})
	if err != nil {
		return cairn.Snapshot{}, err
	}
	s.event(ctx, "snapshot.update.end", snap.ProjectID, snapshotPayload(snap))
	return snap, nil
}

// CreateSnapshot accepts a snapshot of an available volume, or of an
// in-use one with Force.
func (s *Service) CreateSnapshot(ctx context.Context, c Caller, req SnapshotCreate) (cairn.Snapshot, error) {
	if req.VolumeID == "" {
		return cairn.Snapshot{}, errorf(cairn.ErrInvalid, "volume_id is required")
	}
	if err := validText("name", req.Name, 255); err != nil {
		return cairn.Snapshot{}, err
	}
	if err := validText("description", req.Description, 4096); err != nil {
		return cairn.Snapshot{}, err
	}
	md, err := validMetadata(req.Metadata)
	if err != nil {
		return cairn.Snapshot{}, err
	}
	var snap cairn.Snapshot
	err = s.update(ctx, func(tx catalog.Tx) error {
		v, err := getVolume(ctx, tx, c, req.VolumeID)
		if err != nil {
			return err
		}
		switch {
		case v.Status == cairn.StatusAvailable:
		case v.Status == cairn.StatusInUse && req.Force:
		case v.Status == cairn.StatusInUse:
			return fmt.Errorf("volume %s is in-use; a snapshot of it needs force: %w", v.ID, cairn.ErrConflict)
		default:
			return conflict("volume", v.ID, v.Status, "snapshot it")
		}
		if err := checkQuota(ctx, tx, v.ProjectID, cairn.Usage{Snapshots: 1, Gigabytes: v.Size}); err != nil {
			return err
		}
		now := s.nowUTC()
		snap = cairn.Snapshot{ID: cairn.NewUUID(), ProjectID: v.ProjectID, VolumeID: v.ID,
			Name: req.Name, Description: req.Description, Size: v.Size, Metadata: md, UserID: c.UserID,
			Status: cairn.StatusCreating, CreatedAt: now, UpdatedAt: now}
		if err := tx.InsertSnapshot(ctx, snap); err != nil {
			return err
		}
		_, err = s.queue(ctx, tx, v.ProjectID, "snapshot.create", snap.ID, nil)
		return err
	})
	if err != nil {
		return cairn.Snapshot{}, err
	}
	s.event(ctx, "snapshot.create.start", snap.ProjectID, snapshotPayload(snap))
	return snap, nil
}

func (s *Service) runCreateSnapshot(ctx context.Context, t cairn.Task) error {
	snap, err := s.snapshotRow(ctx, t.ResourceID)
	if err != nil {
		return err
	}
	if snap.Status != cairn.StatusCreating {
		return nil
	}
	es, ok, err := s.engineSnapshot(ctx, snap.ID)
	if err != nil {
		return err
	}
	if !ok {
		v, err := s.volumeRow(ctx, snap.VolumeID)
		if err != nil {
			return err
		}
		vid, err := parseEngineID(v.EngineID)
		if err != nil {
			return fmt.Errorf("volume %s: %w", v.ID, err)
		}
		if es, err = s.eng.CreateSnapshot(ctx, vid, snap.ID); err != nil {
			return fmt.Errorf("engine snapshot: %w", err)
		}
	}
	snap, err = s.setSnapshot(ctx, snap.ID, func(sn *cairn.Snapshot) {
		sn.EngineID, sn.Status = es.ID.String(), cairn.StatusAvailable
		// The snapshot's time is the data's: a backup of it takes it as
		// its data_timestamp.
		sn.CreatedAt = es.Created.UTC().Truncate(time.Microsecond)
	})
	if err != nil {
		return err
	}
	s.event(ctx, "snapshot.create.end", snap.ProjectID, snapshotPayload(snap))
	return nil
}

func (s *Service) failSnapshot(event string) func(ctx context.Context, t cairn.Task, cause error) error {
	return func(ctx context.Context, t cairn.Task, cause error) error {
		st := cairn.StatusError
		if event == "snapshot.delete.error" {
			st = cairn.StatusErrorDeleting
		}
		snap, err := s.setSnapshot(ctx, t.ResourceID, func(sn *cairn.Snapshot) {
			sn.Status, sn.FailReason = st, failReason(cause)
		})
		if errors.Is(err, cairn.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		s.event(ctx, event, snap.ProjectID, snapshotPayload(snap))
		return nil
	}
}

// DeleteSnapshot accepts the deletion of an available or failed
// snapshot no volume is being created from.
func (s *Service) DeleteSnapshot(ctx context.Context, c Caller, id string) error {
	return s.deleteSnapshot(ctx, c, id, false)
}

// ForceDeleteSnapshot is the admin's os-force_delete: the snapshot is
// deleted whatever its status, unless a task holds it (then 409: the
// task would find it gone under it).
func (s *Service) ForceDeleteSnapshot(ctx context.Context, c Caller, id string) error {
	if !c.Admin {
		return errorf(cairn.ErrForbidden, "force-delete is for admins")
	}
	return s.deleteSnapshot(ctx, c, id, true)
}

func (s *Service) deleteSnapshot(ctx context.Context, c Caller, id string, force bool) error {
	var snap cairn.Snapshot
	err := s.update(ctx, func(tx catalog.Tx) error {
		var err error
		if snap, err = getSnapshot(ctx, tx, c, id); err != nil {
			return err
		}
		switch snap.Status {
		case cairn.StatusAvailable, cairn.StatusError, cairn.StatusErrorDeleting:
		default:
			if !force {
				return conflict("snapshot", snap.ID, snap.Status, "delete it")
			}
		}
		if err := notHeld(ctx, tx, "snapshot", snap.ID, "delete it"); err != nil {
			return err
		}
		// Any project's: an admin may clone into another project.
		creating, err := tx.Volumes(ctx, catalog.Filter{Status: cairn.StatusCreating})
		if err != nil {
			return err
		}
		for _, v := range creating {
			if v.SnapshotID == snap.ID {
				return fmt.Errorf("snapshot %s: volume %s is being created from it: %w", snap.ID, v.ID, cairn.ErrConflict)
			}
		}
		snap.Status, snap.UpdatedAt = cairn.StatusDeleting, s.nowUTC()
		if err := tx.UpdateSnapshot(ctx, snap); err != nil {
			return err
		}
		_, err = s.queue(ctx, tx, snap.ProjectID, "snapshot.delete", snap.ID, nil)
		return err
	})
	if err == nil {
		s.event(ctx, "snapshot.delete.start", snap.ProjectID, snapshotPayload(snap))
	}
	return err
}

func (s *Service) runDeleteSnapshot(ctx context.Context, t cairn.Task) error {
	snap, err := s.snapshotRow(ctx, t.ResourceID)
	if errors.Is(err, cairn.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.deleteSnapshotNow(ctx, snap)
}

// deleteSnapshotNow deletes a snapshot's engine snapshot and its row,
// and tells it. A snapshot already gone is no error.
func (s *Service) deleteSnapshotNow(ctx context.Context, snap cairn.Snapshot) error {
	es, ok, err := s.engineSnapshot(ctx, snap.ID)
	if err != nil {
		return err
	}
	if ok {
		if err := s.eng.DeleteSnapshot(ctx, es.ID); err != nil && !errors.Is(err, cairn.ErrNotFound) {
			return fmt.Errorf("delete engine snapshot: %w", err)
		}
	}
	err = s.cat.Update(ctx, func(tx catalog.Tx) error { return tx.DeleteSnapshot(ctx, snap.ID) })
	if err != nil && !errors.Is(err, cairn.ErrNotFound) {
		return err
	}
	snap.Status = cairn.StatusDeleted
	s.event(ctx, "snapshot.delete.end", snap.ProjectID, snapshotPayload(snap))
	return nil
}

// ResetSnapshotStatus is the admin's way out of a stuck state: any
// status the block storage API allows a snapshot (cairn.SnapshotStatuses,
// in any case), refused while a task holds the snapshot.
func (s *Service) ResetSnapshotStatus(ctx context.Context, c Caller, id string, st cairn.Status) error {
	if !c.Admin {
		return errorf(cairn.ErrForbidden, "reset-status is for admins")
	}
	st, err := resetStatus(st, cairn.SnapshotStatuses)
	if err != nil {
		return err
	}
	return s.cat.Update(ctx, func(tx catalog.Tx) error {
		snap, err := getSnapshot(ctx, tx, c, id)
		if err != nil {
			return err
		}
		if err := notHeld(ctx, tx, "snapshot", snap.ID, "reset its status"); err != nil {
			return err
		}
		snap.Status, snap.UpdatedAt = st, s.nowUTC()
		return tx.UpdateSnapshot(ctx, snap)
	})
}

func snapshotPayload(v cairn.Snapshot) map[string]any {
	return map[string]any{"id": v.ID, "snapshot_id": v.ID, "volume_id": v.VolumeID,
		"project_id": v.ProjectID, "user_id": v.UserID, "display_name": v.Name, "volume_size": v.Size,
		"status": v.Status, "created_at": v.CreatedAt, "fail_reason": v.FailReason}
}

// SnapshotStatusUpdate is os-update_snapshot_status: the status a
// snapshot made outside the service reached, and its progress ("80%").
type SnapshotStatusUpdate struct {
	Status   cairn.Status
	Progress *string
}

// snapshotStatusMoves are the moves os-update_snapshot_status allows
// from status from, as the block storage API: a snapshot being made may
// be reported made or failed, one being deleted failed.
func snapshotStatusMoves(from cairn.Status) []cairn.Status {
	switch from {
	case cairn.StatusCreating:
		return []cairn.Status{cairn.StatusCreating, cairn.StatusAvailable, cairn.StatusError}
	case cairn.StatusDeleting:
		return []cairn.Status{cairn.StatusDeleting, cairn.StatusErrorDeleting}
	}
	return nil
}

// UpdateSnapshotStatus records what os-update_snapshot_status reports.
// It is refused while a task of cairn's makes or deletes the snapshot
// (cairn reports its own), and a snapshot cairn never took cannot be
// reported available: nothing would back it.
func (s *Service) UpdateSnapshotStatus(ctx context.Context, c Caller, id string, u SnapshotStatusUpdate) error {
	if u.Progress != nil {
		if err := validText("progress", *u.Progress, 255); err != nil {
			return err
		}
	}
	return s.update(ctx, func(tx catalog.Tx) error {
		snap, err := getSnapshot(ctx, tx, c, id)
		if err != nil {
			return err
		}
		if !slices.Contains(snapshotStatusMoves(snap.Status), u.Status) {
			return errorf(cairn.ErrInvalid, "snapshot %s is %s: it cannot be reported %s", snap.ID, snap.Status, u.Status)
		}
		if err := notHeld(ctx, tx, "snapshot", snap.ID, "report its status"); err != nil {
			return err
		}
		if u.Status == cairn.StatusAvailable && snap.EngineID == "" {
			return errorf(cairn.ErrInvalid, "snapshot %s was never taken: it cannot be available", snap.ID)
		}
		snap.Status, snap.UpdatedAt = u.Status, s.nowUTC()
		if u.Progress != nil {
			snap.Progress = *u.Progress
		}
		return tx.UpdateSnapshot(ctx, snap)
	})
}
