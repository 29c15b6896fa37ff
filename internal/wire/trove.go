package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/cairnproject/cairn"
)

// The database API, in OpenStack Trove's shapes under /v1.0/{project_id}/:
// instances, backups, datastores, flavors and backup strategies. Field
// names are Trove's (hence flavorRef, restorePoint, locationRef); members
// cairn adds are named in the block storage API's style (fail_reason,
// container, strategy) and ignored by Trove's clients.

// HostFlavorID is the one flavor cairn offers. A Trove flavor sizes the
// virtual machine an instance runs in; a cairn instance is a database
// process on the service's host, sharing its CPUs and memory, so there is
// nothing to choose. Trove's clients require a flavor to create an
// instance, and this is the one they can name.
const HostFlavorID = "host"

// Instance is a database instance as the API shows it.
type Instance struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status string `json:"status"`
	// OperatingStatus is the database process's state, "" before it is
	// started.
	OperatingStatus string            `json:"operating_status"`
	FailReason      *string           `json:"fail_reason"`
	Fault           *InstanceFault    `json:"fault,omitempty"`
	Datastore       InstanceDatastore `json:"datastore"`
	Flavor          InstanceFlavor    `json:"flavor"`
	Volume          InstanceVolume    `json:"volume"`
	// IP and Addresses say where the database listens, once it does
	// (Trove's clients print ip; addresses carries the port).
	IP        []string          `json:"ip,omitempty"`
	Addresses []InstanceAddress `json:"addresses,omitempty"`
	Access    InstanceAccess    `json:"access"`
	// BackupID is the backup the instance was restored from.
	BackupID  *string   `json:"backup_id"`
	ProjectID string    `json:"project_id"`
	Links     []Link    `json:"links"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
	// RecoverableWindow is the time a point-in-time restore can reach,
	// absent when none; Archive the state of the instance's log archive,
	// absent when it has none (cairn's additions).
	RecoverableWindow *cairn.TimeWindow   `json:"recoverable_window,omitempty"`
	Archive           *cairn.ArchiveState `json:"archive,omitempty"`
	// RestorePoints sums up the restore points a recover in place can
	// start from, absent when there are none (cairn's addition).
	RestorePoints *cairn.RestorePointSummary `json:"restore_points,omitempty"`
	// Recovery is the instance's last recover in place, absent when it
	// has had none (cairn's addition).
	Recovery *cairn.InstanceRecovery `json:"recovery,omitempty"`
	// Metadata is the instance's key/value pairs, absent when it has
	// none (what a backup policy's tag selects instances by).
	Metadata map[string]string `json:"metadata,omitempty"`
}

// RecoverRequest is POST /instances/{id}/recover: bring the running
// instance back to a point in time, in place (cairn's addition, in the
// shape Trove's design for it gave).
type RecoverRequest struct {
	Recovery struct {
		PointInTime *time.Time `json:"point_in_time"`
		// Backup names the backup to start from; absent for the latest
		// that ends by the time.
		Backup string `json:"backup,omitempty"`
	} `json:"recovery"`
}

// Recovery answers a recover request and an undo.
type Recovery struct {
	ID                  string            `json:"id"`
	InstanceID          string            `json:"instance_id"`
	Name                string            `json:"name"`
	Status              string            `json:"status"`
	InstanceStatus      string            `json:"instance_status"`
	Datastore           InstanceDatastore `json:"datastore"`
	RecoveredFromBackup string            `json:"recovered_from_backup"`
	PointInTime         time.Time         `json:"point_in_time"`
	SafetySnapshot      string            `json:"safety_snapshot,omitempty"`
}

// InstanceAction is POST /instances/{id}/action: Trove's instance
// actions, one per request, named by the body's only key. cairn serves
// undo_recover.
type InstanceAction map[string]json.RawMessage

// InstanceFault is why an instance is in ERROR, in Trove's shape.
type InstanceFault struct {
	Message string    `json:"message"`
	Created time.Time `json:"created"`
}

// InstanceDatastore is an instance's datastore and version (their names).
type InstanceDatastore struct {
	Type    string `json:"type"`
	Version string `json:"version"`
}

// InstanceFlavor is the flavor of an instance: always HostFlavorID.
type InstanceFlavor struct {
	ID    string `json:"id"`
	Links []Link `json:"links"`
}

// InstanceVolume is an instance's volume: its size in GiB and, once its
// file system is mounted, the GiB in use.
type InstanceVolume struct {
	Size int64    `json:"size"`
	Used *float64 `json:"used,omitempty"`
}

// InstanceAddress is an address the database listens on.
type InstanceAddress struct {
	Address string `json:"address"`
	// Type is "private": cairn's databases listen on an address of the
	// service's host, not on a tenant network.
	Type string `json:"type"`
	Port int    `json:"port"`
}

// InstanceAccess is who may reach an instance: cairn's instances are
// never public.
type InstanceAccess struct {
	IsPublic bool `json:"is_public"`
}

// DatabaseBackup is a database backup as the API shows it.
type DatabaseBackup struct {
	ID          string  `json:"id"`
	Name        string  `json:"name"`
	Description string  `json:"description"`
	InstanceID  string  `json:"instance_id"`
	Status      string  `json:"status"`
	FailReason  *string `json:"fail_reason"`
	ParentID    *string `json:"parent_id"`
	// Size is in GiB (Trove's unit), null until the backup is COMPLETED.
	Size *float64 `json:"size"`
	// LocationRef says where the backup's data is, null until stored.
	LocationRef *string `json:"locationRef"`
	Strategy    string  `json:"strategy"`
	Container   string  `json:"container"`
	// DataTimestamp is the instant the backup's data is consistent at,
	// null until taken (cairn's addition).
	DataTimestamp *time.Time      `json:"data_timestamp"`
	Datastore     BackupDatastore `json:"datastore"`
	ProjectID     string          `json:"project_id"`
	Created       time.Time       `json:"created"`
	Updated       time.Time       `json:"updated"`
	// Protected, Verification and Drill are cairn's marks, in show's
	// answer only: a protected backup is never deleted; the outcomes of
	// the backup's last verification and restore drill.
	Protected    *bool              `json:"protected,omitempty"`
	Verification *cairn.BackupCheck `json:"verification,omitempty"`
	Drill        *cairn.BackupCheck `json:"drill,omitempty"`
	// VerifiedAt and VerifyState repeat Verification's time and state.
	VerifiedAt  *time.Time `json:"verified_at,omitempty"`
	VerifyState string     `json:"verify_state,omitempty"`
}

// BackupDatastore is the datastore and version a backup was taken of.
type BackupDatastore struct {
	Type      string `json:"type"`
	Version   string `json:"version"`
	VersionID string `json:"version_id"`
}

// Datastore is a datastore (a database engine the host runs) with its
// installed versions.
type Datastore struct {
	ID             string             `json:"id"`
	Name           string             `json:"name"`
	DefaultVersion string             `json:"default_version"`
	Links          []Link             `json:"links"`
	Versions       []DatastoreVersion `json:"versions"`
}

// DatastoreVersion is an installed version of a datastore.
type DatastoreVersion struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Datastore is the datastore's ID.
	Datastore string `json:"datastore"`
	// Version is the full version installed.
	Version string `json:"version"`
	Active  bool   `json:"active"`
	Links   []Link `json:"links"`
}

// Flavor is a flavor: only HostFlavorID exists.
type Flavor struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Links       []Link `json:"links"`
}

// BackupStrategy is a project's or an instance's backup defaults, in
// Trove's shape (swift_container holds the container, whatever the store).
type BackupStrategy struct {
	ProjectID      string `json:"project_id"`
	InstanceID     string `json:"instance_id"`
	Backend        string `json:"backend"`
	SwiftContainer string `json:"swift_container"`
	Strategy       string `json:"strategy"`
}

// Version is an entry of a version document.
type Version struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Links  []Link `json:"links"`
}

// Requests.

// InstanceCreateRequest is POST /instances.
type InstanceCreateRequest struct {
	Instance InstanceCreate `json:"instance"`
}

// InstanceCreate is the instance of an InstanceCreateRequest. Trove's
// clients always send access (not public) and volume.type (null).
type InstanceCreate struct {
	Name string `json:"name"`
	// FlavorRef is HostFlavorID or a link ending in it; absent means
	// HostFlavorID.
	FlavorRef    *FlavorRef               `json:"flavorRef"`
	Datastore    *InstanceDatastoreCreate `json:"datastore"`
	Volume       *InstanceVolumeCreate    `json:"volume"`
	Databases    []DatabaseCreate         `json:"databases"`
	Users        []UserCreate             `json:"users"`
	RestorePoint *RestorePoint            `json:"restorePoint"`
	Access       *InstanceAccessCreate    `json:"access"`
	// Metadata is the new instance's key/value pairs (cairn's addition).
	Metadata map[string]string `json:"metadata"`
}

// InstanceMetadata is an instance's metadata, or one item of it, as
// Trove's metadata calls answer it: {"metadata": {KEY: VALUE, ...}}.
type InstanceMetadata struct {
	Metadata map[string]string `json:"metadata"`
}

// InstanceMetadataItemRequest is the body of Trove's calls on one item of
// an instance's metadata (POST, PUT and PATCH
// /instances/{id}/metadata/{key}).
type InstanceMetadataItemRequest struct {
	Metadata InstanceMetadataItem `json:"metadata"`
}

// InstanceMetadataItem is an item's new value, and for PUT its new key.
// The client sends any JSON value (its CLI parses the argument as JSON
// when it can): a string is kept as it is, any other value as its JSON
// text.
type InstanceMetadataItem struct {
	Key   *string         `json:"key"`
	Value json.RawMessage `json:"value"`
}

// Text is the value as metadata stores it: a JSON string's text, or any
// other JSON value's compact form; an error for a missing or null value.
func (m InstanceMetadataItem) Text() (string, error) {
	v := bytes.TrimSpace(m.Value)
	if len(v) == 0 || bytes.Equal(v, []byte("null")) {
		return "", errors.New("metadata.value is required")
	}
	if v[0] == '"' {
		var s string
		err := json.Unmarshal(v, &s)
		return s, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, v); err != nil {
		return "", err
	}
	return out.String(), nil
}

// FlavorRef is a flavor's ID or link. Trove's API takes a string or an
// integer; an integer is kept in its decimal form.
type FlavorRef string

// UnmarshalJSON implements json.Unmarshaler: a string or an integer.
func (f *FlavorRef) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = FlavorRef(s)
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("flavorRef %s: want a string or an integer", b)
	}
	*f = FlavorRef(strconv.FormatInt(n, 10))
	return nil
}

// InstanceDatastoreCreate names the datastore (type: its name or ID) and
// version (its name or ID; absent for the default) of a new instance.
type InstanceDatastoreCreate struct {
	Type    string `json:"type"`
	Version string `json:"version"`
}

// InstanceVolumeCreate is the volume of a new instance: Size in GiB.
// Type must be null or "": cairn has no volume types.
type InstanceVolumeCreate struct {
	Size *int64  `json:"size"`
	Type *string `json:"type"`
}

// DatabaseCreate is a database to create in a new instance.
type DatabaseCreate struct {
	Name         string `json:"name"`
	CharacterSet string `json:"character_set"`
	Collate      string `json:"collate"`
}

// UserCreate is a user to create in a new instance, with all rights on
// Databases.
type UserCreate struct {
	Name      string         `json:"name"`
	Password  string         `json:"password"`
	Host      string         `json:"host"`
	Databases []DatabaseName `json:"databases"`
}

// DatabaseName names a database.
type DatabaseName struct {
	Name string `json:"name"`
}

// RestorePoint names the backup a new instance is restored from, or the
// instant it is restored to (cairn's addition, with the instance to
// restore when no backup is named).
type RestorePoint struct {
	BackupRef   string     `json:"backupRef,omitempty"`
	PointInTime *time.Time `json:"point_in_time,omitempty"`
	Instance    string     `json:"instance,omitempty"`
}

// InstanceAccessCreate is Trove's access of a new instance. Only a
// private instance can be made: IsPublic must be false and AllowedCIDRs
// empty.
type InstanceAccessCreate struct {
	IsPublic     bool     `json:"is_public"`
	AllowedCIDRs []string `json:"allowed_cidrs"`
}

// DatabaseBackupCreateRequest is POST /backups.
type DatabaseBackupCreateRequest struct {
	Backup DatabaseBackupCreate `json:"backup"`
}

// DatabaseBackupCreate is the backup of a DatabaseBackupCreateRequest.
// Container and SwiftContainer (Trove's name, which its clients send) are
// the same thing; if both are given they must agree.
type DatabaseBackupCreate struct {
	Name        string `json:"name"`
	Instance    string `json:"instance"`
	Description string `json:"description"`
	ParentID    string `json:"parent_id"`
	// Incremental is 0 or 1, as Trove's API has it.
	Incremental    *int   `json:"incremental"`
	Strategy       string `json:"strategy"`
	Container      string `json:"container"`
	SwiftContainer string `json:"swift_container"`
}

// BackupStrategyCreateRequest is POST /backup_strategies.
type BackupStrategyCreateRequest struct {
	BackupStrategy BackupStrategyCreate `json:"backup_strategy"`
}

// BackupStrategyCreate is the backup strategy of a
// BackupStrategyCreateRequest: the project's (no InstanceID) or an
// instance's. Container and SwiftContainer are the same thing, as in
// DatabaseBackupCreate.
type BackupStrategyCreate struct {
	InstanceID     string `json:"instance_id"`
	Strategy       string `json:"strategy"`
	Container      string `json:"container"`
	SwiftContainer string `json:"swift_container"`
}
