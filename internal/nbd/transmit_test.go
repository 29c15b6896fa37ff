package nbd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/nbd"
	"github.com/cairnproject/cairn/internal/nbd/nbdtest"
)

// modes runs a test with simple and with structured replies.
func modes(t *testing.T, fn func(t *testing.T, structured bool)) {
	for _, structured := range []bool{false, true} {
		name := "simple"
		if structured {
			name = "structured"
		}
		t.Run(name, func(t *testing.T) { fn(t, structured) })
	}
}

func TestReadWrite(t *testing.T) {
	modes(t, func(t *testing.T, structured bool) {
		f := setup(t, nbd.Options{})
		c := connect(t, f.sock, "disk", structured, false)
		want := make([]byte, diskSize)

		for i, w := range []struct {
			off uint64
			n   int
		}{{4096, 64 << 10}, {1000, 3000}, {diskSize - 1, 1}, {0, 1}, {123457, 200000}} {
			p := randomBytes(uint64(i), w.n)
			c.writeAt(0, w.off, p)
			copy(want[w.off:], p)
		}
		requireSame(t, "export", f.disk.Bytes(), want)
		requireSame(t, "whole read", c.read(0, diskSize), want)
		requireSame(t, "unaligned read", c.read(999, 5000), want[999:5999])

		// Zero-length requests succeed without effect.
		if r := c.do(0, cmdRead, 10, 0, nil); r.err != 0 || len(r.data) != 0 {
			t.Errorf("zero-length read: %+v", r)
		}
		c.writeAt(0, diskSize, nil)
		// DF is accepted once structured replies are negotiated.
		if structured {
			r := c.do(flagDF, cmdRead, 4096, 65536, nil)
			if r.err != 0 || r.chunks != 1 || !bytes.Equal(r.data, want[4096:4096+65536]) {
				t.Errorf("read with DF: err %d, %d chunks", r.err, r.chunks)
			}
		}
		c.disconnect()
	})
}

func TestCommands(t *testing.T) {
	modes(t, func(t *testing.T, structured bool) {
		f := setup(t, nbd.Options{})
		c := connect(t, f.sock, "disk", structured, false)
		m := f.disk
		data := randomBytes(1, 64<<10)

		// Plain write: not durable until a flush.
		c.writeAt(0, 0, data)
		if m.Synced(0, int64(len(data))) {
			t.Errorf("plain write already synced")
		}
		flushes := m.Flushes()
		c.ok(0, cmdFlush, 0, 0)
		if m.Flushes() != flushes+1 || !m.Synced(0, int64(len(data))) {
			t.Errorf("flush: %d flushes, synced %v", m.Flushes()-flushes, m.Synced(0, int64(len(data))))
		}

		// FUA write: durable when the reply arrives.
		c.writeAt(flagFUA, 1<<19, data)
		if !m.Synced(1<<19, int64(len(data))) {
			t.Errorf("FUA write not synced at reply")
		}

		// Trim frees the whole pages inside the range.
		alloc := m.Allocated()
		c.ok(flagFUA, cmdTrim, 4096, 16384)
		if got := m.Allocated(); got != alloc-16384 {
			t.Errorf("trim: allocated %d -> %d", alloc, got)
		}
		if !m.Synced(4096, 16384) {
			t.Errorf("FUA trim not synced")
		}

		// Write zeroes punches holes, unless NO_HOLE.
		alloc = m.Allocated()
		c.ok(0, cmdWriteZeroes, 1<<19, 8192)
		if got := m.Allocated(); got != alloc-8192 {
			t.Errorf("write zeroes: allocated %d -> %d", alloc, got)
		}
		c.ok(flagNoHole|flagFUA, cmdWriteZeroes, 1<<19+8192, 8192)
		if got := m.Allocated(); got != alloc-8192 {
			t.Errorf("write zeroes NO_HOLE: allocated %d -> %d", alloc, got)
		}
		if !m.Synced(1<<19+8192, 8192) {
			t.Errorf("FUA write zeroes not synced")
		}
		if got := c.read(1<<19, 16384); !bytes.Equal(got, make([]byte, 16384)) {
			t.Errorf("zeroed range does not read as zeros")
		}
		// Unaligned zeroing clears bytes inside pages.
		c.ok(0, cmdWriteZeroes, 1<<19+20000, 100)
		want := append([]byte(nil), data[16384:]...)
		clear(want[3616 : 3616+100])
		requireSame(t, "after unaligned zero", c.read(1<<19+16384, uint32(len(want))), want)

		// FUA is accepted on commands that do not write, and ignored.
		c.read(0, 10)
		c.ok(flagFUA, cmdFlush, 0, 0)
		if r := c.do(flagFUA, cmdRead, 0, 10, nil); r.err != 0 {
			t.Errorf("read with FUA: %d", r.err)
		}
		// Flush ignores its reserved fields.
		c.ok(0, cmdFlush, 5, 5)
		c.disconnect()
	})
}

func TestFastZero(t *testing.T) {
	modes(t, func(t *testing.T, structured bool) {
		f := setup(t, nbd.Options{})
		c := connect(t, f.sock, "fast", structured, false)
		if c.tflags&tfSendFastZero == 0 {
			t.Fatalf("NBD_FLAG_SEND_FAST_ZERO not set")
		}
		c.writeAt(0, 0, randomBytes(2, 8192))
		c.ok(flagFastZero, cmdWriteZeroes, 0, 8192)
		if got := c.read(0, 8192); !bytes.Equal(got, make([]byte, 8192)) {
			t.Errorf("fast zero did not zero")
		}
		// The export finds it cannot zero fast after all: ENOTSUP, no change.
		c.writeAt(0, 0, []byte{1})
		f.fast.SetHook(func(ctx context.Context, op nbdtest.Op, off, length int64) error {
			if op == nbdtest.OpZero {
				return fmt.Errorf("not today: %w", cairn.ErrUnsupported)
			}
			return nil
		})
		if r := c.do(flagFastZero, cmdWriteZeroes, 0, 8192, nil); r.err != eNOTSUP {
			t.Errorf("fast zero refused by the export: error %d, want ENOTSUP", r.err)
		}
		if got := c.read(0, 1); got[0] != 1 {
			t.Errorf("failed fast zero changed data")
		}
		c.disconnect()
	})
}

// TestRequestErrors: each request is refused with the right error, and
// the connection keeps working.
func TestRequestErrors(t *testing.T) {
	errBackend := errors.New("disk on fire")
	type hookFn = func(ctx context.Context, op nbdtest.Op, off, length int64) error
	failOn := func(which nbdtest.Op, err error) hookFn {
		return func(ctx context.Context, op nbdtest.Op, off, length int64) error {
			if op == which {
				return err
			}
			return nil
		}
	}
	const maxReq = 256 << 10
	tests := []struct {
		name    string
		export  string
		flags   uint16
		typ     uint16
		off     uint64
		length  uint32
		payload bool
		hook    hookFn
		want    uint32
	}{
		{name: "read-beyond-end", export: "disk", typ: cmdRead, off: diskSize - 100, length: 200, want: eINVAL},
		{name: "read-offset-overflow", export: "disk", typ: cmdRead, off: 1<<64 - 10, length: 100, want: eINVAL},
		{name: "read-past-size", export: "disk", typ: cmdRead, off: diskSize + 1, length: 0, want: eINVAL},
		{name: "read-too-long", export: "disk", typ: cmdRead, length: 2 * maxReq, want: eINVAL},
		{name: "write-beyond-end", export: "disk", typ: cmdWrite, off: diskSize - 100, length: 200, payload: true, want: eNOSPC},
		{name: "write-offset-overflow", export: "disk", typ: cmdWrite, off: 1<<64 - 1, length: 2, payload: true, want: eNOSPC},
		{name: "write-too-long", export: "disk", typ: cmdWrite, length: 2 * maxReq, payload: true, want: eINVAL},
		{name: "write-read-only", export: "ro", typ: cmdWrite, length: 512, payload: true, want: ePERM},
		{name: "trim-read-only", export: "ro", typ: cmdTrim, length: 4096, want: ePERM},
		{name: "zero-read-only", export: "ro", typ: cmdWriteZeroes, length: 4096, want: ePERM},
		{name: "trim-beyond-end", export: "disk", typ: cmdTrim, off: diskSize, length: 1, want: eINVAL},
		{name: "zero-beyond-end", export: "disk", typ: cmdWriteZeroes, off: diskSize - 1, length: 2, want: eNOSPC},
		{name: "zero-longer-than-payload-beyond-end", export: "disk", typ: cmdWriteZeroes, off: 4096, length: diskSize, want: eNOSPC},
		{name: "trim-longer-than-payload-beyond-end", export: "disk", typ: cmdTrim, off: 4096, length: diskSize, want: eINVAL},
		{name: "cache", export: "disk", typ: cmdCache, length: 4096, want: eINVAL},
		{name: "unknown-command", export: "disk", typ: 0xffff, length: 4096, want: eINVAL},
		{name: "read-with-req-one", export: "disk", flags: flagReqOne, typ: cmdRead, length: 512, want: eINVAL},
		{name: "write-with-no-hole", export: "disk", flags: flagNoHole, typ: cmdWrite, length: 512, payload: true, want: eINVAL},
		{name: "fast-zero-not-advertised", export: "disk", flags: flagFastZero, typ: cmdWriteZeroes, length: 512, want: eINVAL},
		{name: "unknown-flag", export: "disk", flags: 1 << 15, typ: cmdFlush, want: eINVAL},
		{name: "payload-len-flag", export: "disk", flags: 1 << 5, typ: cmdRead, length: 512, want: eINVAL},
		{name: "fua-not-advertised", export: "ro", flags: flagFUA, typ: cmdRead, length: 512, want: eINVAL},
		{name: "block-status-not-negotiated", export: "disk", typ: cmdBlockStatus, length: 512, want: eINVAL},
		{name: "backend-read", export: "disk", typ: cmdRead, length: 4096, hook: failOn(nbdtest.OpRead, errBackend), want: eIO},
		{name: "backend-write", export: "disk", typ: cmdWrite, length: 4096, payload: true, hook: failOn(nbdtest.OpWrite, errBackend), want: eIO},
		{name: "backend-fua-flush", export: "disk", flags: flagFUA, typ: cmdWrite, length: 4096, payload: true, hook: failOn(nbdtest.OpFlush, errBackend), want: eIO},
		{name: "backend-flush", export: "disk", typ: cmdFlush, hook: failOn(nbdtest.OpFlush, errBackend), want: eIO},
		{name: "backend-trim", export: "disk", typ: cmdTrim, length: 4096, hook: failOn(nbdtest.OpTrim, errBackend), want: eIO},
		{name: "backend-trim-unsupported", export: "disk", typ: cmdTrim, length: 4096, hook: failOn(nbdtest.OpTrim, cairn.ErrUnsupported), want: 0},
		{name: "backend-zero", export: "disk", typ: cmdWriteZeroes, length: 4096, hook: failOn(nbdtest.OpZero, errBackend), want: eIO},
		{name: "backend-zero-unsupported", export: "disk", typ: cmdWriteZeroes, length: 4096, hook: failOn(nbdtest.OpZero, errors.ErrUnsupported), want: 0},
		{name: "backend-enospc", export: "disk", typ: cmdWrite, length: 4096, payload: true, hook: failOn(nbdtest.OpWrite, fmt.Errorf("full: %w", syscall.ENOSPC)), want: eNOSPC},
		{name: "backend-edquot", export: "disk", typ: cmdWriteZeroes, length: 4096, hook: failOn(nbdtest.OpZero, syscall.EDQUOT), want: eNOSPC},
		{name: "backend-denied", export: "disk", typ: cmdWrite, length: 4096, payload: true, hook: failOn(nbdtest.OpWrite, cairn.ErrDenied), want: ePERM},
		{name: "backend-erofs", export: "disk", typ: cmdTrim, length: 4096, hook: failOn(nbdtest.OpTrim, syscall.EROFS), want: ePERM},
	}
	modes(t, func(t *testing.T, structured bool) {
		f := setupLog(t, nbd.Options{MaxRequest: maxReq}, false)
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				m := f.disk
				if tt.export == "ro" {
					m = f.ro
				}
				m.SetHook(tt.hook)
				defer m.SetHook(nil)
				before := m.Bytes()
				c := connect(t, f.sock, tt.export, structured, false)
				var payload []byte
				if tt.payload {
					payload = bytes.Repeat([]byte{0x77}, int(tt.length))
				}
				r := c.do(tt.flags, tt.typ, tt.off, tt.length, payload)
				if r.err != tt.want {
					t.Errorf("error %d (%q), want %d", r.err, r.msg, tt.want)
				}
				if r.err != 0 && structured && r.msg == "" {
					t.Errorf("error chunk without a message")
				}
				if r.err != 0 && r.structured != structured {
					t.Errorf("error reply structured=%v", r.structured)
				}
				if r.err != 0 && len(r.data) != 0 && !structured {
					t.Errorf("error reply with data")
				}
				if tt.hook == nil && !bytes.Equal(before, m.Bytes()) {
					t.Errorf("refused request changed the export")
				}
				// The connection still works.
				m.SetHook(nil)
				c.read(0, 512)
				c.disconnect()
			})
		}
	})
}

func TestBlockStatus(t *testing.T) {
	f := setupLog(t, nbd.Options{MaxRequest: 64 << 10}, false) // the requests beyond the end are logged
	m := f.disk
	m.Fill(randomBytes(3, 4096), 8192)      // data page 2
	m.Fill(make([]byte, 8192), 65536)       // allocated zeros, pages 16-17
	m.Fill(randomBytes(4, 100), 65536+8192) // data page 18
	c := connect(t, f.sock, "disk", true, true)
	tests := []struct {
		name   string
		flags  uint16
		off    uint64
		length uint32
		want   []ext
	}{
		{"start", 0, 0, 1 << 20, []ext{{8192, stHole | stZero}, {4096, 0}, {65536 - 12288, stHole | stZero}, {8192, stZero}, {4096, 0}, {diskSize - 65536 - 12288, stHole | stZero}}},
		{"req-one", flagReqOne, 0, 1 << 20, []ext{{8192, stHole | stZero}}},
		{"req-one-short", flagReqOne, 0, 1000, []ext{{1000, stHole | stZero}}},
		{"mid-page", 0, 9000, 4000, []ext{{3288, 0}, {4096, stHole | stZero}}}, // the last extent may run past the length
		{"stops-at-length", 0, 0, 8193, []ext{{8192, stHole | stZero}, {4096, 0}}},
		{"tail", 0, diskSize - 10, 10, []ext{{10, stHole | stZero}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := c.do(tt.flags, cmdBlockStatus, tt.off, tt.length, nil)
			if r.err != 0 {
				t.Fatalf("error %d %q", r.err, r.msg)
			}
			if extentsString(r.extents) != extentsString(tt.want) {
				t.Errorf("extents %s, want %s", extentsString(r.extents), extentsString(tt.want))
			}
			var sum uint64
			for i, e := range r.extents {
				if i > 0 && sum >= uint64(tt.length) {
					t.Errorf("extent %d starts past the requested length", i)
				}
				sum += uint64(e.length)
			}
			if tt.off+sum > diskSize {
				t.Errorf("extents go past the end of the export")
			}
		})
	}
	for _, tt := range []struct {
		off    uint64
		length uint32
	}{{diskSize - 10, 11}, {diskSize, 1}, {0, 0}, {1 << 63, 1}} {
		if r := c.do(0, cmdBlockStatus, tt.off, tt.length, nil); r.err != eINVAL {
			t.Errorf("block status [%d,+%d): error %d, want EINVAL", tt.off, tt.length, r.err)
		}
	}
	c.disconnect()
}

// extentsExport returns fixed extents from BlockStatus.
type extentsExport struct {
	*nbdtest.Mem
	exts []nbd.Extent
	err  error
}

func (e *extentsExport) BlockStatus(ctx context.Context, off, length int64) ([]nbd.Extent, error) {
	return e.exts, e.err
}

// TestBlockStatusSanitized: the server never passes a broken extent list
// from the export on to the client.
func TestBlockStatusSanitized(t *testing.T) {
	const size = 8<<30 + 4096 // larger than one descriptor can describe
	tests := []struct {
		name   string
		exts   []nbd.Extent
		err    error
		off    uint64
		length uint32
		flags  uint16
		want   []ext
		errno  uint32
	}{
		{"error", nil, errors.New("boom"), 0, 4096, 0, nil, eIO},
		{"empty", nil, nil, 0, 4096, 0, nil, eIO},
		{"zero-length", []nbd.Extent{{Length: 0}}, nil, 0, 4096, 0, nil, eIO},
		{"negative", []nbd.Extent{{Length: -5}}, nil, 0, 4096, 0, nil, eIO},
		{"past-size", []nbd.Extent{{Length: 1 << 40, Hole: true}}, nil, size - 4096, 4096, 0, []ext{{4096, stHole}}, 0},
		{"merged", []nbd.Extent{{Length: 512}, {Length: 512}, {Length: 512, Zero: true}}, nil, 0, 4096, 0, []ext{{1024, 0}, {512, stZero}}, 0},
		{"huge", []nbd.Extent{{Length: 6 << 30}, {Length: 1 << 30, Hole: true}}, nil, 0, 1 << 30, 0, []ext{{0xFFFFF000, 0}}, 0},
		{"huge-merged", []nbd.Extent{{Length: 3 << 30}, {Length: 3 << 30}}, nil, 0, 1<<32 - 1, 0, []ext{{0xFFFFF000, 0}}, 0},
		{"req-one-long", []nbd.Extent{{Length: 1 << 20}}, nil, 0, 4096, flagReqOne, []ext{{4096, 0}}, 0},
		{"req-one-two", []nbd.Extent{{Length: 512}, {Length: 512, Hole: true}}, nil, 0, 4096, flagReqOne, []ext{{512, 0}}, 0},
		{"after-last-stops", []nbd.Extent{{Length: 8192}, {Length: 8192, Hole: true}}, nil, 0, 4096, 0, []ext{{8192, 0}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, _ := newLogger(t, false)
			cat := nbdtest.NewCatalog()
			cat.Add("x", "", &extentsExport{nbdtest.NewMem(size, nbdtest.MemOptions{}), tt.exts, tt.err})
			sock := nbdtest.Serve(t, cat, nbd.Options{Logger: log})
			c := connect(t, sock, "x", true, true)
			r := c.do(tt.flags, cmdBlockStatus, tt.off, tt.length, nil)
			if r.err != tt.errno {
				t.Fatalf("error %d, want %d", r.err, tt.errno)
			}
			if extentsString(r.extents) != extentsString(tt.want) {
				t.Errorf("extents %s, want %s", extentsString(r.extents), extentsString(tt.want))
			}
		})
	}
}

// TestOutOfOrder: a slow request does not hold up the replies to later ones.
func TestOutOfOrder(t *testing.T) {
	modes(t, func(t *testing.T, structured bool) {
		f := setup(t, nbd.Options{Workers: 4})
		gate := make(chan struct{})
		f.disk.Fill(randomBytes(5, diskSize), 0)
		want := f.disk.Bytes()
		f.disk.SetHook(func(ctx context.Context, op nbdtest.Op, off, length int64) error {
			if op == nbdtest.OpRead && off == 0 {
				<-gate
			}
			return nil
		})
		c := connect(t, f.sock, "disk", structured, false)
		slow := c.submit(0, cmdRead, 0, 4096, nil)
		for i := range 10 {
			c.submit(0, cmdRead, uint64(i+1)*8192, 8192, nil)
		}
		for range 10 {
			r := c.next()
			if r.cookie == slow {
				t.Fatalf("the blocked read was answered first")
			}
			if r.err != 0 {
				t.Fatalf("error %d", r.err)
			}
		}
		close(gate)
		r := c.next()
		if r.cookie != slow || !bytes.Equal(r.data, want[:4096]) {
			t.Errorf("blocked read: wrong reply")
		}
		c.disconnect()
	})
}

// TestWorkers: one connection runs up to Workers requests at once. The
// export holds every request; the client sends one more than Workers. Once
// the server has settled (synctest.Wait: every goroutine blocked), exactly
// Workers requests are inside the export, and the last one waits for a
// worker.
func TestWorkers(t *testing.T) {
	for _, workers := range []int{1, 3, 8} {
		t.Run(fmt.Sprint(workers), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cat := nbdtest.NewCatalog()
				m := nbdtest.NewMem(diskSize, nbdtest.MemOptions{})
				cat.Add("disk", "", m)
				srv := servePipe(t, cat, nbd.Options{Workers: workers})
				var cnt counter
				release := make(chan struct{})
				m.SetHook(func(ctx context.Context, op nbdtest.Op, off, length int64) error {
					cnt.enter()
					defer cnt.leave()
					<-release
					return nil
				})
				c := connectConn(t, srv.l.dial(t), "disk", true, false)
				for i := range workers + 1 {
					c.submit(0, cmdRead, uint64(i)*4096, 4096, nil)
				}
				synctest.Wait()
				if got := cnt.cur.Load(); got != int64(workers) {
					t.Errorf("%d requests in the export at once, want %d", got, workers)
				}
				close(release)
				for range workers + 1 {
					if r := c.next(); r.err != 0 {
						t.Fatalf("error %d", r.err)
					}
				}
				if got := cnt.peak.Load(); got != int64(workers) {
					t.Errorf("at most %d requests ran at once, want %d", got, workers)
				}
				c.disconnect()
			})
		})
	}
}

// TestManyInFlight pipelines hundreds of writes and reads of random sizes
// (a goroutine sends while the test reads replies) and checks every byte.
// The requests run out of order: the write (and the read) of every third
// slot waits in the export until that of the next slot has reached it.
func TestManyInFlight(t *testing.T) {
	modes(t, func(t *testing.T, structured bool) {
		f := setup(t, nbd.Options{})
		const slots = 256
		const slot = diskSize / slots
		var arrived [2][slots]chan struct{} // by phase (write, read) and slot
		for i := range arrived {
			for j := range arrived[i] {
				arrived[i][j] = make(chan struct{})
			}
		}
		f.disk.SetHook(func(ctx context.Context, op nbdtest.Op, off, length int64) error {
			phase := 0
			switch op {
			case nbdtest.OpWrite:
			case nbdtest.OpRead:
				phase = 1
			default:
				return nil
			}
			s := off / slot
			close(arrived[phase][s])
			if s%3 == 0 && s+1 < slots {
				<-arrived[phase][s+1]
			}
			return nil
		})
		c := connect(t, f.sock, "disk", structured, false)
		want := make([]byte, diskSize)
		type io struct {
			off uint64
			n   int
		}
		var ios []io
		for i := range slots {
			n := 1 + (i*7919)%slot
			ios = append(ios, io{uint64(i*slot + (slot-n)/2), n})
		}
		var bg bgT
		var wg sync.WaitGroup
		wg.Go(func() {
			for i, w := range ios {
				p := randomBytes(uint64(i), w.n)
				copy(want[w.off:], p)
				c.submitT(&bg, flagFUA*uint16(i%2), cmdWrite, w.off, uint32(w.n), p)
			}
		})
		for range ios {
			if r := c.next(); r.err != 0 {
				t.Fatalf("write error %d", r.err)
			}
		}
		wg.Wait()
		bg.check(t)
		requireSame(t, "export", f.disk.Bytes(), want)

		cookies := map[uint64]io{}
		var mu sync.Mutex
		wg.Go(func() {
			for _, w := range ios {
				mu.Lock() // hold while sending so the cookie is known before its reply
				cookies[c.submitT(&bg, 0, cmdRead, w.off, uint32(w.n), nil)] = w
				mu.Unlock()
			}
		})
		for range ios {
			r := c.next()
			mu.Lock()
			w := cookies[r.cookie]
			mu.Unlock()
			if r.err != 0 || !bytes.Equal(r.data, want[w.off:w.off+uint64(w.n)]) {
				t.Fatalf("read [%d,+%d): error %d or wrong data", w.off, w.n, r.err)
			}
		}
		wg.Wait()
		bg.check(t)
		c.disconnect()
	})
}

// TestFlushOrdering: a flush waits for the writes received before it, and
// covers writes completed on other connections.
//
// The first part runs in a synctest bubble: the write before the flush is
// held in the export while the write after it is answered; once the server
// has settled (synctest.Wait), a flush that did not wait would have reached
// the export, and found the held write missing.
func TestFlushOrdering(t *testing.T) {
	data := randomBytes(9, 4096)
	synctest.Test(t, func(t *testing.T) {
		cat := nbdtest.NewCatalog()
		m := nbdtest.NewMem(diskSize, nbdtest.MemOptions{})
		cat.Add("disk", "", m)
		srv := servePipe(t, cat, nbd.Options{})
		var violations atomic.Int32
		release := make(chan struct{})
		m.SetHook(func(ctx context.Context, op nbdtest.Op, off, length int64) error {
			switch {
			case op == nbdtest.OpWrite && off == 0:
				<-release // in flight until the server settled
			case op == nbdtest.OpFlush:
				// Every write received before the flush must have landed.
				if !bytes.Equal(m.Bytes()[:4096], data) {
					violations.Add(1)
				}
			}
			return nil
		})
		c := connectConn(t, srv.l.dial(t), "disk", true, false)
		blocked := c.submit(0, cmdWrite, 0, 4096, data)
		flush := c.submit(0, cmdFlush, 0, 0, nil)
		// Writes after the flush do not hold it up (nor are they required).
		after := c.submit(0, cmdWrite, 8192, 4096, data)
		if r := c.next(); r.cookie != after || r.err != 0 {
			t.Fatalf("reply %#x error %d, want the write after the flush (%#x) to succeed first", r.cookie, r.err, after)
		}
		synctest.Wait()
		if violations.Load() != 0 || m.Flushes() != 0 {
			t.Errorf("flush ran before a write received before it finished")
		}
		close(release)
		for range 2 {
			if r := c.next(); r.err != 0 || (r.cookie != blocked && r.cookie != flush) {
				t.Fatalf("error %d on %#x", r.err, r.cookie)
			}
		}
		if violations.Load() != 0 {
			t.Errorf("flush ran before a write received before it finished")
		}
		if !m.Synced(0, 4096) {
			t.Errorf("write before flush not synced")
		}
		c.disconnect()
	})

	// Multi-conn: write on one connection, flush on another.
	f := setup(t, nbd.Options{})
	m := f.disk
	a := connect(t, f.sock, "disk", true, false)
	b := connect(t, f.sock, "disk", false, false)
	if a.tflags&tfCanMultiConn == 0 {
		t.Fatalf("NBD_FLAG_CAN_MULTI_CONN not set")
	}
	a.writeAt(0, 1<<19, data)
	if m.Synced(1<<19, 4096) {
		t.Fatalf("already synced")
	}
	b.ok(0, cmdFlush, 0, 0)
	if !m.Synced(1<<19, 4096) {
		t.Errorf("flush on another connection did not cover the write")
	}
	if got := b.read(1<<19, 4096); !bytes.Equal(got, data) {
		t.Errorf("write not visible on another connection")
	}
	a.disconnect()
	b.disconnect()
}

func TestTransmissionFlags(t *testing.T) {
	f := setup(t, nbd.Options{})
	tests := []struct {
		export     string
		structured bool
		want       uint16
	}{
		{"disk", false, tfHasFlags | tfSendFlush | tfSendFUA | tfSendTrim | tfSendZeroes | tfCanMultiConn},
		{"disk", true, tfHasFlags | tfSendFlush | tfSendFUA | tfSendTrim | tfSendZeroes | tfCanMultiConn | tfSendDF},
		{"ro", false, tfHasFlags | tfSendFlush | tfReadOnly},
		{"ro", true, tfHasFlags | tfSendFlush | tfReadOnly | tfSendDF},
		{"fast", false, tfHasFlags | tfSendFlush | tfSendFUA | tfSendTrim | tfSendZeroes | tfCanMultiConn | tfSendFastZero},
	}
	for _, tt := range tests {
		c := connect(t, f.sock, tt.export, tt.structured, false)
		if c.tflags != tt.want {
			t.Errorf("%s structured=%v: flags %#x, want %#x", tt.export, tt.structured, c.tflags, tt.want)
		}
		if c.tflags&^tfKnownByClient != 0 {
			t.Errorf("unknown flags %#x", c.tflags&^tfKnownByClient)
		}
		c.disconnect()
	}
}

// TestDisconnectFinishesInflight: after NBD_CMD_DISC the server answers
// the requests in flight, then closes. The writes are held in the export
// until all five are there and the server has logged the NBD_CMD_DISC.
func TestDisconnectFinishesInflight(t *testing.T) {
	f := setup(t, nbd.Options{})
	entered, release := make(chan struct{}, 5), make(chan struct{})
	f.disk.SetHook(func(ctx context.Context, op nbdtest.Op, off, length int64) error {
		entered <- struct{}{}
		<-release
		return nil
	})
	c := connect(t, f.sock, "disk", false, false)
	for i := range 5 {
		c.submit(0, cmdWrite, uint64(i)*4096, 4096, bytes.Repeat([]byte{byte(i + 1)}, 4096))
	}
	c.submit(0, cmdDisc, 0, 0, nil)
	for range 5 {
		<-entered
	}
	f.log.waitLogged("client disconnected (NBD_CMD_DISC)", 1)
	close(release)
	for range 5 {
		if r := c.next(); r.err != 0 {
			t.Fatalf("error %d", r.err)
		}
	}
	c.expectClosed()
	for i := range 5 {
		if f.disk.Bytes()[i*4096] != byte(i+1) {
			t.Errorf("write %d lost", i)
		}
	}
	f.waitReleased(t, "disk")
}

func TestMultipleConnections(t *testing.T) {
	f := setup(t, nbd.Options{})
	const conns = 8
	var bg bgT
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			c := connect(&bg, f.sock, "disk", i%2 == 0, false)
			defer c.nc.Close()
			region := uint64(i) * (diskSize / conns)
			for j := range 20 {
				p := randomBytes(uint64(i*100+j), 4096)
				off := region + uint64(j)*4096
				c.writeAt(0, off, p)
				if got := c.read(off, 4096); !bytes.Equal(got, p) {
					bg.Fatalf("conn %d: read back wrong data", i)
				}
			}
			c.ok(0, cmdFlush, 0, 0)
			c.disconnect()
		})
	}
	wg.Wait()
	bg.check(t)
	f.waitReleased(t, "disk")
}

// TestPanicInExport: a panicking export fails the request with EIO; the
// connection and the server go on.
func TestPanicInExport(t *testing.T) {
	modes(t, func(t *testing.T, structured bool) {
		f := setupLog(t, nbd.Options{}, false)
		f.disk.SetHook(func(ctx context.Context, op nbdtest.Op, off, length int64) error {
			if op == nbdtest.OpRead && off == 4096 {
				panic("export bug")
			}
			return nil
		})
		c := connect(t, f.sock, "disk", structured, false)
		if r := c.do(0, cmdRead, 4096, 512, nil); r.err != eIO {
			t.Errorf("read that panicked: error %d, want EIO", r.err)
		}
		c.read(0, 512)
		c.disconnect()
		if !hasAny(f.log.warnings(), "panic") {
			t.Errorf("the panic was not logged")
		}
	})
}

// TestZeroFallback: an export that cannot zero gets zeros written instead.
func TestZeroFallback(t *testing.T) {
	f := setup(t, nbd.Options{})
	f.disk.SetHook(func(ctx context.Context, op nbdtest.Op, off, length int64) error {
		if op == nbdtest.OpZero {
			return errors.ErrUnsupported
		}
		return nil
	})
	c := connect(t, f.sock, "disk", true, false)
	c.writeAt(0, 0, bytes.Repeat([]byte{0x55}, 16384))
	writes := f.disk.Count(nbdtest.OpWrite)
	c.ok(flagFUA, cmdWriteZeroes, 1000, 10000)
	want := bytes.Repeat([]byte{0x55}, 16384)
	clear(want[1000:11000])
	requireSame(t, "after zeroing", c.read(0, 16384), want)
	if f.disk.Count(nbdtest.OpWrite) != writes+1 || !f.disk.Synced(0, 16384) {
		t.Errorf("zeros not written with one FUA write")
	}
	c.disconnect()
}
