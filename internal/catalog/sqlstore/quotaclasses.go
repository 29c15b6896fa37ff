package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/cairnproject/cairn"
)

// QuotaClass returns the limits of quota class name ("default").
func (t *tx) QuotaClass(ctx context.Context, name string) (cairn.Quota, error) {
	var q cairn.Quota
	err := t.scanRow(ctx, t.d.rebind("SELECT volumes, gigabytes, snapshots, backups, backup_gigabytes,"+
		" per_volume_gigabytes FROM quota_classes WHERE name = ?"), []any{name},
		&q.Volumes, &q.Gigabytes, &q.Snapshots, &q.Backups, &q.BackupGigabytes, &q.PerVolumeGigabytes)
	if errors.Is(err, sql.ErrNoRows) {
		return cairn.Quota{}, fmt.Errorf("quota class %s: %w", name, cairn.ErrNotFound)
	}
	if err != nil {
		return cairn.Quota{}, fmt.Errorf("quota class %s: %w", name, err)
	}
	return q, nil
}

// SetQuotaClass writes every limit of quota class name.
func (t *tx) SetQuotaClass(ctx context.Context, name string, q cairn.Quota) error {
	n, err := t.execCount(ctx, t.d.rebind("UPDATE quota_classes SET volumes = ?, gigabytes = ?, snapshots = ?,"+
		" backups = ?, backup_gigabytes = ?, per_volume_gigabytes = ? WHERE name = ?"),
		q.Volumes, q.Gigabytes, q.Snapshots, q.Backups, q.BackupGigabytes, q.PerVolumeGigabytes, name)
	if err != nil {
		return fmt.Errorf("quota class %s: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("quota class %s: %w", name, cairn.ErrNotFound)
	}
	return nil
}
