package cairn

import "time"

// VolumeTransfer is a volume offered by its project to another: whoever
// holds the transfer's ID and key may accept it into their project (the
// block storage API's volume transfers). The volume is
// awaiting-transfer meanwhile.
type VolumeTransfer struct {
	ID        string `json:"id"`
	ProjectID string `json:"project_id"`
	VolumeID  string `json:"volume_id"`
	Name      string `json:"name"`
	// Salt and KeyHash keep the key: hex SHA-256 of salt and key. The
	// key itself is shown once, to its creator.
	Salt      string    `json:"-"`
	KeyHash   string    `json:"-"`
	CreatedAt time.Time `json:"created_at"`
}
