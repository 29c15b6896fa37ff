package cairn

import (
	"slices"
	"time"
)

// Identity is who an identity service (Keystone) says a token belongs
// to: a user acting in one project with some roles.
type Identity struct {
	UserID      string
	UserName    string
	ProjectID   string
	ProjectName string
	// Roles are the role names the token carries in ProjectID.
	Roles []string
	// ExpiresAt is when the token stops being valid.
	ExpiresAt time.Time
}

// HasRole reports whether the identity carries role name.
func (id Identity) HasRole(name string) bool {
	return slices.Contains(id.Roles, name)
}
