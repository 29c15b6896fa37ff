// Package cairn holds the domain types and sentinel errors shared by every
// layer. It performs no I/O.
package cairn

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
)

// Sentinel errors. Lower layers wrap them with %w and context; the CLI maps
// them to exit codes and the API to status codes, each in one place.
var (
	// ErrNotFound: the named object, backup, key or resource does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: the object or resource already exists and must not be replaced.
	ErrExists = errors.New("already exists")
	// ErrWrongKey: no key in the repository opens with the given password or key file.
	ErrWrongKey = errors.New("wrong password or key file")
	// ErrNotRepository: the location holds no cairn repository.
	ErrNotRepository = errors.New("not a cairn repository")
	// ErrCorrupt: stored bytes failed authentication, a checksum or a structural check.
	ErrCorrupt = errors.New("corrupt data")
	// ErrInvalid: the caller's input is malformed or out of range.
	ErrInvalid = errors.New("invalid argument")
	// ErrConflict: the operation conflicts with the current state (busy, in use, last key).
	ErrConflict = errors.New("conflict")
	// ErrUnsupported: the format version or feature is not supported by this build.
	ErrUnsupported = errors.New("unsupported")
	// ErrUnavailable: a transient failure (timeout, reset, 5xx, throttling);
	// trying again may succeed.
	ErrUnavailable = errors.New("temporarily unavailable")
	// ErrDenied: the store refused the credentials or the operation.
	ErrDenied = errors.New("access denied")
	// ErrGone: data that existed is no longer where it was asked for
	// (a server removed the log an archive still wanted).
	ErrGone = errors.New("gone")
)

// ID is a 128-bit random identifier for backups, keys and sessions.
type ID [16]byte

// NewID returns a random ID.
func NewID() ID {
	var id ID
	if _, err := rand.Read(id[:]); err != nil {
		panic(fmt.Sprintf("cairn: reading random bytes: %v", err))
	}
	return id
}

// String returns the 32-character lower-case hex form.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex characters, for display.
func (id ID) Short() string { return id.String()[:8] }

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// ParseID parses the 32-character hex form.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("id %q: want %d hex characters: %w", s, 2*len(id), ErrInvalid)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("id %q: %w", s, ErrInvalid)
	}
	return id, nil
}

// MarshalText implements encoding.TextMarshaler.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// Extent is a byte range [Offset, Offset+Length) of a volume or image.
type Extent struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// End returns the first byte after the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }
