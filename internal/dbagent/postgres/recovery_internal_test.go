package postgres

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParentPID(t *testing.T) {
	for _, tc := range []struct {
		name string
		pid  int
		want int
	}{
		{"this process", os.Getpid(), os.Getppid()},
		{"no such process", 1 << 30, 0},
	} {
		if got := parentPID(tc.pid); got != tc.want {
			t.Errorf("%s: parentPID(%d) = %d, want %d", tc.name, tc.pid, got, tc.want)
		}
	}
}

func TestPostmasterPID(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string // "" for no file
		want    int
	}{
		{"a server's", "4242\n/var/lib/data\n1733400000\n5432\n", 4242},
		{"no file", "", 0},
		{"not a number", "x\n", 0},
		{"negative", "-1\n", 0},
		{"empty first line", "\n12\n", 0},
	} {
		dir := t.TempDir()
		if tc.content != "" {
			if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if got := postmasterPID(dir); got != tc.want {
			t.Errorf("%s: postmasterPID = %d, want %d", tc.name, got, tc.want)
		}
	}
}
