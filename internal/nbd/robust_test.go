package nbd_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cairnproject/cairn/internal/nbd"
	"github.com/cairnproject/cairn/internal/nbd/nbdtest"
)

// requestBytes encodes a request header.
func requestBytes(flags, typ uint16, cookie, off uint64, length uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, cRequestMagic)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cookie)
	b = binary.BigEndian.AppendUint64(b, off)
	return binary.BigEndian.AppendUint32(b, length)
}

// drain reads until the server closes the connection, however long that
// takes; it returns nil once the server closed it (a reset counts: a unix
// socket closed with data unread resets its peer).
func drain(nc net.Conn) error {
	_, err := io.Copy(io.Discard, nc)
	if err != nil && !isReset(err) {
		return err
	}
	return nil
}

const badRegion = 512 << 10 // where misbehaving clients try to write

// misbehaviours are clients breaking the protocol in various ways. Each
// returns an error when the server did not react as it should.
var misbehaviours = map[string]func(bg *bgT, sock string){
	"garbage-at-greeting": func(bg *bgT, sock string) {
		nc := dialSocket(bg, sock)
		defer nc.Close()
		nc.Write(randomBytes(1, 4096))
		if err := drain(nc); err != nil {
			bg.Fatalf("garbage-at-greeting: waiting for the server to close: %v", err)
		}
	},
	"bad-request-magic": func(bg *bgT, sock string) {
		c := connect(bg, sock, "disk", false, false)
		defer c.nc.Close()
		c.nc.Write(bytes.Repeat([]byte{0xde, 0xad}, 14))
		if err := drain(c.nc); err != nil {
			bg.Fatalf("bad-request-magic: waiting for the server to close: %v", err)
		}
	},
	"huge-write": func(bg *bgT, sock string) {
		c := connect(bg, sock, "disk", true, false)
		defer c.nc.Close()
		c.nc.Write(requestBytes(0, cmdWrite, 1, badRegion, 0xffffffff))
		c.nc.Write(make([]byte, 8192))
		if err := drain(c.nc); err != nil {
			bg.Fatalf("huge-write: waiting for the server to close: %v", err)
		}
	},
	"disconnect-mid-write": func(bg *bgT, sock string) {
		c := connect(bg, sock, "disk", false, false)
		c.nc.Write(requestBytes(0, cmdWrite, 1, badRegion, 65536))
		c.nc.Write(bytes.Repeat([]byte{0xbb}, 1000))
		c.nc.Close()
	},
	"disconnect-mid-header": func(bg *bgT, sock string) {
		c := connect(bg, sock, "disk", false, false)
		c.nc.Write(requestBytes(0, cmdWrite, 1, badRegion, 65536)[:10])
		c.nc.Close()
	},
	"vanish-after-go": func(bg *bgT, sock string) {
		c := connect(bg, sock, "disk", true, true)
		c.nc.Close()
	},
	"vanish-mid-handshake": func(bg *bgT, sock string) {
		c := newClient(bg, sock)
		c.clientFlags(cFlagFixedNewstyle)
		hdr := binary.BigEndian.AppendUint64(nil, cIHaveOpt)
		hdr = binary.BigEndian.AppendUint32(hdr, optGo)
		hdr = binary.BigEndian.AppendUint32(hdr, 100)
		c.write(append(hdr, 1, 2, 3))
		c.nc.Close()
	},
	"flood-without-reading": func(bg *bgT, sock string) {
		c := connect(bg, sock, "disk", false, false)
		var b []byte
		for i := range 64 {
			b = append(b, requestBytes(0, cmdRead, uint64(i), 0, 1<<20)...)
		}
		c.nc.Write(b)
		c.nc.Close()
	},
	"garbage-options": func(bg *bgT, sock string) {
		c := newClient(bg, sock)
		defer c.nc.Close()
		c.clientFlags(cFlagFixedNewstyle)
		for i := range 20 {
			c.sendOption(uint32(i*7919), randomBytes(uint64(i), i*13))
			c.readOptReply(uint32(i * 7919))
		}
		c.nc.Write(randomBytes(7, 100))
		if err := drain(c.nc); err != nil {
			bg.Fatalf("garbage-options: waiting for the server to close: %v", err)
		}
	},
}

// TestMisbehavingClients: clients breaking the protocol lose their own
// connection and nothing else; a well-behaved client working at the same
// time is not disturbed.
//
// The misbehaving clients run in loops until the good client is done. A
// loop waits until the server holds at most maxOpen connections before it
// makes another, so that clients which vanish without waiting for the
// server cannot pile up connections faster than a loaded machine tears them
// down. The server's clock stands still: no connection ends by a timeout,
// only by the server's reaction to what the client did.
func TestMisbehavingClients(t *testing.T) {
	f, srv := setupClock(t, nbd.Options{}, false)
	maxOpen := 2*len(misbehaviours) + 1
	var bg bgT
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, fn := range misbehaviours {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				srv.l.waitOpenAtMost(maxOpen)
				var one sync.WaitGroup
				one.Go(func() { fn(&bg, f.sock) }) // a Fatalf ends only this goroutine
				one.Wait()
			}
		})
	}

	c := connect(t, f.sock, "disk", true, false)
	want := make([]byte, 256<<10)
	for i := range 300 {
		p := randomBytes(uint64(i), 4096+i)
		off := uint64(i*4099) % uint64(len(want)-len(p))
		c.writeAt(0, off, p)
		copy(want[off:], p)
		if got := c.read(off, uint32(len(p))); !bytes.Equal(got, p) {
			t.Fatalf("iteration %d: read back wrong data", i)
		}
		if i%50 == 0 {
			c.ok(0, cmdFlush, 0, 0)
		}
	}
	requireSame(t, "good client's data", c.read(0, uint32(len(want))), want)
	close(stop)
	wg.Wait()
	bg.check(t)
	if got := f.disk.Bytes()[badRegion : badRegion+65536]; !bytes.Equal(got, make([]byte, 65536)) {
		t.Errorf("an incomplete or refused write reached the export")
	}
	c.disconnect()
	f.waitReleased(t, "disk")
	if !hasAny(f.log.warnings(), "protocol error") {
		t.Errorf("protocol errors were not logged")
	}
}

// TestStalledClients: a client that stalls in the middle of a request (the
// payload of a write, or reading replies) loses its connection once
// IOTimeout has passed, and not before; a client idle between requests
// keeps it however long it waits. Time passes only when the test advances
// the server's clock, and the test does so once the server waits where the
// test wants it.
func TestStalledClients(t *testing.T) {
	const ioTimeout = 200 * time.Millisecond
	f, srv := setupClock(t, nbd.Options{IOTimeout: ioTimeout}, false)

	t.Run("idle-is-fine", func(t *testing.T) {
		c := connect(t, f.sock, "disk", true, false)
		sc := srv.conn()
		p := randomBytes(3, 4096)
		c.writeAt(0, 0, p) // a payload deadline, set and cleared, and a reply's
		sc.waitReadBlocked(c.sent.Load())
		srv.clock.Advance(100 * ioTimeout)
		if got := c.read(0, 4096); !bytes.Equal(got, p) {
			t.Errorf("read after idling: wrong data")
		}
		c.disconnect()
	})
	t.Run("slow-write-payload", func(t *testing.T) {
		c := connect(t, f.sock, "disk", true, false)
		sc := srv.conn()
		p := randomBytes(4, 4096)
		c.submit(0, cmdWrite, 8192, 4096, p[:100])
		sc.waitReadBlocked(c.sent.Load())
		srv.clock.Advance(ioTimeout - time.Nanosecond)
		c.write(p[100:])
		if r := c.next(); r.err != 0 {
			t.Fatalf("write whose payload came just within IOTimeout: error %d %q", r.err, r.msg)
		}
		if got := c.read(8192, 4096); !bytes.Equal(got, p) {
			t.Errorf("slow write: wrong data")
		}
		c.disconnect()
	})
	t.Run("stalled-write-payload", func(t *testing.T) {
		c := connect(t, f.sock, "disk", true, false)
		sc := srv.conn()
		c.submit(0, cmdWrite, 0, 4096, make([]byte, 100))
		sc.waitReadBlocked(c.sent.Load())
		srv.clock.Advance(ioTimeout)
		if read, _ := sc.timedOut(); !read {
			t.Fatalf("IOTimeout passed and the server's read of the payload has no deadline that passed")
		}
		c.expectClosed()
		f.waitReleased(t, "disk")
	})
	t.Run("not-reading-replies", func(t *testing.T) {
		c := connect(t, f.sock, "disk", false, false)
		sc := srv.conn()
		var b []byte
		for i := range 128 {
			b = append(b, requestBytes(0, cmdRead, uint64(i), 0, 1<<20)...)
		}
		c.write(b)
		// A reply of 1 MiB is more than a socket holds: its write blocks
		// until the client reads, which it never does. The server gives
		// up on the client when the write deadline passes.
		sc.waitWriteBlocked(1 << 20)
		srv.clock.Advance(ioTimeout)
		if _, write := sc.timedOut(); !write {
			t.Fatalf("IOTimeout passed and the server's blocked reply has no deadline that passed")
		}
		f.waitReleased(t, "disk")
	})
}

// TestShutdown: when the context ends, requests in flight complete, then
// every connection closes and Serve returns.
func TestShutdown(t *testing.T) {
	m := nbdtest.NewMem(diskSize, nbdtest.MemOptions{})
	m.Fill(randomBytes(1, 4096), 0)
	started, release := make(chan struct{}), make(chan struct{})
	m.SetHook(func(ctx context.Context, op nbdtest.Op, off, length int64) error {
		if op == nbdtest.OpRead && off == 0 {
			close(started)
			<-release // in flight until the shutdown has reached the connection
		}
		return nil
	})
	cat := nbdtest.NewCatalog()
	cat.Add("disk", "", m)
	srv := startServer(t, cat, nbd.Options{})

	a := connect(t, srv.sock, "disk", true, false)
	sa := srv.conn()
	slow := a.submit(0, cmdRead, 0, 4096, nil)
	b := newClient(t, srv.sock) // still negotiating
	<-started
	srv.cancel()
	// The shutdown reaches both connections while the read is in flight:
	// b, negotiating, is closed; a stops reading requests (its reader's
	// Read fails).
	b.expectClosed()
	sa.waitReadFailed()
	close(release)
	r := a.next()
	if r.cookie != slow || r.err != 0 || !bytes.Equal(r.data, m.Bytes()[:4096]) {
		t.Errorf("request in flight at shutdown: err %d", r.err)
	}
	a.expectClosed()
	srv.wait(t)
	if cat.InUse("disk") != 0 {
		t.Errorf("export still open after Serve returned")
	}
	if _, err := net.Dial("unix", srv.sock); err == nil {
		t.Errorf("the listener still accepts")
	}
}

// TestShutdownTimeout: requests still running ShutdownTimeout after the
// context ended are cancelled and fail with ESHUTDOWN; until then they run
// on.
func TestShutdownTimeout(t *testing.T) {
	const grace = 100 * time.Millisecond
	m := nbdtest.NewMem(diskSize, nbdtest.MemOptions{})
	started := make(chan context.Context, 1)
	m.SetHook(func(ctx context.Context, op nbdtest.Op, off, length int64) error {
		if op == nbdtest.OpWrite {
			started <- ctx
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
	cat := nbdtest.NewCatalog()
	cat.Add("disk", "", m)
	srv := startServer(t, cat, nbd.Options{ShutdownTimeout: grace})
	c := connect(t, srv.sock, "disk", true, false)
	c.submit(0, cmdWrite, 0, 4096, make([]byte, 4096))
	reqCtx := <-started
	srv.cancel()
	if !srv.clock.waitTimers(1, reqCtx.Done()) { // the grace period began
		t.Fatalf("request cancelled when the context ended, before ShutdownTimeout passed")
	}
	srv.clock.Advance(grace - time.Nanosecond)
	if err := reqCtx.Err(); err != nil {
		t.Fatalf("request cancelled before ShutdownTimeout passed: %v", err)
	}
	srv.clock.Advance(time.Nanosecond)
	if r := c.next(); r.err != 108 {
		t.Errorf("error %d, want ESHUTDOWN", r.err)
	}
	c.expectClosed()
	srv.wait(t)
}

// TestListenerClosed: closing the listener stops accepting, but the
// connections already made are served until they end; then Serve returns.
// Once the server has settled after the close (synctest.Wait), Serve has
// not returned, and the connection still works.
func TestListenerClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cat := nbdtest.NewCatalog()
		cat.Add("disk", "", nbdtest.NewMem(diskSize, nbdtest.MemOptions{}))
		srv := servePipe(t, cat, nbd.Options{})
		c := connectConn(t, srv.l.dial(t), "disk", true, false)
		srv.l.Close()
		synctest.Wait()
		if srv.returned() {
			t.Fatalf("Serve returned with a connection open")
		}
		c.writeAt(0, 0, []byte("still here"))
		if got := c.read(0, 10); string(got) != "still here" {
			t.Errorf("read %q", got)
		}
		c.disconnect()
		srv.wait(t)
	})
}
