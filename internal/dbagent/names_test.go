package dbagent

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cairnproject/cairn"
)

func TestValidName(t *testing.T) {
	reserved := []string{"postgres", "pg_*", "mysql"}
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"app", true},
		{"App_2", true},
		{"_x", true},
		{"my-db", true},
		{strings.Repeat("a", MaxNameLen), true},
		{strings.Repeat("a", MaxNameLen+1), false},
		{"", false},
		{"2app", false},
		{"-app", false},
		{"a b", false},
		{"a.b", false},
		{`a"b`, false},
		{"a'b", false},
		{"a`b", false},
		{`a\b`, false},
		{"a;b", false},
		{"a\x00b", false},
		{"é", false},
		{"Postgres", false},
		{"pg_signal", false},
		{"PG_x", false},
		{"pgx", true},
		{"mysql", false},
		{"mysql2", true},
	} {
		err := ValidName("database", c.name, reserved)
		if c.ok != (err == nil) {
			t.Errorf("ValidName(%q) = %v, want ok=%v", c.name, err, c.ok)
		}
		if err != nil && !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("ValidName(%q): %v is not ErrInvalid", c.name, err)
		}
	}
}

func TestValidPasswordAndCharset(t *testing.T) {
	for _, c := range []struct {
		pw string
		ok bool
	}{
		{"x", true},
		{`p'w"\x; DROP -- é`, true},
		{strings.Repeat("p", MaxPasswordLen), true},
		{strings.Repeat("p", MaxPasswordLen+1), false},
		{"", false},
		{"a\nb", false},
		{"a\x00b", false},
		{"a\x7fb", false},
		{"\xff", false},
	} {
		if err := ValidPassword("u", c.pw); c.ok != (err == nil) {
			t.Errorf("ValidPassword(%q) = %v, want ok=%v", c.pw, err, c.ok)
		}
	}
	for _, c := range []struct {
		cs string
		ok bool
	}{
		{"utf8mb4", true},
		{"utf8mb4_general_ci", true},
		{"C.UTF-8", true},
		{"de_DE@euro", true},
		{"und-x-icu", true},
		{"", false},
		{".x", false},
		{"utf8'", false},
		{"a b", false},
		{strings.Repeat("c", 65), false},
	} {
		if err := ValidCharsetName("collation", c.cs); c.ok != (err == nil) {
			t.Errorf("ValidCharsetName(%q) = %v, want ok=%v", c.cs, err, c.ok)
		}
	}
}

func TestValidateDatabasesAndUsers(t *testing.T) {
	if err := ValidateDatabases([]Database{{Name: "a"}, {Name: "A"}}, nil); !errors.Is(err, cairn.ErrInvalid) {
		t.Errorf("duplicate databases: %v", err)
	}
	if err := ValidateDatabases([]Database{{Name: "a", CharacterSet: "x;y"}}, nil); !errors.Is(err, cairn.ErrInvalid) {
		t.Errorf("bad character set: %v", err)
	}
	if err := ValidateDatabases([]Database{{Name: "a", CharacterSet: "utf8mb4", Collate: "utf8mb4_bin"}}, nil); err != nil {
		t.Errorf("good database: %v", err)
	}
	if err := ValidateUsers([]User{{Name: "u", Password: "p"}, {Name: "U", Password: "p"}}, nil, nil); !errors.Is(err, cairn.ErrInvalid) {
		t.Errorf("duplicate users: %v", err)
	}
	if err := ValidateUsers([]User{{Name: "u", Password: "p", Databases: []string{"mysql"}}}, nil, []string{"mysql"}); !errors.Is(err, cairn.ErrInvalid) {
		t.Errorf("reserved database granted: %v", err)
	}
	if err := ValidateUsers([]User{{Name: "root", Password: "p"}}, []string{"root"}, nil); !errors.Is(err, cairn.ErrInvalid) {
		t.Errorf("reserved user: %v", err)
	}
}

// FuzzValidName: whatever passes can be neither a quoting character nor
// anything but ASCII letters, digits, '_' and '-'.
func FuzzValidName(f *testing.F) {
	for _, s := range []string{"app", "my-db", `x"; DROP`, "a`b", "pg_x", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidName("n", s, []string{"pg_*"}) != nil {
			return
		}
		if s == "" || len(s) > MaxNameLen || strings.HasPrefix(strings.ToLower(s), "pg_") {
			t.Fatalf("%q passed", s)
		}
		for _, c := range s {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
				t.Fatalf("%q passed with %q", s, c)
			}
		}
	})
}

// FuzzValidPassword: whatever passes is UTF-8 without control characters.
func FuzzValidPassword(f *testing.F) {
	for _, s := range []string{"x", `p'w"\x`, "a\nb", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidPassword("u", s) != nil {
			return
		}
		if !utf8.ValidString(s) || len(s) > MaxPasswordLen {
			t.Fatalf("%q passed", s)
		}
		for _, c := range s {
			if c < 0x20 || c == 0x7f {
				t.Fatalf("%q passed", s)
			}
		}
	})
}
