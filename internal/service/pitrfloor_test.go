package service

import (
	"slices"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/retention"
)

// TestPITRFloor: the PITR window keeps the backups taken in it and the
// newest before it (the base its first second replays from). The window
// ends at the archive's newest second when that is later than the newest
// backup, so a window reaching back past a backup keeps it; it never
// ends before the newest backup (an archive behind, or none known), so
// downtime never moves it back.
func TestPITRFloor(t *testing.T) {
	t0 := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	hours := func(hs ...int) []retention.Backup {
		var out []retention.Backup
		for _, h := range hs {
			out = append(out, retention.Backup{ID: string(rune('a' + h)), Time: t0.Add(time.Duration(h) * time.Hour)})
		}
		return out
	}
	cases := []struct {
		name    string
		seconds int
		end     time.Time // the archive's newest second; zero: unknown
		want    string    // the IDs kept by the floor
	}{
		{"no window", 0, t0.Add(30 * time.Hour), ""},
		// The window 05:00–08:00: 05:00, 06:00 and 08:00 in it, 03:00 the base.
		{"window from the newest backup, no archive", 3 * 3600, time.Time{}, "dfgi"},
		{"the archive behind the newest backup", 3 * 3600, t0.Add(7 * time.Hour), "dfgi"},
		// 15:00–18:00: no backup in it; 08:00 the base.
		{"the archive 10 hours past the newest backup", 3 * 3600, t0.Add(18 * time.Hour), "i"},
		// 07:00–10:00: 08:00 in it, 06:00 the base.
		{"the archive 2 hours past it", 3 * 3600, t0.Add(10 * time.Hour), "gi"},
		{"a window longer than the history", 100 * 3600, t0.Add(9 * time.Hour), "bdfgi"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			items := hours(1, 3, 5, 6, 8) // b, d, f, g, i
			pitrFloor(items, c.seconds, c.end)
			var kept []byte
			for _, it := range items {
				if slices.Contains(it.Floors, cairn.FloorPITR) {
					kept = append(kept, it.ID[0])
				}
			}
			if string(kept) != c.want {
				t.Fatalf("kept %q, want %q", kept, c.want)
			}
		})
	}
}
