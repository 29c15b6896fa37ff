package repo

import (
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// threadNice returns the nice value of the calling thread (the raw
// getpriority call answers 20 minus it).
func threadNice(t *testing.T) int {
	t.Helper()
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
	if err != nil {
		t.Fatal(err)
	}
	return 20 - prio
}

// TestAtNice: fn runs at the nice value asked for (or the process's, if
// that is nicer), and the thread it ran
// on never runs another goroutine: goroutines started afterwards all run
// at the process's own priority.
func TestAtNice(t *testing.T) {
	base := func() int {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		return threadNice(t)
	}()
	var got int
	done := make(chan error)
	go func() {
		done <- atNice(7, func() error {
			got = threadNice(t)
			return nil
		})()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if want := max(base, 7); got != want {
		t.Fatalf("fn ran at nice %d, want %d", got, want)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[int]int{}
	for range 4 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			n := threadNice(t)
			mu.Lock()
			seen[n]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(seen) != 1 || seen[base] == 0 {
		t.Fatalf("goroutines after fn ran at nice values %v, want all at %d", seen, base)
	}
	if err := atNice(0, func() error { return nil })(); err != nil {
		t.Fatal(err)
	}
}
