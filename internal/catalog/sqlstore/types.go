package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/cairnproject/cairn"
)

// Volume types: the volume_types table and the access rows of private
// types, volume_type_projects (0008_volume_types.sql). Their statements
// are few and rarely run, so they are rebound per call rather than kept
// in tables; the statement cache prepares them on their second use.

const volumeTypeCols = "id, name, description, is_public, extra_specs, created_at, updated_at"

func volumeTypeArgs(d *Dialect, vt *cairn.VolumeType) []any {
	return []any{vt.ID, vt.Name, vt.Description, vt.IsPublic, metadataArg(vt.ExtraSpecs),
		d.Time(vt.CreatedAt), d.Time(vt.UpdatedAt)}
}

func volumeTypeDest(vt *cairn.VolumeType) []any {
	return []any{&vt.ID, &vt.Name, &vt.Description, &vt.IsPublic, metadataDest{&vt.ExtraSpecs},
		timeDest{&vt.CreatedAt}, timeDest{&vt.UpdatedAt}}
}

func (t *tx) InsertVolumeType(ctx context.Context, vt cairn.VolumeType) error {
	n, err := t.execCount(ctx, t.d.rebind("INSERT INTO volume_types ("+volumeTypeCols+
		") VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"), volumeTypeArgs(t.d, &vt)...)
	if err != nil {
		return fmt.Errorf("insert volume type %s: %w", vt.ID, err)
	}
	if n == 0 {
		// The ID or the name is taken (ON CONFLICT covers both).
		return fmt.Errorf("volume type %s (%q): the ID or the name is taken: %w", vt.ID, vt.Name, cairn.ErrExists)
	}
	return nil
}

// volumeTypeWhere reads the one type where is true of (with args).
func (t *tx) volumeTypeWhere(ctx context.Context, what, where string, args ...any) (cairn.VolumeType, error) {
	var vt cairn.VolumeType
	err := t.scanRow(ctx, t.d.rebind("SELECT "+volumeTypeCols+" FROM volume_types WHERE "+where), args, volumeTypeDest(&vt)...)
	if errors.Is(err, sql.ErrNoRows) {
		return vt, fmt.Errorf("volume type %s: %w", what, cairn.ErrNotFound)
	}
	if err != nil {
		return vt, fmt.Errorf("volume type %s: %w", what, err)
	}
	return vt, nil
}

func (t *tx) VolumeType(ctx context.Context, id string) (cairn.VolumeType, error) {
	return t.volumeTypeWhere(ctx, id, "id = ?", id)
}

func (t *tx) VolumeTypeByName(ctx context.Context, name string) (cairn.VolumeType, error) {
	return t.volumeTypeWhere(ctx, fmt.Sprintf("named %q", name), "name = ?", name)
}

// VolumeTypes lists every type (project "") or those project may use,
// by name.
func (t *tx) VolumeTypes(ctx context.Context, project string) ([]cairn.VolumeType, error) {
	q, args := "SELECT "+volumeTypeCols+" FROM volume_types", []any(nil)
	if project != "" {
		q += " WHERE is_public = ? OR EXISTS (SELECT 1 FROM volume_type_projects p" +
			" WHERE p.volume_type_id = volume_types.id AND p.project_id = ?)"
		args = []any{true, project}
	}
	out := []cairn.VolumeType{}
	err := t.all(ctx, "volume types", t.d.rebind(q+" ORDER BY name"), args, func(r *sql.Rows) error {
		var vt cairn.VolumeType
		if err := r.Scan(volumeTypeDest(&vt)...); err != nil {
			return err
		}
		out = append(out, vt)
		return nil
	})
	return out, err
}

// UpdateVolumeType writes vt. A name another type has is found first,
// so that no statement fails (which would abort a PostgreSQL
// transaction).
func (t *tx) UpdateVolumeType(ctx context.Context, vt cairn.VolumeType) error {
	var one int
	err := t.scanRow(ctx, t.d.rebind("SELECT 1 FROM volume_types WHERE name = ? AND id <> ?"), []any{vt.Name, vt.ID}, &one)
	switch {
	case err == nil:
		return fmt.Errorf("volume type %s: another type is named %q: %w", vt.ID, vt.Name, cairn.ErrExists)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("volume type %s: %w", vt.ID, err)
	}
	args := volumeTypeArgs(t.d, &vt)
	n, err := t.execCount(ctx, t.d.rebind("UPDATE volume_types SET name = ?, description = ?, is_public = ?,"+
		" extra_specs = ?, created_at = ?, updated_at = ? WHERE id = ?"), updateArgs(args)...)
	if err != nil {
		if t.d.Duplicate(err) {
			return fmt.Errorf("volume type %s: another type is named %q: %w", vt.ID, vt.Name, cairn.ErrExists)
		}
		return fmt.Errorf("update volume type %s: %w", vt.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("volume type %s: %w", vt.ID, cairn.ErrNotFound)
	}
	return nil
}

// DeleteVolumeType removes type id and its access rows, unless a volume
// not deleted is of it.
func (t *tx) DeleteVolumeType(ctx context.Context, id string) error {
	var used bool
	err := t.scanRow(ctx, t.d.rebind("SELECT EXISTS (SELECT 1 FROM volumes WHERE volume_type_id = ? AND status <> ?)"),
		[]any{id, string(cairn.StatusDeleted)}, &used)
	if err != nil {
		return fmt.Errorf("volume type %s: volumes of it: %w", id, err)
	}
	if used {
		return fmt.Errorf("volume type %s: volumes are of it: %w", id, cairn.ErrConflict)
	}
	if _, err := t.exec(ctx, t.d.rebind("DELETE FROM volume_type_projects WHERE volume_type_id = ?"), id); err != nil {
		return fmt.Errorf("delete volume type %s: access: %w", id, err)
	}
	n, err := t.execCount(ctx, t.d.rebind("DELETE FROM volume_types WHERE id = ?"), id)
	if err != nil {
		return fmt.Errorf("delete volume type %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("volume type %s: %w", id, cairn.ErrNotFound)
	}
	return nil
}

func (t *tx) VolumeTypeProjects(ctx context.Context, id string) ([]string, error) {
	out := []string{}
	err := t.all(ctx, "volume type projects",
		t.d.rebind("SELECT project_id FROM volume_type_projects WHERE volume_type_id = ? ORDER BY project_id"),
		[]any{id}, func(r *sql.Rows) error {
			var p string
			if err := r.Scan(&p); err != nil {
				return err
			}
			out = append(out, p)
			return nil
		})
	return out, err
}

func (t *tx) AddVolumeTypeProject(ctx context.Context, id, project string) error {
	if _, err := t.VolumeType(ctx, id); err != nil {
		return err
	}
	n, err := t.execCount(ctx, t.d.rebind("INSERT INTO volume_type_projects (volume_type_id, project_id)"+
		" VALUES (?, ?) ON CONFLICT DO NOTHING"), id, project)
	if err != nil {
		return fmt.Errorf("volume type %s: access of project %s: %w", id, project, err)
	}
	if n == 0 {
		return fmt.Errorf("volume type %s: project %s has access already: %w", id, project, cairn.ErrExists)
	}
	return nil
}

func (t *tx) RemoveVolumeTypeProject(ctx context.Context, id, project string) error {
	n, err := t.execCount(ctx, t.d.rebind("DELETE FROM volume_type_projects WHERE volume_type_id = ? AND project_id = ?"), id, project)
	if err != nil {
		return fmt.Errorf("volume type %s: access of project %s: %w", id, project, err)
	}
	if n == 0 {
		return fmt.Errorf("volume type %s: project %s has no access: %w", id, project, cairn.ErrNotFound)
	}
	return nil
}
