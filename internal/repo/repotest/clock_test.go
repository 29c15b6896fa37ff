package repotest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/repo/repotest"
)

var start = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// sleep runs clk.Sleep in a goroutine the test waits for.
func sleep(t *testing.T, ctx context.Context, clk *repotest.Clock, until time.Time) <-chan error {
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- clk.Sleep(ctx, until)
	}()
	t.Cleanup(func() { <-finished })
	return done
}

func TestSleepWakesWhenTheClockGetsThere(t *testing.T) {
	clk := repotest.NewClock(start)
	if err := clk.Sleep(t.Context(), start); err != nil {
		t.Fatalf("sleep until now: %v", err)
	}
	done := sleep(t, t.Context(), clk, start.Add(time.Second))
	<-clk.Sleeping(1)
	clk.Advance(999 * time.Millisecond)
	// Still asleep: a second sleeper arriving now finds it there.
	late := sleep(t, t.Context(), clk, start.Add(time.Hour))
	<-clk.Sleeping(2)
	clk.Advance(time.Millisecond)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := clk.Now(); !got.Equal(start.Add(time.Second)) {
		t.Fatalf("now %v", got)
	}
	clk.WakeSleepers()
	if err := <-late; err != nil {
		t.Fatal(err)
	}
	if got := clk.Now(); !got.Equal(start.Add(time.Hour)) {
		t.Fatalf("after waking the sleepers, now %v", got)
	}
	clk.WakeSleepers() // none left: the time stays
	if got := clk.Now(); !got.Equal(start.Add(time.Hour)) {
		t.Fatalf("waking no sleeper moved the time to %v", got)
	}
}

func TestSleepEndsWithItsContext(t *testing.T) {
	clk := repotest.NewClock(start)
	ctx, cancel := context.WithCancel(t.Context())
	done := sleep(t, ctx, clk, start.Add(time.Minute))
	<-clk.Sleeping(1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("sleep after cancel: %v", err)
	}
	// The sleeper is gone: one new sleeper is one.
	again := sleep(t, t.Context(), clk, start.Add(time.Minute))
	<-clk.Sleeping(1)
	select {
	case <-clk.Sleeping(2):
		t.Fatal("a cancelled sleeper is still counted")
	default:
	}
	clk.Advance(time.Minute)
	if err := <-again; err != nil {
		t.Fatal(err)
	}
}

func TestPassMovesTheTimeForward(t *testing.T) {
	clk := repotest.NewClock(start)
	done := sleep(t, t.Context(), clk, start.Add(time.Second))
	<-clk.Sleeping(1)
	if err := clk.Pass(t.Context(), start.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := clk.Pass(t.Context(), start); err != nil { // the past: no move
		t.Fatal(err)
	}
	if got := clk.Now(); !got.Equal(start.Add(2 * time.Second)) {
		t.Fatalf("now %v", got)
	}
}

func TestTicksComeOnlyFromTick(t *testing.T) {
	clk := repotest.NewClock(start)
	a, stopA := clk.Ticks(time.Second)
	b, stopB := clk.Ticks(time.Minute)
	if n := clk.Tickers(); n != 2 {
		t.Fatalf("%d tickers", n)
	}
	clk.Advance(time.Hour)
	select {
	case <-a:
		t.Fatal("a tick without Tick")
	default:
	}
	clk.Tick()
	clk.Tick() // dropped: a's and b's first ticks are still pending
	for _, ch := range []<-chan time.Time{a, b} {
		if at := <-ch; !at.Equal(start.Add(time.Hour)) {
			t.Fatalf("tick at %v", at)
		}
		select {
		case <-ch:
			t.Fatal("a pending tick did not drop the next")
		default:
		}
	}
	stopA()
	clk.Tick()
	select {
	case <-a:
		t.Fatal("a stopped ticker ticked")
	default:
	}
	<-b
	stopB()
	if n := clk.Tickers(); n != 0 {
		t.Fatalf("%d tickers after both stopped", n)
	}
}
