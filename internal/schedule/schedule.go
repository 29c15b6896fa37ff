// Package schedule computes when a backup policy's slots fall: a cron
// expression read on the wall clock of an IANA time zone.
//
// The expression's syntax is the five-field cron of robfig/cron's
// standard parser (minute hour day-of-month month day-of-week, names and
// the @hourly, @daily, @weekly, @monthly, @yearly descriptors). Its
// evaluation on a clock that jumps is ours, because that library steps
// through local hours and so skips a daily slot that falls in a
// spring-forward gap and fires one twice in a fall-back overlap. The
// rules, those of Vixie cron:
//
//   - A wall-clock time the zone skips (02:30 on a spring-forward night in
//     Europe/Berlin) fires once, at the first instant after the gap
//     (03:00 CEST). Several skipped times fire once there together.
//   - A wall-clock time the zone repeats (02:30 on a fall-back night)
//     fires once, at its first occurrence, unless the expression fires in
//     every hour of the day (hour field "*"): then it fires in both, as
//     real time goes on, so an hourly schedule never leaves a two-hour
//     gap.
//
// A slot is named by its nominal instant (Next's result). A policy's
// jitter (Jitter) delays when the slot fires, never which slot it is.
package schedule

import (
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/cairnproject/cairn"
)

// Spec is a parsed schedule. The zero Spec is not valid; it is safe for
// concurrent use.
type Spec struct {
	expr string
	loc  *time.Location
	// wall is the expression evaluated in UTC, on wall-clock times
	// written as UTC: no jumps there.
	wall *cron.SpecSchedule
	// everyHour: the hour field is every hour, so a repeated hour fires
	// again.
	everyHour bool
}

var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Parse reads a five-field cron expression for zone (an IANA name; ""
// is UTC). It fails with cairn.ErrInvalid for a malformed expression,
// an unknown zone, a time-zone prefix in the expression (the zone is its
// own field), an @every interval (not a wall-clock schedule) and an
// expression that never fires (30 February).
func Parse(expr, zone string) (Spec, error) {
	expr = strings.TrimSpace(expr)
	if expr == "" {
		return Spec{}, fmt.Errorf("schedule: empty: %w", cairn.ErrInvalid)
	}
	if strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=") {
		return Spec{}, fmt.Errorf("schedule %q: give the time zone as its own field, not in the expression: %w", expr, cairn.ErrInvalid)
	}
	if zone == "" {
		zone = "UTC"
	}
	loc, err := time.LoadLocation(zone)
	if err != nil || zone == "Local" {
		return Spec{}, fmt.Errorf("schedule time zone %q: not an IANA zone name: %w", zone, cairn.ErrInvalid)
	}
	sched, err := parser.Parse(expr)
	if err != nil {
		return Spec{}, fmt.Errorf("schedule %q: %v: %w", expr, err, cairn.ErrInvalid)
	}
	ss, ok := sched.(*cron.SpecSchedule)
	if !ok {
		return Spec{}, fmt.Errorf("schedule %q: an @every interval is not a wall-clock schedule; write it as cron fields: %w", expr, cairn.ErrInvalid)
	}
	wall := *ss
	wall.Location = time.UTC
	const allHours = 1<<24 - 1
	s := Spec{expr: expr, loc: loc, wall: &wall, everyHour: wall.Hour&allHours == allHours}
	// The library looks five years ahead; an expression that never fires
	// (30 February) finds nothing there.
	if s.wall.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
		return Spec{}, fmt.Errorf("schedule %q: never fires: %w", expr, cairn.ErrInvalid)
	}
	return s, nil
}

// String is the expression as given.
func (s Spec) String() string { return s.expr }

// Location is the zone the expression is read in.
func (s Spec) Location() *time.Location { return s.loc }

// maxShift bounds how far an instant's wall clock moves at a zone's
// transition (two hours covers every zone in use).
const maxShift = 3 * time.Hour

// Next is the first slot strictly after t, or the zero time if there is
// none in the next five years (none is possible once Parse accepted the
// expression, except near the end of time). Slots are whole minutes.
func (s Spec) Next(t time.Time) time.Time {
	wt := wallOf(t, s.loc)
	w := wt.Add(-maxShift)
	if s.steady(t) {
		// No transition near t: the wall clock maps one to one, and the
		// first wall-clock slot after t's is the answer (unless a
		// transition comes before it: checked on the way).
		w = wt
	}
	var best, bestWall time.Time
	for {
		w = s.wall.Next(w)
		if w.IsZero() {
			return best
		}
		if !best.IsZero() && w.Sub(bestWall) > maxShift {
			return best
		}
		first, second := instants(w, s.loc)
		for i, c := range []time.Time{first, second} {
			if c.IsZero() || (i == 1 && !s.everyHour) {
				continue
			}
			if c.After(t) && (best.IsZero() || c.Before(best)) {
				best, bestWall = c, w
			}
		}
		// Away from transitions later wall-clock slots map to later
		// instants: the first found is the next.
		if !best.IsZero() && s.steady(best) {
			return best
		}
	}
}

// steady reports that loc's offset is the same from 2*maxShift before t
// to 2*maxShift after it: no transition near t.
func (s Spec) steady(t time.Time) bool {
	_, a := t.Add(-2 * maxShift).In(s.loc).Zone()
	_, b := t.Add(2 * maxShift).In(s.loc).Zone()
	return a == b
}

// Slots are the slots in (after, until], in order, at most limit of them
// (limit <= 0: no bound); more reports whether slots were left out.
func (s Spec) Slots(after, until time.Time, limit int) (slots []time.Time, more bool) {
	for t := s.Next(after); !t.IsZero() && !t.After(until); t = s.Next(t) {
		if limit > 0 && len(slots) == limit {
			return slots, true
		}
		slots = append(slots, t)
	}
	return slots, false
}

// wallOf is t's wall clock in loc, written as a UTC time.
func wallOf(t time.Time, loc *time.Location) time.Time {
	l := t.In(loc)
	return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), time.UTC)
}

// instants are the instants whose wall clock in loc is w (written as
// UTC): one (first) normally; two in a repeated hour, earlier first; in
// a skipped stretch none, and then first is the instant the stretch
// ends, when the clock jumps past w.
func instants(w time.Time, loc *time.Location) (first, second time.Time) {
	// w read as an instant is off by the zone's offset (up to 14 hours):
	// take that off first, then look either side of it.
	_, guess := w.In(loc).Zone()
	base := w.Add(-time.Duration(guess) * time.Second)
	_, before := base.Add(-2 * maxShift).In(loc).Zone()
	_, after := base.Add(2 * maxShift).In(loc).Zone()
	c1 := w.Add(-time.Duration(before) * time.Second).In(time.UTC)
	c2 := w.Add(-time.Duration(after) * time.Second).In(time.UTC)
	ok1, ok2 := wallOf(c1, loc).Equal(w), wallOf(c2, loc).Equal(w)
	switch {
	case ok1 && ok2 && !c1.Equal(c2):
		if c2.Before(c1) {
			c1, c2 = c2, c1
		}
		return c1, c2
	case ok1:
		return c1, time.Time{}
	case ok2:
		return c2, time.Time{}
	}
	// Skipped: the clock jumps forward between lo (wall clock before w)
	// and hi (after it). Find the first second whose wall clock is past w.
	lo, hi := c1, c2
	if hi.Before(lo) {
		lo, hi = hi, lo
	}
	for hi.Sub(lo) > time.Second {
		mid := lo.Add(hi.Sub(lo) / 2).Truncate(time.Second)
		if wallOf(mid, loc).After(w) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi, time.Time{}
}

// Jitter is a policy's delay after each of its slots: a fixed share of
// max chosen by the policy's ID, so that many policies on one schedule
// spread out, and each fires at the same offset every time (whatever
// process fires it). Whole seconds; zero for max under a second.
func Jitter(policyID string, max time.Duration) time.Duration {
	secs := uint64(max / time.Second)
	if secs == 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(policyID))
	return time.Duration(h.Sum64()%secs) * time.Second
}
