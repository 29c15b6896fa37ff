// Package catalog is the service's record of projects, tokens, volumes,
// snapshots, backups, database instances, database backups, backup
// strategies and tasks. Store is implemented by sqlite/ (the
// embedded default) and postgres/; catalogtest is the suite both pass.
//
// Every change happens in a transaction (Store.Update) that is
// serializable: a function that reads a row, checks its status and writes
// it back cannot interleave with another doing the same, which is how the
// service makes its state transitions and quota checks atomic.
package catalog

import (
	"context"
	"time"

	"github.com/cairnproject/cairn"
)

// Store is a catalog.
type Store interface {
	// View runs fn in a read-only transaction.
	View(ctx context.Context, fn func(Tx) error) error
	// Update runs fn in a serializable read-write transaction and commits
	// it if fn returns nil. When the database reports a serialization
	// conflict, the transaction is rolled back and fn run again: fn must
	// have no effects outside the transaction. Concurrent Updates never
	// fail with a lock error; they wait (up to ctx).
	Update(ctx context.Context, fn func(Tx) error) error
	// Close releases the database.
	Close() error
}

// Tx is one transaction. Getters return an error wrapping
// cairn.ErrNotFound for a missing row; inserts return cairn.ErrExists
// for a duplicate ID (or a duplicate token hash). Updates of a missing
// row return cairn.ErrNotFound. Times are stored with at least
// microsecond precision and returned in UTC.
type Tx interface {
	InsertProject(ctx context.Context, p cairn.Project) error
	Project(ctx context.Context, id string) (cairn.Project, error)
	Projects(ctx context.Context) ([]cairn.Project, error)
	UpdateProject(ctx context.Context, p cairn.Project) error
	// DeleteProject removes the project, its tokens, its backup
	// strategies and its restore points; it fails with cairn.ErrConflict while the project owns
	// volumes, snapshots or backups in any state but deleted, or any
	// database instance or database backup.
	DeleteProject(ctx context.Context, id string) error

	InsertToken(ctx context.Context, t cairn.Token) error
	TokenByHash(ctx context.Context, hash []byte) (cairn.Token, error)
	// Tokens lists a project's tokens, or every token for project "".
	Tokens(ctx context.Context, project string) ([]cairn.Token, error)
	DeleteToken(ctx context.Context, id string) error

	InsertVolume(ctx context.Context, v cairn.Volume) error
	Volume(ctx context.Context, id string) (cairn.Volume, error)
	Volumes(ctx context.Context, f Filter) ([]cairn.Volume, error)
	// UpdateVolume writes every field of the row with v's ID.
	UpdateVolume(ctx context.Context, v cairn.Volume) error
	// DeleteVolume removes the row (the service marks it deleted first).
	DeleteVolume(ctx context.Context, id string) error

	InsertSnapshot(ctx context.Context, s cairn.Snapshot) error
	Snapshot(ctx context.Context, id string) (cairn.Snapshot, error)
	Snapshots(ctx context.Context, f Filter) ([]cairn.Snapshot, error)
	UpdateSnapshot(ctx context.Context, s cairn.Snapshot) error
	DeleteSnapshot(ctx context.Context, id string) error

	InsertBackup(ctx context.Context, b cairn.Backup) error
	Backup(ctx context.Context, id string) (cairn.Backup, error)
	Backups(ctx context.Context, f Filter) ([]cairn.Backup, error)
	UpdateBackup(ctx context.Context, b cairn.Backup) error
	DeleteBackup(ctx context.Context, id string) error
	// HasDependents reports whether any backup names id as its parent.
	HasDependents(ctx context.Context, id string) (bool, error)
	// WithDependents returns the subset of ids that some backup names
	// as its parent: HasDependents for a page of backups in one query.
	WithDependents(ctx context.Context, ids []string) (map[string]bool, error)

	// Summaries lists the IDs and names of volumes, snapshots or
	// backups: the rows and order the full list of f gives, read from
	// two columns.
	Summaries(ctx context.Context, kind Kind, f Filter) ([]Summary, error)

	InsertInstance(ctx context.Context, in cairn.Instance) error
	Instance(ctx context.Context, id string) (cairn.Instance, error)
	// Instances lists instances with Filter.ProjectID, Name, Status,
	// Datastore and Since applied.
	Instances(ctx context.Context, f Filter) ([]cairn.Instance, error)
	// UpdateInstance writes every field of the row with in's ID.
	UpdateInstance(ctx context.Context, in cairn.Instance) error
	DeleteInstance(ctx context.Context, id string) error

	// InsertDatabaseBackup stores every field of b; a Record of no
	// bytes comes back nil.
	InsertDatabaseBackup(ctx context.Context, b cairn.DatabaseBackup) error
	DatabaseBackup(ctx context.Context, id string) (cairn.DatabaseBackup, error)
	// DatabaseBackups lists database backups with Filter.ProjectID,
	// Name, Status, InstanceID, Datastore, ParentID and Since applied.
	DatabaseBackups(ctx context.Context, f Filter) ([]cairn.DatabaseBackup, error)
	// UpdateDatabaseBackup writes every field of the row with b's ID.
	UpdateDatabaseBackup(ctx context.Context, b cairn.DatabaseBackup) error
	DeleteDatabaseBackup(ctx context.Context, id string) error

	// InsertRestorePoint stores every field of p; a Record of no bytes
	// comes back nil.
	InsertRestorePoint(ctx context.Context, p cairn.RestorePoint) error
	// RestorePoints lists an instance's restore points, oldest data
	// first.
	RestorePoints(ctx context.Context, instanceID string) ([]cairn.RestorePoint, error)
	DeleteRestorePoint(ctx context.Context, id string) error

	// BackupStrategies lists project's backup strategies, ordered by
	// instance ID (the project's default, instance "", first), or only
	// instance's when instanceID is not "": at most one, none when it
	// has none.
	BackupStrategies(ctx context.Context, project, instanceID string) ([]cairn.BackupStrategy, error)
	// PutBackupStrategy creates st, or replaces the strategy with st's
	// project and instance ID (instance "": the project's default). A
	// missing project is cairn.ErrNotFound; the instance is not looked
	// up.
	PutBackupStrategy(ctx context.Context, st cairn.BackupStrategy) error
	// DeleteBackupStrategy removes the strategy of project and
	// instanceID; cairn.ErrNotFound when there is none.
	DeleteBackupStrategy(ctx context.Context, project, instanceID string) error

	InsertTask(ctx context.Context, t cairn.Task) error
	Task(ctx context.Context, id string) (cairn.Task, error)
	// Tasks lists tasks with Filter.ProjectID, Filter.ResourceID and
	// Filter.TaskStates (any of) applied; oldest first.
	Tasks(ctx context.Context, f Filter) ([]cairn.Task, error)
	UpdateTask(ctx context.Context, t cairn.Task) error

	// Usage counts what project holds (see cairn.Usage).
	Usage(ctx context.Context, project string) (cairn.Usage, error)

	// QuotaClass returns the limits of a quota class: "default" exists
	// from the start (the block storage API's defaults); others are
	// cairn.ErrNotFound. SetQuotaClass writes them.
	QuotaClass(ctx context.Context, name string) (cairn.Quota, error)
	SetQuotaClass(ctx context.Context, name string, q cairn.Quota) error

	// Volume types (cairn.VolumeType). A duplicate ID or name is
	// cairn.ErrExists, on insert and on update alike.
	InsertVolumeType(ctx context.Context, vt cairn.VolumeType) error
	VolumeType(ctx context.Context, id string) (cairn.VolumeType, error)
	VolumeTypeByName(ctx context.Context, name string) (cairn.VolumeType, error)
	// VolumeTypes lists types by name: every type for project "", else
	// the public ones and the private ones project has access to.
	VolumeTypes(ctx context.Context, project string) ([]cairn.VolumeType, error)
	// UpdateVolumeType writes every field of the row with vt's ID.
	UpdateVolumeType(ctx context.Context, vt cairn.VolumeType) error
	// DeleteVolumeType removes the type and its access rows; it fails
	// with cairn.ErrConflict while a volume in any status but deleted
	// is of the type.
	DeleteVolumeType(ctx context.Context, id string) error
	// VolumeTypeProjects lists the projects with access to a type, in
	// order; none for a missing type.
	VolumeTypeProjects(ctx context.Context, id string) ([]string, error)
	// AddVolumeTypeProject gives project access to type id:
	// cairn.ErrExists when it has it, cairn.ErrNotFound for a missing
	// type. The project is not looked up.
	AddVolumeTypeProject(ctx context.Context, id, project string) error
	// RemoveVolumeTypeProject takes it away: cairn.ErrNotFound when
	// project has no access.
	RemoveVolumeTypeProject(ctx context.Context, id, project string) error

	// Volume transfers (cairn.VolumeTransfer). InsertVolumeTransfer is
	// cairn.ErrExists when the ID is taken or the volume has a transfer;
	// the volume and project are not looked up.
	InsertVolumeTransfer(ctx context.Context, tr cairn.VolumeTransfer) error
	VolumeTransfer(ctx context.Context, id string) (cairn.VolumeTransfer, error)
	// VolumeTransfers lists project's transfers, every project's for "",
	// oldest first.
	VolumeTransfers(ctx context.Context, project string) ([]cairn.VolumeTransfer, error)
	DeleteVolumeTransfer(ctx context.Context, id string) error

	// Backup policies (cairn.Policy). InsertPolicy is cairn.ErrExists
	// when the ID, or the name in the project, is taken, and
	// cairn.ErrNotFound for a missing project; UpdatePolicy is
	// cairn.ErrExists for a name another of the project's policies has.
	InsertPolicy(ctx context.Context, p cairn.Policy) error
	Policy(ctx context.Context, id string) (cairn.Policy, error)
	// Policies lists project's policies, every project's for "", by
	// project and name.
	Policies(ctx context.Context, project string) ([]cairn.Policy, error)
	// DuePolicies lists at most limit enabled policies whose NextFireAt
	// is at or before now, earliest first.
	DuePolicies(ctx context.Context, now time.Time, limit int) ([]cairn.Policy, error)
	UpdatePolicy(ctx context.Context, p cairn.Policy) error
	// AdvancePolicies writes only what firing changes in each of ps
	// (each policy at most once): Enabled, NextSlotAt, NextFireAt and
	// UpdatedAt; cairn.ErrNotFound when one is missing, and then the
	// others may be written, so the transaction must not commit.
	AdvancePolicies(ctx context.Context, ps ...cairn.Policy) error
	// DeletePolicy removes the policy and its slots; the backups it made
	// stay.
	DeletePolicy(ctx context.Context, id string) error
	// InsertPolicySlots records each slot once: cairn.ErrExists when a
	// policy has a record of one of them, without failing the
	// transaction. That is what makes a slot fire once across processes.
	// The other slots may be written then: a transaction that inserted
	// several must not commit after that error.
	InsertPolicySlots(ctx context.Context, slots ...cairn.PolicySlot) error
	// UpdatePolicySlot writes a recorded slot's State, Late, Detail and
	// Runs (its FiredAt stays); cairn.ErrNotFound without a record.
	UpdatePolicySlot(ctx context.Context, s cairn.PolicySlot) error
	// FiringPolicySlots lists at most limit slots, of every policy, in
	// state cairn.SlotFiring (recorded, their backups not yet queued),
	// the oldest slot first.
	FiringPolicySlots(ctx context.Context, limit int) ([]cairn.PolicySlot, error)
	// UnnotifiedPolicySlots lists at most limit slots, of every policy,
	// whose events are not yet sent: recorded by InsertPolicySlots in a
	// state other than cairn.SlotFiring, or moved out of it since, and
	// not marked by MarkPolicySlotsNotified; the oldest slot first.
	UnnotifiedPolicySlots(ctx context.Context, limit int) ([]cairn.PolicySlot, error)
	// MarkPolicySlotsNotified marks the slots (by policy and time) as
	// having had their events sent. Slots without a record are passed
	// over.
	MarkPolicySlotsNotified(ctx context.Context, slots ...cairn.PolicySlot) error
	// ServiceLease reads the lease named name: cairn.ErrNotFound when
	// nobody holds it.
	ServiceLease(ctx context.Context, name string) (cairn.ServiceLease, error)
	// PutServiceLease writes l whoever held it: the caller has read the
	// lease in the same transaction and decided it may.
	PutServiceLease(ctx context.Context, l cairn.ServiceLease) error
	// DeleteServiceLease removes lease name if holder holds it, and does
	// nothing otherwise.
	DeleteServiceLease(ctx context.Context, name, holder string) error

	// PolicySlots lists a policy's slots, newest first, at most limit (0:
	// all).
	PolicySlots(ctx context.Context, policyID string, limit int) ([]cairn.PolicySlot, error)
	// PrunePolicySlots deletes a policy's slots before before, except
	// its newest keep (keep > 0), and returns how many it deleted. A
	// slot's record is what makes it fire once only until the policy has
	// moved past it, which it does in the slot's transaction.
	PrunePolicySlots(ctx context.Context, policyID string, before time.Time, keep int) (int, error)
	// The backups a policy made (cairn.PolicyBackup), until retention
	// forgets them. InsertPolicyBackup is cairn.ErrExists for a backup
	// recorded already; PolicyBackups lists them oldest slot first;
	// DeletePolicyBackup is cairn.ErrNotFound without a record.
	InsertPolicyBackup(ctx context.Context, pb cairn.PolicyBackup) error
	PolicyBackups(ctx context.Context, policyID string) ([]cairn.PolicyBackup, error)
	DeletePolicyBackup(ctx context.Context, policyID, backupID string) error

	// BackupMarks reads a backup's marks (cairn.BackupMarks): the zero
	// marks, with its ID, when it has none. PutBackupMarks replaces them
	// without looking the backup up. Deleting a backup (of a volume or
	// an instance) deletes its marks.
	BackupMarks(ctx context.Context, id string) (cairn.BackupMarks, error)
	PutBackupMarks(ctx context.Context, m cairn.BackupMarks) error
	// BackupMarksOf reads the marks of those of ids that have any, by
	// backup ID: BackupMarks for many backups in few queries.
	BackupMarksOf(ctx context.Context, ids []string) (map[string]cairn.BackupMarks, error)
}

// Kind names a list of resources.
type Kind string

// Kinds of Summaries.
const (
	KindVolumes   Kind = "volumes"
	KindSnapshots Kind = "snapshots"
	KindBackups   Kind = "backups"
)

// Summary is a resource's ID and name.
type Summary struct {
	ID, Name string
}

// Filter selects and orders rows of a list. Zero fields select all.
type Filter struct {
	ProjectID string
	Name      string
	// Status selects rows in this status; for instances and database
	// backups it is compared with their own status type's string
	// (cairn.Status(cairn.InstanceActive)).
	Status     cairn.Status
	VolumeID   string // snapshots and backups of a volume; volumes: none
	SnapshotID string // backups of a snapshot
	ParentID   string // backups and database backups whose parent is this
	ResourceID string // tasks
	// InstanceID selects database backups of an instance.
	InstanceID string
	// Datastore selects database instances and database backups whose
	// datastore's type (cairn.DatastoreRef.Type) is this.
	Datastore  string
	TaskStates []cairn.TaskState
	// Bootable, when not nil, selects volumes whose bootable flag is
	// this (volumes only).
	Bootable *bool
	// Since selects rows created at or after it.
	Since time.Time
	// Sort is the order: keys among id, name, status, size, created_at,
	// updated_at (and data_timestamp for backups and database backups),
	// each ascending or descending; ties are broken by id in the last
	// key's direction. The default is created_at descending. An
	// instance's size is its VolumeSize.
	Sort []SortKey
	// Marker is the ID of the last row of the previous page; the list
	// starts after it in Sort's order. A marker that names no row in the
	// list's table is cairn.ErrNotFound.
	Marker string
	// Limit is the most rows to return; 0 means no limit.
	Limit int
	// Offset skips that many rows (after Marker) before the first
	// returned; negative is cairn.ErrInvalid.
	Offset int
}

// SortKey is one key of an order.
type SortKey struct {
	Key  string
	Desc bool
}

// ValidSortKey reports whether a Filter may sort by key.
func ValidSortKey(key string) bool {
	switch key {
	case "id", "name", "status", "size", "created_at", "updated_at", "data_timestamp":
		return true
	}
	return false
}
