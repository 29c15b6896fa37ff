package dbagent

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/cairnproject/cairn"
)

// MaxNameLen is the longest database or user name: PostgreSQL's limit
// (NAMEDATALEN-1), which MariaDB's limits exceed.
const MaxNameLen = 63

// MaxPasswordLen is the longest password accepted.
const MaxPasswordLen = 128

// ValidName checks a database or user name: a letter or underscore, then
// letters, digits, underscores and hyphens, at most MaxNameLen bytes, and
// none of reserved (compared case-insensitively; a reserved entry ending
// in '*' is a prefix). Names are still quoted wherever they reach SQL;
// the rule keeps them portable between the engines and file systems.
func ValidName(kind, name string, reserved []string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("%s name %q: must have 1 to %d characters: %w", kind, name, MaxNameLen, cairn.ErrInvalid)
	}
	for i, c := range name {
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_'
		if i == 0 && !letter || !letter && !('0' <= c && c <= '9') && c != '-' {
			return fmt.Errorf("%s name %q: only letters, digits, '_' and '-', starting with a letter or '_': %w", kind, name, cairn.ErrInvalid)
		}
	}
	lower := strings.ToLower(name)
	for _, r := range reserved {
		r = strings.ToLower(r)
		if p, ok := strings.CutSuffix(r, "*"); ok && strings.HasPrefix(lower, p) || lower == r {
			return fmt.Errorf("%s name %q is reserved: %w", kind, name, cairn.ErrInvalid)
		}
	}
	return nil
}

// ValidPassword checks a password: 1 to MaxPasswordLen bytes of UTF-8
// without control characters.
func ValidPassword(user, password string) error {
	if password == "" || len(password) > MaxPasswordLen {
		return fmt.Errorf("password of %s: must have 1 to %d bytes: %w", user, MaxPasswordLen, cairn.ErrInvalid)
	}
	if !utf8.ValidString(password) {
		return fmt.Errorf("password of %s: not UTF-8: %w", user, cairn.ErrInvalid)
	}
	for _, r := range password {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("password of %s: control character: %w", user, cairn.ErrInvalid)
		}
	}
	return nil
}

// ValidCharsetName checks a character set or collation name: letters,
// digits and "_.@-", at most 64 bytes ("utf8mb4_general_ci", "C.UTF-8",
// "und-x-icu", "de_DE@euro"). The server decides whether it knows it.
func ValidCharsetName(kind, name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("%s %q: must have 1 to 64 characters: %w", kind, name, cairn.ErrInvalid)
	}
	for i, c := range name {
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_'
		if i > 0 {
			ok = ok || c == '.' || c == '@' || c == '-'
		}
		if !ok {
			return fmt.Errorf("%s %q: only letters, digits and '_.@-': %w", kind, name, cairn.ErrInvalid)
		}
	}
	return nil
}

// ValidateDatabases checks the databases of one request: names, character
// sets, and no name twice.
func ValidateDatabases(dbs []Database, reserved []string) error {
	seen := map[string]bool{}
	for _, d := range dbs {
		if err := ValidName("database", d.Name, reserved); err != nil {
			return err
		}
		if seen[strings.ToLower(d.Name)] {
			return fmt.Errorf("database %s named twice: %w", d.Name, cairn.ErrInvalid)
		}
		seen[strings.ToLower(d.Name)] = true
		if d.CharacterSet != "" {
			if err := ValidCharsetName("character set", d.CharacterSet); err != nil {
				return err
			}
		}
		if d.Collate != "" {
			if err := ValidCharsetName("collation", d.Collate); err != nil {
				return err
			}
		}
	}
	return nil
}

// ValidateUsers checks the users of one request: names, passwords, the
// databases they are granted, and no user twice.
func ValidateUsers(users []User, reservedUsers, reservedDatabases []string) error {
	seen := map[string]bool{}
	for _, u := range users {
		if err := ValidName("user", u.Name, reservedUsers); err != nil {
			return err
		}
		if seen[strings.ToLower(u.Name)] {
			return fmt.Errorf("user %s named twice: %w", u.Name, cairn.ErrInvalid)
		}
		seen[strings.ToLower(u.Name)] = true
		if err := ValidPassword(u.Name, u.Password); err != nil {
			return err
		}
		for _, d := range u.Databases {
			if err := ValidName("database", d, reservedDatabases); err != nil {
				return fmt.Errorf("user %s: %w", u.Name, err)
			}
		}
	}
	return nil
}
