package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"unicode/utf8"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/volume"
)

// MaxVolumeGiB is the largest volume the service creates.
const MaxVolumeGiB = 64 << 10

// VolumeCreate is a request for a new volume: empty, a clone of a
// snapshot or of a volume, or restored from a backup.
type VolumeCreate struct {
	Name, Description string
	// Size in GiB; from a snapshot, volume or backup 0 means the
	// source's size.
	Size       int64
	SnapshotID string
	BackupID   string
	// SourceVolID clones a volume of the caller's project, available or
	// in-use: the new volume holds what the source held when the task
	// took a snapshot of it.
	SourceVolID string
	// Metadata is the new volume's; a volume made from a snapshot or a
	// backup has only what is given here, as in the block storage API.
	Metadata map[string]string
	// VolumeType is the ID or name of a type the caller may use; ""
	// for the source's type, or the default (setVolumeType).
	VolumeType string
}

// Volumes lists the caller's volumes (an admin's: f.ProjectID's, or all).
func (s *Service) Volumes(ctx context.Context, c Caller, f catalog.Filter) ([]cairn.Volume, error) {
	f = scope(c, f)
	var list []cairn.Volume
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		list, err = tx.Volumes(ctx, f)
		return err
	})
	return list, err
}

// Summaries lists the IDs and names of the caller's volumes, snapshots
// or backups: what a list without details shows.
func (s *Service) Summaries(ctx context.Context, c Caller, kind catalog.Kind, f catalog.Filter) ([]catalog.Summary, error) {
	f = scope(c, f)
	var list []catalog.Summary
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		list, err = tx.Summaries(ctx, kind, f)
		return err
	})
	return list, err
}

// scope limits a list to the caller's project unless the caller is an
// admin.
func scope(c Caller, f catalog.Filter) catalog.Filter {
	if !c.Admin {
		f.ProjectID = c.ProjectID
	}
	return f
}

// Volume returns one of the caller's volumes.
func (s *Service) Volume(ctx context.Context, c Caller, id string) (cairn.Volume, error) {
	var v cairn.Volume
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		v, err = getVolume(ctx, tx, c, id)
		return err
	})
	return v, err
}

// getVolume reads a volume the caller may see; another project's is not
// found, exactly like a missing one.
func getVolume(ctx context.Context, tx catalog.Tx, c Caller, id string) (cairn.Volume, error) {
	v, err := tx.Volume(ctx, id)
	if err == nil && !c.may(v.ProjectID) {
		return cairn.Volume{}, fmt.Errorf("volume %s: %w", id, cairn.ErrNotFound)
	}
	return v, err
}

func getSnapshot(ctx context.Context, tx catalog.Tx, c Caller, id string) (cairn.Snapshot, error) {
	v, err := tx.Snapshot(ctx, id)
	if err == nil && !c.may(v.ProjectID) {
		return cairn.Snapshot{}, fmt.Errorf("snapshot %s: %w", id, cairn.ErrNotFound)
	}
	return v, err
}

func getBackup(ctx context.Context, tx catalog.Tx, c Caller, id string) (cairn.Backup, error) {
	v, err := tx.Backup(ctx, id)
	if err == nil && !c.may(v.ProjectID) {
		return cairn.Backup{}, fmt.Errorf("backup %s: %w", id, cairn.ErrNotFound)
	}
	return v, err
}

// checkQuota fails with ErrQuota when add would take project over a limit.
func checkQuota(ctx context.Context, tx catalog.Tx, project string, add cairn.Usage) error {
	p, err := tx.Project(ctx, project)
	if err != nil {
		return err
	}
	if !p.Quota.Bounds(add) {
		return nil // unlimited: nothing to count
	}
	u, err := tx.Usage(ctx, project)
	if err != nil {
		return err
	}
	if msg := p.Quota.Exceeds(u, add); msg != "" {
		return fmt.Errorf("project %s: %s: %w", project, msg, cairn.ErrQuota)
	}
	return nil
}

func validSize(gib int64) error {
	if gib <= 0 || gib > MaxVolumeGiB {
		return errorf(cairn.ErrInvalid, "size %d: want a whole number of GiB from 1 to %d", gib, MaxVolumeGiB)
	}
	return nil
}

func validText(field, s string, max int) error {
	if len(s) > max {
		return errorf(cairn.ErrInvalid, "%s: longer than %d bytes", field, max)
	}
	return nil
}

// Bounds of a volume's or snapshot's metadata. The key and value lengths
// are the block storage API's (characters, not bytes). That API does not
// bound how many items there are; cairn takes 128, the compute API's
// default metadata_items quota: plenty for tags, and it keeps one row's
// metadata to a few hundred KiB however long its characters, so a
// tenant cannot grow the catalog's rows (and every list) without limit.
const (
	MaxMetadataItems    = 128
	MaxMetadataKeyLen   = 255
	MaxMetadataValueLen = 255
)

// validMetadata checks metadata as the block storage API does and
// returns the copy to store: nil when it has no items, so none and empty
// are one (the catalog keeps no difference either). Keys are checked in
// order, so an error names the first bad one.
func validMetadata(m map[string]string) (map[string]string, error) {
	if len(m) > MaxMetadataItems {
		return nil, errorf(cairn.ErrInvalid, "metadata: %d items; want at most %d", len(m), MaxMetadataItems)
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		switch n := utf8.RuneCountInString(k); {
		case n == 0:
			return nil, errorf(cairn.ErrInvalid, "metadata: an empty key; want 1 to %d characters", MaxMetadataKeyLen)
		case n > MaxMetadataKeyLen:
			return nil, errorf(cairn.ErrInvalid, "metadata key %q: %d characters; want 1 to %d", shorten(k), n, MaxMetadataKeyLen)
		case !utf8.ValidString(k):
			return nil, errorf(cairn.ErrInvalid, "metadata key %q: not UTF-8", shorten(k))
		}
		switch n := utf8.RuneCountInString(v); {
		case n > MaxMetadataValueLen:
			return nil, errorf(cairn.ErrInvalid, "metadata key %q: value of %d characters; want at most %d", shorten(k), n, MaxMetadataValueLen)
		case !utf8.ValidString(v):
			return nil, errorf(cairn.ErrInvalid, "metadata key %q: value not UTF-8", shorten(k))
		}
	}
	if len(m) == 0 {
		return nil, nil
	}
	return maps.Clone(m), nil
}

// shorten cuts a key for an error message: it names the key without
// echoing kilobytes of it.
func shorten(s string) string {
	const keep = 40
	if utf8.RuneCountInString(s) <= keep {
		return s
	}
	r := []rune(s)
	return string(r[:keep]) + "…"
}

// CreateVolume accepts a request for a volume; the task makes it.
func (s *Service) CreateVolume(ctx context.Context, c Caller, req VolumeCreate) (cairn.Volume, error) {
	var sources []string
	for _, src := range []struct{ name, id string }{{"snapshot_id", req.SnapshotID}, {"backup_id", req.BackupID}, {"source_volid", req.SourceVolID}} {
		if src.id != "" {
			sources = append(sources, src.name)
		}
	}
	switch len(sources) {
	case 2:
		return cairn.Volume{}, errorf(cairn.ErrInvalid, "give %s or %s, not both", sources[0], sources[1])
	case 3:
		return cairn.Volume{}, errorf(cairn.ErrInvalid, "give one of snapshot_id, backup_id and source_volid, not all three")
	}
	if req.Size < 0 || (req.Size == 0 && req.SnapshotID == "" && req.BackupID == "" && req.SourceVolID == "") {
		return cairn.Volume{}, validSize(req.Size)
	}
	if err := validText("name", req.Name, 255); err != nil {
		return cairn.Volume{}, err
	}
	if err := validText("description", req.Description, 4096); err != nil {
		return cairn.Volume{}, err
	}
	md, err := validMetadata(req.Metadata)
	if err != nil {
		return cairn.Volume{}, err
	}
	now := s.nowUTC()
	v := cairn.Volume{ID: cairn.NewUUID(), ProjectID: c.ProjectID, Name: req.Name,
		Description: req.Description, Size: req.Size, Status: cairn.StatusCreating,
		SnapshotID: req.SnapshotID, BackupID: req.BackupID, SourceVolID: req.SourceVolID, UserID: c.UserID,
		Metadata: md, CreatedAt: now, UpdatedAt: now}
	err = s.update(ctx, func(tx catalog.Tx) error {
		kind := "volume.create"
		var params []byte
		switch {
		case req.SnapshotID != "":
			snap, err := getSnapshot(ctx, tx, c, req.SnapshotID)
			if err != nil {
				return err
			}
			if snap.Status != cairn.StatusAvailable {
				return conflict("snapshot", snap.ID, snap.Status, "create a volume from it")
			}
			if v.Size == 0 {
				v.Size = snap.Size
			}
			if v.Size < snap.Size {
				return errorf(cairn.ErrInvalid, "size %d GiB is smaller than snapshot %s (%d GiB)", v.Size, snap.ID, snap.Size)
			}
			// A clone is bootable when its origin is, as in the block
			// storage API.
			if src, err := tx.Volume(ctx, snap.VolumeID); err == nil {
				v.Bootable = src.Bootable
			} else if !errors.Is(err, cairn.ErrNotFound) {
				return err
			}
		case req.SourceVolID != "":
			src, err := getVolume(ctx, tx, c, req.SourceVolID)
			if err != nil {
				return err
			}
			if src.ProjectID != c.ProjectID {
				return errorf(cairn.ErrInvalid, "source volume %s is in another project; clone a volume of project %s", src.ID, c.ProjectID)
			}
			if src.Status != cairn.StatusAvailable && src.Status != cairn.StatusInUse {
				return conflict("volume", src.ID, src.Status, "clone it")
			}
			if src.EngineID == "" {
				return fmt.Errorf("volume %s has no engine volume; cannot clone it: %w", src.ID, cairn.ErrConflict)
			}
			if v.Size == 0 {
				v.Size = src.Size
			}
			if v.Size < src.Size {
				return errorf(cairn.ErrInvalid, "size %d GiB is smaller than source volume %s (%d GiB)", v.Size, src.ID, src.Size)
			}
			v.Bootable = src.Bootable
		case req.BackupID != "":
			b, err := getBackup(ctx, tx, c, req.BackupID)
			if err != nil {
				return err
			}
			if b.Status != cairn.StatusAvailable {
				return conflict("backup", b.ID, b.Status, "restore it")
			}
			if v.Size == 0 {
				v.Size = b.Size
			}
			if v.Size < b.Size {
				return errorf(cairn.ErrInvalid, "size %d GiB is smaller than backup %s (%d GiB)", v.Size, b.ID, b.Size)
			}
			v.Status = cairn.StatusRestoringBackup
			b.Status, b.UpdatedAt = cairn.StatusRestoring, now
			if err := tx.UpdateBackup(ctx, b); err != nil {
				return err
			}
			kind = "backup.restore"
			params, _ = json.Marshal(restoreParams{BackupID: b.ID, VolumeID: v.ID, New: true})
		}
		if err := validSize(v.Size); err != nil {
			return err
		}
		if err := setVolumeType(ctx, tx, c, req.VolumeType, &v); err != nil {
			return err
		}
		if err := checkQuota(ctx, tx, c.ProjectID, cairn.Usage{Volumes: 1, Gigabytes: v.Size}); err != nil {
			return err
		}
		if err := checkVolumeSize(ctx, tx, c.ProjectID, v.Size); err != nil {
			return err
		}
		if err := tx.InsertVolume(ctx, v); err != nil {
			return err
		}
		_, err := s.queue(ctx, tx, c.ProjectID, kind, v.ID, params)
		return err
	})
	if err != nil {
		return cairn.Volume{}, err
	}
	s.event(ctx, "volume.create.start", v.ProjectID, volumePayload(v))
	return v, nil
}

// runCreateVolume makes the engine volume of a creating volume.
func (s *Service) runCreateVolume(ctx context.Context, t cairn.Task) error {
	v, err := s.volumeRow(ctx, t.ResourceID)
	if err != nil {
		return err
	}
	if v.Status != cairn.StatusCreating {
		return nil // finished by an earlier attempt
	}
	ev, ok, err := s.engineVolume(ctx, v.ID)
	if err != nil {
		return err
	}
	if !ok {
		if v.VolumeTypeID != "" {
			vt, err := readRow(ctx, s.cat, v.VolumeTypeID, catalog.Tx.VolumeType)
			if err != nil {
				return err
			}
			if err := s.placeVolume(vt); err != nil {
				return err
			}
		}
		if v.SourceVolID != "" {
			if ev, err = s.cloneVolume(ctx, v); err != nil {
				return err
			}
		} else if v.SnapshotID != "" {
			snap, err := s.snapshotRow(ctx, v.SnapshotID)
			if err != nil {
				return err
			}
			sid, err := parseEngineID(snap.EngineID)
			if err != nil {
				return fmt.Errorf("snapshot %s: %w", snap.ID, err)
			}
			if ev, err = s.eng.CloneVolume(ctx, v.ID, sid); err != nil {
				return fmt.Errorf("clone snapshot %s: %w", snap.ID, err)
			}
		} else if ev, err = s.eng.CreateVolume(ctx, v.ID, v.Size*GiB); err != nil {
			return fmt.Errorf("create volume: %w", err)
		}
	}
	if ev.Size < v.Size*GiB {
		if err := s.eng.ExtendVolume(ctx, ev.ID, v.Size*GiB); err != nil {
			return fmt.Errorf("extend clone: %w", err)
		}
	}
	if err := s.removeCloneSnapshot(ctx, v.ID); err != nil {
		return err
	}
	v, err = s.setVolume(ctx, v.ID, func(v *cairn.Volume) {
		v.EngineID, v.Status = ev.ID.String(), cairn.StatusAvailable
	})
	if err != nil {
		return err
	}
	s.event(ctx, "volume.create.end", v.ProjectID, volumePayload(v))
	return nil
}

func (s *Service) failVolume(event string) func(ctx context.Context, t cairn.Task, cause error) error {
	return func(ctx context.Context, t cairn.Task, cause error) error {
		st := cairn.StatusError
		if event == "volume.delete.error" {
			st = cairn.StatusErrorDeleting
		}
		v, err := s.setVolume(ctx, t.ResourceID, func(v *cairn.Volume) {
			v.Status, v.FailReason = st, failReason(cause)
		})
		if errors.Is(err, cairn.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		s.event(ctx, event, v.ProjectID, volumePayload(v))
		return nil
	}
}

// readRow reads one row in a transaction of its own, whatever its
// project (tasks act for the service).
func readRow[T any](ctx context.Context, cat catalog.Store, id string, get func(catalog.Tx, context.Context, string) (T, error)) (T, error) {
	var v T
	err := cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		v, err = get(tx, ctx, id)
		return err
	})
	return v, err
}

// changeRow reads a row, changes it with fn and writes it back, in a
// transaction of its own.
func changeRow[T any](ctx context.Context, cat catalog.Store, id string,
	get func(catalog.Tx, context.Context, string) (T, error), put func(catalog.Tx, context.Context, T) error, fn func(*T)) (T, error) {
	var v T
	err := cat.Update(ctx, func(tx catalog.Tx) error {
		var err error
		if v, err = get(tx, ctx, id); err != nil {
			return err
		}
		fn(&v)
		return put(tx, ctx, v)
	})
	return v, err
}

func (s *Service) volumeRow(ctx context.Context, id string) (cairn.Volume, error) {
	return readRow(ctx, s.cat, id, catalog.Tx.Volume)
}

func (s *Service) snapshotRow(ctx context.Context, id string) (cairn.Snapshot, error) {
	return readRow(ctx, s.cat, id, catalog.Tx.Snapshot)
}

func (s *Service) backupRow(ctx context.Context, id string) (cairn.Backup, error) {
	return readRow(ctx, s.cat, id, catalog.Tx.Backup)
}

// setVolume changes a volume row, stamping its update time.
func (s *Service) setVolume(ctx context.Context, id string, fn func(*cairn.Volume)) (cairn.Volume, error) {
	return changeRow(ctx, s.cat, id, catalog.Tx.Volume, catalog.Tx.UpdateVolume,
		func(v *cairn.Volume) { fn(v); v.UpdatedAt = s.nowUTC() })
}

func (s *Service) setSnapshot(ctx context.Context, id string, fn func(*cairn.Snapshot)) (cairn.Snapshot, error) {
	return changeRow(ctx, s.cat, id, catalog.Tx.Snapshot, catalog.Tx.UpdateSnapshot,
		func(v *cairn.Snapshot) { fn(v); v.UpdatedAt = s.nowUTC() })
}

func (s *Service) setBackup(ctx context.Context, id string, fn func(*cairn.Backup)) (cairn.Backup, error) {
	return changeRow(ctx, s.cat, id, catalog.Tx.Backup, catalog.Tx.UpdateBackup,
		func(v *cairn.Backup) { fn(v); v.UpdatedAt = s.nowUTC() })
}

// VolumeUpdate changes a volume's name, description or metadata (nil:
// unchanged). Metadata replaces all of the volume's; an empty map
// removes it.
type VolumeUpdate struct {
	Name, Description *string
	Metadata          *map[string]string
}

// UpdateVolume renames or redescribes a volume, or replaces its metadata.
func (s *Service) UpdateVolume(ctx context.Context, c Caller, id string, req VolumeUpdate) (cairn.Volume, error) {
	if req.Name != nil {
		if err := validText("name", *req.Name, 255); err != nil {
			return cairn.Volume{}, err
		}
	}
	if req.Description != nil {
		if err := validText("description", *req.Description, 4096); err != nil {
			return cairn.Volume{}, err
		}
	}
	var md map[string]string
	if req.Metadata != nil {
		var err error
		if md, err = validMetadata(*req.Metadata); err != nil {
			return cairn.Volume{}, err
		}
	}
	var v cairn.Volume
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		var err error
		if v, err = getVolume(ctx, tx, c, id); err != nil {
			return err
		}
		if req.Name != nil {
			v.Name = *req.Name
		}
		if req.Description != nil {
			v.Description = *req.Description
		}
		if req.Metadata != nil {
			v.Metadata = md
		}
		v.UpdatedAt = s.nowUTC()
		return tx.UpdateVolume(ctx, v)
	})
	if err == nil {
		s.event(ctx, "volume.update.end", v.ProjectID, volumePayload(v))
	}
	return v, err
}

// DeleteVolume accepts the deletion of an available or failed volume
// without snapshots.
func (s *Service) DeleteVolume(ctx context.Context, c Caller, id string) error {
	return s.DeleteVolumeWith(ctx, c, id, VolumeDelete{})
}

// VolumeDelete says how a volume is deleted.
type VolumeDelete struct {
	// Cascade deletes the volume's snapshots with it (DELETE
	// ?cascade=true): each must be available or failed (error,
	// error_deleting), else the request is cairn.ErrInvalid, as in the
	// block storage API.
	Cascade bool
	// Force is the admin's os-force_delete: the volume is deleted
	// whatever its status, unless a task holds it (cairn.ErrConflict:
	// the task would fail half-way, or recreate what was deleted), it
	// is attached (detach it first), or it has snapshots.
	Force bool
}

// deletableVolume are the statuses a volume is deleted from without
// force, as the block storage API has them.
var deletableVolume = []cairn.Status{cairn.StatusAvailable, cairn.StatusError, cairn.StatusErrorDeleting,
	cairn.StatusErrorRestoring, cairn.StatusErrorExtending, cairn.StatusErrorManaging}

// DeleteVolumeWith accepts the deletion of a volume as how says.
func (s *Service) DeleteVolumeWith(ctx context.Context, c Caller, id string, how VolumeDelete) error {
	if how.Force && !c.Admin {
		return errorf(cairn.ErrForbidden, "force-delete is for admins")
	}
	var v cairn.Volume
	var cascaded []cairn.Snapshot
	err := s.update(ctx, func(tx catalog.Tx) error {
		var err error
		if v, err = getVolume(ctx, tx, c, id); err != nil {
			return err
		}
		switch {
		case how.Force && v.Attached:
			return fmt.Errorf("volume %s is attached; detach it first: %w", v.ID, cairn.ErrConflict)
		case how.Force:
		case !slices.Contains(deletableVolume, v.Status):
			return conflict("volume", v.ID, v.Status, "delete it")
		}
		if err := notHeld(ctx, tx, "volume", v.ID, "delete it"); err != nil {
			return err
		}
		snaps, err := tx.Snapshots(ctx, catalog.Filter{VolumeID: v.ID})
		if err != nil {
			return err
		}
		if len(snaps) > 0 && !how.Cascade {
			return fmt.Errorf("volume %s has snapshots; delete them first, or the volume with cascade=true: %w", v.ID, cairn.ErrConflict)
		}
		now := s.nowUTC()
		for _, sn := range snaps {
			switch sn.Status {
			case cairn.StatusAvailable, cairn.StatusError, cairn.StatusErrorDeleting:
			default:
				return errorf(cairn.ErrInvalid, "volume %s: snapshot %s is %s, which cannot be deleted", v.ID, sn.ID, sn.Status)
			}
			if err := notHeld(ctx, tx, "snapshot", sn.ID, "delete it"); err != nil {
				return errorf(cairn.ErrInvalid, "volume %s: %v", v.ID, err)
			}
			sn.Status, sn.UpdatedAt = cairn.StatusDeleting, now
			if err := tx.UpdateSnapshot(ctx, sn); err != nil {
				return err
			}
		}
		cascaded = snaps
		if err := dropTransfer(ctx, tx, v); err != nil {
			return err
		}
		v.Status, v.UpdatedAt = cairn.StatusDeleting, now
		if err := tx.UpdateVolume(ctx, v); err != nil {
			return err
		}
		_, err = s.queue(ctx, tx, v.ProjectID, "volume.delete", v.ID, nil)
		return err
	})
	if err == nil {
		for _, sn := range cascaded {
			sn.Status = cairn.StatusDeleting
			s.event(ctx, "snapshot.delete.start", sn.ProjectID, snapshotPayload(sn))
		}
		s.event(ctx, "volume.delete.start", v.ProjectID, volumePayload(v))
	}
	return err
}

func (s *Service) runDeleteVolume(ctx context.Context, t cairn.Task) error {
	v, err := s.volumeRow(ctx, t.ResourceID)
	if errors.Is(err, cairn.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	// A cascading delete's snapshots first: the engine deletes no
	// volume that has snapshots. The request checked there are only
	// those it marked deleting.
	snaps, err := readRows(ctx, s.cat, func(tx catalog.Tx) ([]cairn.Snapshot, error) {
		return tx.Snapshots(ctx, catalog.Filter{VolumeID: v.ID})
	})
	if err != nil {
		return err
	}
	for _, sn := range snaps {
		if sn.Status != cairn.StatusDeleting {
			return fmt.Errorf("volume %s has snapshot %s (%s): %w", v.ID, sn.ID, sn.Status, cairn.ErrConflict)
		}
		if err := s.deleteSnapshotNow(ctx, sn); err != nil {
			return err
		}
	}
	// A clone's snapshot of its source, if the clone failed after
	// taking it and before its clean-up.
	if err := s.removeCloneSnapshot(ctx, v.ID); err != nil {
		return err
	}
	ev, ok, err := s.engineVolume(ctx, v.ID)
	if err != nil {
		return err
	}
	if ok {
		if err := s.eng.DeleteVolume(ctx, ev.ID); err != nil && !errors.Is(err, cairn.ErrNotFound) {
			return fmt.Errorf("delete engine volume: %w", err)
		}
	}
	err = s.cat.Update(ctx, func(tx catalog.Tx) error { return tx.DeleteVolume(ctx, v.ID) })
	if err != nil && !errors.Is(err, cairn.ErrNotFound) {
		return err
	}
	v.Status = cairn.StatusDeleted
	s.event(ctx, "volume.delete.end", v.ProjectID, volumePayload(v))
	return nil
}

// ExtendVolume grows an available volume to size GiB.
func (s *Service) ExtendVolume(ctx context.Context, c Caller, id string, size int64) error {
	if err := validSize(size); err != nil {
		return err
	}
	var v cairn.Volume
	err := s.update(ctx, func(tx catalog.Tx) error {
		var err error
		if v, err = getVolume(ctx, tx, c, id); err != nil {
			return err
		}
		if v.Status != cairn.StatusAvailable {
			return conflict("volume", v.ID, v.Status, "extend it")
		}
		if err := notHeld(ctx, tx, "volume", v.ID, "extend it"); err != nil {
			return err
		}
		if size <= v.Size {
			return errorf(cairn.ErrInvalid, "new size %d GiB must be larger than the current %d GiB", size, v.Size)
		}
		if err := checkQuota(ctx, tx, v.ProjectID, cairn.Usage{Gigabytes: size - v.Size}); err != nil {
			return err
		}
		if err := checkVolumeSize(ctx, tx, v.ProjectID, size); err != nil {
			return err
		}
		v.Size, v.Status, v.UpdatedAt = size, cairn.StatusExtending, s.nowUTC()
		if err := tx.UpdateVolume(ctx, v); err != nil {
			return err
		}
		_, err = s.queue(ctx, tx, v.ProjectID, "volume.extend", v.ID, nil)
		return err
	})
	if err == nil {
		s.event(ctx, "volume.resize.start", v.ProjectID, volumePayload(v))
	}
	return err
}

func (s *Service) runExtendVolume(ctx context.Context, t cairn.Task) error {
	v, err := s.volumeRow(ctx, t.ResourceID)
	if err != nil {
		return err
	}
	if v.Status != cairn.StatusExtending {
		return nil
	}
	ev, ok, err := s.engineVolume(ctx, v.ID)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("volume %s: engine volume: %w", v.ID, cairn.ErrNotFound)
	}
	if ev.Size < v.Size*GiB {
		if err := s.eng.ExtendVolume(ctx, ev.ID, v.Size*GiB); err != nil {
			return fmt.Errorf("extend: %w", err)
		}
	}
	v, err = s.setVolume(ctx, v.ID, func(v *cairn.Volume) { v.Status = cairn.StatusAvailable })
	if err != nil {
		return err
	}
	s.event(ctx, "volume.resize.end", v.ProjectID, volumePayload(v))
	return nil
}

// Attachment says where an attached volume is exported.
type Attachment struct {
	VolumeID string `json:"volume_id"`
	// ExportName is the NBD export's name.
	ExportName string `json:"export_name"`
	// URIs are NBD URIs (nbd+unix, nbd) a client connects to.
	URIs []string `json:"uris"`
}

// AttachVolume exports an available volume, or one reserved for it
// (attaching), over NBD (status in-use).
func (s *Service) AttachVolume(ctx context.Context, c Caller, id string) (Attachment, error) {
	var v cairn.Volume
	var eid cairn.ID
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		var err error
		if v, err = getVolume(ctx, tx, c, id); err != nil {
			return err
		}
		if v.Status != cairn.StatusAvailable && v.Status != cairn.StatusAttaching {
			return conflict("volume", v.ID, v.Status, "attach it")
		}
		if eid, err = parseEngineID(v.EngineID); err != nil {
			return fmt.Errorf("volume %s has no engine volume: %w", v.ID, cairn.ErrConflict)
		}
		v.Status, v.Attached, v.UpdatedAt = cairn.StatusInUse, true, s.nowUTC()
		return tx.UpdateVolume(ctx, v)
	})
	if err != nil {
		return Attachment{}, err
	}
	if err := s.eng.Export(ctx, v.ID, eid); err != nil {
		// Not exported: the volume is available again (a reservation
		// is given up).
		_, rerr := s.setVolume(context.WithoutCancel(ctx), v.ID, func(v *cairn.Volume) {
			v.Status, v.Attached = cairn.StatusAvailable, false
		})
		return Attachment{}, errors.Join(fmt.Errorf("exporting volume %s: %w", v.ID, err), rerr)
	}
	s.event(ctx, "volume.attach.end", v.ProjectID, volumePayload(v))
	return s.attachment(v.ID), nil
}

func (s *Service) attachment(id string) Attachment {
	a := Attachment{VolumeID: id, ExportName: id}
	if s.nbdSock != "" {
		a.URIs = append(a.URIs, "nbd+unix:///"+id+"?socket="+s.nbdSock)
	}
	if s.nbdAddr != "" {
		a.URIs = append(a.URIs, "nbd://"+s.nbdAddr+"/"+id)
	}
	return a
}

// DetachVolume stops exporting an in-use volume, or one whose
// detachment began (detaching), so it is available. Connected clients
// keep their connection until they close it.
func (s *Service) DetachVolume(ctx context.Context, c Caller, id string) error {
	var v cairn.Volume
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		var err error
		if v, err = getVolume(ctx, tx, c, id); err != nil {
			return err
		}
		if v.Status != cairn.StatusInUse && v.Status != cairn.StatusDetaching {
			return conflict("volume", v.ID, v.Status, "detach it")
		}
		v.Status, v.Attached, v.UpdatedAt = cairn.StatusAvailable, false, s.nowUTC()
		return tx.UpdateVolume(ctx, v)
	})
	if err != nil {
		return err
	}
	// Detached in the catalog: an export left behind by a failure here is
	// removed when the service starts again.
	if err := s.eng.Unexport(ctx, v.ID); err != nil {
		return fmt.Errorf("unexporting volume %s: %w", v.ID, err)
	}
	s.event(ctx, "volume.detach.end", v.ProjectID, volumePayload(v))
	return nil
}

func (s *Service) setVolumeChecked(ctx context.Context, c Caller, id string, fn func(*cairn.Volume) error) (cairn.Volume, error) {
	var v cairn.Volume
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		var err error
		if v, err = getVolume(ctx, tx, c, id); err != nil {
			return err
		}
		if err := fn(&v); err != nil {
			return err
		}
		v.UpdatedAt = s.nowUTC()
		return tx.UpdateVolume(ctx, v)
	})
	return v, err
}

func volumePayload(v cairn.Volume) map[string]any {
	return map[string]any{"id": v.ID, "volume_id": v.ID, "project_id": v.ProjectID, "user_id": v.UserID,
		"display_name": v.Name, "size": v.Size, "status": v.Status,
		"snapshot_id": v.SnapshotID, "backup_id": v.BackupID, "source_volid": v.SourceVolID,
		"created_at": v.CreatedAt, "fail_reason": v.FailReason}
}

// readRows reads rows in a transaction of their own.
func readRows[T any](ctx context.Context, cat catalog.Store, fn func(catalog.Tx) ([]T, error)) ([]T, error) {
	var out []T
	err := cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		out, err = fn(tx)
		return err
	})
	return out, err
}

// cloneSnapshotName names the engine snapshot of its source a clone of
// a volume is made from; the clone's task removes it.
func cloneSnapshotName(volume string) string { return "clone-" + volume }

// cloneVolume makes the engine volume of v, a clone of its source
// volume: a snapshot of the source (found again if an earlier attempt
// took it), and a clone of that.
func (s *Service) cloneVolume(ctx context.Context, v cairn.Volume) (volume.VolumeInfo, error) {
	es, ok, err := s.engineSnapshot(ctx, cloneSnapshotName(v.ID))
	if err != nil {
		return volume.VolumeInfo{}, err
	}
	if !ok {
		src, err := s.volumeRow(ctx, v.SourceVolID)
		if err != nil {
			return volume.VolumeInfo{}, fmt.Errorf("source volume: %w", err)
		}
		sid, err := parseEngineID(src.EngineID)
		if err != nil {
			return volume.VolumeInfo{}, fmt.Errorf("source volume %s: %w", src.ID, err)
		}
		if es, err = s.eng.CreateSnapshot(ctx, sid, cloneSnapshotName(v.ID)); err != nil {
			return volume.VolumeInfo{}, fmt.Errorf("snapshot of source volume %s: %w", src.ID, err)
		}
	}
	ev, err := s.eng.CloneVolume(ctx, v.ID, es.ID)
	if err != nil {
		return volume.VolumeInfo{}, fmt.Errorf("clone volume %s: %w", v.SourceVolID, err)
	}
	return ev, nil
}

// removeCloneSnapshot deletes the snapshot a clone of volume id was
// made from, if it is there.
func (s *Service) removeCloneSnapshot(ctx context.Context, id string) error {
	es, ok, err := s.engineSnapshot(ctx, cloneSnapshotName(id))
	if err != nil || !ok {
		return err
	}
	if err := s.eng.DeleteSnapshot(ctx, es.ID); err != nil && !errors.Is(err, cairn.ErrNotFound) {
		return fmt.Errorf("remove the clone's snapshot: %w", err)
	}
	return nil
}

// failCreateVolume removes what a failed create made besides the
// volume (a clone's snapshot of its source), then fails the volume.
func (s *Service) failCreateVolume(ctx context.Context, t cairn.Task, cause error) error {
	if err := s.removeCloneSnapshot(ctx, t.ResourceID); err != nil {
		return err
	}
	return s.failVolume("volume.create.error")(ctx, t, cause)
}

// failDeleteVolume fails a volume's deletion, and its snapshots a
// cascading delete had not removed yet: error_deleting, which may be
// deleted again.
func (s *Service) failDeleteVolume(ctx context.Context, t cairn.Task, cause error) error {
	snaps, err := readRows(ctx, s.cat, func(tx catalog.Tx) ([]cairn.Snapshot, error) {
		return tx.Snapshots(ctx, catalog.Filter{VolumeID: t.ResourceID, Status: cairn.StatusDeleting})
	})
	if err != nil {
		return err
	}
	for _, sn := range snaps {
		if err := s.failSnapshot("snapshot.delete.error")(ctx, cairn.Task{ResourceID: sn.ID}, cause); err != nil {
			return err
		}
	}
	return s.failVolume("volume.delete.error")(ctx, t, cause)
}
