package cairn

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Service errors, in addition to the sentinels in cairn.go.
var (
	// ErrQuota: the operation would take a project over one of its quotas.
	ErrQuota = errors.New("quota exceeded")
	// ErrUnauthenticated: the request carries no valid token.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden: the token is valid but may not do this (admin-only calls).
	ErrForbidden = errors.New("forbidden")
)

// Status is the state of a volume, snapshot or backup as the block
// storage API shows it.
type Status string

// Statuses. Transient ones (creating, deleting, extending, backing-up,
// restoring-backup, restoring) are held only while a task runs; a
// restarted service finishes or fails every such task, so none outlives
// its task. Two exceptions: attaching and detaching are held by a client
// between os-reserve and os-attach (or os-unreserve), and between
// os-begin_detaching and os-detach (or os-roll_detaching); and an
// admin's os-reset_status may put a resource in any status the block
// storage API allows, with no task (it is refused while a task holds the
// resource).
const (
	StatusCreating        Status = "creating"
	StatusAvailable       Status = "available"
	StatusInUse           Status = "in-use"
	StatusDeleting        Status = "deleting"
	StatusExtending       Status = "extending"
	StatusBackingUp       Status = "backing-up"
	StatusRestoringBackup Status = "restoring-backup" // a volume being written by a restore
	StatusRestoring       Status = "restoring"        // a backup being read by a restore
	StatusAttaching       Status = "attaching"        // a volume reserved for an attachment
	StatusDetaching       Status = "detaching"        // a volume whose detachment began
	StatusError           Status = "error"
	StatusErrorDeleting   Status = "error_deleting"
	StatusDeleted         Status = "deleted"

	// Statuses cairn's own operations never set: only os-reset_status
	// does, as the block storage API allows them.
	StatusMaintenance      Status = "maintenance"
	StatusReserved         Status = "reserved"
	StatusErrorRestoring   Status = "error_restoring"
	StatusErrorExtending   Status = "error_extending"
	StatusErrorManaging    Status = "error_managing"
	StatusManaging         Status = "managing"
	StatusUnmanaging       Status = "unmanaging"
	StatusDownloading      Status = "downloading"
	StatusUploading        Status = "uploading"
	StatusRetyping         Status = "retyping"
	StatusAwaitingTransfer Status = "awaiting-transfer"
	StatusErrorBackingUp   Status = "error_backing-up"
)

// VolumeStatuses are the statuses the block storage API lets an admin
// reset a volume to; SnapshotStatuses and BackupStatuses those of
// snapshots and backups.
var (
	VolumeStatuses = []Status{StatusCreating, StatusAvailable, StatusDeleting, StatusError,
		StatusErrorDeleting, StatusErrorManaging, StatusManaging, StatusAttaching, StatusInUse,
		StatusDetaching, StatusMaintenance, StatusRestoringBackup, StatusErrorRestoring,
		StatusReserved, StatusAwaitingTransfer, StatusBackingUp, StatusErrorBackingUp,
		StatusErrorExtending, StatusDownloading, StatusUploading, StatusRetyping, StatusExtending}
	SnapshotStatuses = []Status{StatusCreating, StatusAvailable, StatusDeleting, StatusError,
		StatusErrorDeleting, StatusUnmanaging, StatusBackingUp, StatusRestoring}
	BackupStatuses = []Status{StatusAvailable, StatusError}
)

// ReadOnlyKey is the admin metadata key of a volume's read-only flag
// (os-update_readonly_flag), "True" or "False" as the block storage API
// writes it; the answers show it among the volume's metadata.
const ReadOnlyKey = "readonly"

// Quota limits what a project may hold. A negative limit is unlimited.
type Quota struct {
	Volumes         int64 `json:"volumes"`
	Gigabytes       int64 `json:"gigabytes"`
	Snapshots       int64 `json:"snapshots"`
	Backups         int64 `json:"backups"`
	BackupGigabytes int64 `json:"backup_gigabytes"`
	// PerVolumeGigabytes bounds the size of each volume (not a total).
	PerVolumeGigabytes int64 `json:"per_volume_gigabytes"`
}

// Unlimited is the quota of a project created without limits.
var Unlimited = Quota{-1, -1, -1, -1, -1, -1}

// VolumeTooLarge says why a volume of size GiB exceeds q's per-volume
// limit, or "".
func (q Quota) VolumeTooLarge(size int64) string {
	if q.PerVolumeGigabytes >= 0 && size > q.PerVolumeGigabytes {
		return fmt.Sprintf("per_volume_gigabytes: a volume of %d GiB > limit %d", size, q.PerVolumeGigabytes)
	}
	return ""
}

// Usage is what a project holds, counted as quotas count it: volumes and
// snapshots in any state but deleted; gigabytes of volumes and snapshots;
// backups and the gigabytes of the volumes they hold.
type Usage struct {
	Volumes         int64 `json:"volumes"`
	Gigabytes       int64 `json:"gigabytes"`
	Snapshots       int64 `json:"snapshots"`
	Backups         int64 `json:"backups"`
	BackupGigabytes int64 `json:"backup_gigabytes"`
}

// Bounds reports whether any quota limits what add adds: when none
// does, no usage needs counting.
func (q Quota) Bounds(add Usage) bool {
	return add.Volumes > 0 && q.Volumes >= 0 || add.Gigabytes > 0 && q.Gigabytes >= 0 ||
		add.Snapshots > 0 && q.Snapshots >= 0 || add.Backups > 0 && q.Backups >= 0 ||
		add.BackupGigabytes > 0 && q.BackupGigabytes >= 0
}

// Exceeds names the first quota that usage plus add would exceed, or "".
func (q Quota) Exceeds(u, add Usage) string {
	check := []struct {
		name        string
		limit, used int64
		add         int64
	}{
		{"volumes", q.Volumes, u.Volumes, add.Volumes},
		{"gigabytes", q.Gigabytes, u.Gigabytes, add.Gigabytes},
		{"snapshots", q.Snapshots, u.Snapshots, add.Snapshots},
		{"backups", q.Backups, u.Backups, add.Backups},
		{"backup_gigabytes", q.BackupGigabytes, u.BackupGigabytes, add.BackupGigabytes},
	}
	for _, c := range check {
		if c.add > 0 && c.limit >= 0 && c.used+c.add > c.limit {
			return fmt.Sprintf("%s: %d used + %d requested > limit %d", c.name, c.used, c.add, c.limit)
		}
	}
	return ""
}

// Project is a tenant: it owns volumes, snapshots and backups.
type Project struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Quota     Quota     `json:"quota"`
	CreatedAt time.Time `json:"created_at"`
}

// Token is an API credential of a project. Only the SHA-256 of its
// secret is stored.
type Token struct {
	ID        string    `json:"id"`
	ProjectID string    `json:"project_id"`
	Name      string    `json:"name"`
	Admin     bool      `json:"admin"`
	Hash      []byte    `json:"-"`
	CreatedAt time.Time `json:"created_at"`
}

// Volume is a block volume of a project.
type Volume struct {
	ID          string `json:"id"`
	ProjectID   string `json:"project_id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	// Size in GiB, as the block storage API counts.
	Size       int64  `json:"size"`
	Status     Status `json:"status"`
	FailReason string `json:"fail_reason,omitempty"`
	// SnapshotID and BackupID name what the volume was created from.
	SnapshotID string `json:"snapshot_id,omitempty"`
	BackupID   string `json:"backup_id,omitempty"`
	// EngineID is the volume's ID in the volume engine, empty until the
	// engine has made it.
	EngineID string `json:"-"`
	// SourceVolID names the volume a clone was made from.
	SourceVolID string `json:"source_volid,omitempty"`
	// VolumeTypeID is the ID of the volume's type (VolumeType); ""
	// reads as DefaultVolumeTypeID.
	VolumeTypeID string `json:"volume_type_id,omitempty"`
	// UserID is who created the volume (service.Caller.UserID); "" for
	// volumes made before it was recorded.
	UserID string `json:"user_id,omitempty"`
	// Attached says the volume is exported over NBD (status in-use).
	Attached bool `json:"attached"`
	// Bootable is the flag os-set_bootable sets; a clone takes its
	// source's.
	Bootable bool `json:"bootable"`
	// Metadata is the tenant's key/value pairs, as the block storage
	// API has them; nil when there are none (the catalog keeps no
	// difference between none and empty).
	Metadata map[string]string `json:"metadata,omitempty"`
	// AdminMetadata is what the service and admins record about the
	// volume, apart from the tenant's metadata so that the metadata
	// calls never change it: ReadOnlyKey. nil when there is none.
	AdminMetadata map[string]string `json:"admin_metadata,omitempty"`
	CreatedAt     time.Time         `json:"created_at"`
	UpdatedAt     time.Time         `json:"updated_at"`
}

// Snapshot is a read-only point-in-time copy of a volume.
type Snapshot struct {
	ID          string `json:"id"`
	ProjectID   string `json:"project_id"`
	VolumeID    string `json:"volume_id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Size        int64  `json:"size"`
	Status      Status `json:"status"`
	FailReason  string `json:"fail_reason,omitempty"`
	EngineID    string `json:"-"`
	// UserID is who created the snapshot, as a volume's.
	UserID string `json:"user_id,omitempty"`
	// Progress is what os-update_snapshot_status last reported ("80%");
	// "" shows cairn's own (0% until the engine's snapshot exists, then
	// 100%).
	Progress string `json:"progress,omitempty"`
	// Metadata is as a volume's: nil when there are none.
	Metadata  map[string]string `json:"metadata,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	UpdatedAt time.Time         `json:"updated_at"`
}

// Backup is a copy of a volume or snapshot in a repository (a container).
type Backup struct {
	ID          string `json:"id"`
	ProjectID   string `json:"project_id"`
	VolumeID    string `json:"volume_id"`
	SnapshotID  string `json:"snapshot_id,omitempty"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Container   string `json:"container"`
	Status      Status `json:"status"`
	FailReason  string `json:"fail_reason,omitempty"`
	// Size is the source volume's size in GiB.
	Size int64 `json:"size"`
	// ObjectCount is how many objects the backup added to the store;
	// StoredBytes their size.
	ObjectCount   int64     `json:"object_count"`
	StoredBytes   int64     `json:"stored_bytes"`
	Incremental   bool      `json:"is_incremental"`
	ParentID      string    `json:"parent_id,omitempty"`
	DataTimestamp time.Time `json:"data_timestamp"`
	// RepoID is the backup's ID in the repository (its manifest).
	RepoID string `json:"-"`
	// TempSnapshotEngineID is a snapshot the backup task made and must
	// remove (an in-use volume's backup), kept here so a restarted
	// service can clean it up.
	TempSnapshotEngineID string `json:"-"`
	// UserID is who created the backup, as a volume's (an imported
	// backup: who imported it).
	UserID string `json:"user_id,omitempty"`
	// VolumeMetadata is the backed-up volume's metadata when the backup
	// was requested; a restore into a new volume gives it to the volume.
	// nil when there was none.
	VolumeMetadata map[string]string `json:"volume_metadata,omitempty"`
	CreatedAt      time.Time         `json:"created_at"`
	UpdatedAt      time.Time         `json:"updated_at"`
}

// TaskState is where a task is in its life.
type TaskState string

// Task states. A task is pending until a worker takes it, running while
// it works, and ends done or failed.
const (
	TaskPending TaskState = "pending"
	TaskRunning TaskState = "running"
	TaskDone    TaskState = "done"
	TaskFailed  TaskState = "failed"
)

// Task is one durable long operation on a resource.
type Task struct {
	ID        string `json:"id"`
	ProjectID string `json:"project_id"`
	// Kind names the operation, e.g. "volume.create", "backup.restore".
	Kind string `json:"kind"`
	// ResourceID is the volume, snapshot or backup the task works on.
	ResourceID string    `json:"resource_id"`
	State      TaskState `json:"state"`
	// Params is the operation's input, JSON.
	Params json.RawMessage `json:"params,omitempty"`
	// Error is why the task failed; while the clean-up of a failing
	// task is retried, why the clean-up failed.
	Error string `json:"error,omitempty"`
	// FailCause, once set, says the task is failing: Run failed (or
	// gave up) with this error and the kind's Fail is cleaning up. It
	// is recorded before Fail first runs, so a task cut short while
	// failing resumes its Fail after a restart, never its Run.
	FailCause string `json:"fail_cause,omitempty"`
	Attempts  int    `json:"attempts"`
	// Progress is done/total bytes while running.
	ProgressDone  int64     `json:"progress_done"`
	ProgressTotal int64     `json:"progress_total"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	FinishedAt    time.Time `json:"finished_at,omitzero"`
	// RequestID is the API request that made the task ("" when made
	// otherwise, or before cairn recorded it).
	RequestID string `json:"request_id,omitempty"`
	// MessageDeleted: the project deleted the user message a failed task
	// is (the block storage API's messages); the task itself stays.
	MessageDeleted bool `json:"message_deleted,omitempty"`
}

// NewUUID returns a random RFC 4122 version 4 UUID in its text form, the
// shape of the block storage API's IDs.
func NewUUID() string {
	b := NewID()
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	s := b.String()
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:32]
}

// ServiceLease is a catalog's lease of one running service process:
// `cairn serve` takes it at start, renews it while it runs and releases
// it when it stops, so that a second service on the same catalog refuses
// to start instead of re-running the first one's tasks.
type ServiceLease struct {
	// Name names the lease ("serve").
	Name string
	// Holder says who holds it: host, boot, process and its start time,
	// enough to tell on the same host that the holder is gone.
	Holder string
	// ExpiresAt is when the lease lapses unless renewed.
	ExpiresAt time.Time
}
