package service

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
)

// TestPickDrill: a drill slot restores the target's newest backup, or,
// with drill_pick random, one of those taken in the last
// drill_within_seconds (each of them in turn, never an older one), the
// newest when none is that recent.
func TestPickDrill(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	var list []checkTarget // newest first: 11:00, 10:00, ... 07:00
	for h := 1; h <= 5; h++ {
		list = append(list, checkTarget{id: string(rune('a' + h - 1)), at: now.Add(-time.Duration(h) * time.Hour)})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	if got, ok := pickDrill(list, cairn.Policy{}, now, rng); !ok || got.id != "a" {
		t.Fatalf("latest: %+v %v, want a", got, ok)
	}
	random := cairn.Policy{PolicySpec: cairn.PolicySpec{DrillPick: cairn.DrillRandom, DrillWithinSeconds: 3 * 3600}}
	seen := map[string]int{}
	for range 300 {
		got, ok := pickDrill(list, random, now, rng)
		if !ok {
			t.Fatal("random: nothing picked")
		}
		seen[got.id]++
	}
	if len(seen) != 3 || seen["a"] == 0 || seen["b"] == 0 || seen["c"] == 0 {
		t.Fatalf("random within 3 h picked %v, want each of a, b and c and nothing older", seen)
	}
	random.DrillWithinSeconds = 1800
	if got, _ := pickDrill(list, random, now, rng); got.id != "a" {
		t.Fatalf("random, none within 30 min: %+v, want the newest", got)
	}
	if _, ok := pickDrill(nil, random, now, rng); ok {
		t.Fatal("a pick among no backups")
	}
}
