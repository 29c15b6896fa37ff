// Package wire holds the JSON the service's HTTP API speaks: the shapes
// of its answers and requests, in the OpenStack block storage API's
// forms. The API (internal/api) encodes and decodes them, its Go client
// (internal/client) the other way round; openapi.yaml documents them and
// a test holds the two to each other.
//
// It imports only the root package and the standard library, so that a
// client needs nothing of the server's packages. Requests use pointer
// fields where the API must tell "absent" from "zero"; answers use them
// for members that are null when empty.
package wire

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
)

// RequestIDHeader is the response header carrying the request's ID,
// "req-" and a UUID, as the OpenStack services send it. The service's log
// lines about the request carry the same ID.
const RequestIDHeader = "X-Openstack-Request-Id"

// The block storage API's members for what cairn has one of, or none:
// the values every volume shows.
const (
	// AvailabilityZone is the one availability zone, named as the block
	// storage API's default zone is.
	AvailabilityZone = "nova"
	// VolumeType is the name of the default volume type
	// (cairn.DefaultVolumeTypeName), as the block storage API's default
	// type is named since its Victoria release.
	VolumeType = "__DEFAULT__"
	// ReplicationDisabled is the replication_status of a volume that is
	// not replicated: every cairn volume.
	ReplicationDisabled = "disabled"
)

// MembersHeader, sent with MembersAll, asks for cairn's own members in
// answers (a volume's and a snapshot's fail_reason, a volume's
// backup_id, a backup's stored_bytes and parent_id): cairn's client
// sends it. Without it the answers hold the block storage API's members
// alone, as tempest's response schemas, which refuse any other, check.
const (
	MembersHeader = "X-Cairn-Members"
	MembersAll    = "all"
)

// Volume is a volume as the API shows it: the block storage API's
// members, with the values cairn's volumes have, and cairn's own
// (FailReason, BackupID) when asked for with MembersHeader. ProjectID is
// shown by show and the lists, not by the answers to a create and an
// update, as the block storage API's.
type Volume struct {
	ID          string  `json:"id"`
	Name        string  `json:"name"`
	Description string  `json:"description"`
	Size        int64   `json:"size"`
	Status      string  `json:"status"`
	FailReason  *string `json:"fail_reason,omitempty"`
	SnapshotID  *string `json:"snapshot_id"`
	BackupID    *string `json:"backup_id,omitempty"`
	ProjectID   string  `json:"os-vol-tenant-attr:tenant_id,omitempty"`
	// Host is the pool that holds the volume (HOST@cairn#cairn), shown
	// to admins in show and the detailed list, with MigrationStatus and
	// NameID, null there: cairn never migrates a volume.
	Host            *string         `json:"os-vol-host-attr:host,omitempty"`
	MigrationStatus json.RawMessage `json:"os-vol-mig-status-attr:migstat,omitempty"`
	NameID          json.RawMessage `json:"os-vol-mig-status-attr:name_id,omitempty"`
	// Migration is migration_status, the same null under its newer name.
	Migration json.RawMessage `json:"migration_status,omitempty"`
	// UserID is who created the volume: the Keystone user, or the ID of
	// the cairn token; "" for volumes made before cairn recorded it.
	UserID string `json:"user_id"`
	// Attachments has the volume's NBD export while it is attached: at
	// most one entry; empty (never null) otherwise.
	Attachments []VolumeAttachment `json:"attachments"`
	// Bootable is "true" or "false", a string as the block storage API
	// shows it (os-set_bootable sets it).
	Bootable string `json:"bootable"`
	// Metadata is the volume's key/value pairs: {} (never null) when it
	// has none, as the clients index it unconditionally. The read-only
	// flag (os-update_readonly_flag), once set, is among them as
	// "readonly": "True" or "False", over a tenant's item of that key,
	// as the block storage API merges its admin metadata.
	Metadata map[string]string `json:"metadata"`
	// Links are the volume's self and bookmark links.
	Links []Link `json:"links"`
	// AvailabilityZone is always the constant AvailabilityZone,
	// ReplicationStatus ReplicationDisabled; VolumeType is the name of
	// the volume's type.
	AvailabilityZone  string `json:"availability_zone"`
	VolumeType        string `json:"volume_type"`
	ReplicationStatus string `json:"replication_status"`
	// Encrypted and Multiattach are always false: cairn encrypts
	// backups, not volumes, and exports a volume once.
	Encrypted   bool `json:"encrypted"`
	Multiattach bool `json:"multiattach"`
	// ConsistencyGroupID is always null: cairn has no consistency
	// groups. SourceVolID names the volume a clone was made from, null
	// for others.
	ConsistencyGroupID *string   `json:"consistencygroup_id"`
	SourceVolID        *string   `json:"source_volid"`
	CreatedAt          time.Time `json:"created_at"`
	UpdatedAt          time.Time `json:"updated_at"`
}

// VolumeAttachment is an entry of a volume's attachments, in the block
// storage API's shape. A cairn volume is attached by exporting it over
// NBD, not to a server, so:
//   - ID and AttachmentID are the volume's ID (a volume has at most one
//     attachment, its export, and the catalog keeps no other name for it);
//   - ServerID and HostName are null, as the block storage API has them
//     for an attachment to no server and for callers who are not admins;
//   - Device holds the NBD URIs a client connects to, separated by a
//     space: nbd+unix:///ID?socket=PATH first, then nbd://HOST:PORT/ID
//     when the service also listens on TCP (URIs hold no spaces, so
//     strings.Fields splits them); null when the service has no NBD
//     endpoint;
//   - AttachedAt is null: the catalog does not record when.
type VolumeAttachment struct {
	ID           string     `json:"id"`
	AttachmentID string     `json:"attachment_id"`
	VolumeID     string     `json:"volume_id"`
	ServerID     *string    `json:"server_id"`
	HostName     *string    `json:"host_name"`
	Device       *string    `json:"device"`
	AttachedAt   *time.Time `json:"attached_at"`
}

// URIs returns the NBD URIs Device holds.
func (a VolumeAttachment) URIs() []string {
	if a.Device == nil {
		return nil
	}
	return strings.Fields(*a.Device)
}

// Snapshot is a snapshot as the API shows it (show and the detailed
// list): SnapshotSummary's members, the block storage API's extended
// attributes (project, progress) and cairn's FailReason, which its
// client reads (with MembersHeader).
type Snapshot struct {
	ID          string  `json:"id"`
	VolumeID    string  `json:"volume_id"`
	Name        string  `json:"name"`
	Description string  `json:"description"`
	Size        int64   `json:"size"`
	Status      string  `json:"status"`
	FailReason  *string `json:"fail_reason,omitempty"`
	ProjectID   string  `json:"os-extended-snapshot-attributes:project_id"`
	// Progress is "0%" until the snapshot is made (creating, or error
	// when taking it failed), "100%" once it is, whatever its status.
	Progress string `json:"os-extended-snapshot-attributes:progress"`
	// Metadata is as a volume's: {} when there is none.
	Metadata  map[string]string `json:"metadata"`
	CreatedAt time.Time         `json:"created_at"`
	UpdatedAt time.Time         `json:"updated_at"`
}

// SnapshotSummary is a snapshot in the answer to a create and in the
// list without details: the block storage API's summary of a snapshot,
// without Snapshot's project, progress and fail reason.
type SnapshotSummary struct {
	ID          string            `json:"id"`
	VolumeID    string            `json:"volume_id"`
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Size        int64             `json:"size"`
	Status      string            `json:"status"`
	Metadata    map[string]string `json:"metadata"`
	CreatedAt   time.Time         `json:"created_at"`
	UpdatedAt   time.Time         `json:"updated_at"`
}

// Backup is a backup as the API shows it (show and the detailed list):
// the block storage API's members and cairn's own (StoredBytes,
// ParentID), which its command shows (with MembersHeader). The answers to a create and an
// import are a Summary.
type Backup struct {
	ID                  string  `json:"id"`
	Name                string  `json:"name"`
	Description         string  `json:"description"`
	VolumeID            string  `json:"volume_id"`
	SnapshotID          *string `json:"snapshot_id"`
	Container           string  `json:"container"`
	Status              string  `json:"status"`
	FailReason          *string `json:"fail_reason"`
	Size                int64   `json:"size"`
	ObjectCount         int64   `json:"object_count"`
	StoredBytes         *int64  `json:"stored_bytes,omitempty"`
	IsIncremental       bool    `json:"is_incremental"`
	HasDependentBackups bool    `json:"has_dependent_backups"`
	ParentID            *string `json:"parent_id,omitempty"`
	// Protected, Verification and Drill are cairn's marks, in show's
	// answer with MembersHeader.
	Protected    *bool              `json:"protected,omitempty"`
	Verification *cairn.BackupCheck `json:"verification,omitempty"`
	Drill        *cairn.BackupCheck `json:"drill,omitempty"`
	// VerifiedAt and VerifyState repeat Verification's time and state
	// at the top level, for a list view or a dashboard's column.
	VerifiedAt    *time.Time `json:"verified_at,omitempty"`
	VerifyState   string     `json:"verify_state,omitempty"`
	DataTimestamp time.Time  `json:"data_timestamp"`
	ProjectID     string     `json:"os-backup-project-attr:project_id"`
	Links         []Link     `json:"links"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
}

// Summary is a volume or backup in a list without details, and a backup
// in the answer to a create or an import: its ID, name and links.
type Summary struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Links []Link `json:"links"`
}

// Link is a link: a resource's self and bookmark links, a list's next
// page, a version's documents.
type Link struct {
	Rel  string `json:"rel"`
	Href string `json:"href"`
	Type string `json:"type,omitempty"`
}

// APIVersion is one version in the block storage API's versions
// document (GET / and GET /v3/): Version is the highest microversion
// served, MinVersion the lowest.
type APIVersion struct {
	ID         string      `json:"id"`
	Status     string      `json:"status"`
	Version    string      `json:"version"`
	MinVersion string      `json:"min_version"`
	Updated    string      `json:"updated"`
	Links      []Link      `json:"links"`
	MediaTypes []MediaType `json:"media-types"`
}

// MediaType is a media type a version is served in.
type MediaType struct {
	Base string `json:"base"`
	Type string `json:"type"`
}

// TokenInfo is GET /v3/auth/token: whose token this is.
type TokenInfo struct {
	ProjectID string `json:"project_id"`
	Admin     bool   `json:"admin"`
}

// LimitsAnswer is GET /limits ("limits"): the block storage API's
// shape. Rate is always empty: cairn has no rate limits.
type LimitsAnswer struct {
	Rate     []json.RawMessage `json:"rate"`
	Absolute AbsoluteLimits    `json:"absolute"`
}

// AbsoluteLimits is a project's quotas (max*, -1 for unlimited) and what
// it uses of them (total*), named as the block storage API names them.
type AbsoluteLimits struct {
	MaxTotalVolumes          int64 `json:"maxTotalVolumes"`
	MaxTotalSnapshots        int64 `json:"maxTotalSnapshots"`
	MaxTotalVolumeGigabytes  int64 `json:"maxTotalVolumeGigabytes"`
	MaxTotalBackups          int64 `json:"maxTotalBackups"`
	MaxTotalBackupGigabytes  int64 `json:"maxTotalBackupGigabytes"`
	TotalVolumesUsed         int64 `json:"totalVolumesUsed"`
	TotalGigabytesUsed       int64 `json:"totalGigabytesUsed"`
	TotalSnapshotsUsed       int64 `json:"totalSnapshotsUsed"`
	TotalBackupsUsed         int64 `json:"totalBackupsUsed"`
	TotalBackupGigabytesUsed int64 `json:"totalBackupGigabytesUsed"`
}

// NewLimitsAnswer is the answer of a project's quotas and usage.
func NewLimitsAnswer(l Limits) LimitsAnswer {
	q, u := l.Quota, l.Usage
	return LimitsAnswer{Rate: []json.RawMessage{}, Absolute: AbsoluteLimits{
		MaxTotalVolumes: q.Volumes, MaxTotalSnapshots: q.Snapshots, MaxTotalVolumeGigabytes: q.Gigabytes,
		MaxTotalBackups: q.Backups, MaxTotalBackupGigabytes: q.BackupGigabytes,
		TotalVolumesUsed: u.Volumes, TotalGigabytesUsed: u.Gigabytes, TotalSnapshotsUsed: u.Snapshots,
		TotalBackupsUsed: u.Backups, TotalBackupGigabytesUsed: u.BackupGigabytes}}
}

// Limits is a project's quotas and what it uses of them, as the Go
// client returns them (read from a LimitsAnswer) and the cairn command
// prints them. It is not an answer's shape.
type Limits struct {
	Quota cairn.Quota `json:"quota"`
	Usage cairn.Usage `json:"usage"`
}

// Limits returns the quotas and usage the absolute limits hold.
func (a AbsoluteLimits) Limits() Limits {
	return Limits{
		Quota: cairn.Quota{Volumes: a.MaxTotalVolumes, Gigabytes: a.MaxTotalVolumeGigabytes, Snapshots: a.MaxTotalSnapshots,
			Backups: a.MaxTotalBackups, BackupGigabytes: a.MaxTotalBackupGigabytes},
		Usage: cairn.Usage{Volumes: a.TotalVolumesUsed, Gigabytes: a.TotalGigabytesUsed, Snapshots: a.TotalSnapshotsUsed,
			Backups: a.TotalBackupsUsed, BackupGigabytes: a.TotalBackupGigabytesUsed},
	}
}

// Attachment is the os-attach action's answer: where the volume is
// exported.
type Attachment struct {
	VolumeID string `json:"volume_id"`
	// ExportName is the NBD export's name.
	ExportName string `json:"export_name"`
	// URIs are NBD URIs (nbd+unix, nbd) a client connects to.
	URIs []string `json:"uris"`
}

// RestoreResult is a restore's answer: the volume it writes.
type RestoreResult struct {
	BackupID   string `json:"backup_id"`
	VolumeID   string `json:"volume_id"`
	VolumeName string `json:"volume_name"`
}

// BackupRecord is export_record's answer and import_record's body.
type BackupRecord struct {
	BackupService string `json:"backup_service"`
	BackupURL     string `json:"backup_url"`
}

// Fault is the content of an error answer, which is a JSON object with
// one member named after the error (badRequest, itemNotFound, ...):
// {"itemNotFound": {"code": 404, "message": "..."}}.
type Fault struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// Requests.

// VolumeCreateRequest is POST /volumes.
type VolumeCreateRequest struct {
	Volume VolumeCreate `json:"volume"`
}

// VolumeCreate is the volume of a VolumeCreateRequest.
type VolumeCreate struct {
	Size        *int64            `json:"size"`
	Name        string            `json:"name"`
	Description string            `json:"description"`
	SnapshotID  string            `json:"snapshot_id"`
	BackupID    string            `json:"backup_id"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	// The block storage API's members for what cairn does not have, or
	// has one of: the cinder and openstack commands send every one of
	// them, null, with each create. They must be null or "" (absent,
	// omitempty here), or name the one there is (AvailabilityZone);
	// another value is refused (cairn.ErrUnsupported). VolumeType is a
	// volume type's ID or name.
	VolumeType         *string `json:"volume_type,omitempty"`
	AvailabilityZone   *string `json:"availability_zone,omitempty"`
	ConsistencyGroupID *string `json:"consistencygroup_id,omitempty"`
	ImageRef           *string `json:"imageRef,omitempty"`
	// SourceVolID clones a volume of the project (available or in-use);
	// null or "" makes none.
	SourceVolID *string `json:"source_volid,omitempty"`
}

// VolumeUpdateRequest is PUT /volumes/{id}.
type VolumeUpdateRequest struct {
	Volume VolumeUpdate `json:"volume"`
}

// VolumeUpdate is the volume of a VolumeUpdateRequest (nil: unchanged).
// Metadata replaces all of the volume's; {} removes it (omitempty leaves
// out only a nil pointer, so a client's {} is sent).
//
// DisplayName and DisplayDescription are the block storage API's older
// names of Name and Description, which it still accepts and the
// openstack command sends (`openstack volume set --name`); a request
// gives each at most under one of its names.
type VolumeUpdate struct {
	Name               *string            `json:"name"`
	Description        *string            `json:"description"`
	Metadata           *map[string]string `json:"metadata,omitempty"`
	DisplayName        *string            `json:"display_name,omitempty"`
	DisplayDescription *string            `json:"display_description,omitempty"`
}

// AllMetadata is all of a volume's or snapshot's metadata, its metadata
// sub-resource: the answer of GET /volumes/{id}/metadata (and of
// /snapshots/{id}/metadata), and the body and answer of POST there, which
// adds the given items to the resource's (overwriting those of the same
// keys), and of PUT, which replaces all of them. The answers hold all the
// resource has after the change: {} (never null) for none.
type AllMetadata struct {
	Metadata map[string]string `json:"metadata"`
}

// MetadataItem is one item of a volume's or snapshot's metadata, a map
// of one key: the answer of GET /volumes/{id}/metadata/{key} (and the
// snapshots'), and the body and answer of PUT there, whose one key must
// be the URL's.
type MetadataItem struct {
	Meta map[string]string `json:"meta"`
}

// VolumeActionRequest is POST /volumes/{id}/action: exactly one action.
type VolumeActionRequest struct {
	Extend      *ExtendAction      `json:"os-extend"`
	Attach      *struct{}          `json:"os-attach"`
	Detach      *struct{}          `json:"os-detach"`
	ResetStatus *ResetStatusAction `json:"os-reset_status"`
	// The actions without arguments the clients send as null (the
	// cinder command) or {} (tempest): os-reserve (available →
	// attaching), os-unreserve (back), os-begin_detaching (in-use →
	// detaching), os-roll_detaching (back) and the admin's
	// os-force_delete.
	Reserve        Given `json:"os-reserve,omitzero"`
	Unreserve      Given `json:"os-unreserve,omitzero"`
	BeginDetaching Given `json:"os-begin_detaching,omitzero"`
	RollDetaching  Given `json:"os-roll_detaching,omitzero"`
	ForceDelete    Given `json:"os-force_delete,omitzero"`
	// SetBootable is os-set_bootable, UpdateReadonlyFlag
	// os-update_readonly_flag.
	SetBootable        *SetBootableAction `json:"os-set_bootable,omitempty"`
	UpdateReadonlyFlag *ReadonlyAction    `json:"os-update_readonly_flag,omitempty"`
	// Retype is os-retype: another volume type (its name or ID).
	Retype *RetypeAction `json:"os-retype,omitempty"`
}

// RetypeAction is the os-retype action. cairn has one backend, so no
// data moves whatever MigrationPolicy ("never" or "on-demand") says.
type RetypeAction struct {
	NewType         string  `json:"new_type"`
	MigrationPolicy *string `json:"migration_policy,omitempty"`
}

// Given is an action without arguments: given with null or {} as its
// value, absent otherwise. Any other value is refused.
type Given struct {
	Given bool `json:"-"`
}

// UnmarshalJSON takes null or an object without members.
func (g *Given) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("want null or {}: %w", err)
	}
	for k := range m {
		return fmt.Errorf("want null or {}, not a member %q", k)
	}
	g.Given = true
	return nil
}

// SetBootableAction is the os-set_bootable action: Bootable is a JSON
// boolean, or a string the block storage API takes as one ("true",
// "False", "1", "off", …).
type SetBootableAction struct {
	Bootable json.RawMessage `json:"bootable"`
}

// ReadonlyAction is the os-update_readonly_flag action: Readonly as
// SetBootableAction's Bootable.
type ReadonlyAction struct {
	Readonly json.RawMessage `json:"readonly"`
}

// Flag reads a boolean as the block storage API takes it: true or
// false, or a string of one of its spellings, in any case (true, t,
// yes, y, on, 1; false, f, no, n, off, 0). what names it in errors;
// ok is false when b is absent.
func Flag(what string, b json.RawMessage) (v, ok bool, err error) {
	if len(b) == 0 {
		return false, false, nil
	}
	var x any
	if err := json.Unmarshal(b, &x); err != nil {
		return false, false, fmt.Errorf("%s: %w", what, err)
	}
	switch x := x.(type) {
	case bool:
		return x, true, nil
	case string:
		switch strings.ToLower(x) {
		case "true", "t", "yes", "y", "on", "1":
			return true, true, nil
		case "false", "f", "no", "n", "off", "0":
			return false, true, nil
		}
	case nil:
		return false, false, nil
	}
	return false, false, fmt.Errorf("%s %s: want true or false", what, b)
}

// ExtendAction is the os-extend action.
type ExtendAction struct {
	NewSize int64 `json:"new_size"`
}

// ResetStatusAction is the os-reset_status action. AttachStatus
// (attached, detached) and MigrationStatus are a volume's only.
type ResetStatusAction struct {
	Status          string  `json:"status"`
	AttachStatus    *string `json:"attach_status,omitempty"`
	MigrationStatus *string `json:"migration_status,omitempty"`
}

// ResetStatusRequest is POST .../action of snapshots and backups, with
// os-reset_status.
type ResetStatusRequest struct {
	ResetStatus *ResetStatusAction `json:"os-reset_status"`
}

// BackupActionRequest is POST /backups/{id}/action: the admin's
// os-reset_status, or cairn-protect.
type BackupActionRequest struct {
	ResetStatus *ResetStatusAction `json:"os-reset_status,omitempty"`
	Protect     *ProtectAction     `json:"cairn-protect,omitempty"`
}

// ProtectAction protects a backup from deletion, or stops protecting it.
type ProtectAction struct {
	Protected bool `json:"protected"`
}

// SnapshotActionRequest is POST /snapshots/{id}/action: one of the
// admin's os-reset_status and os-force_delete, or
// os-update_snapshot_status.
type SnapshotActionRequest struct {
	ResetStatus  *ResetStatusAction          `json:"os-reset_status,omitempty"`
	ForceDelete  Given                       `json:"os-force_delete,omitzero"`
	UpdateStatus *SnapshotUpdateStatusAction `json:"os-update_snapshot_status,omitempty"`
}

// SnapshotUpdateStatusAction is os-update_snapshot_status: the status a
// snapshot made outside the service reached, and its progress.
type SnapshotUpdateStatusAction struct {
	Status   string  `json:"status"`
	Progress *string `json:"progress,omitempty"`
}

// SnapshotCreateRequest is POST /snapshots.
type SnapshotCreateRequest struct {
	Snapshot SnapshotCreate `json:"snapshot"`
}

// SnapshotCreate is the snapshot of a SnapshotCreateRequest.
type SnapshotCreate struct {
	// VolumeID is raw to tell null from absent, as the block storage
	// API does: a missing volume_id is refused (400), a null one is
	// looked up and not found (404; tempest's negative test sends null).
	VolumeID    json.RawMessage   `json:"volume_id,omitempty"`
	Name        *string           `json:"name,omitempty"`
	Description *string           `json:"description,omitempty"`
	Force       bool              `json:"force"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	// DisplayName and DisplayDescription are Name's and Description's
	// older names, which some clients (tempest) still send.
	DisplayName        *string `json:"display_name,omitempty"`
	DisplayDescription *string `json:"display_description,omitempty"`
}

// SnapshotUpdateRequest is PUT /snapshots/{id}.
type SnapshotUpdateRequest struct {
	Snapshot SnapshotUpdate `json:"snapshot"`
}

// SnapshotUpdate is the snapshot of a SnapshotUpdateRequest (nil:
// unchanged): a new name or description, under either of its names as
// in VolumeUpdate.
type SnapshotUpdate struct {
	Name               *string `json:"name"`
	Description        *string `json:"description"`
	DisplayName        *string `json:"display_name,omitempty"`
	DisplayDescription *string `json:"display_description,omitempty"`
}

// BackupCreateRequest is POST /backups.
type BackupCreateRequest struct {
	Backup BackupCreate `json:"backup"`
}

// BackupCreate is the backup of a BackupCreateRequest.
type BackupCreate struct {
	VolumeID    string `json:"volume_id"`
	SnapshotID  string `json:"snapshot_id"`
	Incremental bool   `json:"incremental"`
	Container   string `json:"container"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Force       bool   `json:"force"`
}

// BackupUpdateRequest is PUT /backups/{id} (from microversion 3.9).
type BackupUpdateRequest struct {
	Backup BackupUpdate `json:"backup"`
}

// BackupUpdate is the backup of a BackupUpdateRequest (nil: unchanged).
type BackupUpdate struct {
	Name        *string `json:"name"`
	Description *string `json:"description"`
}

// RestoreRequest is POST /backups/{id}/restore.
type RestoreRequest struct {
	Restore Restore `json:"restore"`
}

// Restore is the restore of a RestoreRequest: into volume VolumeID, or
// into a new volume called Name when VolumeID is "".
type Restore struct {
	VolumeID string `json:"volume_id"`
	Name     string `json:"name"`
}

// ImportRecordRequest is POST /backups/import_record.
type ImportRecordRequest struct {
	BackupRecord *BackupRecord `json:"backup-record"`
}
