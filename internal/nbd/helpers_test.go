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

// logRecorder is a slog.Handler that writes to the test log and counts
// warnings and errors, so tests can require a quiet server.
type logRecorder struct {
	slog.Handler
	mu   *sync.Mutex
	msgs *[]string
}

func (h logRecorder) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.mu.Lock()
		*h.msgs = append(*h.msgs, r.Message)
		h.mu.Unlock()
	}
	return h.Handler.Handle(ctx, r)
}

func (h logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return logRecorder{h.Handler.WithAttrs(as), h.mu, h.msgs}
}

func (h logRecorder) WithGroup(g string) slog.Handler {
	return logRecorder{h.Handler.WithGroup(g), h.mu, h.msgs}
}

type serverLog struct {
	mu   sync.Mutex
	msgs []string
}

// warnings returns the messages logged at warning level or above.
func (l *serverLog) warnings() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs...)
}

// newLogger returns a logger writing to the test log. Unless quiet is
// false, the test fails if the server logs a warning or an error.
func newLogger(t *testing.T, quiet bool) (*slog.Logger, *serverLog) {
	sl := &serverLog{}
	h := slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})
	if quiet {
		t.Cleanup(func() {
			for _, m := range sl.warnings() {
				t.Errorf("unexpected server warning: %s", m)
			}
		})
	}
	return slog.New(logRecorder{h, &sl.mu, &sl.msgs}), sl
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
	f.sock = nbdtest.Serve(t, f.cat, opts)
	return f
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitReleased waits until no connection holds export name open.
func (f *fixture) waitReleased(t *testing.T, name string) {
	t.Helper()
	waitFor(t, "export "+name+" to be released", func() bool { return f.cat.InUse(name) == 0 })
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
