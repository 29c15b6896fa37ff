package repo_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/crypto"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/mem"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/repo/repotest"
)

const testChunk = 64 << 10

var (
	fastKDF  = crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}
	password = repo.Secret{Kind: format.KeyKindPassword, Bytes: []byte("correct horse")}
)

func testOpts() repo.Options { return repo.Options{KDF: fastKDF, Workers: 2, Transfers: 3} }

// clockOpts are testOpts on a fake clock: sessions and sweeps age, their
// heartbeats tick, and their waits end only when the test says so.
func clockOpts(clk *repotest.Clock) repo.Options {
	o := testOpts()
	o.Now, o.Sleep, o.Ticks = clk.Now, clk.Sleep, clk.Ticks
	return o
}

// newClock returns a fake clock for one test.
func newClock() *repotest.Clock {
	return repotest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
}

// heartbeats makes o report its periodic refreshes on the channel it
// returns.
func heartbeats(o *repo.Options) <-chan error {
	ch := make(chan error, 64)
	o.OnHeartbeat = func(err error) { ch <- err }
	return ch
}

// initRepo makes a repository on the wall clock. Its session timeout is
// long: tests on the wall clock do not test timeouts (those run on a fake
// clock), and a loaded machine must not make their sessions look stale.
func initRepo(t *testing.T, be objstore.Backend) *repo.Repository {
	t.Helper()
	return initRepoWith(t, be, format.GCParams{SessionTimeout: format.Duration(time.Minute)}, testOpts())
}

func initRepoWith(t *testing.T, be objstore.Backend, gc format.GCParams, opts repo.Options) *repo.Repository {
	t.Helper()
	r, err := repo.Init(t.Context(), be, password, repo.InitOptions{ChunkSize: testChunk, GC: gc}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// newClockRepo makes a repository in a mem store, both on clk, with a
// 3 s session timeout (heartbeats due every second, a session stale to
// itself after 2 s) and no consistency margin.
func newClockRepo(t *testing.T, clk *repotest.Clock) (*repo.Repository, *mem.Backend) {
	t.Helper()
	be := mem.New(mem.Options{Now: clk.Now})
	return initRepoWith(t, be, format.GCParams{SessionTimeout: format.Duration(3 * time.Second)}, clockOpts(clk)), be
}

func newMemRepo(t *testing.T) (*repo.Repository, *mem.Backend) {
	t.Helper()
	be := mem.New(mem.Options{})
	return initRepo(t, be), be
}

func reopen(t *testing.T, be objstore.Backend) *repo.Repository {
	t.Helper()
	return reopenWith(t, be, testOpts())
}

// reopenWith opens the repository in be as another process would.
func reopenWith(t *testing.T, be objstore.Backend, opts repo.Options) *repo.Repository {
	t.Helper()
	r, err := repo.Open(t.Context(), be, password, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// gate pauses callers of wait until opened, or until the test ends;
// reached is closed when the first caller arrives.
type gate struct {
	reached chan struct{}
	open    chan struct{}
	ended   <-chan struct{}
	once    sync.Once
}

func newGate(t *testing.T) *gate {
	return &gate{reached: make(chan struct{}), open: make(chan struct{}), ended: t.Context().Done()}
}

func (g *gate) wait() {
	g.once.Do(func() { close(g.reached) })
	select {
	case <-g.open:
	case <-g.ended:
	}
}

// at returns a repotest.Source Block function that waits at the read of
// offset off.
func (g *gate) at(off int64) func(int64) {
	return func(o int64) {
		if o == off {
			g.wait()
		}
	}
}

// watchedBackend tells a test about the writes that reach a store:
// beforePut is called before each Put is passed on (it may block, to pause
// the writer), afterPut after each Put that succeeded.
type watchedBackend struct {
	objstore.Backend
	beforePut func(name string)
	afterPut  func(name string)
}

func (b *watchedBackend) Put(ctx context.Context, name string, data []byte, opts objstore.PutOptions) error {
	if b.beforePut != nil {
		b.beforePut(name)
	}
	if err := b.Backend.Put(ctx, name, data, opts); err != nil {
		return err
	}
	if b.afterPut != nil {
		b.afterPut(name)
	}
	return nil
}

// Unwrap returns the store the backend passes requests to.
func (b *watchedBackend) Unwrap() objstore.Backend { return b.Backend }

func backup(t *testing.T, r *repo.Repository, src *repotest.Source, opts repo.BackupOptions) *format.Manifest {
	t.Helper()
	if opts.SourceName == "" {
		opts.SourceName = "/dev/test"
	}
	m, err := r.Backup(t.Context(), src, opts)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	return m
}

// restoreAndCompare restores m and compares it with want: a volume
// backup into a fresh target, a stream backup both as a stream and into
// a fresh target.
func restoreAndCompare(t *testing.T, r *repo.Repository, m *format.Manifest, want []byte) repo.RestoreStats {
	t.Helper()
	if m.IsStream() {
		var out bytes.Buffer
		if _, err := r.RestoreStream(t.Context(), m, &out, nil); err != nil {
			t.Fatalf("restore of stream %s: %v", m.ID.Short(), err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("restore of stream %s differs from what was backed up (%d bytes, want %d)", m.ID.Short(), out.Len(), len(want))
		}
	}
	tgt := repotest.NewTarget(m.Size)
	stats, err := r.Restore(t.Context(), m, tgt, nil)
	if err != nil {
		t.Fatalf("restore %s: %v", m.ID.Short(), err)
	}
	if !bytes.Equal(tgt.Data, want) {
		t.Fatalf("restore of %s differs from the source", m.ID.Short())
	}
	return stats
}

func checkClean(t *testing.T, r *repo.Repository) {
	t.Helper()
	rep, err := r.Check(t.Context(), repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("check found problems: %v", rep.Problems)
	}
}
