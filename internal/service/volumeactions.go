package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// The block storage API's volume actions that only move a volume's
// status or flags: the attachment handshake (os-reserve, os-unreserve,
// os-begin_detaching, os-roll_detaching), os-set_bootable,
// os-update_readonly_flag and the admin's os-reset_status and
// os-force_delete.

// moveVolume changes one of the caller's volumes from status from to
// status to, refusing any other status with cairn.ErrInvalid (400), as
// the block storage API refuses the attachment handshake's moves
// (InvalidVolume), unlike its other state conflicts.
func (s *Service) moveVolume(ctx context.Context, c Caller, id string, from, to cairn.Status, op string) (cairn.Volume, error) {
	v, err := s.setVolumeChecked(ctx, c, id, func(v *cairn.Volume) error {
		if v.Status != from {
			return errorf(cairn.ErrInvalid, "volume %s is %s, not %s: cannot %s", v.ID, v.Status, from, op)
		}
		v.Status = to
		return nil
	})
	return v, err
}

// ReserveVolume marks an available volume attaching: reserved for an
// attachment (os-reserve), which os-attach makes or os-unreserve gives
// up. Nothing else may attach, back up, extend or delete it meanwhile.
func (s *Service) ReserveVolume(ctx context.Context, c Caller, id string) error {
	_, err := s.moveVolume(ctx, c, id, cairn.StatusAvailable, cairn.StatusAttaching, "reserve it")
	return err
}

// UnreserveVolume gives up a reservation: attaching becomes available.
func (s *Service) UnreserveVolume(ctx context.Context, c Caller, id string) error {
	_, err := s.moveVolume(ctx, c, id, cairn.StatusAttaching, cairn.StatusAvailable, "unreserve it")
	return err
}

// BeginDetaching marks an in-use volume detaching (os-begin_detaching);
// it stays exported until os-detach, and os-roll_detaching makes it
// in-use again.
func (s *Service) BeginDetaching(ctx context.Context, c Caller, id string) error {
	_, err := s.moveVolume(ctx, c, id, cairn.StatusInUse, cairn.StatusDetaching, "begin detaching it")
	return err
}

// RollDetaching makes a detaching volume in-use again, and exports it
// again: a service that restarted while the volume was detaching (Start
// exports only in-use volumes) serves it again from here.
func (s *Service) RollDetaching(ctx context.Context, c Caller, id string) error {
	v, err := s.moveVolume(ctx, c, id, cairn.StatusDetaching, cairn.StatusInUse, "roll its detaching back")
	if err != nil || !v.Attached {
		return err
	}
	eid, err := parseEngineID(v.EngineID)
	if err != nil {
		return fmt.Errorf("volume %s: %w", v.ID, err)
	}
	if err := s.eng.Export(ctx, v.ID, eid); err != nil {
		return fmt.Errorf("exporting volume %s: %w", v.ID, err)
	}
	return nil
}

// SetBootable sets a volume's bootable flag, in any status, as the
// block storage API does.
func (s *Service) SetBootable(ctx context.Context, c Caller, id string, bootable bool) error {
	_, err := s.setVolumeChecked(ctx, c, id, func(v *cairn.Volume) error {
		v.Bootable = bootable
		return nil
	})
	return err
}

// SetReadOnly records a volume's read-only flag (os-update_readonly_flag)
// in its admin metadata, as "True" or "False": the answers show it as the
// volume's metadata "readonly", and the tenant's metadata calls, which
// write only the tenant's metadata, cannot change it. The volume must be
// available or in-use, as in the block storage API. cairn's NBD export
// stays read-write: the flag is for the clients that read it.
func (s *Service) SetReadOnly(ctx context.Context, c Caller, id string, readonly bool) error {
	_, err := s.setVolumeChecked(ctx, c, id, func(v *cairn.Volume) error {
		if v.Status != cairn.StatusAvailable && v.Status != cairn.StatusInUse {
			return conflict("volume", v.ID, v.Status, "change its read-only flag")
		}
		md := make(map[string]string, len(v.AdminMetadata)+1)
		for k, x := range v.AdminMetadata {
			md[k] = x
		}
		md[cairn.ReadOnlyKey] = "False"
		if readonly {
			md[cairn.ReadOnlyKey] = "True"
		}
		v.AdminMetadata = md
		return nil
	})
	return err
}

// VolumeReset is an admin's os-reset_status of a volume: any of a
// status, an attach status and a migration status; "" leaves it.
type VolumeReset struct {
	// Status is one of cairn.VolumeStatuses, in any case.
	Status cairn.Status
	// AttachStatus is "attached" (the volume is exported, as os-attach
	// does) or "detached" (it is not). Without one, a volume stays
	// attached only when it was and the new status is in-use or
	// detaching.
	AttachStatus string
	// MigrationStatus is checked as the block storage API checks it and
	// otherwise ignored: cairn never migrates a volume, and shows none.
	MigrationStatus string
}

// migrationStatuses are those the block storage API accepts.
var migrationStatuses = []string{"migrating", "error", "success", "completing", "none", "starting"}

// resetStatus checks a status reset to: one of allowed, in any case.
func resetStatus(st cairn.Status, allowed []cairn.Status) (cairn.Status, error) {
	low := cairn.Status(strings.ToLower(string(st)))
	if !slices.Contains(allowed, low) {
		names := make([]string, len(allowed))
		for i, a := range allowed {
			names[i] = string(a)
		}
		return "", errorf(cairn.ErrInvalid, "status %q: want one of %s", st, strings.Join(names, ", "))
	}
	return low, nil
}

// ResetVolumeStatus is the admin's way out of a stuck state: the volume
// takes the status, attach status and migration status given, whatever
// it had. It is refused while a task holds the volume (a reset would
// make the task's work another's), and then changes nothing.
func (s *Service) ResetVolumeStatus(ctx context.Context, c Caller, id string, r VolumeReset) error {
	if !c.Admin {
		return errorf(cairn.ErrForbidden, "reset-status is for admins")
	}
	if r.Status == "" && r.AttachStatus == "" && r.MigrationStatus == "" {
		return errorf(cairn.ErrInvalid, "give a status, an attach_status or a migration_status")
	}
	if r.Status != "" {
		var err error
		if r.Status, err = resetStatus(r.Status, cairn.VolumeStatuses); err != nil {
			return err
		}
	}
	attach := strings.ToLower(r.AttachStatus)
	if attach != "" && attach != "attached" && attach != "detached" {
		return errorf(cairn.ErrInvalid, "attach_status %q: want attached or detached", r.AttachStatus)
	}
	if m := r.MigrationStatus; m != "" && !slices.Contains(migrationStatuses, strings.ToLower(m)) {
		return errorf(cairn.ErrInvalid, "migration_status %q: want one of %s", m, strings.Join(migrationStatuses, ", "))
	}
	var v cairn.Volume
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		var err error
		if v, err = getVolume(ctx, tx, c, id); err != nil {
			return err
		}
		if err := notHeld(ctx, tx, "volume", v.ID, "reset its status"); err != nil {
			return err
		}
		if r.Status != "" {
			v.Status = r.Status
		}
		switch attach {
		case "attached":
			if _, err := parseEngineID(v.EngineID); err != nil {
				return fmt.Errorf("volume %s has no engine volume to export: %w", v.ID, cairn.ErrConflict)
			}
			v.Attached = true
		case "detached":
			v.Attached = false
		default:
			v.Attached = v.Attached && (v.Status == cairn.StatusInUse || v.Status == cairn.StatusDetaching)
		}
		v.UpdatedAt = s.nowUTC()
		return tx.UpdateVolume(ctx, v)
	})
	if err != nil {
		return err
	}
	if v.Attached {
		eid, _ := parseEngineID(v.EngineID)
		if err := s.eng.Export(ctx, v.ID, eid); err != nil {
			return fmt.Errorf("exporting volume %s: %w", v.ID, err)
		}
		return nil
	}
	if err := s.eng.Unexport(ctx, v.ID); err != nil && !errors.Is(err, cairn.ErrNotFound) {
		return fmt.Errorf("unexporting volume %s: %w", v.ID, err)
	}
	return nil
}

// ForceDeleteVolume is the admin's os-force_delete: DeleteVolumeWith
// Force.
func (s *Service) ForceDeleteVolume(ctx context.Context, c Caller, id string) error {
	return s.DeleteVolumeWith(ctx, c, id, VolumeDelete{Force: true})
}
