package nbd_test

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/nbd"
	"github.com/cairnproject/cairn/internal/nbd/nbdtest"
)

// logRecorder is a slog.Handler that writes to the test log and records
// the messages in a serverLog, so tests can require a quiet server or wait
// for what it logs.
type logRecorder struct {
	slog.Handler
	log *serverLog
}

func (h logRecorder) Handle(ctx context.Context, r slog.Record) error {
	h.log.record(r.Level, r.Message)
	return h.Handler.Handle(ctx, r)
}

func (h logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return logRecorder{h.Handler.WithAttrs(as), h.log}
}

func (h logRecorder) WithGroup(g string) slog.Handler {
	return logRecorder{h.Handler.WithGroup(g), h.log}
}

// serverLog holds the messages a server logged.
type serverLog struct {
	mu       sync.Mutex
	warns    []string      // messages at warning level or above
	all      []string      // every message
	recorded chan struct{} // closed and replaced when a message is recorded
}

func newServerLog() *serverLog { return &serverLog{recorded: make(chan struct{})} }

func (l *serverLog) record(level slog.Level, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if level >= slog.LevelWarn {
		l.warns = append(l.warns, msg)
	}
	l.all = append(l.all, msg)
	close(l.recorded)
	l.recorded = make(chan struct{})
}

// warnings returns the messages logged at warning level or above.
func (l *serverLog) warnings() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.warns...)
}

// waitLogged waits until n messages (at any level) containing sub were
// logged: the server logs as it goes, so a message is an event a test can
// wait for.
func (l *serverLog) waitLogged(sub string, n int) {
	for {
		l.mu.Lock()
		found := 0
		for _, m := range l.all {
			if strings.Contains(m, sub) {
				found++
			}
		}
		recorded := l.recorded
		l.mu.Unlock()
		if found >= n {
			return
		}
		<-recorded
	}
}

// newLogger returns a logger writing to the test log. Unless quiet is
// false, the test fails if the server logs a warning or an error.
func newLogger(t *testing.T, quiet bool) (*slog.Logger, *serverLog) {
	sl := newServerLog()
	h := slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})
	if quiet {
		t.Cleanup(func() {
			for _, m := range sl.warnings() {
				t.Errorf("unexpected server warning: %s", m)
			}
		})
	}
	return slog.New(logRecorder{h, sl}), sl
}

// fixture is a server with a few exports:
//
//	"disk"  1 MiB, read-write
//	"ro"    64 KiB, read-only, no multi-conn
//	"fast"  1 MiB, fast zero
//	""      64 KiB, the default export
type fixture struct {
	sock              string
	cat               *nbdtest.Catalog
	disk, ro, fast, d *nbdtest.Mem
	log               *serverLog
}

// hangTimeout bounds the few waits kept only to turn a hang into a failure
// that names what hung where nothing else would: an outside program, which
// is killed when it passes, and the fuzz target, which runs with no go test
// -timeout while fuzzing. It is far beyond anything load causes; every
// other wait in these tests waits for its event for as long as it takes,
// and a hang there is caught by go test's -timeout.
const hangTimeout = 5 * time.Minute

const (
	diskSize = 1 << 20
	roSize   = 64 << 10
)

func setup(t *testing.T, opts nbd.Options) *fixture {
	t.Helper()
	return setupLog(t, opts, true)
}

func setupLog(t *testing.T, opts nbd.Options, quiet bool) *fixture {
	t.Helper()
	f := newFixture(t, &opts, quiet)
	f.sock = nbdtest.Serve(t, f.cat, opts)
	return f
}

// setupClock is setupLog with a server whose clock and context the test
// controls (see startServer): nothing times out unless the test advances
// the clock.
func setupClock(t *testing.T, opts nbd.Options, quiet bool) (*fixture, *testServer) {
	t.Helper()
	f := newFixture(t, &opts, quiet)
	srv := startServer(t, f.cat, opts)
	f.sock = srv.sock
	return f, srv
}

// newFixture makes the exports of a fixture and, unless opts has one, a
// logger recording what the server logs.
func newFixture(t *testing.T, opts *nbd.Options, quiet bool) *fixture {
	t.Helper()
	f := &fixture{
		cat:  nbdtest.NewCatalog(),
		disk: nbdtest.NewMem(diskSize, nbdtest.MemOptions{}),
		ro:   nbdtest.NewMem(roSize, nbdtest.MemOptions{ReadOnly: true, NoMultiConn: true}),
		fast: nbdtest.NewMem(diskSize, nbdtest.MemOptions{FastZero: true}),
		d:    nbdtest.NewMem(roSize, nbdtest.MemOptions{}),
	}
	f.cat.Add("disk", "the disk", f.disk)
	f.cat.Add("ro", "read-only disk", f.ro)
	f.cat.Add("fast", "", f.fast)
	f.cat.Add("", "default export", f.d)
	if opts.Logger == nil {
		opts.Logger, f.log = newLogger(t, quiet)
	}
	return f
}

// waitReleased waits until no connection holds export name open, however
// long the server takes to finish with them (a server that never does is
// caught by go test's -timeout).
func (f *fixture) waitReleased(t *testing.T, name string) {
	t.Helper()
	if err := f.cat.WaitReleased(t.Context(), name); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	p := make([]byte, n)
	fillRandom(rng, p)
	return p
}

// listenUnix listens on a unix socket in a temporary directory.
func listenUnix(t *testing.T) (net.Listener, string) {
	t.Helper()
	dir := t.TempDir()
	if len(dir) > 90 {
		d, err := os.MkdirTemp("", "nbd")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	sock := filepath.Join(dir, "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	return l, sock
}

// counter tracks how many operations run at once.
type counter struct {
	cur, peak atomic.Int64
}

func (c *counter) enter() {
	n := c.cur.Add(1)
	for {
		p := c.peak.Load()
		if n <= p || c.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

func (c *counter) leave() { c.cur.Add(-1) }

func hasAny(msgs []string, sub string) bool {
	for _, m := range msgs {
		if strings.Contains(m, sub) {
			return true
		}
	}
	return false
}
