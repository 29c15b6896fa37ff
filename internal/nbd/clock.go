package nbd

import "time"

// clock is where the server takes time from: the deadlines it sets on
// connections (Options.HandshakeTimeout, Options.IOTimeout) are computed
// from Now, and the shutdown grace period (Options.ShutdownTimeout) and the
// accept back-off run on AfterFunc. The server uses the real clock; tests
// substitute one they advance themselves, with connections that measure
// deadlines by it (see export_test.go).
type clock interface {
	Now() time.Time
	// AfterFunc calls f once d has passed, unless stop is called first;
	// stop reports whether it prevented the call. f must not block.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
