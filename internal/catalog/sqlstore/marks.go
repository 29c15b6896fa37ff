package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cairnproject/cairn"
)

// Backup marks: the backup_marks table (0014_backup_marks.sql), one row
// per backup that has any, removed with the backup.

// checkArg stores a check as JSON, none as "".
func checkArg(c *cairn.BackupCheck) (string, error) {
	if c == nil {
		return "", nil
	}
	b, err := json.Marshal(c)
	return string(b), err
}

func checkOf(s string) (*cairn.BackupCheck, error) {
	if s == "" {
		return nil, nil
	}
	var c cairn.BackupCheck
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		return nil, err
	}
	c.At = c.At.UTC()
	return &c, nil
}

// BackupMarks reads backup id's marks; a backup without any has the
// zero marks (with its ID).
func (t *tx) BackupMarks(ctx context.Context, id string) (cairn.BackupMarks, error) {
	m := cairn.BackupMarks{BackupID: id}
	var verification, drill string
	err := t.scanRow(ctx, t.d.rebind("SELECT protected, verification, drill FROM backup_marks WHERE backup_id = ?"), []any{id},
		&m.Protected, &verification, &drill)
	if errors.Is(err, sql.ErrNoRows) {
		return m, nil
	}
	if err != nil {
		return m, fmt.Errorf("backup %s marks: %w", id, err)
	}
	if m.Verification, err = checkOf(verification); err != nil {
		return m, fmt.Errorf("backup %s verification: %w", id, err)
	}
	if m.Drill, err = checkOf(drill); err != nil {
		return m, fmt.Errorf("backup %s drill: %w", id, err)
	}
	return m, nil
}

// PutBackupMarks writes m, replacing the backup's marks. The backup is
// not looked up.
func (t *tx) PutBackupMarks(ctx context.Context, m cairn.BackupMarks) error {
	verification, err := checkArg(m.Verification)
	if err != nil {
		return err
	}
	drill, err := checkArg(m.Drill)
	if err != nil {
		return err
	}
	_, err = t.exec(ctx, t.d.rebind(`INSERT INTO backup_marks (backup_id, protected, verification, drill) VALUES (?, ?, ?, ?)
		ON CONFLICT (backup_id) DO UPDATE SET protected = excluded.protected, verification = excluded.verification, drill = excluded.drill`),
		m.BackupID, m.Protected, verification, drill)
	if err != nil {
		return fmt.Errorf("backup %s marks: %w", m.BackupID, err)
	}
	return nil
}

func (t *tx) deleteMarks(ctx context.Context, id string) error {
	if _, err := t.exec(ctx, t.d.rebind("DELETE FROM backup_marks WHERE backup_id = ?"), id); err != nil {
		return fmt.Errorf("backup %s marks: %w", id, err)
	}
	return nil
}
