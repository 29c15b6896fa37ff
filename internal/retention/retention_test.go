package retention

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
)

func load(t *testing.T, zone string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// reference computes which backups rules keep by grouping first: every
// period's backups together, the periods ordered by their newest
// backup, the newest of each of the first n periods kept. It shares no
// code with Decide.
func reference(bs []Backup, r Rules, loc *time.Location) map[string][]string {
	kept := map[string][]string{}
	if len(bs) == 0 {
		return kept
	}
	newest := bs[0]
	for _, b := range bs {
		if b.Time.After(newest.Time) || b.Time.Equal(newest.Time) && b.ID > newest.ID {
			newest = b
		}
	}
	kept[newest.ID] = append(kept[newest.ID], ReasonNewest)
	byTime := slices.Clone(bs)
	sort.Slice(byTime, func(i, j int) bool {
		if !byTime[i].Time.Equal(byTime[j].Time) {
			return byTime[i].Time.After(byTime[j].Time)
		}
		return byTime[i].ID > byTime[j].ID
	})
	for i := 0; i < r.Last && i < len(byTime); i++ {
		kept[byTime[i].ID] = append(kept[byTime[i].ID], ReasonLast)
	}
	type period struct {
		key    [4]int
		newest Backup
	}
	groups := func(n int, reason string, key func(time.Time) [4]int) {
		ps := map[[4]int]*period{}
		for _, b := range bs {
			k := key(b.Time.In(loc))
			p := ps[k]
			if p == nil {
				p = &period{key: k, newest: b}
				ps[k] = p
			}
			if b.Time.After(p.newest.Time) || b.Time.Equal(p.newest.Time) && b.ID > p.newest.ID {
				p.newest = b
			}
		}
		list := []*period{}
		for _, p := range ps {
			list = append(list, p)
		}
		sort.Slice(list, func(i, j int) bool { return list[i].newest.Time.After(list[j].newest.Time) })
		for i := 0; i < n && i < len(list); i++ {
			id := list[i].newest.ID
			kept[id] = append(kept[id], reason)
		}
	}
	groups(r.Hourly, ReasonHourly, func(t time.Time) [4]int {
		_, off := t.Zone()
		return [4]int{t.YearDay(), t.Year(), t.Hour(), off}
	})
	groups(r.Daily, ReasonDaily, func(t time.Time) [4]int { return [4]int{t.Year(), t.YearDay()} })
	groups(r.Weekly, ReasonWeekly, func(t time.Time) [4]int { y, w := t.ISOWeek(); return [4]int{y, w} })
	groups(r.Monthly, ReasonMonthly, func(t time.Time) [4]int { return [4]int{t.Year(), int(t.Month())} })
	groups(r.Yearly, ReasonYearly, func(t time.Time) [4]int { return [4]int{t.Year()} })
	if d, _ := within(r); d > 0 {
		for _, b := range bs {
			if newest.Time.Sub(b.Time) <= d {
				kept[b.ID] = append(kept[b.ID], ReasonWithin)
			}
		}
	}
	return kept
}

// TestDecideYearAgainstReference runs a year of hourly backups, with
// random gaps and a fortnight of downtime, through both zones' DST
// changes, and compares every decision with the reference's.
func TestDecideYearAgainstReference(t *testing.T) {
	rules := []Rules{
		{Last: 5, Hourly: 48, Daily: 14, Weekly: 8, Monthly: 12, Yearly: 3, Within: "36h"},
		{Hourly: 400},
		{Daily: 400},
		{Weekly: 60, Monthly: 2},
		{Last: 1},
		{Within: "2160h"},
	}
	for _, zone := range []string{"Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"} {
		loc := load(t, zone)
		rng := rand.New(rand.NewPCG(1, uint64(len(zone))))
		var bs []Backup
		start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for h := 0; h < 24*366; h++ {
			at := start.Add(time.Duration(h) * time.Hour).Add(time.Duration(rng.IntN(3600)) * time.Second)
			down := at.After(time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)) && at.Before(time.Date(2026, 7, 15, 0, 0, 0, 0, time.UTC))
			if down || rng.IntN(10) < 3 {
				continue
			}
			bs = append(bs, Backup{ID: fmt.Sprintf("b%05d", h), Time: at})
		}
		rng.Shuffle(len(bs), func(i, j int) { bs[i], bs[j] = bs[j], bs[i] })
		for _, r := range rules {
			got, err := Decide(bs, r, loc)
			if err != nil {
				t.Fatal(err)
			}
			want := reference(bs, r, loc)
			if len(got) != len(bs) {
				t.Fatalf("%d decisions for %d backups", len(got), len(bs))
			}
			kept := 0
			for i, d := range got {
				if i > 0 && d.Time.After(got[i-1].Time) {
					t.Fatalf("decisions not newest first at %d", i)
				}
				w := want[d.ID]
				if d.Keep != (len(w) > 0) {
					t.Fatalf("%s %+v: backup %s at %s: keep %v (%v), the reference %v", zone, r, d.ID, d.Time.In(loc), d.Keep, d.Reasons, w)
				}
				if d.Keep {
					kept++
					slices.Sort(w)
					g := slices.Clone(d.Reasons)
					slices.Sort(g)
					if !slices.Equal(g, w) {
						t.Fatalf("%s %+v: backup %s: reasons %v, the reference %v", zone, r, d.ID, g, w)
					}
				} else if !slices.Equal(d.Reasons, []string{ReasonUnneeded}) {
					t.Fatalf("removed backup %s: reasons %v", d.ID, d.Reasons)
				}
			}
			if kept == 0 || (r != Rules{Within: "2160h"} && kept == len(bs)) {
				t.Errorf("%s %+v: kept %d of %d: the case tests nothing", zone, r, kept, len(bs))
			}
		}
	}
}

// TestDecideWorkedExample is docs/ARCHITECTURE.md's example: the
// fall-back night in Berlin, where 02:00-03:00 happens twice.
func TestDecideWorkedExample(t *testing.T) {
	loc := load(t, "Europe/Berlin")
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	bs := []Backup{
		{ID: "a", Time: at("2026-10-24T23:30:00+02:00")}, // Saturday night
		{ID: "b", Time: at("2026-10-25T01:30:00+02:00")},
		{ID: "c", Time: at("2026-10-25T02:10:00+02:00")}, // first 02:00 hour (CEST)
		{ID: "d", Time: at("2026-10-25T02:40:00+02:00")},
		{ID: "e", Time: at("2026-10-25T02:10:00+01:00")}, // second 02:00 hour (CET)
		{ID: "f", Time: at("2026-10-25T03:30:00+01:00")},
		{ID: "p", Time: at("2026-10-01T12:00:00+02:00"), Floors: []string{"protected"}},
	}
	got, err := Decide(bs, Rules{Hourly: 3, Daily: 2}, loc)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, d := range got {
		lines = append(lines, fmt.Sprintf("%s %v %s", d.ID, d.Keep, strings.Join(d.Reasons, ",")))
	}
	want := []string{
		"f true newest,keep-hourly,keep-daily",
		"e true keep-hourly",       // the CET 02:00 hour
		"d true keep-hourly",       // the CEST 02:00 hour: another hour
		"c false no-rule-keeps-it", // same hour as d, older
		"b false no-rule-keeps-it",
		"a true keep-daily", // Saturday's newest
		"p true protected",
	}
	if !slices.Equal(lines, want) {
		t.Fatalf("decisions:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestDecideEdges(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	bs := []Backup{{ID: "x", Time: t0}, {ID: "y", Time: t0.Add(-48 * time.Hour)}, {ID: "z", Time: t0.Add(-96 * time.Hour)}}
	// No rules: everything stays.
	got, _ := Decide(bs, Rules{}, time.UTC)
	for _, d := range got {
		if !d.Keep {
			t.Fatalf("no rules removed %s", d.ID)
		}
	}
	// keep-within counts back from the newest backup, not from now: a
	// month later the same backups are kept.
	got, _ = Decide(bs, Rules{Within: "50h"}, time.UTC)
	if !got[0].Keep || !got[1].Keep || got[2].Keep {
		t.Fatalf("keep-within 50h: %+v", got)
	}
	// keep-last 0 with another rule still keeps the newest.
	got, _ = Decide(bs, Rules{Monthly: 0, Daily: 0, Last: 0, Hourly: 0, Weekly: 0, Yearly: 0, Within: "1h"}, time.UTC)
	if !got[0].Keep || got[1].Keep {
		t.Fatalf("newest floor: %+v", got)
	}
	if got, _ := Decide(nil, Rules{Last: 1}, time.UTC); len(got) != 0 {
		t.Fatal("decisions for no backups")
	}
	for _, r := range []Rules{{Last: -1}, {Within: "soon"}, {Within: "-3h"}} {
		if _, err := Decide(bs, r, time.UTC); !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", r, err)
		}
	}
}
