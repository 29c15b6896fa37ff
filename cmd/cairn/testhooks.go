//go:build cairn_testhooks

package main

// Test hooks. They are compiled only into a binary built with
// -tags cairn_testhooks, which is how the end-to-end tests build theirs; a
// production build has none (testhooks_off.go), and reads none of these
// variables.
//
// A hook stops the process at an event, so that a crash test places its
// kill by what the process did rather than by a wall-clock window:
//
//	CAIRN_TESTHOOK_AT=EVENT#N        the point: the N-th event whose name starts with EVENT
//	CAIRN_TESTHOOK_ACTION=stop|fail  stop there (the default), or make that operation fail
//	CAIRN_TESTHOOK_ANNOUNCE=PATH     the process appends a line here when it reaches the
//	                                 point ("reached EVENT #N") and for each operation it
//	                                 holds afterwards ("held OPERATION"); default stderr
//	CAIRN_TESTHOOK_RELEASE=PATH      with stop: after reaching the point, read a line from
//	                                 PATH and go on; without it the process stays stopped
//	                                 until it is killed
//	CAIRN_TESTHOOK_HOLD=PREFIX       after the point, hold only the operations whose name
//	                                 starts with PREFIX (default: every hooked operation)
//	CAIRN_TESTHOOK_ONCE=PATH         the point is reached by one process only: the first to
//	                                 reach it creates PATH, and in any other (a data plane
//	                                 started after one was killed inherits the environment)
//	                                 the point is passed by
//
// The events:
//
//	store.put NAME, store.get NAME,      after the object store operation succeeded
//	store.delete NAME, store.list PREFIX
//	catalog.task KIND STATE,             after the catalog transaction that wrote the row
//	catalog.volume STATUS,               committed
//	catalog.snapshot STATUS,
//	catalog.backup STATUS,
//	catalog.instance STATUS,
//	catalog.dbbackup STATUS,
//	catalog.slot STATE                   a policy's slot recorded (firing, missed) or its
//	                                     backups queued (fired, skipped)
//	nbd.accept                           an NBD connection was accepted
//	nbd.write EXPORT                     a write request reached the export (named as the
//	                                     client named it), before it is applied
//	dbhost EVENT                         the data plane's database instance host did a step
//	                                     (quiesced, snapshotted, released, attached, mounted,
//	                                     loaded, prepared, ready, ...), as it logs it
//
// The data plane a service starts inherits its environment, so one point
// can name an event of either process.
//
// From the moment the point is reached until it is released, every hooked
// operation that starts is held too (and announced), so nothing more
// reaches the store, the catalog or the exports: what a test finds after
// the kill is what the process had done at the point, plus the operations
// already under way then. A test that releases the point while the
// process shuts down names with CAIRN_TESTHOOK_HOLD the operations it
// holds: the shutdown waits for the task workers, whose next catalog
// transaction would otherwise wait for a release that comes only after
// the shutdown got further.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/nbd"
	"github.com/cairnproject/cairn/internal/objstore"
)

// holdLimit bounds how long a stopped process waits to be killed or
// released: a test that died must not leave it behind for ever.
const holdLimit = 10 * time.Minute

// testHooks is the configured point. Its methods are safe for concurrent
// use; a nil *testHooks does nothing.
type testHooks struct {
	prefix   string // events whose name starts with it count
	n        int64  // the point is the n-th of them
	fail     bool
	announce io.Writer
	release  string
	once     string
	holds    string // the prefix of the operations held after the point

	mu      sync.Mutex
	count   int64
	stopped bool          // the point was reached and is not released yet
	resume  chan struct{} // closed on release
}

// newTestHooks reads the hook's settings; nil when none is set.
func newTestHooks(getenv func(string) string) (*testHooks, error) {
	at := getenv("CAIRN_TESTHOOK_AT")
	if at == "" {
		return nil, nil
	}
	i := strings.LastIndexByte(at, '#')
	if i < 0 {
		return nil, fmt.Errorf("CAIRN_TESTHOOK_AT %q: want EVENT#N", at)
	}
	n, err := strconv.ParseInt(at[i+1:], 10, 64)
	if err != nil || n < 1 {
		return nil, fmt.Errorf("CAIRN_TESTHOOK_AT %q: want EVENT#N with N at least 1", at)
	}
	h := &testHooks{prefix: at[:i], n: n, announce: os.Stderr, release: getenv("CAIRN_TESTHOOK_RELEASE"),
		once: getenv("CAIRN_TESTHOOK_ONCE"), holds: getenv("CAIRN_TESTHOOK_HOLD"),
		resume: make(chan struct{})}
	switch a := getenv("CAIRN_TESTHOOK_ACTION"); a {
	case "", "stop":
	case "fail":
		h.fail = true
	default:
		return nil, fmt.Errorf("CAIRN_TESTHOOK_ACTION %q: want stop or fail", a)
	}
	if p := getenv("CAIRN_TESTHOOK_ANNOUNCE"); p != "" {
		// The file stays open for the life of the process.
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("CAIRN_TESTHOOK_ANNOUNCE: %w", err)
		}
		h.announce = f
	}
	return h, nil
}

// say announces a line; h.mu is held, so lines keep their order.
func (h *testHooks) say(line string) {
	fmt.Fprintln(h.announce, line)
}

// hold waits for the release; h.mu is held on entry and released.
func (h *testHooks) hold(what string) {
	h.say("held " + what)
	resume := h.resume
	h.mu.Unlock()
	h.wait(resume)
}

func (h *testHooks) wait(resume <-chan struct{}) {
	select {
	case <-resume:
	case <-time.After(holdLimit):
		fmt.Fprintf(os.Stderr, "cairn: test hook: stopped at %s#%d for %v and neither killed nor released\n", h.prefix, h.n, holdLimit)
		os.Exit(99)
	}
}

// enter is called before a hooked operation starts: while the process is
// stopped at the point, the operation waits.
func (h *testHooks) enter(what string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	if !h.stopped || !strings.HasPrefix(what, h.holds) {
		h.mu.Unlock()
		return
	}
	h.hold(what)
}

// event reports an event. At the point it stops the process (or, with the
// fail action, returns the error the operation must fail with).
func (h *testHooks) event(name string) error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	if h.stopped {
		if strings.HasPrefix(name, h.holds) {
			h.hold(name)
		} else {
			h.mu.Unlock()
		}
		return nil
	}
	if h.count >= h.n || !strings.HasPrefix(name, h.prefix) {
		h.mu.Unlock()
		return nil
	}
	h.count++
	if h.count < h.n {
		h.mu.Unlock()
		return nil
	}
	if h.once != "" {
		f, err := os.OpenFile(h.once, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil { // another process reached it
			h.mu.Unlock()
			return nil
		}
		f.Close()
	}
	h.say(fmt.Sprintf("reached %s #%d", name, h.n))
	if h.fail {
		h.mu.Unlock()
		return fmt.Errorf("test hook: injected failure at %s #%d", name, h.n)
	}
	h.stopped = true
	h.mu.Unlock()
	if h.release == "" {
		h.wait(nil) // until killed
	}
	h.awaitRelease()
	h.mu.Lock()
	h.stopped = false
	close(h.resume)
	h.mu.Unlock()
	return nil
}

// dbEvents passes the instance host's events to the hook as "dbhost EVENT".
func (h *testHooks) dbEvents() func(id, ev string) {
	if h == nil {
		return nil
	}
	return func(_, ev string) { _ = h.event("dbhost " + ev) }
}

// awaitRelease reads a line from the release path.
func (h *testHooks) awaitRelease() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f, err := os.Open(h.release)
		if err != nil {
			fmt.Fprintf(os.Stderr, "cairn: test hook: release: %v\n", err)
			os.Exit(99)
		}
		defer f.Close()
		_, _ = bufio.NewReader(f).ReadString('\n')
	}()
	h.wait(done)
}

// store wraps an object store.
func (h *testHooks) store(be objstore.Backend) objstore.Backend {
	if h == nil {
		return be
	}
	return &hookedStore{be: be, h: h}
}

// catalog wraps the service's catalog.
func (h *testHooks) catalog(c catalog.Store) catalog.Store {
	if h == nil {
		return c
	}
	return hookedCatalog{Store: c, h: h}
}

// exports wraps the NBD exports.
func (h *testHooks) exports(c nbd.Catalog) nbd.Catalog {
	if h == nil {
		return c
	}
	return hookedExports{cat: c, h: h}
}

// listener wraps an NBD listener.
func (h *testHooks) listener(l net.Listener) net.Listener {
	if h == nil {
		return l
	}
	return hookedListener{Listener: l, h: h}
}

// hookedStore reports the operations of a store. It does not implement
// objstore.BatchDeleter, so every delete is its own event.
type hookedStore struct {
	be objstore.Backend
	h  *testHooks
}

func (s *hookedStore) Location() string { return s.be.Location() }

// Unwrap returns the wrapped backend.
func (s *hookedStore) Unwrap() objstore.Backend { return s.be }

// Close closes the store it wraps.
func (s *hookedStore) Close() error { return s.be.Close() }

func (s *hookedStore) Put(ctx context.Context, name string, data []byte, opts objstore.PutOptions) error {
	s.h.enter("store.put " + name)
	if err := s.be.Put(ctx, name, data, opts); err != nil {
		return err
	}
	return s.h.event("store.put " + name)
}

func (s *hookedStore) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	s.h.enter("store.get " + name)
	rc, err := s.be.Get(ctx, name, offset, length)
	if err != nil {
		return nil, err
	}
	if err := s.h.event("store.get " + name); err != nil {
		rc.Close()
		return nil, err
	}
	return rc, nil
}

func (s *hookedStore) Stat(ctx context.Context, name string) (objstore.ObjectInfo, error) {
	s.h.enter("store.stat " + name)
	return s.be.Stat(ctx, name)
}

func (s *hookedStore) List(ctx context.Context, prefix string, fn func(objstore.ObjectInfo) error) error {
	s.h.enter("store.list " + prefix)
	if err := s.be.List(ctx, prefix, fn); err != nil {
		return err
	}
	return s.h.event("store.list " + prefix)
}

func (s *hookedStore) Delete(ctx context.Context, name string) error {
	s.h.enter("store.delete " + name)
	if err := s.be.Delete(ctx, name); err != nil {
		return err
	}
	return s.h.event("store.delete " + name)
}

// hookedCatalog reports the rows a committed transaction updated.
type hookedCatalog struct {
	catalog.Store
	h *testHooks
}

func (c hookedCatalog) Update(ctx context.Context, fn func(catalog.Tx) error) error {
	c.h.enter("catalog.update")
	var events []string
	err := c.Store.Update(ctx, func(tx catalog.Tx) error {
		events = events[:0] // a retried transaction starts again
		return fn(hookedTx{Tx: tx, events: &events})
	})
	if err != nil {
		return err
	}
	for _, e := range events {
		if err := c.h.event(e); err != nil {
			return err
		}
	}
	return nil
}

type hookedTx struct {
	catalog.Tx
	events *[]string
}

func (t hookedTx) note(err error, event string) error {
	if err == nil {
		*t.events = append(*t.events, event)
	}
	return err
}

func (t hookedTx) UpdateTask(ctx context.Context, task cairn.Task) error {
	return t.note(t.Tx.UpdateTask(ctx, task), "catalog.task "+task.Kind+" "+string(task.State))
}

func (t hookedTx) UpdateVolume(ctx context.Context, v cairn.Volume) error {
	return t.note(t.Tx.UpdateVolume(ctx, v), "catalog.volume "+string(v.Status))
}

func (t hookedTx) UpdateSnapshot(ctx context.Context, s cairn.Snapshot) error {
	return t.note(t.Tx.UpdateSnapshot(ctx, s), "catalog.snapshot "+string(s.Status))
}

func (t hookedTx) UpdateBackup(ctx context.Context, b cairn.Backup) error {
	return t.note(t.Tx.UpdateBackup(ctx, b), "catalog.backup "+string(b.Status))
}

func (t hookedTx) UpdateInstance(ctx context.Context, in cairn.Instance) error {
	return t.note(t.Tx.UpdateInstance(ctx, in), "catalog.instance "+string(in.Status))
}

func (t hookedTx) InsertPolicySlots(ctx context.Context, slots ...cairn.PolicySlot) error {
	err := t.Tx.InsertPolicySlots(ctx, slots...)
	for _, s := range slots {
		err = t.note(err, "catalog.slot "+s.State)
	}
	return err
}

func (t hookedTx) UpdatePolicySlot(ctx context.Context, s cairn.PolicySlot) error {
	return t.note(t.Tx.UpdatePolicySlot(ctx, s), "catalog.slot "+s.State)
}

func (t hookedTx) UpdateDatabaseBackup(ctx context.Context, b cairn.DatabaseBackup) error {
	return t.note(t.Tx.UpdateDatabaseBackup(ctx, b), "catalog.dbbackup "+string(b.Status))
}

// hookedExports reports the requests that reach the exports.
type hookedExports struct {
	cat nbd.Catalog
	h   *testHooks
}

func (c hookedExports) Open(ctx context.Context, name string) (nbd.Export, func(), error) {
	e, release, err := c.cat.Open(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	he := hookedExport{Export: e, name: name, h: c.h}
	if d, ok := e.(nbd.Describer); ok {
		return describedExport{he, d}, release, nil
	}
	return he, release, nil
}

func (c hookedExports) List(ctx context.Context) ([]nbd.ExportInfo, error) { return c.cat.List(ctx) }

type hookedExport struct {
	nbd.Export
	name string
	h    *testHooks
}

type describedExport struct {
	hookedExport
	nbd.Describer
}

func (e hookedExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	e.h.enter("nbd.read " + e.name)
	return e.Export.ReadAt(ctx, p, off)
}

func (e hookedExport) WriteAt(ctx context.Context, p []byte, off int64) error {
	if err := e.h.event("nbd.write " + e.name); err != nil {
		return err
	}
	return e.Export.WriteAt(ctx, p, off)
}

func (e hookedExport) Flush(ctx context.Context) error {
	e.h.enter("nbd.flush " + e.name)
	return e.Export.Flush(ctx)
}

func (e hookedExport) Trim(ctx context.Context, off, length int64) error {
	e.h.enter("nbd.trim " + e.name)
	return e.Export.Trim(ctx, off, length)
}

func (e hookedExport) Zero(ctx context.Context, off, length int64, noHole bool) error {
	e.h.enter("nbd.zero " + e.name)
	return e.Export.Zero(ctx, off, length, noHole)
}

// hookedListener reports the connections it accepts; with the fail
// action, Accept fails at the point as a broken listener would.
type hookedListener struct {
	net.Listener
	h *testHooks
}

func (l hookedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if err := l.h.event("nbd.accept"); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
