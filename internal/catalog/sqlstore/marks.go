package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

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

// BackupMarksOf reads the marks of those of ids that have any, by
// backup ID.
func (t *tx) BackupMarksOf(ctx context.Context, ids []string) (map[string]cairn.BackupMarks, error) {
	out := map[string]cairn.BackupMarks{}
	const chunk = 500
	for start := 0; start < len(ids); start += chunk {
		part := ids[start:min(start+chunk, len(ids))]
		args := make([]any, len(part))
		for i, id := range part {
			args[i] = id
		}
		q := "SELECT backup_id, protected, verification, drill FROM backup_marks WHERE backup_id IN (?" + strings.Repeat(", ?", len(part)-1) + ")"
		err := t.all(ctx, "backup marks", t.d.rebind(q), args, func(r *sql.Rows) error {
			var m cairn.BackupMarks
			var verification, drill string
			if err := r.Scan(&m.BackupID, &m.Protected, &verification, &drill); err != nil {
				return err
			}
			var err error
			if m.Verification, err = checkOf(verification); err != nil {
				return fmt.Errorf("backup %s verification: %w", m.BackupID, err)
			}
			if m.Drill, err = checkOf(drill); err != nil {
				return fmt.Errorf("backup %s drill: %w", m.BackupID, err)
			}
			out[m.BackupID] = m
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
