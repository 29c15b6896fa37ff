package cairn

import "time"

// Database instances and their backups, in the terms of OpenStack Trove's
// API (/v1.0/{project_id}/instances, /backups, /datastores,
// /backup_strategies), which is how tenants reach them.

// Datastore names cairn runs. A datastore is a database engine; its
// versions are the ones installed on the host.
const (
	DatastorePostgreSQL = "postgresql"
	DatastoreMariaDB    = "mariadb"
)

// InstanceStatus is the state of a database instance as Trove's API shows
// it. BUILD and SHUTDOWN are held only while a task runs; a restarted
// service finishes or fails every such task.
type InstanceStatus string

// Instance statuses.
const (
	// InstanceBuild: the volume is being made, attached and formatted, and
	// the database initialised or restored into it.
	InstanceBuild InstanceStatus = "BUILD"
	// InstanceActive: the instance is up; OperatingStatus says how its
	// database process is.
	InstanceActive InstanceStatus = "ACTIVE"
	// InstanceBackup: up, with a backup of it under way.
	InstanceBackup InstanceStatus = "BACKUP"
	// InstanceShutdown: being deleted (Trove shows SHUTDOWN while it
	// deletes an instance).
	InstanceShutdown InstanceStatus = "SHUTDOWN"
	// InstanceRecover: being recovered in place to a point in time, or
	// put back as it was before its last recover; down meanwhile.
	InstanceRecover InstanceStatus = "RECOVER"
	// InstanceError: a task failed; the instance's FailReason says why.
	InstanceError InstanceStatus = "ERROR"
)

// OperatingStatus is the state of an instance's database process (Trove's
// operating_status).
type OperatingStatus string

// Operating statuses.
const (
	// OperatingNone: the process has not been started yet (an instance
	// being built), as Trove shows it: empty.
	OperatingNone OperatingStatus = ""
	// OperatingHealthy: the database answers.
	OperatingHealthy OperatingStatus = "HEALTHY"
	// OperatingRestarting: the process ended and its supervisor is
	// starting it again, with backoff.
	OperatingRestarting OperatingStatus = "RESTARTING"
	// OperatingShutdown: the process is stopped on purpose (the instance
	// is being deleted).
	OperatingShutdown OperatingStatus = "SHUTDOWN"
	// OperatingFailed: the process could not be started.
	OperatingFailed OperatingStatus = "FAILED"
	// OperatingUnknown: the host running the instance cannot be asked
	// (its data plane is down, or starting again).
	OperatingUnknown OperatingStatus = "UNKNOWN"
)

// DatabaseBackupStatus is the state of a database backup, in Trove's
// terms.
type DatabaseBackupStatus string

// Database backup statuses. NEW, BUILDING and SAVING are held only while
// the backup's task runs.
const (
	// DatabaseBackupNew: accepted, not started.
	DatabaseBackupNew DatabaseBackupStatus = "NEW"
	// DatabaseBackupBuilding: the database is being quiesced and
	// snapshotted, or its backup tool started.
	DatabaseBackupBuilding DatabaseBackupStatus = "BUILDING"
	// DatabaseBackupSaving: the data is being written to the repository.
	DatabaseBackupSaving DatabaseBackupStatus = "SAVING"
	// DatabaseBackupCompleted: stored and restorable.
	DatabaseBackupCompleted DatabaseBackupStatus = "COMPLETED"
	// DatabaseBackupFailed: the backup failed; FailReason says why.
	DatabaseBackupFailed DatabaseBackupStatus = "FAILED"
	// DatabaseBackupDeleteFailed: deleting it failed; FailReason says why.
	DatabaseBackupDeleteFailed DatabaseBackupStatus = "DELETE_FAILED"
)

// DatabaseStrategy is how a database backup is taken. The API calls it a
// backup's "strategy".
type DatabaseStrategy string

// Database backup strategies.
const (
	// StrategySnapshot: the database is quiesced, its volume snapshotted
	// and the database released; the snapshot is then backed up with
	// changed-block tracking against the parent's. The default.
	StrategySnapshot DatabaseStrategy = "snapshot"
	// StrategyPhysical: the engine's physical backup tool (pg_basebackup,
	// mariadb-backup) streamed into the repository.
	StrategyPhysical DatabaseStrategy = "physical"
	// StrategyLogical: a dump (pg_dump -Fc, mariadb-dump) streamed into
	// the repository.
	StrategyLogical DatabaseStrategy = "logical"
)

// Strategies returns every strategy, the default first.
func Strategies() []DatabaseStrategy {
	return []DatabaseStrategy{StrategySnapshot, StrategyPhysical, StrategyLogical}
}

// Valid reports whether s is one of the strategies.
func (s DatabaseStrategy) Valid() bool {
	for _, v := range Strategies() {
		if s == v {
			return true
		}
	}
	return false
}

// Datastore is a database engine the host runs, with the versions of it
// installed there.
type Datastore struct {
	ID   string `json:"id"`
	Name string `json:"name"` // DatastorePostgreSQL, DatastoreMariaDB
	// DefaultVersionID is the ID of the version an instance gets when its
	// request names none; one of Versions.
	DefaultVersionID string             `json:"default_version"`
	Versions         []DatastoreVersion `json:"versions"`
}

// DatastoreVersion is a version of a datastore installed on the host.
type DatastoreVersion struct {
	ID string `json:"id"`
	// Name is the version as requests name it ("15", "10.11").
	Name string `json:"name"`
	// Version is the full version installed ("15.10").
	Version string `json:"version"`
}

// DatastoreRef names the datastore and version of an instance or backup.
type DatastoreRef struct {
	Type      string `json:"type"`    // the datastore's name
	Version   string `json:"version"` // the version's name
	VersionID string `json:"version_id"`
}

// Instance is a database instance of a project: a database server on a
// volume of its own.
type Instance struct {
	ID              string          `json:"id"`
	ProjectID       string          `json:"project_id"`
	Name            string          `json:"name"`
	Status          InstanceStatus  `json:"status"`
	OperatingStatus OperatingStatus `json:"operating_status"`
	FailReason      string          `json:"fail_reason,omitempty"`
	Datastore       DatastoreRef    `json:"datastore"`
	// VolumeSize is the size of the instance's volume in GiB.
	VolumeSize int64 `json:"volume_size"`
	// VolumeUsed is how many bytes of the volume's file system are in
	// use, 0 when not known (the file system is not mounted yet).
	VolumeUsed int64 `json:"volume_used,omitempty"`
	// Address and Port are where the database listens, "" and 0 until
	// it does.
	Address string `json:"address,omitempty"`
	Port    int    `json:"port,omitempty"`
	// BackupID is the backup the instance was restored from, if any.
	BackupID string `json:"backup_id,omitempty"`
	// VolumeID is the cairn volume holding the instance's data
	// directory, "" until it is created.
	VolumeID  string    `json:"volume_id,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Metadata is the tenant's key/value pairs (what a policy's tag
	// selects instances by), nil for none.
	Metadata map[string]string `json:"metadata,omitempty"`
	// RecoverableWindow is the time a point-in-time restore can reach,
	// nil when none; Archive the log archive's state. Both are live
	// (the service's view when asked), not stored in the catalog.
	RecoverableWindow *TimeWindow   `json:"recoverable_window,omitempty"`
	Archive           *ArchiveState `json:"archive,omitempty"`
	// RestorePoints sums up the instance's restore points, nil when it
	// has none.
	RestorePoints *RestorePointSummary `json:"restore_points,omitempty"`
	// Recovery is the instance's last recover in place, nil when it has
	// had none.
	Recovery *InstanceRecovery `json:"recovery,omitempty"`
}

// RecoveryStatus is how far a recover in place is.
type RecoveryStatus string

// Recovery statuses.
const (
	// RecoveryRunning: the instance is being brought back to the point.
	RecoveryRunning RecoveryStatus = "RUNNING"
	// RecoveryCompleted: the instance is at the point, on a new timeline.
	RecoveryCompleted RecoveryStatus = "COMPLETED"
	// RecoveryFailed: the recover failed and the instance was put back as
	// it was before (FailReason says why).
	RecoveryFailed RecoveryStatus = "FAILED"
	// RecoveryUndoing and RecoveryUndone: the instance is being, or has
	// been, put back as it was before the recover.
	RecoveryUndoing RecoveryStatus = "UNDOING"
	RecoveryUndone  RecoveryStatus = "UNDONE"
)

// InstanceRecovery is a recover in place of a running instance: its
// volume brought back to a backup and its archived log replayed to a
// point in time. The snapshot taken of the volume before it is kept, so
// the recover can be undone.
type InstanceRecovery struct {
	ID          string         `json:"id"`
	Status      RecoveryStatus `json:"status"`
	FailReason  string         `json:"fail_reason,omitempty"`
	PointInTime time.Time      `json:"point_in_time"`
	// BackupID is the backup the volume was brought back to.
	BackupID string `json:"recovered_from_backup"`
	// SafetySnapshot is the volume snapshot holding the instance as it
	// was when the recover began (the engine's snapshot ID), "" until
	// it is taken.
	SafetySnapshot string `json:"safety_snapshot,omitempty"`
	// RestorePoint is the restore point the volume was brought back to
	// instead of the backup (nearer the point in time, so less log to
	// replay), "" when none was.
	RestorePoint string `json:"restore_point,omitempty"`
	// BaseTime is when the data the replay started from was
	// consistent: the restore point's or the backup's.
	BaseTime time.Time `json:"base_time,omitzero"`
	// ArchiveTimeline is the timeline (PostgreSQL) or binary log
	// generation (MariaDB) the server was on when the recover was
	// asked for: the history it recovers along (after an undo, the
	// archive also holds newer ones), 0 when it was not known.
	ArchiveTimeline uint32    `json:"archive_timeline,omitempty"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
}

// RestorePointSummary is how many restore points an instance has and
// the data times of its oldest and newest.
type RestorePointSummary struct {
	Count  int       `json:"count"`
	Oldest time.Time `json:"oldest"`
	Newest time.Time `json:"newest"`
}

// RestorePoint is a quiesced snapshot of a database instance's volume
// that the service takes between backups and keeps on the host, so that
// a recover in place reverts to a point near its target and replays
// little log, instead of all the log since the last backup. It is not a
// backup: it lives only as long as the instance's volume, and only its
// overlay (PostgreSQL's backup label and the WAL of its quiesce) is
// stored, in the instance's archive container.
type RestorePoint struct {
	ID         string `json:"id"`
	ProjectID  string `json:"project_id"`
	InstanceID string `json:"instance_id"`
	VolumeID   string `json:"volume_id"`
	// SnapshotID is the volume snapshot (the engine's ID).
	SnapshotID string `json:"snapshot_id"`
	// Container and Overlay name the repository stream of the overlay,
	// Overlay "" when the engine writes none.
	Container string `json:"container"`
	Overlay   string `json:"overlay,omitempty"`
	// DataTimestamp is the instant the snapshot's data is consistent at.
	DataTimestamp time.Time `json:"data_timestamp"`
	// Record is the engine's account of the quiesce, as a backup's.
	Record    []byte    `json:"-"`
	CreatedAt time.Time `json:"created_at"`
}

// InstanceRecoverRequest is a request to recover a running instance in place
// to a point in time.
type InstanceRecoverRequest struct {
	PointInTime time.Time
	// BackupID names the backup to start from, "" for the latest that
	// ends by PointInTime.
	BackupID string
}

// DatabaseBackup is a backup of a database instance, stored in a
// repository (a container) like a volume backup.
type DatabaseBackup struct {
	ID          string               `json:"id"`
	ProjectID   string               `json:"project_id"`
	InstanceID  string               `json:"instance_id"`
	Name        string               `json:"name"`
	Description string               `json:"description"`
	Status      DatabaseBackupStatus `json:"status"`
	FailReason  string               `json:"fail_reason,omitempty"`
	Strategy    DatabaseStrategy     `json:"strategy"`
	Container   string               `json:"container"`
	// ParentID is the backup an incremental one builds on.
	ParentID  string       `json:"parent_id,omitempty"`
	Datastore DatastoreRef `json:"datastore"`
	// Size is how many bytes of data the backup holds, known once it is
	// COMPLETED.
	Size int64 `json:"size"`
	// VolumeSize is the GiB of the instance's volume when it was backed
	// up: the size of an instance restored from the backup unless its
	// request asks for more.
	VolumeSize int64 `json:"volume_size"`
	// Location says where the backup's data is (the container and the
	// repository's backup), "" until it is stored.
	Location string `json:"location,omitempty"`
	// DataTimestamp is the instant the backup's data is consistent at,
	// zero until the backup has taken it.
	DataTimestamp time.Time `json:"data_timestamp,omitzero"`
	// VolumeID is the instance's volume when the backup was taken.
	VolumeID string `json:"volume_id,omitempty"`
	// SnapshotID is the volume snapshot a snapshot backup took, kept on
	// the host so a restore can clone it at once; "" once it is gone.
	SnapshotID string `json:"snapshot_id,omitempty"`
	// Data is the repository backup holding the backup's data (a volume
	// image or a stream), "" until it is stored.
	Data string `json:"data,omitempty"`
	// Overlay is the repository stream a restore lays over the data
	// (PostgreSQL's backup label and the WAL of the backup), "" when
	// there is none.
	Overlay string `json:"overlay,omitempty"`
	// Record is the engine's account of the backup (its point in the
	// WAL or binary log, label and timings) as JSON, opaque to the
	// catalog; a restore and point-in-time recovery read it.
	Record    []byte    `json:"record,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// BackupStrategy is the default strategy and container of a project's
// database backups (InstanceID "") or of one instance's (Trove's backup
// strategy). A backup request that names neither takes the instance's,
// then the project's, then StrategySnapshot and the service's default
// container.
type BackupStrategy struct {
	ProjectID  string `json:"project_id"`
	InstanceID string `json:"instance_id"`
	// Strategy is "" to leave the strategy to the next level down.
	Strategy DatabaseStrategy `json:"strategy"`
	// Container is "" to leave the container to the next level down.
	Container string `json:"container"`
	// Backend names the kind of store the backups go to (the service's
	// backup store: "local", "s3", "swift").
	Backend string `json:"backend"`
}

// InstanceCreate is a request for a new database instance.
type InstanceCreate struct {
	Name string
	// Datastore names the engine (its name or ID); DatastoreVersion a
	// version of it (name or ID), "" for its default.
	Datastore        string
	DatastoreVersion string
	// VolumeSize is the volume's size in GiB; 0 only with a BackupID,
	// for the size of the backed-up instance's volume.
	VolumeSize int64
	Databases  []DatabaseSpec
	Users      []DatabaseUser
	// BackupID is the backup to restore into the new instance, "" for
	// an empty one.
	BackupID string
	// PointInTime, when set, restores the instance as it was at that
	// instant: from BackupID (or, when that is "", the latest backup of
	// SourceInstance that ends by then), its archived WAL replayed to it.
	PointInTime    time.Time
	SourceInstance string
	// Metadata is the new instance's key/value pairs, nil for none.
	Metadata map[string]string
}

// DatabaseSpec is a database an instance is created with.
type DatabaseSpec struct {
	Name string
	// CharacterSet and Collate are the engine's names, "" for its
	// defaults.
	CharacterSet string
	Collate      string
}

// DatabaseUser is a user an instance is created with.
type DatabaseUser struct {
	Name     string
	Password string `json:"-"`
	// Host is the host the user may connect from (MariaDB), "" for any.
	Host string
	// Databases are the databases the user is granted all rights on.
	Databases []string
}

// DatabaseBackupCreate is a request for a backup of an instance.
type DatabaseBackupCreate struct {
	InstanceID  string
	Name        string
	Description string
	// ParentID names the backup an incremental one builds on; with
	// Incremental and no ParentID, the instance's latest completed
	// backup is the parent (a full backup when it has none).
	ParentID    string
	Incremental bool
	// Strategy and Container are "" for the instance's backup strategy
	// (see BackupStrategy).
	Strategy  DatabaseStrategy
	Container string
}

// DatabaseBackupFilter selects database backups in a list; "" selects
// all.
type DatabaseBackupFilter struct {
	InstanceID string
	// Datastore is a datastore's name or ID.
	Datastore string
}

// TimeWindow is a span of time, both ends included.
type TimeWindow struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// ArchiveState is an instance's log archive as the service knows it:
// where it stands, how far behind the server, and what is missing.
type ArchiveState struct {
	// Container is where the archive is stored.
	Container string `json:"container"`
	// State is "streaming", "starting" (between attempts), "failing"
	// (Error says why), or "unsupported" (the datastore has no archive
	// yet).
	State string `json:"state"`
	// Timeline is the timeline being archived (PostgreSQL), or the
	// generation of the binary log (MariaDB).
	Timeline uint32 `json:"timeline,omitempty"`
	// ArchivedLSN is where the archive's log ends: everything before it
	// is durable in the repository.
	ArchivedLSN string `json:"archived_lsn,omitempty"`
	// ArchivedPosition is, for MariaDB, where the archive's binary log
	// ends ("file:offset"), and ArchivedGTID the GTID position there:
	// everything before it is durable in the repository.
	ArchivedPosition string `json:"archived_position,omitempty"`
	ArchivedGTID     string `json:"archived_gtid,omitempty"`
	// CompleteAt is the latest server time the archive holds everything
	// written by: a restore can reach any second up to it.
	CompleteAt time.Time `json:"complete_at,omitzero"`
	// LastTransaction is the end time of the last transaction archived.
	LastTransaction time.Time `json:"last_transaction,omitzero"`
	// LagSeconds is how long the oldest byte the server has written but
	// the archive not yet stored has waited; 0 when caught up.
	LagSeconds float64 `json:"lag_seconds"`
	// Gaps are the stretches of log the archive lost.
	Gaps []ArchiveGap `json:"gaps,omitempty"`
	// Slot is the server's archive slot, as last read.
	Slot  *ArchiveSlot `json:"slot,omitempty"`
	Error string       `json:"error,omitempty"`
	// RestorePointFailures counts the restore points in a row that
	// could not be taken (0 once one is).
	RestorePointFailures int `json:"restore_point_failures,omitempty"`
	// RestorePoints sums up the instance's restore points as the
	// archiver last counted them, for the metrics; the instance shows
	// its own count, read from the catalog.
	RestorePoints RestorePointSummary `json:"-"`
}

// ArchiveSlot is the state of the replication slot that keeps on the
// server the WAL an archive has not stored yet.
type ArchiveSlot struct {
	// Status is PostgreSQL's wal_status: reserved, extended, unreserved
	// (about to lose WAL), lost.
	Status string `json:"status"`
	// SafeBytes is how much more WAL the server may write before the slot
	// loses some, KeepBytes the most it holds; -1 when unbounded.
	SafeBytes int64 `json:"safe_bytes"`
	KeepBytes int64 `json:"keep_bytes"`
}

// ArchiveGap is a stretch of log missing from an archive.
type ArchiveGap struct {
	Timeline uint32 `json:"timeline"`
	From     string `json:"from"`
	To       string `json:"to"`
	// Reason says how it came about, when known.
	Reason string `json:"reason,omitempty"`
}
