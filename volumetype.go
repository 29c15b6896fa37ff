package cairn

import "time"

// VolumeType is a named set of extra specs an admin defines, as the
// block storage API has them. cairn has one backend, so a type chooses
// nothing about where or how a volume is stored: the service stores and
// shows it, and records on each volume the type it was created with
// (Volume.VolumeTypeID).
//
// A public type is usable by every project; a private one by admins and
// the projects given access to it (the catalog's type access rows).
type VolumeType struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	IsPublic    bool   `json:"is_public"`
	// ExtraSpecs are the admin's key/value pairs; nil when there are
	// none (the catalog keeps no difference between none and empty).
	ExtraSpecs map[string]string `json:"extra_specs,omitempty"`
	CreatedAt  time.Time         `json:"created_at"`
	UpdatedAt  time.Time         `json:"updated_at"`
}

// The default volume type: made by the catalog's migration with a fixed
// ID, as the block storage API makes its __DEFAULT__ type, and the type
// of every volume created without one (and of every volume made before
// types existed). It cannot be deleted, renamed or made private.
const (
	DefaultVolumeTypeID          = "51722b98-91c6-49e4-8fd7-d5c49e4be5e7"
	DefaultVolumeTypeName        = "__DEFAULT__"
	DefaultVolumeTypeDescription = "Default Volume Type"
)
