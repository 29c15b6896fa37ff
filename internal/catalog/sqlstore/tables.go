package sqlstore

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
)

// table is one table's statements, made once per Store. Its first column
// is the primary key id; every column is NOT NULL except tasks.params,
// tasks.finished_at and database_backups.record.
type table struct {
	name string // SQL name
	noun string // what a row is, in errors
	cols []string
	// sorts maps the Filter.Sort keys the table accepts to columns.
	sorts map[string]string

	sel    string // SELECT cols FROM name (not rebound: lists add to it)
	get    string // a row by id
	insert string // every column; no row (and no error) on a duplicate key
	update string // every column but id, by id
	del    string // by id
}

func newTable(d *Dialect, name, noun string, cols []string, sorts map[string]string) table {
	t := table{name: name, noun: noun, cols: cols, sorts: sorts}
	t.sel = "SELECT " + strings.Join(cols, ", ") + " FROM " + name
	t.get = d.rebind(t.sel + " WHERE id = ?")
	t.insert = d.rebind("INSERT INTO " + name + " (" + strings.Join(cols, ", ") + ") VALUES (" +
		placeholders(len(cols)) + ") ON CONFLICT DO NOTHING")
	set := make([]string, 0, len(cols)-1)
	for _, c := range cols[1:] {
		set = append(set, c+" = ?")
	}
	t.update = d.rebind("UPDATE " + name + " SET " + strings.Join(set, ", ") + " WHERE id = ?")
	t.del = d.rebind("DELETE FROM " + name + " WHERE id = ?")
	return t
}

// updateArgs reorders insert arguments (id first) for t.update (id last).
func updateArgs(args []any) []any {
	return append(args[1:len(args):len(args)], args[0])
}

type tables struct {
	projects, tokens, volumes, snapshots, backups, tasks table
	instances, databaseBackups, restorePoints            table

	allProjects   string   // oldest first
	projectExists string   // 1 if project ?
	projectOwns   string   // whether ? has volumes, snapshots, backups not in status ?; instances; database backups
	projectPurge  []string // statements deleting what project ? holds
	tokenByHash   string
	allTokens     string // oldest first
	projectTokens string // of project ?, oldest first
	hasDependents string // whether a backup's parent is ?
	usage         string // counts and sizes of project ? not in status ?

	// Backup strategies, keyed by (project_id, instance_id).
	instancePoints string // restore points of instance ?, oldest data first

	projectStrategies string // of project ?, by instance_id
	strategy          string // of project ? and instance ?
	putStrategy       string // insert or replace: every column
	deleteStrategy    string // of project ? and instance ?
}

// reads returns the fixed statements that only read.
func (t *tables) reads() []string {
	qs := []string{t.allProjects, t.projectExists, t.projectOwns, t.tokenByHash,
		t.allTokens, t.projectTokens, t.hasDependents, t.usage, t.projectStrategies, t.strategy,
		t.instancePoints}
	for _, tb := range t.all() {
		qs = append(qs, tb.get)
	}
	return qs
}

// writes returns the fixed statements that write.
func (t *tables) writes() []string {
	qs := append(slices.Clone(t.projectPurge), t.putStrategy, t.deleteStrategy)
	for _, tb := range t.all() {
		qs = append(qs, tb.insert, tb.update, tb.del)
	}
	return qs
}

func (t *tables) all() []*table {
	return []*table{&t.projects, &t.tokens, &t.volumes, &t.snapshots, &t.backups, &t.tasks,
		&t.instances, &t.databaseBackups, &t.restorePoints}
}

// resourceSorts are the sort keys of volumes and snapshots.
func resourceSorts() map[string]string {
	return map[string]string{
		"id": "id", "name": "name", "status": "status", "size": "size",
		"created_at": "created_at", "updated_at": "updated_at",
	}
}

func newTables(d *Dialect) tables {
	backupSorts := resourceSorts()
	backupSorts["data_timestamp"] = "data_timestamp"
	// An instance's size is its volume's.
	instanceSorts := resourceSorts()
	instanceSorts["size"] = "volume_size"
	const agg = "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS gb FROM %s WHERE project_id = ? AND status <> ?"
	t := tables{
		projects: newTable(d, "projects", "project", []string{
			"id", "name", "quota_volumes", "quota_gigabytes", "quota_snapshots",
			"quota_backups", "quota_backup_gigabytes", "created_at", "per_volume_gigabytes",
		}, nil),
		tokens: newTable(d, "tokens", "token", []string{
			"id", "project_id", "name", "admin", "hash", "created_at",
		}, nil),
		volumes: newTable(d, "volumes", "volume", []string{
			"id", "project_id", "name", "description", "size", "status", "fail_reason",
			"snapshot_id", "backup_id", "engine_id", "attached", "created_at", "updated_at",
			"metadata", "user_id", "source_volid", "bootable", "admin_metadata",
			"volume_type_id",
		}, resourceSorts()),
		snapshots: newTable(d, "snapshots", "snapshot", []string{
			"id", "project_id", "volume_id", "name", "description", "size", "status",
			"fail_reason", "engine_id", "created_at", "updated_at", "metadata", "user_id", "progress",
		}, resourceSorts()),
		backups: newTable(d, "backups", "backup", []string{
			"id", "project_id", "volume_id", "snapshot_id", "name", "description",
			"container", "status", "fail_reason", "size", "object_count", "stored_bytes",
			"incremental", "parent_id", "data_timestamp", "repo_id",
			"temp_snapshot_engine_id", "created_at", "updated_at", "user_id", "volume_metadata",
		}, backupSorts),
		// Tasks are listed oldest first whatever the Sort; these keys
		// are accepted, and ignored.
		tasks: newTable(d, "tasks", "task", []string{
			"id", "project_id", "kind", "resource_id", "state", "params", "error",
			"attempts", "progress_done", "progress_total", "created_at", "updated_at",
			"finished_at", "fail_cause", "request_id", "message_deleted",
		}, map[string]string{"id": "id", "status": "state", "created_at": "created_at", "updated_at": "updated_at"}),
		instances: newTable(d, "instances", "instance", []string{
			"id", "project_id", "name", "status", "operating_status", "fail_reason",
			"datastore_type", "datastore_version", "datastore_version_id",
			"volume_size", "volume_used", "address", "port", "backup_id", "volume_id",
			"created_at", "updated_at", "recovery", "metadata",
		}, instanceSorts),
		databaseBackups: newTable(d, "database_backups", "database backup", []string{
			"id", "project_id", "instance_id", "name", "description", "status", "fail_reason",
			"strategy", "container", "parent_id",
			"datastore_type", "datastore_version", "datastore_version_id",
			"size", "volume_size", "location", "data_timestamp", "volume_id", "snapshot_id",
			"data", "overlay", "record", "created_at", "updated_at",
		}, backupSorts),
		restorePoints: newTable(d, "restore_points", "restore point", []string{
			"id", "project_id", "instance_id", "volume_id", "snapshot_id", "container", "overlay",
			"data_timestamp", "record", "created_at",
		}, nil),

		projectExists: d.rebind("SELECT 1 FROM projects WHERE id = ?"),
		projectOwns: d.rebind(`SELECT
			EXISTS (SELECT 1 FROM volumes WHERE project_id = ? AND status <> ?),
			EXISTS (SELECT 1 FROM snapshots WHERE project_id = ? AND status <> ?),
			EXISTS (SELECT 1 FROM backups WHERE project_id = ? AND status <> ?),
			EXISTS (SELECT 1 FROM instances WHERE project_id = ?),
			EXISTS (SELECT 1 FROM database_backups WHERE project_id = ?)`),
		hasDependents: d.rebind("SELECT EXISTS (SELECT 1 FROM backups WHERE parent_id = ?)"),
		usage: d.rebind("SELECT v.n, v.gb, s.n, s.gb, b.n, b.gb FROM (" +
			fmt.Sprintf(agg, "volumes") + ") v, (" + fmt.Sprintf(agg, "snapshots") + ") s, (" +
			fmt.Sprintf(agg, "backups") + ") b"),
	}
	t.allProjects = t.projects.sel + " ORDER BY created_at, id"
	t.tokenByHash = d.rebind(t.tokens.sel + " WHERE hash = ?")
	t.allTokens = t.tokens.sel + " ORDER BY created_at, id"
	t.projectTokens = d.rebind(t.tokens.sel + " WHERE project_id = ? ORDER BY created_at, id")
	t.instancePoints = d.rebind(t.restorePoints.sel + " WHERE instance_id = ? ORDER BY data_timestamp, id")
	const strategyCols = "SELECT project_id, instance_id, strategy, container, backend FROM backup_strategies"
	t.projectStrategies = d.rebind(strategyCols + " WHERE project_id = ? ORDER BY instance_id")
	t.strategy = d.rebind(strategyCols + " WHERE project_id = ? AND instance_id = ?")
	t.putStrategy = d.rebind(`INSERT INTO backup_strategies (project_id, instance_id, strategy, container, backend)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (project_id, instance_id) DO UPDATE SET
		strategy = excluded.strategy, container = excluded.container, backend = excluded.backend`)
	t.deleteStrategy = d.rebind("DELETE FROM backup_strategies WHERE project_id = ? AND instance_id = ?")
	t.projectPurge = append(t.projectPurge, d.rebind("DELETE FROM backup_marks WHERE backup_id IN (SELECT id FROM backups WHERE project_id = ?)"))
	for _, name := range []string{"policy_slots", "policy_backups"} {
		t.projectPurge = append(t.projectPurge, d.rebind("DELETE FROM "+name+" WHERE policy_id IN (SELECT id FROM policies WHERE project_id = ?)"))
	}
	for _, name := range []string{"backups", "snapshots", "volumes", "tokens", "backup_strategies", "restore_points", "policies"} {
		t.projectPurge = append(t.projectPurge, d.rebind("DELETE FROM "+name+" WHERE project_id = ?"))
	}
	return t
}

// Arguments (in column order) and scan destinations of each row type.

func projectArgs(d *Dialect, p *cairn.Project) []any {
	return []any{p.ID, p.Name, p.Quota.Volumes, p.Quota.Gigabytes, p.Quota.Snapshots,
		p.Quota.Backups, p.Quota.BackupGigabytes, d.Time(p.CreatedAt), p.Quota.PerVolumeGigabytes}
}

func projectDest(p *cairn.Project) []any {
	return []any{&p.ID, &p.Name, &p.Quota.Volumes, &p.Quota.Gigabytes, &p.Quota.Snapshots,
		&p.Quota.Backups, &p.Quota.BackupGigabytes, timeDest{&p.CreatedAt}, &p.Quota.PerVolumeGigabytes}
}

func tokenArgs(d *Dialect, t *cairn.Token) []any {
	hash := t.Hash
	if hash == nil {
		hash = []byte{}
	}
	return []any{t.ID, t.ProjectID, t.Name, t.Admin, hash, d.Time(t.CreatedAt)}
}

func tokenDest(t *cairn.Token) []any {
	return []any{&t.ID, &t.ProjectID, &t.Name, &t.Admin, bytesDest{&t.Hash}, timeDest{&t.CreatedAt}}
}

func volumeArgs(d *Dialect, v *cairn.Volume) []any {
	return []any{v.ID, v.ProjectID, v.Name, v.Description, v.Size, string(v.Status), v.FailReason,
		v.SnapshotID, v.BackupID, v.EngineID, v.Attached, d.Time(v.CreatedAt), d.Time(v.UpdatedAt),
		metadataArg(v.Metadata), v.UserID, v.SourceVolID, v.Bootable, metadataArg(v.AdminMetadata),
		v.VolumeTypeID}
}

func volumeDest(v *cairn.Volume) []any {
	return []any{&v.ID, &v.ProjectID, &v.Name, &v.Description, &v.Size, &v.Status, &v.FailReason,
		&v.SnapshotID, &v.BackupID, &v.EngineID, &v.Attached, timeDest{&v.CreatedAt}, timeDest{&v.UpdatedAt},
		metadataDest{&v.Metadata}, &v.UserID, &v.SourceVolID, &v.Bootable, metadataDest{&v.AdminMetadata},
		&v.VolumeTypeID}
}

func snapshotArgs(d *Dialect, s *cairn.Snapshot) []any {
	return []any{s.ID, s.ProjectID, s.VolumeID, s.Name, s.Description, s.Size, string(s.Status),
		s.FailReason, s.EngineID, d.Time(s.CreatedAt), d.Time(s.UpdatedAt), metadataArg(s.Metadata), s.UserID, s.Progress}
}

func snapshotDest(s *cairn.Snapshot) []any {
	return []any{&s.ID, &s.ProjectID, &s.VolumeID, &s.Name, &s.Description, &s.Size, &s.Status,
		&s.FailReason, &s.EngineID, timeDest{&s.CreatedAt}, timeDest{&s.UpdatedAt}, metadataDest{&s.Metadata}, &s.UserID, &s.Progress}
}

// metadataArg is a volume's, snapshot's or instance's metadata column
// (and a volume's admin_metadata): a JSON object,
// or the empty string for none (nil or empty), the column's default, so
// rows written before the column existed read as rows without metadata.
func metadataArg(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	b, _ := json.Marshal(m) // strings only: cannot fail
	return string(b)
}

// metadataDest scans the metadata column: the empty string (and an empty
// object) is a nil map; what is not a JSON object of strings is
// cairn.ErrCorrupt.
type metadataDest struct{ p *map[string]string }

func (d metadataDest) Scan(v any) error {
	b, err := textColumn("metadata", v)
	if err != nil {
		return err
	}
	*d.p = nil
	if len(b) == 0 {
		return nil
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("metadata column: %w: %w", err, cairn.ErrCorrupt)
	}
	if len(m) > 0 {
		*d.p = m
	}
	return nil
}

func backupArgs(d *Dialect, b *cairn.Backup) []any {
	return []any{b.ID, b.ProjectID, b.VolumeID, b.SnapshotID, b.Name, b.Description,
		b.Container, string(b.Status), b.FailReason, b.Size, b.ObjectCount, b.StoredBytes,
		b.Incremental, b.ParentID, d.Time(b.DataTimestamp), b.RepoID,
		b.TempSnapshotEngineID, d.Time(b.CreatedAt), d.Time(b.UpdatedAt), b.UserID, metadataArg(b.VolumeMetadata)}
}

func backupDest(b *cairn.Backup) []any {
	return []any{&b.ID, &b.ProjectID, &b.VolumeID, &b.SnapshotID, &b.Name, &b.Description,
		&b.Container, &b.Status, &b.FailReason, &b.Size, &b.ObjectCount, &b.StoredBytes,
		&b.Incremental, &b.ParentID, timeDest{&b.DataTimestamp}, &b.RepoID,
		&b.TempSnapshotEngineID, timeDest{&b.CreatedAt}, timeDest{&b.UpdatedAt}, &b.UserID, metadataDest{&b.VolumeMetadata}}
}

func instanceArgs(d *Dialect, in *cairn.Instance) []any {
	return []any{in.ID, in.ProjectID, in.Name, string(in.Status), string(in.OperatingStatus), in.FailReason,
		in.Datastore.Type, in.Datastore.Version, in.Datastore.VersionID,
		in.VolumeSize, in.VolumeUsed, in.Address, int64(in.Port), in.BackupID, in.VolumeID,
		d.Time(in.CreatedAt), d.Time(in.UpdatedAt), recoveryArg(in.Recovery), metadataArg(in.Metadata)}
}

// recoveryArg is an instance's recovery column: its JSON, ” for none.
func recoveryArg(r *cairn.InstanceRecovery) string {
	if r == nil {
		return ""
	}
	b, _ := json.Marshal(r) // plain fields: cannot fail
	return string(b)
}

// textColumn is a text column's value as the drivers hand it over
// (a string, bytes, or nil for NULL), as bytes.
func textColumn(name string, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []byte(v), nil
	case []byte:
		return v, nil
	}
	return nil, fmt.Errorf("%s column holds %T", name, v)
}

// recoveryDest scans the recovery column.
type recoveryDest struct{ p **cairn.InstanceRecovery }

func (d recoveryDest) Scan(v any) error {
	b, err := textColumn("recovery", v)
	if err != nil {
		return err
	}
	*d.p = nil
	if len(b) == 0 {
		return nil
	}
	var r cairn.InstanceRecovery
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("recovery column: %w: %w", err, cairn.ErrCorrupt)
	}
	*d.p = &r
	return nil
}

func instanceDest(in *cairn.Instance) []any {
	return []any{&in.ID, &in.ProjectID, &in.Name, &in.Status, &in.OperatingStatus, &in.FailReason,
		&in.Datastore.Type, &in.Datastore.Version, &in.Datastore.VersionID,
		&in.VolumeSize, &in.VolumeUsed, &in.Address, &in.Port, &in.BackupID, &in.VolumeID,
		timeDest{&in.CreatedAt}, timeDest{&in.UpdatedAt}, recoveryDest{&in.Recovery}, metadataDest{&in.Metadata}}
}

func databaseBackupArgs(d *Dialect, b *cairn.DatabaseBackup) []any {
	var record any // NULL when empty
	if len(b.Record) > 0 {
		record = b.Record
	}
	return []any{b.ID, b.ProjectID, b.InstanceID, b.Name, b.Description, string(b.Status), b.FailReason,
		string(b.Strategy), b.Container, b.ParentID,
		b.Datastore.Type, b.Datastore.Version, b.Datastore.VersionID,
		b.Size, b.VolumeSize, b.Location, d.Time(b.DataTimestamp), b.VolumeID, b.SnapshotID,
		b.Data, b.Overlay, record, d.Time(b.CreatedAt), d.Time(b.UpdatedAt)}
}

func databaseBackupDest(b *cairn.DatabaseBackup) []any {
	return []any{&b.ID, &b.ProjectID, &b.InstanceID, &b.Name, &b.Description, &b.Status, &b.FailReason,
		&b.Strategy, &b.Container, &b.ParentID,
		&b.Datastore.Type, &b.Datastore.Version, &b.Datastore.VersionID,
		&b.Size, &b.VolumeSize, &b.Location, timeDest{&b.DataTimestamp}, &b.VolumeID, &b.SnapshotID,
		&b.Data, &b.Overlay, bytesDest{&b.Record}, timeDest{&b.CreatedAt}, timeDest{&b.UpdatedAt}}
}

func restorePointArgs(d *Dialect, p *cairn.RestorePoint) []any {
	var record any // NULL when empty
	if len(p.Record) > 0 {
		record = p.Record
	}
	return []any{p.ID, p.ProjectID, p.InstanceID, p.VolumeID, p.SnapshotID, p.Container, p.Overlay,
		d.Time(p.DataTimestamp), record, d.Time(p.CreatedAt)}
}

func restorePointDest(p *cairn.RestorePoint) []any {
	return []any{&p.ID, &p.ProjectID, &p.InstanceID, &p.VolumeID, &p.SnapshotID, &p.Container, &p.Overlay,
		timeDest{&p.DataTimestamp}, bytesDest{&p.Record}, timeDest{&p.CreatedAt}}
}

func strategyArgs(st *cairn.BackupStrategy) []any {
	return []any{st.ProjectID, st.InstanceID, string(st.Strategy), st.Container, st.Backend}
}

func strategyDest(st *cairn.BackupStrategy) []any {
	return []any{&st.ProjectID, &st.InstanceID, &st.Strategy, &st.Container, &st.Backend}
}

func taskArgs(d *Dialect, t *cairn.Task) []any {
	var params, finished any // NULL when empty or zero
	if len(t.Params) > 0 {
		params = []byte(t.Params)
	}
	if !t.FinishedAt.IsZero() {
		finished = d.Time(t.FinishedAt)
	}
	return []any{t.ID, t.ProjectID, t.Kind, t.ResourceID, string(t.State), params, t.Error,
		int64(t.Attempts), t.ProgressDone, t.ProgressTotal, d.Time(t.CreatedAt), d.Time(t.UpdatedAt), finished,
		t.FailCause, t.RequestID, t.MessageDeleted}
}

func taskDest(t *cairn.Task) []any {
	return []any{&t.ID, &t.ProjectID, &t.Kind, &t.ResourceID, &t.State, bytesDest{(*[]byte)(&t.Params)}, &t.Error,
		&t.Attempts, &t.ProgressDone, &t.ProgressTotal, timeDest{&t.CreatedAt}, timeDest{&t.UpdatedAt},
		timeDest{&t.FinishedAt}, &t.FailCause, &t.RequestID, &t.MessageDeleted}
}

// timeDest scans a time column: int64 unix microseconds or a time.Time,
// returned in UTC; NULL is the zero time.
type timeDest struct{ p *time.Time }

func (d timeDest) Scan(v any) error {
	switch v := v.(type) {
	case nil:
		*d.p = time.Time{}
	case int64:
		*d.p = time.UnixMicro(v).UTC()
	case time.Time:
		*d.p = v.UTC()
	default:
		return fmt.Errorf("time column holds %T", v)
	}
	return nil
}

// bytesDest scans a blob or bytea column into a copy; NULL and empty are
// nil.
type bytesDest struct{ p *[]byte }

func (d bytesDest) Scan(v any) error {
	switch v := v.(type) {
	case nil:
		*d.p = nil
	case []byte:
		if len(v) == 0 {
			*d.p = nil
		} else {
			*d.p = append([]byte(nil), v...)
		}
	case string:
		if v == "" {
			*d.p = nil
		} else {
			*d.p = []byte(v)
		}
	default:
		return fmt.Errorf("bytes column holds %T", v)
	}
	return nil
}

var (
	_ sql.Scanner = timeDest{}
	_ sql.Scanner = bytesDest{}
	_ sql.Scanner = metadataDest{}
)
