package service

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// Volume transfers, as the block storage API has them (os-volume-transfer,
// before microversion 3.55): a project offers an available volume
// without snapshots; the volume is awaiting-transfer; whoever holds the
// transfer's ID and its key, shown once to the creator, accepts it into
// their own project (the volume keeps its ID, data and metadata, and now
// names the acceptor as its user). Deleting the transfer, or accepting
// it, ends it. The key is kept only as a salted SHA-256.

// transferKeyBytes is the key's randomness: 8 bytes, 16 hex digits, as
// long as the block storage API's keys.
const transferKeyBytes = 8

// CreateTransfer offers volume id of the caller's; it returns the
// transfer and its key.
func (s *Service) CreateTransfer(ctx context.Context, c Caller, volumeID, name string) (cairn.VolumeTransfer, string, error) {
	if err := validText("name", name, 255); err != nil {
		return cairn.VolumeTransfer{}, "", err
	}
	key := make([]byte, transferKeyBytes)
	salt := make([]byte, 8)
	_, _ = rand.Read(key)
	_, _ = rand.Read(salt)
	authKey := hex.EncodeToString(key)
	tr := cairn.VolumeTransfer{ID: cairn.NewUUID(), VolumeID: volumeID, Name: name,
		Salt: hex.EncodeToString(salt), CreatedAt: s.nowUTC()}
	tr.KeyHash = transferKeyHash(tr.Salt, authKey)
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		v, err := getVolume(ctx, tx, c, volumeID)
		if err != nil {
			return err
		}
		if v.Status != cairn.StatusAvailable {
			return conflict("volume", v.ID, v.Status, "transfer it")
		}
		snaps, err := tx.Snapshots(ctx, catalog.Filter{VolumeID: v.ID})
		if err != nil {
			return err
		}
		for _, sn := range snaps {
			if sn.Status != cairn.StatusDeleted {
				return errorf(cairn.ErrInvalid, "volume %s has snapshots (%s): a volume is transferred without any", v.ID, sn.ID)
			}
		}
		tr.ProjectID = v.ProjectID
		v.Status, v.UpdatedAt = cairn.StatusAwaitingTransfer, tr.CreatedAt
		if err := tx.UpdateVolume(ctx, v); err != nil {
			return err
		}
		return tx.InsertVolumeTransfer(ctx, tr)
	})
	if err != nil {
		return cairn.VolumeTransfer{}, "", err
	}
	s.event(ctx, "transfer.create.end", tr.ProjectID, transferPayload(tr))
	return tr, authKey, nil
}

// transferKeyHash is the hex SHA-256 of a transfer's salt and key.
func transferKeyHash(salt, key string) string {
	sum := sha256.Sum256([]byte(salt + "\x00" + key))
	return hex.EncodeToString(sum[:])
}

func transferPayload(tr cairn.VolumeTransfer) map[string]any {
	return map[string]any{"transfer_id": tr.ID, "volume_id": tr.VolumeID, "display_name": tr.Name,
		"created_at": tr.CreatedAt}
}

// Transfers lists the caller's project's transfers, oldest first; an
// admin's all lists every project's.
func (s *Service) Transfers(ctx context.Context, c Caller, all bool) ([]cairn.VolumeTransfer, error) {
	project := c.ProjectID
	if all && c.Admin {
		project = ""
	}
	return readRows(ctx, s.cat, func(tx catalog.Tx) ([]cairn.VolumeTransfer, error) {
		return tx.VolumeTransfers(ctx, project)
	})
}

// Transfer returns one of the caller's project's transfers.
func (s *Service) Transfer(ctx context.Context, c Caller, id string) (cairn.VolumeTransfer, error) {
	var tr cairn.VolumeTransfer
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		tr, err = getTransfer(ctx, tx, c, id)
		return err
	})
	return tr, err
}

// getTransfer reads a transfer the caller's project made (any, for an
// admin); another's is ErrNotFound.
func getTransfer(ctx context.Context, tx catalog.Tx, c Caller, id string) (cairn.VolumeTransfer, error) {
	tr, err := anyTransfer(ctx, tx, id)
	if err == nil && !c.may(tr.ProjectID) {
		return cairn.VolumeTransfer{}, errorf(cairn.ErrNotFound, "volume transfer %s: not found", shorten(id))
	}
	return tr, err
}

// anyTransfer reads transfer id of any project.
func anyTransfer(ctx context.Context, tx catalog.Tx, id string) (cairn.VolumeTransfer, error) {
	tr, err := tx.VolumeTransfer(ctx, id)
	if errors.Is(err, cairn.ErrNotFound) {
		return cairn.VolumeTransfer{}, errorf(cairn.ErrNotFound, "volume transfer %s: not found", shorten(id))
	}
	return tr, err
}

// DeleteTransfer withdraws a transfer: the volume is available again.
func (s *Service) DeleteTransfer(ctx context.Context, c Caller, id string) error {
	return s.cat.Update(ctx, func(tx catalog.Tx) error {
		tr, err := getTransfer(ctx, tx, c, id)
		if err != nil {
			return err
		}
		return s.endTransfer(ctx, tx, tr, nil)
	})
}

// AcceptTransfer moves the transfer's volume into the caller's project,
// given the transfer's key. The transfer is found by its ID whatever
// the caller's project: that and the key are what the creator hands
// over.
func (s *Service) AcceptTransfer(ctx context.Context, c Caller, id, key string) (cairn.VolumeTransfer, error) {
	var tr cairn.VolumeTransfer
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		var err error
		if tr, err = anyTransfer(ctx, tx, id); err != nil {
			return err
		}
		if subtle.ConstantTimeCompare([]byte(transferKeyHash(tr.Salt, key)), []byte(tr.KeyHash)) != 1 {
			return errorf(cairn.ErrInvalid, "volume transfer %s: auth_key does not match", tr.ID)
		}
		if tr.ProjectID == c.ProjectID {
			return errorf(cairn.ErrInvalid, "volume transfer %s: the volume is project %s's already", tr.ID, c.ProjectID)
		}
		return s.endTransfer(ctx, tx, tr, &c)
	})
	if err != nil {
		return cairn.VolumeTransfer{}, err
	}
	s.event(ctx, "transfer.accept.end", c.ProjectID, transferPayload(tr))
	return tr, nil
}

// endTransfer ends tr in tx: the volume is available again, in the
// acceptor's project when to is not nil (quota checked), and the
// transfer row is deleted.
func (s *Service) endTransfer(ctx context.Context, tx catalog.Tx, tr cairn.VolumeTransfer, to *Caller) error {
	v, err := tx.Volume(ctx, tr.VolumeID)
	switch {
	case errors.Is(err, cairn.ErrNotFound) && to == nil:
		// Gone (an admin's force-delete): withdrawing is all there is.
	case err != nil:
		return err
	case v.Status != cairn.StatusAwaitingTransfer:
		if to != nil {
			return conflict("volume", v.ID, v.Status, "accept its transfer")
		}
	default:
		if to != nil {
			if err := checkQuota(ctx, tx, to.ProjectID, cairn.Usage{Volumes: 1, Gigabytes: v.Size}); err != nil {
				return err
			}
			if err := checkVolumeSize(ctx, tx, to.ProjectID, v.Size); err != nil {
				return err
			}
			v.ProjectID, v.UserID = to.ProjectID, to.UserID
		}
		v.Status, v.UpdatedAt = cairn.StatusAvailable, s.nowUTC()
		if err := tx.UpdateVolume(ctx, v); err != nil {
			return err
		}
	}
	return tx.DeleteVolumeTransfer(ctx, tr.ID)
}

// dropTransfer removes the transfer of volume v, if it has one: a volume
// being deleted (an admin's force-delete reaches one awaiting transfer)
// is offered to no one.
func dropTransfer(ctx context.Context, tx catalog.Tx, v cairn.Volume) error {
	trs, err := tx.VolumeTransfers(ctx, v.ProjectID)
	if err != nil {
		return err
	}
	for _, tr := range trs {
		if tr.VolumeID == v.ID {
			return tx.DeleteVolumeTransfer(ctx, tr.ID)
		}
	}
	return nil
}
