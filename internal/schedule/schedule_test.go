package schedule

import (
	"errors"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
)

func mustParse(t *testing.T, expr, zone string) Spec {
	t.Helper()
	s, err := Parse(expr, zone)
	if err != nil {
		t.Fatalf("Parse(%q, %q): %v", expr, zone, err)
	}
	return s
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

// The 2026 transitions: Europe/Berlin springs forward on 29 March at
// 02:00 CET (01:00Z) and falls back on 25 October at 03:00 CEST
// (01:00Z); America/New_York on 8 March at 02:00 EST (07:00Z) and on
// 1 November at 02:00 EDT (06:00Z).
func TestNextAcrossTransitions(t *testing.T) {
	for _, tc := range []struct {
		name, expr, zone string
		after            string
		want             []string // successive slots
	}{
		{"daily in Berlin's gap fires at its end", "30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z",
			[]string{"2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"}},
		{"daily in Berlin's overlap fires once", "30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z",
			[]string{"2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"}},
		{"hourly through Berlin's overlap fires in both hours", "0 * * * *", "Europe/Berlin", "2026-10-24T22:30:00Z",
			[]string{"2026-10-24T23:00:00Z", "2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z"}},
		{"hourly through Berlin's gap: one slot at the jump", "0 * * * *", "Europe/Berlin", "2026-03-28T23:30:00Z",
			[]string{"2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"}},
		{"daily at 01:00 in New York's overlap fires once", "0 1 * * *", "America/New_York", "2026-10-31T12:00:00Z",
			[]string{"2026-11-01T05:00:00Z", "2026-11-02T06:00:00Z"}},
		{"daily in New York's gap fires at its end", "30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z",
			[]string{"2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"}},
		{"two skipped times fire once together", "15,45 2 * * *", "America/New_York", "2026-03-08T05:00:00Z",
			[]string{"2026-03-08T07:00:00Z", "2026-03-09T06:15:00Z"}},
		{"every two hours is fixed-time: the repeated 02:00 fires once", "0 */2 * * *", "Europe/Berlin", "2026-10-24T21:30:00Z",
			[]string{"2026-10-24T22:00:00Z", "2026-10-25T00:00:00Z", "2026-10-25T03:00:00Z"}},
		{"UTC by default", "@daily", "", "2026-06-01T00:00:00Z",
			[]string{"2026-06-02T00:00:00Z", "2026-06-03T00:00:00Z"}},
		{"weekly on Sunday in Berlin", "0 3 * * 0", "Europe/Berlin", "2026-10-20T00:00:00Z",
			[]string{"2026-10-25T02:00:00Z", "2026-11-01T02:00:00Z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustParse(t, tc.expr, tc.zone)
			at := utc(tc.after)
			for i, w := range tc.want {
				got := s.Next(at)
				if !got.Equal(utc(w)) {
					t.Fatalf("slot %d after %s: %s, want %s", i, at, got.UTC().Format(time.RFC3339), w)
				}
				at = got
			}
		})
	}
}

// TestNextAgainstScan compares Next with a minute-by-minute scan that
// applies the rules of the package comment directly, over the days
// around each transition of both zones and a quiet week.
func TestNextAgainstScan(t *testing.T) {
	windows := []string{"2026-03-07T00:00:00Z", "2026-03-28T00:00:00Z", "2026-10-24T00:00:00Z",
		"2026-10-31T00:00:00Z", "2026-07-01T00:00:00Z", "2026-04-04T00:00:00Z", "2026-10-03T00:00:00Z"}
	for _, zone := range []string{"Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"} {
		for _, expr := range []string{"0 * * * *", "*/20 * * * *", "30 2 * * *", "0 1 * * *", "10 1-3 * * *", "0 */2 * * *", "0 0 * * 1"} {
			s := mustParse(t, expr, zone)
			for _, w := range windows {
				from := utc(w)
				until := from.Add(72 * time.Hour)
				want := scan(s, from, until)
				got, _ := s.Slots(from, until, 0)
				if !equalTimes(got, want) {
					t.Errorf("%s in %s from %s: Next gives %v, the scan %v", expr, zone, w, fmtTimes(got), fmtTimes(want))
				}
			}
		}
	}
}

// scan lists the slots in (from, until] minute by minute: an instant is
// a slot when its wall clock matches the fields (and is the first time
// the clock shows it, unless every hour fires), or when the clock jumps
// forward at it past wall-clock times that match.
func scan(s Spec, from, until time.Time) []time.Time {
	matches := func(w time.Time) bool { return s.wall.Next(w.Add(-time.Minute)).Equal(w) }
	seen := map[time.Time]bool{}
	for m := from.Add(-4 * time.Hour); !m.After(from); m = m.Add(time.Minute) {
		seen[wallOf(m, s.loc)] = true
	}
	var out []time.Time
	for m := from.Add(time.Minute); !m.After(until); m = m.Add(time.Minute) {
		w, prev := wallOf(m, s.loc), wallOf(m.Add(-time.Minute), s.loc)
		slot := matches(w) && (!seen[w] || s.everyHour)
		if w.Sub(prev) > time.Minute { // skipped wall-clock minutes
			for x := prev.Add(time.Minute); x.Before(w); x = x.Add(time.Minute) {
				slot = slot || matches(x)
			}
		}
		seen[w] = true
		if slot {
			out = append(out, m)
		}
	}
	return out
}

func TestYearOfHourlySlots(t *testing.T) {
	for _, zone := range []string{"Europe/Berlin", "America/New_York"} {
		s := mustParse(t, "0 * * * *", zone)
		from := time.Date(2026, 1, 1, 0, 0, 0, 0, s.loc)
		until := time.Date(2027, 1, 1, 0, 0, 0, 0, s.loc)
		got, more := s.Slots(from, until, 0)
		// Whole-hour zones: every UTC hour is a slot, both overlap hours
		// included, the gap's hour once.
		if want := int(until.Sub(from) / time.Hour); len(got) != want || more {
			t.Errorf("%s: %d hourly slots in 2026, want %d", zone, len(got), want)
		}
		for i := 1; i < len(got); i++ {
			if got[i].Sub(got[i-1]) != time.Hour {
				t.Fatalf("%s: slots %s and %s are not an hour apart", zone, got[i-1], got[i])
			}
		}
		daily := mustParse(t, "30 2 * * *", zone)
		days, _ := daily.Slots(from, until, 0)
		if len(days) != 365 {
			t.Errorf("%s: %d daily slots in 2026, want 365", zone, len(days))
		}
	}
}

func TestSlotsLimit(t *testing.T) {
	s := mustParse(t, "0 * * * *", "UTC")
	got, more := s.Slots(utc("2026-01-01T00:00:00Z"), utc("2026-01-02T00:00:00Z"), 5)
	if len(got) != 5 || !more {
		t.Fatalf("Slots with limit 5: %d slots, more %v", len(got), more)
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct{ expr, zone string }{
		{"", "UTC"},
		{"61 * * * *", "UTC"},
		{"* * *", "UTC"},
		{"@every 1h", "UTC"},
		{"CRON_TZ=Europe/Berlin 0 * * * *", "UTC"},
		{"TZ=UTC 0 * * * *", ""},
		{"0 * * * *", "Mars/Olympus_Mons"},
		{"0 * * * *", "Local"},
		{"0 0 30 2 *", "UTC"},
		{"0 0 * * * *", "UTC"}, // six fields: seconds are not ours
	} {
		if _, err := Parse(tc.expr, tc.zone); !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("Parse(%q, %q): %v, want ErrInvalid", tc.expr, tc.zone, err)
		}
	}
}

func TestJitter(t *testing.T) {
	if Jitter("p", 0) != 0 || Jitter("p", 500*time.Millisecond) != 0 {
		t.Fatal("jitter without a whole second of range")
	}
	seen := map[time.Duration]bool{}
	for _, id := range []string{"a", "b", "c", "d", "e", "f"} {
		j := Jitter(id, 10*time.Minute)
		if j < 0 || j >= 10*time.Minute || j%time.Second != 0 {
			t.Fatalf("Jitter(%q): %s", id, j)
		}
		if j != Jitter(id, 10*time.Minute) {
			t.Fatalf("Jitter(%q) changes", id)
		}
		seen[j] = true
	}
	if len(seen) < 2 {
		t.Fatalf("six policies share one jitter: %v", seen)
	}
}

func equalTimes(a, b []time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

func fmtTimes(ts []time.Time) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.UTC().Format("01-02T15:04Z")
	}
	return out
}
