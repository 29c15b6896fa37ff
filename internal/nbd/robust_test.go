package nbd_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
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

// drain reads until the server closes the connection or the deadline
// passes; it reports whether the server closed.
func drain(nc net.Conn, d time.Duration) bool {
	nc.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, nc)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

const badRegion = 512 << 10 // where misbehaving clients try to write

// misbehaviours are clients breaking the protocol in various ways. Each
// returns an error when the server did not react as it should.
var misbehaviours = map[string]func(bg *bgT, sock string){
	"garbage-at-greeting": func(bg *bgT, sock string) {
		nc := dialSocket(bg, sock)
		defer nc.Close()
		nc.Write(randomBytes(1, 4096))
		if !drain(nc, 10*time.Second) {
			bg.Fatalf("garbage-at-greeting: server did not close")
		}
	},
	"bad-request-magic": func(bg *bgT, sock string) {
		c := connect(bg, sock, "disk", false, false)
		defer c.nc.Close()
		c.nc.Write(bytes.Repeat([]byte{0xde, 0xad}, 14))
		if !drain(c.nc, 10*time.Second) {
			bg.Fatalf("bad-request-magic: server did not close")
		}
	},
	"huge-write": func(bg *bgT, sock string) {
		c := connect(bg, sock, "disk", true, false)
		defer c.nc.Close()
		c.nc.Write(requestBytes(0, cmdWrite, 1, badRegion, 0xffffffff))
		c.nc.Write(make([]byte, 8192))
		if !drain(c.nc, 10*time.Second) {
			bg.Fatalf("huge-write: server did not close")
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
		if !drain(c.nc, 10*time.Second) {
			bg.Fatalf("garbage-options: server did not close")
		}
	},
}

// TestMisbehavingClients: clients breaking the protocol lose their own
// connection and nothing else; a well-behaved client working at the same
// time is not disturbed.
func TestMisbehavingClients(t *testing.T) {
	f := setupLog(t, nbd.Options{}, false)
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

func TestStalledClients(t *testing.T) {
	f := setupLog(t, nbd.Options{IOTimeout: 200 * time.Millisecond}, false)

	t.Run("idle-is-fine", func(t *testing.T) {
		c := connect(t, f.sock, "disk", true, false)
		time.Sleep(500 * time.Millisecond)
		c.read(0, 4096)
		c.disconnect()
	})
	t.Run("stalled-write-payload", func(t *testing.T) {
		c := connect(t, f.sock, "disk", true, false)
		c.nc.Write(requestBytes(0, cmdWrite, 1, 0, 4096))
		c.nc.Write(make([]byte, 100))
		start := time.Now()
		c.expectClosed()
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("closed after %v", d)
		}
		f.waitReleased(t, "disk")
	})
	t.Run("not-reading-replies", func(t *testing.T) {
		c := connect(t, f.sock, "disk", false, false)
		var b []byte
		for i := range 128 {
			b = append(b, requestBytes(0, cmdRead, uint64(i), 0, 1<<20)...)
		}
		c.nc.Write(b)
		// The server cannot write all the replies; it gives up on the client.
		f.waitReleased(t, "disk")
	})
}

// startServer runs a server whose context the test controls.
func startServer(t *testing.T, cat nbd.Catalog, opts nbd.Options) (sock string, l net.Listener, cancel context.CancelFunc, done chan error) {
	t.Helper()
	l, sock = listenUnix(t)
	ctx, cancel := context.WithCancel(t.Context())
	if opts.Logger == nil {
		opts.Logger, _ = newLogger(t, false)
	}
	srv := nbd.NewServer(cat, opts)
	done = make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return sock, l, cancel, done
}

func waitDone(t *testing.T, done chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		done <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatalf("Serve did not return")
	}
}

// TestShutdown: when the context ends, requests in flight complete, then
// every connection closes and Serve returns.
func TestShutdown(t *testing.T) {
	m := nbdtest.NewMem(diskSize, nbdtest.MemOptions{})
	m.Fill(randomBytes(1, 4096), 0)
	started := make(chan struct{}, 1)
	m.SetHook(func(ctx context.Context, op nbdtest.Op, off, length int64) error {
		if op == nbdtest.OpRead && off == 0 {
			started <- struct{}{}
			time.Sleep(300 * time.Millisecond)
		}
		return nil
	})
	cat := nbdtest.NewCatalog()
	cat.Add("disk", "", m)
	sock, _, cancel, done := startServer(t, cat, nbd.Options{})

	a := connect(t, sock, "disk", true, false)
	slow := a.submit(0, cmdRead, 0, 4096, nil)
	b := newClient(t, sock) // still negotiating
	<-started
	cancel()
	r := a.next()
	if r.cookie != slow || r.err != 0 || !bytes.Equal(r.data, m.Bytes()[:4096]) {
		t.Errorf("request in flight at shutdown: err %d", r.err)
	}
	a.expectClosed()
	b.expectClosed()
	waitDone(t, done)
	if cat.InUse("disk") != 0 {
		t.Errorf("export still open after Serve returned")
	}
	if _, err := net.Dial("unix", sock); err == nil {
		t.Errorf("the listener still accepts")
	}
}

// TestShutdownTimeout: requests still running ShutdownTimeout after the
// context ended are cancelled and fail with ESHUTDOWN.
func TestShutdownTimeout(t *testing.T) {
	m := nbdtest.NewMem(diskSize, nbdtest.MemOptions{})
	started := make(chan struct{}, 1)
	m.SetHook(func(ctx context.Context, op nbdtest.Op, off, length int64) error {
		if op == nbdtest.OpWrite {
			started <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
	cat := nbdtest.NewCatalog()
	cat.Add("disk", "", m)
	sock, _, cancel, done := startServer(t, cat, nbd.Options{ShutdownTimeout: 100 * time.Millisecond})
	c := connect(t, sock, "disk", true, false)
	c.submit(0, cmdWrite, 0, 4096, make([]byte, 4096))
	<-started
	cancel()
	if r := c.next(); r.err != 108 {
		t.Errorf("error %d, want ESHUTDOWN", r.err)
	}
	c.expectClosed()
	waitDone(t, done)
}

// TestListenerClosed: closing the listener stops accepting, but the
// connections already made are served until they end; then Serve returns.
func TestListenerClosed(t *testing.T) {
	cat := nbdtest.NewCatalog()
	cat.Add("disk", "", nbdtest.NewMem(diskSize, nbdtest.MemOptions{}))
	sock, l, _, done := startServer(t, cat, nbd.Options{})
	c := connect(t, sock, "disk", true, false)
	l.Close()
	select {
	case err := <-done:
		t.Fatalf("Serve returned (%v) with a connection open", err)
	case <-time.After(100 * time.Millisecond):
	}
	c.writeAt(0, 0, []byte("still here"))
	c.disconnect()
	waitDone(t, done)
}
