package objstoretest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/cairnproject/cairn/internal/testenv"
)

// Env returns the values of the named environment variables, which tell
// an integration test where its server is. When any is unset the test is
// skipped, or fails under CI=true: CI must run every test.
func Env(t *testing.T, names ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range names {
		v := os.Getenv(n)
		if v == "" {
			testenv.SkipOrFail(t, n+" is not set: no server for this test (./test.sh starts them)")
		}
		out[n] = v
	}
	return out
}

// UniqueName returns a fresh lower-case name for a bucket or container.
func UniqueName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}
