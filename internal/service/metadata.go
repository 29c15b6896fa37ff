package service

import (
	"context"
	"maps"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// MetadataEdit is a change to a volume's, snapshot's or instance's
// metadata, as the block storage API's metadata calls (and Trove's
// instance metadata calls) make them:
//   - Set's items are added, or overwrite the items of their keys; with
//     New, none of Set's keys may be there yet (ErrConflict), and with
//     Existing, each must be (ErrNotFound);
//   - with Replace, every item Set does not name is removed (Replace
//     with no Set removes all);
//   - Delete, when not "", removes that one item, which must exist; with
//     Set, the item is renamed (removed, then Set's items set).
//
// The result is held to the bounds of a create's metadata (validMetadata),
// its number of items included.
type MetadataEdit struct {
	Set           map[string]string
	Replace       bool
	Delete        string
	New, Existing bool
}

// check refuses an edit that could never be made, before any transaction.
func (e MetadataEdit) check() error {
	if e.Delete != "" && e.Replace || e.New && e.Existing {
		return errorf(cairn.ErrInvalid, "metadata: delete an item, or replace them all, not both")
	}
	_, err := validMetadata(e.Set)
	return err
}

// Apply returns the metadata old becomes by e, as the catalog stores it
// (nil for none), or an error when e cannot be made to it: a missing item
// to delete or to change (ErrNotFound, what names the resource), an item
// to add that is there (ErrConflict), too many items. what names the
// resource in errors.
func (e MetadataEdit) Apply(what string, old map[string]string) (map[string]string, error) {
	md := maps.Clone(old)
	if md == nil || e.Replace {
		md = map[string]string{}
	}
	if e.Delete != "" {
		if _, ok := md[e.Delete]; !ok {
			return nil, errorf(cairn.ErrNotFound, "%s: metadata key %q", what, shorten(e.Delete))
		}
		delete(md, e.Delete)
	}
	for k := range e.Set {
		_, has := md[k]
		switch {
		case e.New && has:
			return nil, errorf(cairn.ErrConflict, "%s: metadata key %q is there already", what, shorten(k))
		case e.Existing && !has:
			return nil, errorf(cairn.ErrNotFound, "%s: metadata key %q", what, shorten(k))
		}
	}
	maps.Copy(md, e.Set)
	return validMetadata(md)
}

// UpdateVolumeMetadata makes e to one of the caller's volumes, in any
// status, and returns all of its metadata after it (nil for none). The
// read, the change and the write are one transaction, so concurrent
// edits of one volume each see the others' whole effect: none is lost.
func (s *Service) UpdateVolumeMetadata(ctx context.Context, c Caller, id string, e MetadataEdit) (map[string]string, error) {
	if err := e.check(); err != nil {
		return nil, err
	}
	var v cairn.Volume
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		var err error
		if v, err = getVolume(ctx, tx, c, id); err != nil {
			return err
		}
		if v.Metadata, err = e.Apply("volume "+v.ID, v.Metadata); err != nil {
			return err
		}
		v.UpdatedAt = s.nowUTC()
		return tx.UpdateVolume(ctx, v)
	})
	if err != nil {
		return nil, err
	}
	s.event(ctx, "volume.update.end", v.ProjectID, volumePayload(v))
	return v.Metadata, nil
}

// UpdateSnapshotMetadata is UpdateVolumeMetadata for one of the caller's
// snapshots.
func (s *Service) UpdateSnapshotMetadata(ctx context.Context, c Caller, id string, e MetadataEdit) (map[string]string, error) {
	if err := e.check(); err != nil {
		return nil, err
	}
	var snap cairn.Snapshot
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		var err error
		if snap, err = getSnapshot(ctx, tx, c, id); err != nil {
			return err
		}
		if snap.Metadata, err = e.Apply("snapshot "+snap.ID, snap.Metadata); err != nil {
			return err
		}
		snap.UpdatedAt = s.nowUTC()
		return tx.UpdateSnapshot(ctx, snap)
	})
	if err != nil {
		return nil, err
	}
	s.event(ctx, "snapshot.update.end", snap.ProjectID, snapshotPayload(snap))
	return snap.Metadata, nil
}

// matchesMetadata reports whether md has every item of want, each with
// the same value.
func matchesMetadata(md, want map[string]string) bool {
	for k, w := range want {
		if v, ok := md[k]; !ok || v != w {
			return false
		}
	}
	return true
}

// UpdateInstanceMetadata is UpdateVolumeMetadata for one of the caller's
// database instances, in any status: what a policy's tag selects
// instances by.
func (s *Service) UpdateInstanceMetadata(ctx context.Context, c Caller, id string, e MetadataEdit) (map[string]string, error) {
	if s.host == nil {
		return nil, errNoInstances
	}
	if err := e.check(); err != nil {
		return nil, err
	}
	var inst cairn.Instance
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		var err error
		if inst, err = getInstance(ctx, tx, c, id); err != nil {
			return err
		}
		if inst.Metadata, err = e.Apply("instance "+inst.ID, inst.Metadata); err != nil {
			return err
		}
		inst.UpdatedAt = s.nowUTC()
		return tx.UpdateInstance(ctx, inst)
	})
	if err != nil {
		return nil, err
	}
	s.event(ctx, "instance.update.end", inst.ProjectID, instancePayload(inst))
	return inst.Metadata, nil
}
