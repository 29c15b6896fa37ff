package dbhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// SnapshotBackup is what a snapshot backup took: the volume snapshot,
// the engine's record of the backup's point and the overlay a restore
// lays over the snapshot.
type SnapshotBackup struct {
	Snapshot cairn.ID       `json:"snapshot"`
	Record   dbagent.Record `json:"record"`
	Overlay  []byte         `json:"overlay,omitempty"`
}

// SnapshotOptions bound a snapshot backup.
type SnapshotOptions struct {
	// Name is the snapshot's name; Label the backup's label inside the
	// server.
	Name  string `json:"name"`
	Label string `json:"label"`
	// Timeout bounds the wait for the quiesce, 0 for dbagent's default.
	Timeout time.Duration `json:"timeout_ns,omitempty"`
}

// Snapshot quiesces the instance's server on one held session, snapshots
// its volume and releases the server: the server is held only for the
// snapshot, which is O(1). On any failure the quiesce is ended and a
// snapshot taken is deleted. A data plane that dies between the snapshot
// and the release leaves a snapshot named o.Name, which the caller finds
// by that name and deletes. Because the snapshot is atomic at the
// block layer, the file system in it is as after a crash at that instant,
// which ext4's journal recovers; no fsfreeze is needed.
func (h *Host) Snapshot(ctx context.Context, id string, o SnapshotOptions) (SnapshotBackup, error) {
	if h.o.Snapshots == nil {
		return SnapshotBackup{}, fmt.Errorf("instance host: no snapshotter: %w", cairn.ErrUnsupported)
	}
	inst := h.get(id)
	if inst == nil {
		return SnapshotBackup{}, fmt.Errorf("instance %s: %w", id, cairn.ErrNotFound)
	}
	inst.op.Lock()
	defer inst.op.Unlock()
	if inst.rec.Phase != PhaseReady {
		return SnapshotBackup{}, fmt.Errorf("instance %s is %s: %w", id, inst.rec.Phase, cairn.ErrConflict)
	}
	if err := h.serving(ctx, inst); err != nil {
		return SnapshotBackup{}, fmt.Errorf("instance %s: %w", id, err)
	}
	eng, err := h.engine(inst.rec.Spec.Datastore, inst.rec.Spec.Version)
	if err != nil {
		return SnapshotBackup{}, err
	}
	ai, err := eng.Instance(h.config(&inst.rec))
	if err != nil {
		return SnapshotBackup{}, err
	}
	// Deleted files' blocks are discarded before the snapshot, so its
	// backup skips them. Where the quiesce holds commits that is done
	// before it, to keep the hold short. Otherwise it is done after it,
	// once: the quiesce's checkpoint has written the data out, so the
	// trim's syncfs finds little left to write (before the checkpoint,
	// under pgbench, it took 1.6 to 1.9 s of the disk), and the WAL
	// segments the checkpoint removed are discarded too. A trim that
	// fails costs bytes, not correctness.
	var trimTook time.Duration
	trim := func() {
		start := time.Now()
		if err := h.o.FS.Trim(ctx, h.mountPoint(id)); err != nil {
			h.o.Logger.Warn("trimming the file system before a snapshot", "instance", id, "err", err)
		}
		trimTook = time.Since(start)
	}
	holds := ai.QuiesceHoldsCommits()
	if holds {
		trim()
	}
	// The steps' durations are logged: where a slow backup's time went
	// (a checkpoint's flush through the volume, a trim), and how long
	// the server was held.
	quiesceStart := time.Now()
	q, err := ai.Quiesce(ctx, dbagent.QuiesceOptions{Label: o.Label, Timeout: o.Timeout})
	if err != nil {
		return SnapshotBackup{}, fmt.Errorf("quiescing the database: %w", err)
	}
	quiesced := time.Now()
	h.event(id, "quiesced")
	if !holds {
		trim()
	}
	snapStart := time.Now()
	snap, err := h.o.Snapshots.Create(ctx, inst.rec.Spec.Volume, o.Name)
	if err != nil {
		return SnapshotBackup{}, errors.Join(fmt.Errorf("snapshotting the volume: %w", err), q.Abort())
	}
	h.event(id, "snapshotted")
	var overlay bytes.Buffer
	rec, err := q.Release(ctx, &overlay)
	if err != nil {
		// Not a consistent backup: the snapshot goes.
		err = fmt.Errorf("releasing the database: %w", err)
		if derr := h.o.Snapshots.Delete(context.WithoutCancel(ctx), snap); derr != nil {
			err = errors.Join(err, fmt.Errorf("deleting the snapshot %s: %w", snap, derr))
		}
		return SnapshotBackup{}, err
	}
	h.event(id, "released")
	released := time.Now()
	h.o.Logger.Info("snapshot backup taken", "instance", id, "snapshot", snap, "trim", trimTook,
		"quiesce", quiesced.Sub(quiesceStart), "snapshot_and_release", released.Sub(snapStart), "held", released.Sub(quiesceStart))
	return SnapshotBackup{Snapshot: snap, Record: rec, Overlay: overlay.Bytes()}, nil
}
