// Package testenv holds the one rule for tests that need something a
// machine may lack (a server, a program, a file system feature).
package testenv

import (
	"os"
	"testing"
)

// SkipOrFail skips t, saying why, or fails it when CI=true: CI must
// prove everything, so a missing capability there is a failure.
func SkipOrFail(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and the test cannot run: %s", reason)
	}
	t.Skip(reason)
}
