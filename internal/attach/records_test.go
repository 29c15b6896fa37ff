package attach

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestRecordsSkipVanished: a record listed and then removed by a
// concurrent detach of another export is left out of a lookup instead
// of failing it (TestDatabaseKill9 met it: two instances deleted at
// once, one detach's lookup failed on the other's removed record). A
// damaged record still fails.
func TestRecordsSkipVanished(t *testing.T) {
	dir := t.TempDir()
	kept := Record{Export: "instance-a", Device: "/dev/loop7", Method: "fuse"}
	data, err := json.Marshal(kept)
	if err != nil {
		t.Fatal(err)
	}
	a := filepath.Join(dir, "instance-a.json")
	if err := os.WriteFile(a, data, 0o600); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(dir, "instance-b.json") // listed, then removed
	list, err := readRecords([]string{gone, a})
	if err != nil || len(list) != 1 || list[0].Export != "instance-a" {
		t.Fatalf("records with one vanished: %+v, %v", list, err)
	}
	if err := os.WriteFile(gone, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readRecords([]string{gone, a}); err == nil {
		t.Fatal("a damaged record was skipped")
	}
}
