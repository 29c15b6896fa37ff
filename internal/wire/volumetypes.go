package wire

import "encoding/json"

// Volume types, in the block storage API's shapes (types, their extra
// specs and access). The answers differ by call, as that API's do, and
// tempest's schemas hold them to it: a create answers without
// qos_specs_id, an update without os-volume-type-access:is_public either.

// VolumeTypeUpdated is a volume type in the answer to an update.
type VolumeTypeUpdated struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Description is null for none.
	Description *string `json:"description"`
	IsPublic    bool    `json:"is_public"`
	// ExtraSpecs are all of them for an admin; for other callers only
	// those meant for users ({} for none).
	ExtraSpecs map[string]string `json:"extra_specs"`
}

// VolumeTypeCreated is a volume type in the answer to a create.
type VolumeTypeCreated struct {
	VolumeTypeUpdated
	// AccessIsPublic is IsPublic under the type access extension's name.
	AccessIsPublic bool `json:"os-volume-type-access:is_public"`
}

// VolumeTypeInfo is a volume type as shows and lists answer it.
type VolumeTypeInfo struct {
	VolumeTypeCreated
	// QoSSpecsID is always null: cairn has no QoS specs.
	QoSSpecsID *string `json:"qos_specs_id"`
}

// VolumeTypeCreateRequest is the body of POST /types.
type VolumeTypeCreateRequest struct {
	VolumeType VolumeTypeCreate `json:"volume_type"`
}

// VolumeTypeCreate is a new volume type. Name is required;
// AccessIsPublic is a boolean (or a string Flag takes), true when left
// out.
type VolumeTypeCreate struct {
	Name           *string           `json:"name"`
	Description    *string           `json:"description"`
	AccessIsPublic json.RawMessage   `json:"os-volume-type-access:is_public"`
	ExtraSpecs     map[string]string `json:"extra_specs"`
}

// VolumeTypeUpdateRequest is the body of PUT /types/{id}.
type VolumeTypeUpdateRequest struct {
	VolumeType VolumeTypeUpdate `json:"volume_type"`
}

// VolumeTypeUpdate changes what it gives (at least one member); IsPublic
// as VolumeTypeCreate's AccessIsPublic.
type VolumeTypeUpdate struct {
	Name        *string         `json:"name"`
	Description *string         `json:"description"`
	IsPublic    json.RawMessage `json:"is_public"`
}

// ExtraSpecs is the body and answer of the extra specs calls on all of a
// type's extra specs.
type ExtraSpecs struct {
	ExtraSpecs map[string]string `json:"extra_specs"`
}

// VolumeTypeAccess is one project's access to a private type.
type VolumeTypeAccess struct {
	VolumeTypeID string `json:"volume_type_id"`
	ProjectID    string `json:"project_id"`
}

// VolumeTypeAccessList answers GET /types/{id}/os-volume-type-access.
type VolumeTypeAccessList struct {
	VolumeTypeAccess []VolumeTypeAccess `json:"volume_type_access"`
}

// VolumeTypeActionRequest is the body of POST /types/{id}/action: exactly
// one of the two actions.
type VolumeTypeActionRequest struct {
	AddProjectAccess    *ProjectAccess `json:"addProjectAccess,omitempty"`
	RemoveProjectAccess *ProjectAccess `json:"removeProjectAccess,omitempty"`
}

// ProjectAccess names the project an access action is about.
type ProjectAccess struct {
	Project string `json:"project"`
}
