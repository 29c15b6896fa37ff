package schedule

import (
	"errors"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
)

// FuzzParse: any expression and zone (a policy's, from a request) is
// parsed or refused with cairn.ErrInvalid, never a panic; a parsed one's
// next slot is later than the time asked about, and the one after it
// later still.
func FuzzParse(f *testing.F) {
	for _, s := range []struct {
		expr, zone string
	}{
		{"0 * * * *", "Europe/Berlin"}, {"30 2 * * *", "America/New_York"}, {"@daily", ""},
		{"*/15 1-3 * * 1-5", "Australia/Lord_Howe"}, {"0 0 29 2 *", "UTC"}, {"5,35 */2 1,15 jan-jun sun", "Asia/Kolkata"},
		{"@every 1h", "UTC"}, {"61 * * * *", "UTC"}, {"TZ=UTC 0 * * * *", ""},
	} {
		f.Add(s.expr, s.zone, int64(1774746000))
	}
	f.Fuzz(func(t *testing.T, expr, zone string, unix int64) {
		s, err := Parse(expr, zone)
		if err != nil {
			if !errors.Is(err, cairn.ErrInvalid) {
				t.Fatalf("Parse(%q, %q): %v, not ErrInvalid", expr, zone, err)
			}
			return
		}
		// Years 1970 to about 2240.
		at := time.Unix(unix&(1<<33-1), 0).UTC()
		next := s.Next(at)
		if next.IsZero() {
			return
		}
		if !next.After(at) || next.Nanosecond() != 0 {
			t.Fatalf("%q in %q: Next(%s) = %s", expr, zone, at, next)
		}
		if after := s.Next(next); !after.IsZero() && !after.After(next) {
			t.Fatalf("%q in %q: Next(%s) = %s", expr, zone, next, after)
		}
	})
}
