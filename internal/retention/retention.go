// Package retention decides which of a target's backups a policy keeps.
//
// The rules are restic's independent buckets, counted in the policy's
// time zone:
//
//   - keep-last n keeps the n newest backups.
//   - keep-hourly, -daily, -weekly, -monthly and -yearly n: going from the
//     newest backup to the oldest, the newest backup of each period is
//     kept, for the n newest periods that have a backup. Periods without
//     backups do not count, so a month of downtime never uses up a
//     keep-daily.
//   - keep-within d keeps every backup at most d older than the newest
//     backup (never measured from now: downtime never deletes history).
//
// Each rule looks at every backup on its own; a backup is kept when any
// rule, or any floor, keeps it, and removed otherwise. A set of rules
// that keeps nothing (all zero) keeps everything: a policy without
// retention deletes nothing.
//
// Periods are read on the zone's wall clock: a day is a local date, a
// week an ISO week of local dates (Monday first), a month and a year
// local ones. An hour is a local hour together with its UTC offset, so
// the two 02:00 hours of a fall-back night are two hours, and the
// 23-hour and 25-hour days of the changes are one day each.
package retention

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/cairnproject/cairn"
)

// Rules are a policy's retention rules.
type Rules = cairn.RetentionRules

// IsZero reports whether no rule is set (Decide then keeps everything).
func IsZero(r Rules) bool { return r == Rules{} }

// Validate checks the counts and the duration: cairn.ErrInvalid.
func Validate(r Rules) error {
	for _, n := range []int{r.Last, r.Hourly, r.Daily, r.Weekly, r.Monthly, r.Yearly} {
		if n < 0 {
			return fmt.Errorf("retention: a keep count is negative: %w", cairn.ErrInvalid)
		}
	}
	if _, err := within(r); err != nil {
		return err
	}
	return nil
}

func within(r Rules) (time.Duration, error) {
	if r.Within == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(r.Within)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("retention: keep_within %q: want a positive duration such as 72h: %w", r.Within, cairn.ErrInvalid)
	}
	return d, nil
}

// Reasons a backup is kept or removed.
const (
	ReasonLast     = "keep-last"
	ReasonHourly   = "keep-hourly"
	ReasonDaily    = "keep-daily"
	ReasonWeekly   = "keep-weekly"
	ReasonMonthly  = "keep-monthly"
	ReasonYearly   = "keep-yearly"
	ReasonWithin   = "keep-within"
	ReasonNewest   = "newest"   // the floor: the newest backup
	ReasonNoRules  = "no-rules" // a policy without retention
	ReasonUnneeded = "no-rule-keeps-it"
)

// Backup is one backup a policy may remove.
type Backup struct {
	ID   string
	Time time.Time // when its data was taken
	// Floors are reasons the caller keeps it whatever the rules say
	// (protected, the newest verified, inside a recovery window).
	Floors []string
}

// Decision is what Decide made of one backup.
type Decision struct {
	ID      string    `json:"backup_id"`
	Time    time.Time `json:"time"`
	Keep    bool      `json:"keep"`
	Reasons []string  `json:"reasons"`
}

// Decide applies rules in loc to one target's backups. It returns a
// decision for each, newest first (ties by ID). The newest backup is
// always kept.
func Decide(backups []Backup, rules Rules, loc *time.Location) ([]Decision, error) {
	if err := Validate(rules); err != nil {
		return nil, err
	}
	keepWithin, _ := within(rules)
	bs := slices.Clone(backups)
	slices.SortStableFunc(bs, func(a, b Backup) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		return cmp.Compare(b.ID, a.ID)
	})
	out := make([]Decision, len(bs))
	for i, b := range bs {
		out[i] = Decision{ID: b.ID, Time: b.Time, Reasons: slices.Clone(b.Floors)}
	}
	if len(bs) == 0 {
		return out, nil
	}
	keep := func(i int, why string) { out[i].Reasons = append(out[i].Reasons, why) }
	keep(0, ReasonNewest)
	if IsZero(rules) {
		for i := range out {
			keep(i, ReasonNoRules)
		}
	}
	for i := 0; i < len(bs) && i < rules.Last; i++ {
		keep(i, ReasonLast)
	}
	for _, bucket := range []struct {
		n      int
		reason string
		period func(time.Time) string
	}{
		{rules.Hourly, ReasonHourly, func(t time.Time) string { return t.Format("2006-01-02T15Z07:00") }},
		{rules.Daily, ReasonDaily, func(t time.Time) string { return t.Format("2006-01-02") }},
		{rules.Weekly, ReasonWeekly, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{rules.Monthly, ReasonMonthly, func(t time.Time) string { return t.Format("2006-01") }},
		{rules.Yearly, ReasonYearly, func(t time.Time) string { return t.Format("2006") }},
	} {
		last, n := "", 0
		for i := 0; i < len(bs) && n < bucket.n; i++ {
			if p := bucket.period(bs[i].Time.In(loc)); p != last {
				keep(i, bucket.reason)
				last, n = p, n+1
			}
		}
	}
	if keepWithin > 0 {
		from := bs[0].Time.Add(-keepWithin)
		for i := range bs {
			if !bs[i].Time.Before(from) {
				keep(i, ReasonWithin)
			}
		}
	}
	for i := range out {
		out[i].Keep = len(out[i].Reasons) > 0
		if !out[i].Keep {
			out[i].Reasons = []string{ReasonUnneeded}
		}
	}
	return out, nil
}
