package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// tx is one transaction: catalog.Tx over a sql.Tx, used by one goroutine
// at a time. A statement that fails with a conflict sets conflict, so that
// Update runs fn again whatever fn made of the error.
type tx struct {
	s        *Store
	d        *Dialect
	q        *sql.Tx
	stmts    *stmtCache // prepared statements of q's pool
	conflict bool
}

var _ catalog.Tx = (*tx)(nil)

// note records a conflict and returns err.
func (t *tx) note(err error) error {
	if err != nil && !errors.Is(err, sql.ErrNoRows) && t.d.Retryable(err) {
		t.conflict = true
	}
	return err
}

func (t *tx) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	var r sql.Result
	var err error
	if st := t.stmts.get(query); st != nil {
		r, err = t.q.StmtContext(ctx, st).ExecContext(ctx, args...)
	} else {
		r, err = t.q.ExecContext(ctx, query, args...)
	}
	return r, t.note(err)
}

// execCount runs query and returns the number of rows it changed.
func (t *tx) execCount(ctx context.Context, query string, args ...any) (int64, error) {
	r, err := t.exec(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	n, err := r.RowsAffected()
	return n, t.note(err)
}

func (t *tx) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	var rows *sql.Rows
	var err error
	if st := t.stmts.get(query); st != nil {
		rows, err = t.q.StmtContext(ctx, st).QueryContext(ctx, args...)
	} else {
		rows, err = t.q.QueryContext(ctx, query, args...)
	}
	return rows, t.note(err)
}

func (t *tx) scanRow(ctx context.Context, query string, args []any, dest ...any) error {
	var row *sql.Row
	if st := t.stmts.get(query); st != nil {
		row = t.q.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	} else {
		row = t.q.QueryRowContext(ctx, query, args...)
	}
	return t.note(row.Scan(dest...))
}

// get reads tb's row id into dest.
func (t *tx) get(ctx context.Context, tb *table, id string, dest []any) error {
	err := t.scanRow(ctx, tb.get, []any{id}, dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s %s: %w", tb.noun, id, cairn.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", tb.noun, id, err)
	}
	return nil
}

// insert adds a row of tb. A duplicate key is cairn.ErrExists; with
// project set, a missing project is cairn.ErrNotFound. Both are found
// without failing a statement, which would abort a PostgreSQL
// transaction.
func (t *tx) insert(ctx context.Context, tb *table, id, project string, args []any) error {
	if project != "" {
		if err := t.projectExists(ctx, project); err != nil {
			return fmt.Errorf("%s %s: %w", tb.noun, id, err)
		}
	}
	n, err := t.execCount(ctx, tb.insert, args...)
	if err != nil {
		return fmt.Errorf("insert %s %s: %w", tb.noun, id, t.mapFK(err))
	}
	if n == 0 {
		return fmt.Errorf("%s %s: %w", tb.noun, id, cairn.ErrExists)
	}
	return nil
}

// projectExists returns nil if project exists, else an error wrapping
// cairn.ErrNotFound.
func (t *tx) projectExists(ctx context.Context, project string) error {
	var one int
	err := t.scanRow(ctx, t.s.tables.projectExists, []any{project}, &one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("project %s: %w", project, cairn.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("project %s: %w", project, err)
	}
	return nil
}

// mapFK turns a foreign-key violation (a row naming a missing project)
// into cairn.ErrNotFound.
func (t *tx) mapFK(err error) error {
	if t.d.ForeignKey(err) {
		return fmt.Errorf("project: %w (%v)", cairn.ErrNotFound, err)
	}
	return err
}

// update writes every column of tb's row id.
func (t *tx) update(ctx context.Context, tb *table, id string, args []any) error {
	n, err := t.execCount(ctx, tb.update, updateArgs(args)...)
	if err != nil {
		return fmt.Errorf("update %s %s: %w", tb.noun, id, t.mapFK(err))
	}
	if n == 0 {
		return fmt.Errorf("%s %s: %w", tb.noun, id, cairn.ErrNotFound)
	}
	return nil
}

// del removes tb's row id.
func (t *tx) del(ctx context.Context, tb *table, id string) error {
	n, err := t.execCount(ctx, tb.del, id)
	if err != nil {
		return fmt.Errorf("delete %s %s: %w", tb.noun, id, err)
	}
	if n == 0 {
		return fmt.Errorf("%s %s: %w", tb.noun, id, cairn.ErrNotFound)
	}
	return nil
}

// all runs a query of whole rows, calling scan for each.
func (t *tx) all(ctx context.Context, noun, query string, args []any, scan func(*sql.Rows) error) error {
	rows, err := t.query(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("listing %s: %w", noun, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return fmt.Errorf("listing %s: %w", noun, t.note(err))
		}
	}
	if err := t.note(rows.Err()); err != nil {
		return fmt.Errorf("listing %s: %w", noun, err)
	}
	return nil
}

// Projects

func (t *tx) InsertProject(ctx context.Context, p cairn.Project) error {
	return t.insert(ctx, &t.s.tables.projects, p.ID, "", projectArgs(t.d, &p))
}

func (t *tx) Project(ctx context.Context, id string) (cairn.Project, error) {
	var p cairn.Project
	err := t.get(ctx, &t.s.tables.projects, id, projectDest(&p))
	return p, err
}

// Projects lists every project, oldest first.
func (t *tx) Projects(ctx context.Context) ([]cairn.Project, error) {
	out := []cairn.Project{}
	err := t.all(ctx, "projects", t.s.tables.allProjects, nil, func(r *sql.Rows) error {
		var p cairn.Project
		if err := r.Scan(projectDest(&p)...); err != nil {
			return err
		}
		out = append(out, p)
		return nil
	})
	return out, err
}

func (t *tx) UpdateProject(ctx context.Context, p cairn.Project) error {
	return t.update(ctx, &t.s.tables.projects, p.ID, projectArgs(t.d, &p))
}

// DeleteProject removes the project, its tokens, its backup strategies,
// and its volumes, snapshots and backups in status deleted. Instances and
// database backups have no deleted status: any row of them keeps the
// project. Its tasks stay, as history.
func (t *tx) DeleteProject(ctx context.Context, id string) error {
	if err := t.projectExists(ctx, id); err != nil {
		return err
	}
	deleted := string(cairn.StatusDeleted)
	var owns [5]bool
	err := t.scanRow(ctx, t.s.tables.projectOwns, []any{id, deleted, id, deleted, id, deleted, id, id},
		&owns[0], &owns[1], &owns[2], &owns[3], &owns[4])
	if err != nil {
		return fmt.Errorf("project %s: resources: %w", id, err)
	}
	var held []string
	for i, name := range []string{"volumes", "snapshots", "backups", "instances", "database backups"} {
		if owns[i] {
			held = append(held, name)
		}
	}
	if len(held) > 0 {
		return fmt.Errorf("project %s still owns %v: %w", id, held, cairn.ErrConflict)
	}
	for _, q := range t.s.tables.projectPurge {
		if _, err := t.exec(ctx, q, id); err != nil {
			return fmt.Errorf("deleting project %s: %w", id, err)
		}
	}
	return t.del(ctx, &t.s.tables.projects, id)
}

// Tokens

func (t *tx) InsertToken(ctx context.Context, tok cairn.Token) error {
	return t.insert(ctx, &t.s.tables.tokens, tok.ID, tok.ProjectID, tokenArgs(t.d, &tok))
}

func (t *tx) TokenByHash(ctx context.Context, hash []byte) (cairn.Token, error) {
	var tok cairn.Token
	err := t.scanRow(ctx, t.s.tables.tokenByHash, []any{hash}, tokenDest(&tok)...)
	if errors.Is(err, sql.ErrNoRows) {
		return tok, fmt.Errorf("token: %w", cairn.ErrNotFound)
	}
	if err != nil {
		return tok, fmt.Errorf("token by hash: %w", err)
	}
	return tok, nil
}

// Tokens lists a project's tokens (every token for ""), oldest first.
func (t *tx) Tokens(ctx context.Context, project string) ([]cairn.Token, error) {
	q, args := t.s.tables.allTokens, []any(nil)
	if project != "" {
		q, args = t.s.tables.projectTokens, []any{project}
	}
	out := []cairn.Token{}
	err := t.all(ctx, "tokens", q, args, func(r *sql.Rows) error {
		var tok cairn.Token
		if err := r.Scan(tokenDest(&tok)...); err != nil {
			return err
		}
		out = append(out, tok)
		return nil
	})
	return out, err
}

func (t *tx) DeleteToken(ctx context.Context, id string) error {
	return t.del(ctx, &t.s.tables.tokens, id)
}

// Volumes

func (t *tx) InsertVolume(ctx context.Context, v cairn.Volume) error {
	return t.insert(ctx, &t.s.tables.volumes, v.ID, v.ProjectID, volumeArgs(t.d, &v))
}

func (t *tx) Volume(ctx context.Context, id string) (cairn.Volume, error) {
	var v cairn.Volume
	err := t.get(ctx, &t.s.tables.volumes, id, volumeDest(&v))
	return v, err
}

// Volumes lists volumes with ProjectID, Name, Status, Bootable and Since
// applied.
func (t *tx) Volumes(ctx context.Context, f catalog.Filter) ([]cairn.Volume, error) {
	out := []cairn.Volume{}
	w := volumeFilter(t.d, f)
	err := t.list(ctx, &t.s.tables.volumes, "", f, w, false, func(r *sql.Rows) error {
		var v cairn.Volume
		if err := r.Scan(volumeDest(&v)...); err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

func (t *tx) UpdateVolume(ctx context.Context, v cairn.Volume) error {
	return t.update(ctx, &t.s.tables.volumes, v.ID, volumeArgs(t.d, &v))
}

func (t *tx) DeleteVolume(ctx context.Context, id string) error {
	return t.del(ctx, &t.s.tables.volumes, id)
}

// Snapshots

func (t *tx) InsertSnapshot(ctx context.Context, s cairn.Snapshot) error {
	return t.insert(ctx, &t.s.tables.snapshots, s.ID, s.ProjectID, snapshotArgs(t.d, &s))
}

func (t *tx) Snapshot(ctx context.Context, id string) (cairn.Snapshot, error) {
	var s cairn.Snapshot
	err := t.get(ctx, &t.s.tables.snapshots, id, snapshotDest(&s))
	return s, err
}

// Snapshots lists snapshots with ProjectID, Name, Status, VolumeID and
// Since applied.
func (t *tx) Snapshots(ctx context.Context, f catalog.Filter) ([]cairn.Snapshot, error) {
	out := []cairn.Snapshot{}
	w := snapshotFilter(t.d, f)
	err := t.list(ctx, &t.s.tables.snapshots, "", f, w, false, func(r *sql.Rows) error {
		var s cairn.Snapshot
		if err := r.Scan(snapshotDest(&s)...); err != nil {
			return err
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

func (t *tx) UpdateSnapshot(ctx context.Context, s cairn.Snapshot) error {
	return t.update(ctx, &t.s.tables.snapshots, s.ID, snapshotArgs(t.d, &s))
}

func (t *tx) DeleteSnapshot(ctx context.Context, id string) error {
	return t.del(ctx, &t.s.tables.snapshots, id)
}

// Backups

func (t *tx) InsertBackup(ctx context.Context, b cairn.Backup) error {
	return t.insert(ctx, &t.s.tables.backups, b.ID, b.ProjectID, backupArgs(t.d, &b))
}

func (t *tx) Backup(ctx context.Context, id string) (cairn.Backup, error) {
	var b cairn.Backup
	err := t.get(ctx, &t.s.tables.backups, id, backupDest(&b))
	return b, err
}

// Backups lists backups with ProjectID, Name, Status, VolumeID,
// SnapshotID, ParentID and Since applied.
func (t *tx) Backups(ctx context.Context, f catalog.Filter) ([]cairn.Backup, error) {
	out := []cairn.Backup{}
	w := backupFilter(t.d, f)
	err := t.list(ctx, &t.s.tables.backups, "", f, w, false, func(r *sql.Rows) error {
		var b cairn.Backup
		if err := r.Scan(backupDest(&b)...); err != nil {
			return err
		}
		out = append(out, b)
		return nil
	})
	return out, err
}

func (t *tx) UpdateBackup(ctx context.Context, b cairn.Backup) error {
	return t.update(ctx, &t.s.tables.backups, b.ID, backupArgs(t.d, &b))
}

func (t *tx) DeleteBackup(ctx context.Context, id string) error {
	if err := t.deleteMarks(ctx, id); err != nil {
		return err
	}
	return t.del(ctx, &t.s.tables.backups, id)
}

// HasDependents reports whether any backup, in any status, names id as
// its parent.
func volumeFilter(d *Dialect, f catalog.Filter) where {
	w := resourceFilter(d, f)
	if f.Bootable != nil {
		w.add("bootable = ?", *f.Bootable)
	}
	return w
}

func snapshotFilter(d *Dialect, f catalog.Filter) where {
	w := resourceFilter(d, f)
	if f.VolumeID != "" {
		w.add("volume_id = ?", f.VolumeID)
	}
	return w
}

func backupFilter(d *Dialect, f catalog.Filter) where {
	w := snapshotFilter(d, f)
	if f.SnapshotID != "" {
		w.add("snapshot_id = ?", f.SnapshotID)
	}
	if f.ParentID != "" {
		w.add("parent_id = ?", f.ParentID)
	}
	return w
}

func (t *tx) Summaries(ctx context.Context, kind catalog.Kind, f catalog.Filter) ([]catalog.Summary, error) {
	var tb *table
	var w where
	switch kind {
	case catalog.KindVolumes:
		tb, w = &t.s.tables.volumes, volumeFilter(t.d, f)
	case catalog.KindSnapshots:
		tb, w = &t.s.tables.snapshots, snapshotFilter(t.d, f)
	case catalog.KindBackups:
		tb, w = &t.s.tables.backups, backupFilter(t.d, f)
	default:
		return nil, fmt.Errorf("summaries of %q: %w", kind, cairn.ErrInvalid)
	}
	out := []catalog.Summary{}
	err := t.list(ctx, tb, "SELECT id, name FROM "+tb.name, f, w, false, func(r *sql.Rows) error {
		var s catalog.Summary
		if err := r.Scan(&s.ID, &s.Name); err != nil {
			return err
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

func (t *tx) WithDependents(ctx context.Context, ids []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(ids) == 0 {
		return out, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	q := t.d.rebind("SELECT DISTINCT parent_id FROM backups WHERE parent_id IN (" + placeholders(len(ids)) + ")")
	err := t.all(ctx, "backups", q, args, func(r *sql.Rows) error {
		var id string
		if err := r.Scan(&id); err != nil {
			return err
		}
		out[id] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dependents of backups: %w", err)
	}
	return out, nil
}

func (t *tx) HasDependents(ctx context.Context, id string) (bool, error) {
	if id == "" {
		return false, nil
	}
	var has bool
	err := t.scanRow(ctx, t.s.tables.hasDependents, []any{id}, &has)
	if err != nil {
		return false, fmt.Errorf("dependents of backup %s: %w", id, err)
	}
	return has, nil
}

// Database instances

func (t *tx) InsertInstance(ctx context.Context, in cairn.Instance) error {
	return t.insert(ctx, &t.s.tables.instances, in.ID, in.ProjectID, instanceArgs(t.d, &in))
}

func (t *tx) Instance(ctx context.Context, id string) (cairn.Instance, error) {
	var in cairn.Instance
	err := t.get(ctx, &t.s.tables.instances, id, instanceDest(&in))
	return in, err
}

// Instances lists instances with ProjectID, Name, Status, Datastore and
// Since applied.
func (t *tx) Instances(ctx context.Context, f catalog.Filter) ([]cairn.Instance, error) {
	out := []cairn.Instance{}
	w := resourceFilter(t.d, f)
	if f.Datastore != "" {
		w.add("datastore_type = ?", f.Datastore)
	}
	err := t.list(ctx, &t.s.tables.instances, "", f, w, false, func(r *sql.Rows) error {
		var in cairn.Instance
		if err := r.Scan(instanceDest(&in)...); err != nil {
			return err
		}
		out = append(out, in)
		return nil
	})
	return out, err
}

func (t *tx) UpdateInstance(ctx context.Context, in cairn.Instance) error {
	return t.update(ctx, &t.s.tables.instances, in.ID, instanceArgs(t.d, &in))
}

func (t *tx) DeleteInstance(ctx context.Context, id string) error {
	return t.del(ctx, &t.s.tables.instances, id)
}

// Database backups

func (t *tx) InsertDatabaseBackup(ctx context.Context, b cairn.DatabaseBackup) error {
	return t.insert(ctx, &t.s.tables.databaseBackups, b.ID, b.ProjectID, databaseBackupArgs(t.d, &b))
}

func (t *tx) DatabaseBackup(ctx context.Context, id string) (cairn.DatabaseBackup, error) {
	var b cairn.DatabaseBackup
	err := t.get(ctx, &t.s.tables.databaseBackups, id, databaseBackupDest(&b))
	return b, err
}

// DatabaseBackups lists database backups with ProjectID, Name, Status,
// InstanceID, Datastore, ParentID and Since applied.
func (t *tx) DatabaseBackups(ctx context.Context, f catalog.Filter) ([]cairn.DatabaseBackup, error) {
	out := []cairn.DatabaseBackup{}
	w := resourceFilter(t.d, f)
	if f.InstanceID != "" {
		w.add("instance_id = ?", f.InstanceID)
	}
	if f.Datastore != "" {
		w.add("datastore_type = ?", f.Datastore)
	}
	if f.ParentID != "" {
		w.add("parent_id = ?", f.ParentID)
	}
	err := t.list(ctx, &t.s.tables.databaseBackups, "", f, w, false, func(r *sql.Rows) error {
		var b cairn.DatabaseBackup
		if err := r.Scan(databaseBackupDest(&b)...); err != nil {
			return err
		}
		out = append(out, b)
		return nil
	})
	return out, err
}

func (t *tx) UpdateDatabaseBackup(ctx context.Context, b cairn.DatabaseBackup) error {
	return t.update(ctx, &t.s.tables.databaseBackups, b.ID, databaseBackupArgs(t.d, &b))
}

func (t *tx) DeleteDatabaseBackup(ctx context.Context, id string) error {
	if err := t.deleteMarks(ctx, id); err != nil {
		return err
	}
	return t.del(ctx, &t.s.tables.databaseBackups, id)
}

// Restore points

func (t *tx) InsertRestorePoint(ctx context.Context, p cairn.RestorePoint) error {
	return t.insert(ctx, &t.s.tables.restorePoints, p.ID, p.ProjectID, restorePointArgs(t.d, &p))
}

// RestorePoints lists an instance's restore points, oldest data first.
func (t *tx) RestorePoints(ctx context.Context, instanceID string) ([]cairn.RestorePoint, error) {
	out := []cairn.RestorePoint{}
	err := t.all(ctx, "restore points", t.s.tables.instancePoints, []any{instanceID}, func(r *sql.Rows) error {
		var p cairn.RestorePoint
		if err := r.Scan(restorePointDest(&p)...); err != nil {
			return err
		}
		out = append(out, p)
		return nil
	})
	return out, err
}

func (t *tx) DeleteRestorePoint(ctx context.Context, id string) error {
	return t.del(ctx, &t.s.tables.restorePoints, id)
}

// Backup strategies

// BackupStrategies lists project's strategies by instance ID (the
// project's default first), or instanceID's alone.
func (t *tx) BackupStrategies(ctx context.Context, project, instanceID string) ([]cairn.BackupStrategy, error) {
	q, args := t.s.tables.projectStrategies, []any{project}
	if instanceID != "" {
		q, args = t.s.tables.strategy, []any{project, instanceID}
	}
	out := []cairn.BackupStrategy{}
	err := t.all(ctx, "backup strategies", q, args, func(r *sql.Rows) error {
		var st cairn.BackupStrategy
		if err := r.Scan(strategyDest(&st)...); err != nil {
			return err
		}
		out = append(out, st)
		return nil
	})
	return out, err
}

// PutBackupStrategy inserts st or replaces the row with its key in one
// statement (an upsert), checking first that the project exists so that
// no statement fails on the foreign key, which would abort a PostgreSQL
// transaction.
func (t *tx) PutBackupStrategy(ctx context.Context, st cairn.BackupStrategy) error {
	what := fmt.Sprintf("backup strategy of project %s instance %q", st.ProjectID, st.InstanceID)
	if err := t.projectExists(ctx, st.ProjectID); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if _, err := t.exec(ctx, t.s.tables.putStrategy, strategyArgs(&st)...); err != nil {
		return fmt.Errorf("put %s: %w", what, t.mapFK(err))
	}
	return nil
}

func (t *tx) DeleteBackupStrategy(ctx context.Context, project, instanceID string) error {
	what := fmt.Sprintf("backup strategy of project %s instance %q", project, instanceID)
	n, err := t.execCount(ctx, t.s.tables.deleteStrategy, project, instanceID)
	if err != nil {
		return fmt.Errorf("delete %s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, cairn.ErrNotFound)
	}
	return nil
}

// Tasks

func (t *tx) InsertTask(ctx context.Context, task cairn.Task) error {
	return t.insert(ctx, &t.s.tables.tasks, task.ID, "", taskArgs(t.d, &task))
}

func (t *tx) Task(ctx context.Context, id string) (cairn.Task, error) {
	var task cairn.Task
	err := t.get(ctx, &t.s.tables.tasks, id, taskDest(&task))
	return task, err
}

// Tasks lists tasks with ProjectID, ResourceID, TaskStates and Since
// applied, oldest first (created_at, then id) whatever f.Sort, which is
// still checked; Marker and Limit page in that order.
func (t *tx) Tasks(ctx context.Context, f catalog.Filter) ([]cairn.Task, error) {
	var w where
	if f.ProjectID != "" {
		w.add("project_id = ?", f.ProjectID)
	}
	if f.ResourceID != "" {
		w.add("resource_id = ?", f.ResourceID)
	}
	if len(f.TaskStates) > 0 {
		args := make([]any, len(f.TaskStates))
		for i, s := range f.TaskStates {
			args[i] = string(s)
		}
		w.add("state IN ("+placeholders(len(args))+")", args...)
	}
	if !f.Since.IsZero() {
		w.add("created_at >= ?", t.d.Time(f.Since))
	}
	out := []cairn.Task{}
	err := t.list(ctx, &t.s.tables.tasks, "", f, w, true, func(r *sql.Rows) error {
		var task cairn.Task
		if err := r.Scan(taskDest(&task)...); err != nil {
			return err
		}
		out = append(out, task)
		return nil
	})
	return out, err
}

func (t *tx) UpdateTask(ctx context.Context, task cairn.Task) error {
	return t.update(ctx, &t.s.tables.tasks, task.ID, taskArgs(t.d, &task))
}

// Usage counts project's volumes, snapshots and backups in any status
// but deleted: Gigabytes is the size of the volumes plus that of the
// snapshots (as Cinder counts), BackupGigabytes the size of the backups'
// source volumes. A project with nothing (or no project) uses zero.
func (t *tx) Usage(ctx context.Context, project string) (cairn.Usage, error) {
	deleted := string(cairn.StatusDeleted)
	var u cairn.Usage
	var volGB, snapGB int64
	err := t.scanRow(ctx, t.s.tables.usage, []any{project, deleted, project, deleted, project, deleted},
		&u.Volumes, &volGB, &u.Snapshots, &snapGB, &u.Backups, &u.BackupGigabytes)
	if err != nil {
		return cairn.Usage{}, fmt.Errorf("usage of project %s: %w", project, err)
	}
	u.Gigabytes = volGB + snapGB
	return u, nil
}
