package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// A resource is held by a task that is pending or running and works on
// it: the task's own resource, and what it reads or writes besides (a
// backup's volume or snapshot, a restore's backup, a clone's source
// volume or snapshot, a snapshot's volume, the snapshots a cascading
// volume delete removes). The admin's os-reset_status and
// os-force_delete are refused while a task holds the resource: a status
// is how a task tells its resources are its own, and a task finding its
// resource changed under it, or gone, would fail half-way or write into
// what was given back.

// holder returns the task of tx that holds resource id (a volume,
// snapshot or backup), if any.
func holder(ctx context.Context, tx catalog.Tx, id string) (cairn.Task, bool, error) {
	active, err := tx.Tasks(ctx, catalog.Filter{TaskStates: []cairn.TaskState{cairn.TaskPending, cairn.TaskRunning}})
	if err != nil {
		return cairn.Task{}, false, err
	}
	for _, t := range active {
		held, err := taskHolds(ctx, tx, t)
		if err != nil {
			return cairn.Task{}, false, err
		}
		if slices.Contains(held, id) {
			return t, true, nil
		}
	}
	return cairn.Task{}, false, nil
}

// taskHolds lists the resources task t works on.
func taskHolds(ctx context.Context, tx catalog.Tx, t cairn.Task) ([]string, error) {
	held := []string{t.ResourceID}
	gone := func(err error) bool { return errors.Is(err, cairn.ErrNotFound) }
	switch t.Kind {
	case "volume.create":
		v, err := tx.Volume(ctx, t.ResourceID)
		if gone(err) {
			return held, nil
		}
		if err != nil {
			return nil, err
		}
		held = append(held, v.SnapshotID, v.SourceVolID)
	case "volume.delete":
		snaps, err := tx.Snapshots(ctx, catalog.Filter{VolumeID: t.ResourceID})
		if err != nil {
			return nil, err
		}
		for _, sn := range snaps {
			held = append(held, sn.ID)
		}
	case "snapshot.create":
		sn, err := tx.Snapshot(ctx, t.ResourceID)
		if gone(err) {
			return held, nil
		}
		if err != nil {
			return nil, err
		}
		held = append(held, sn.VolumeID)
	case "backup.create":
		b, err := tx.Backup(ctx, t.ResourceID)
		if gone(err) {
			return held, nil
		}
		if err != nil {
			return nil, err
		}
		if b.SnapshotID != "" {
			held = append(held, b.SnapshotID)
		} else {
			held = append(held, b.VolumeID)
		}
	case "backup.restore":
		var p restoreParams
		if err := json.Unmarshal(t.Params, &p); err == nil {
			held = append(held, p.BackupID, p.VolumeID)
		}
	}
	return slices.DeleteFunc(held, func(id string) bool { return id == "" }), nil
}

// notHeld fails with cairn.ErrConflict while a task holds resource id
// (kind names it in the message).
func notHeld(ctx context.Context, tx catalog.Tx, kind, id, op string) error {
	t, ok, err := holder(ctx, tx, id)
	if err != nil {
		return err
	}
	if ok {
		return fmt.Errorf("%s %s: task %s (%s) is working on it; cannot %s: %w", kind, id, t.ID, t.Kind, op, cairn.ErrConflict)
	}
	return nil
}
