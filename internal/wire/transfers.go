package wire

import "time"

// The block storage API's volume transfers (os-volume-transfer).

// TransferCreateRequest is the body of POST /os-volume-transfer.
type TransferCreateRequest struct {
	Transfer struct {
		VolumeID string  `json:"volume_id"`
		Name     *string `json:"name"`
	} `json:"transfer"`
}

// TransferAcceptRequest is the body of POST
// /os-volume-transfer/{id}/accept.
type TransferAcceptRequest struct {
	Accept struct {
		AuthKey string `json:"auth_key"`
	} `json:"accept"`
}

// Transfer is a transfer as show and the detailed list give it; the
// create's answer adds AuthKey, the summary list and the accept's answer
// lack CreatedAt.
type Transfer struct {
	ID        string     `json:"id"`
	VolumeID  string     `json:"volume_id"`
	Name      *string    `json:"name"`
	AuthKey   string     `json:"auth_key,omitempty"`
	CreatedAt *time.Time `json:"created_at,omitempty"`
	Links     []Link     `json:"links"`
}
