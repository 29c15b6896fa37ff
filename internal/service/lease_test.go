package service_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
)

// TestServeLease: one process holds a catalog's serve lease. Another is
// refused while the lease lasts, with the holder named, and takes it
// once it lapsed or once its holder is known gone; the one that lost it
// is told at its next renewal; a released lease is free at once. Run
// renews it every third of its TTL, and returns the loss.
func TestServeLease(t *testing.T) {
	cat := openCatalog(t)
	ctx := t.Context()
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	gone := map[string]bool{}
	lease := func(holder string) *service.Lease {
		return service.NewLease(cat, service.LeaseConfig{Name: service.ServeLease, Holder: holder, TTL: 30 * time.Second,
			Now: func() time.Time { return now }, Gone: func(h string) bool { return gone[h] }})
	}
	a, b, c := lease("a"), lease("b"), lease("c")
	steps := []struct {
		what    string
		advance time.Duration
		do      func() error
		want    error
		msg     string
	}{
		{"a takes the free lease", 0, func() error { return a.Acquire(ctx) }, nil, ""},
		{"b is refused while a holds it", 10 * time.Second, func() error { return b.Acquire(ctx) }, cairn.ErrConflict, "in use by another service, a, whose lease lasts until 2026-12-07T10:00:30Z"},
		{"a renews", 10 * time.Second, func() error { return a.Renew(ctx) }, nil, ""},
		{"b is refused until the renewed expiry", 29 * time.Second, func() error { return b.Acquire(ctx) }, cairn.ErrConflict, "until 2026-12-07T10:00:50Z"},
		{"b takes it once it lapsed", 2 * time.Second, func() error { return b.Acquire(ctx) }, nil, ""},
		{"a, stalled past its expiry, has lost it", 0, func() error { return a.Renew(ctx) }, cairn.ErrConflict, "lost to b"},
		{"a cannot take it back while b holds it", 0, func() error { return a.Acquire(ctx) }, cairn.ErrConflict, "in use by another service, b"},
		{"b acquiring again renews", 5 * time.Second, func() error { return b.Acquire(ctx) }, nil, ""},
		{"c takes it at once when b is known gone", 1 * time.Second, func() error { gone["b"] = true; return c.Acquire(ctx) }, nil, ""},
		{"c releases it", 0, func() error { return c.Release(ctx) }, nil, ""},
		{"b's release of a lease it lost changes nothing", 0, func() error { return b.Release(ctx) }, nil, ""},
		{"a takes the released lease at once", 0, func() error { return a.Acquire(ctx) }, nil, ""},
		{"c is refused again", 0, func() error { return c.Acquire(ctx) }, cairn.ErrConflict, "in use by another service, a"},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		err := s.do()
		if !errors.Is(err, s.want) || (s.want == nil) != (err == nil) {
			t.Fatalf("%s: %v, want %v", s.what, err, s.want)
		}
		if err != nil && !strings.Contains(err.Error(), s.msg) {
			t.Fatalf("%s: %q does not say %q", s.what, err, s.msg)
		}
	}

	// Run: every tick renews; the loss ends it with the conflict.
	ticks := make(chan time.Time)
	asked := make(chan time.Duration)
	run := service.NewLease(cat, service.LeaseConfig{Name: service.ServeLease, Holder: "a", TTL: 30 * time.Second,
		Now: func() time.Time { return now }, After: func(d time.Duration) <-chan time.Time { asked <- d; return ticks }})
	done := make(chan error, 1)
	go func() { done <- run.Run(ctx) }()
	if d := <-asked; d != 10*time.Second {
		t.Fatalf("Run waits %s between renewals, want a third of the TTL", d)
	}
	ticks <- now // renews: a holds it until now+30s
	<-asked
	now = now.Add(31 * time.Second)
	if err := c.Acquire(ctx); err != nil {
		t.Fatalf("c after a's lapse: %v", err)
	}
	ticks <- now
	if err := <-done; !errors.Is(err, cairn.ErrConflict) {
		t.Fatalf("Run after the lease was taken over: %v, want a conflict", err)
	}
}
