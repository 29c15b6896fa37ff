package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/cairnproject/cairn"
)

// Volume transfers: the volume_transfers table
// (0012_volume_transfers.sql). Few and short-lived rows, so their
// statements are rebound per call, as volume types' are.

const transferCols = "id, project_id, volume_id, name, salt, key_hash, created_at"

func transferDest(tr *cairn.VolumeTransfer) []any {
	return []any{&tr.ID, &tr.ProjectID, &tr.VolumeID, &tr.Name, &tr.Salt, &tr.KeyHash, timeDest{&tr.CreatedAt}}
}

// InsertVolumeTransfer stores tr: cairn.ErrExists when its ID is taken
// or its volume has a transfer already.
func (t *tx) InsertVolumeTransfer(ctx context.Context, tr cairn.VolumeTransfer) error {
	n, err := t.execCount(ctx, t.d.rebind("INSERT INTO volume_transfers ("+transferCols+
		") VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"),
		tr.ID, tr.ProjectID, tr.VolumeID, tr.Name, tr.Salt, tr.KeyHash, t.d.Time(tr.CreatedAt))
	if err != nil {
		return fmt.Errorf("insert volume transfer %s: %w", tr.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("volume transfer %s of volume %s: the ID is taken, or the volume has a transfer: %w", tr.ID, tr.VolumeID, cairn.ErrExists)
	}
	return nil
}

// VolumeTransfer reads transfer id.
func (t *tx) VolumeTransfer(ctx context.Context, id string) (cairn.VolumeTransfer, error) {
	var tr cairn.VolumeTransfer
	err := t.scanRow(ctx, t.d.rebind("SELECT "+transferCols+" FROM volume_transfers WHERE id = ?"), []any{id}, transferDest(&tr)...)
	if errors.Is(err, sql.ErrNoRows) {
		return tr, fmt.Errorf("volume transfer %s: %w", id, cairn.ErrNotFound)
	}
	if err != nil {
		return tr, fmt.Errorf("volume transfer %s: %w", id, err)
	}
	return tr, nil
}

// VolumeTransfers lists project's transfers (every project's for ""),
// oldest first.
func (t *tx) VolumeTransfers(ctx context.Context, project string) ([]cairn.VolumeTransfer, error) {
	q, args := "SELECT "+transferCols+" FROM volume_transfers", []any(nil)
	if project != "" {
		q, args = q+" WHERE project_id = ?", []any{project}
	}
	out := []cairn.VolumeTransfer{}
	err := t.all(ctx, "volume transfers", t.d.rebind(q+" ORDER BY created_at, id"), args, func(r *sql.Rows) error {
		var tr cairn.VolumeTransfer
		if err := r.Scan(transferDest(&tr)...); err != nil {
			return err
		}
		out = append(out, tr)
		return nil
	})
	return out, err
}

// DeleteVolumeTransfer removes transfer id: cairn.ErrNotFound when
// there is none.
func (t *tx) DeleteVolumeTransfer(ctx context.Context, id string) error {
	n, err := t.execCount(ctx, t.d.rebind("DELETE FROM volume_transfers WHERE id = ?"), id)
	if err != nil {
		return fmt.Errorf("delete volume transfer %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("volume transfer %s: %w", id, cairn.ErrNotFound)
	}
	return nil
}
