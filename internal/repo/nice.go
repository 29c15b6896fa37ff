package repo

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// atNice returns fn to run on an OS thread of its own at the nice value
// nice (1 to 19; 0 runs fn as it is). Linux gives each thread its own
// nice value. The thread stays locked to the goroutine and is never
// unlocked, so the runtime ends it when fn returns: no other goroutine
// ever runs at the lowered priority. A thread already nicer than nice
// stays as it is: this never raises a priority. Lowering one needs no
// privilege; when the kernel refuses anyway, fn runs at the normal one.
func atNice(nice int, fn func() error) func() error {
	if nice <= 0 {
		return fn
	}
	return func() error {
		runtime.LockOSThread()
		tid := unix.Gettid()
		// The raw getpriority call answers 20 minus the nice value.
		if prio, err := unix.Getpriority(unix.PRIO_PROCESS, tid); err == nil && 20-prio < nice {
			_ = unix.Setpriority(unix.PRIO_PROCESS, tid, nice)
		}
		return fn()
	}
}
