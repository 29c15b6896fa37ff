package dbagent

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
)

func TestHoldExpires(t *testing.T) {
	var expired atomic.Int32
	h := StartHold(time.Millisecond, func() { expired.Add(1) })
	<-h.Done()
	ran := false
	err := h.End(errors.New("released"), func() { ran = true })
	if !errors.Is(err, cairn.ErrConflict) || ran || expired.Load() != 1 {
		t.Errorf("End after expiry: %v, fn ran %v, expired %d times", err, ran, expired.Load())
	}
}

func TestHoldEndsOnce(t *testing.T) {
	var expired, ended atomic.Int32
	h := StartHold(time.Hour, func() { expired.Add(1) })
	why := errors.New("already released")
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = h.End(why, func() { ended.Add(1) })
		}()
	}
	wg.Wait()
	<-h.Done()
	nils := 0
	for _, err := range errs {
		if err == nil {
			nils++
		} else if err != why {
			t.Errorf("End: %v", err)
		}
	}
	if nils != 1 || ended.Load() != 1 || expired.Load() != 0 {
		t.Errorf("%d Ends succeeded, fn ran %d times, expired %d times", nils, ended.Load(), expired.Load())
	}
}
