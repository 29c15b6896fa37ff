package nbd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/nbd"
	"github.com/cairnproject/cairn/internal/nbd/nbdtest"
)

const (
	mib = 1 << 20
	// zeroPiece is the longest range the server hands to one Export.Zero
	// or Export.Trim call (the Export contract).
	zeroPiece = 64 * mib
	// longSize is the export of TestLongZeroAndTrim: more than twice the
	// default maximum payload, and more than one zero piece.
	longSize = 72*mib + 4096
)

// pieceLog records the ranges an export was called with, per operation.
type pieceLog struct {
	mu  sync.Mutex
	ops map[nbdtest.Op][][2]int64
}

func (p *pieceLog) hook(fail map[nbdtest.Op]error) nbdtest.Hook {
	return func(ctx context.Context, op nbdtest.Op, off, length int64) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.ops == nil {
			p.ops = map[nbdtest.Op][][2]int64{}
		}
		p.ops[op] = append(p.ops[op], [2]int64{off, length})
		return fail[op]
	}
}

func (p *pieceLog) get(op nbdtest.Op) [][2]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][2]int64(nil), p.ops[op]...)
}

// checkPieces checks that pieces cover [off, off+n) in order, each at most
// maxLen long and each but the last ending at a multiple of align.
func checkPieces(t *testing.T, what string, pieces [][2]int64, off, n, maxLen, align int64) {
	t.Helper()
	pos := off
	for i, p := range pieces {
		if p[0] != pos || p[1] <= 0 || p[1] > maxLen {
			t.Fatalf("%s: piece %d is [%d,+%d), want one starting at %d of at most %d bytes (pieces %v)", what, i, p[0], p[1], pos, maxLen, pieces)
		}
		pos += p[1]
		if i < len(pieces)-1 && pos%align != 0 {
			t.Fatalf("%s: piece %d ends at %d, not a multiple of %d", what, i, pos, align)
		}
	}
	if pos != off+n {
		t.Fatalf("%s: pieces cover [%d,%d), want [%d,%d)", what, off, pos, off, off+n)
	}
}

// region is data written to an export at off.
type region struct {
	off  int64
	data []byte
}

// fillAround writes data around each MiB boundary and around the edges of
// [off, off+n), so that zeroing too little or too much shows; it returns
// what it wrote, in order.
func fillAround(m *nbdtest.Mem, off, n int64) []region {
	var rs []region
	fill := func(at, l int64) {
		at, end := max(at, 0), min(at+l, m.Size())
		if at >= end {
			return
		}
		p := randomBytes(uint64(at), int(end-at))
		m.Fill(p, at)
		rs = append(rs, region{at, p})
	}
	for b := int64(0); b < m.Size(); b += mib {
		fill(b-4096, 8192)
	}
	fill(off-5000, 10000)
	fill(off+n-5000, 10000)
	return rs
}

// requireContents checks that the export holds the regions written, in
// order, then zeros over [zoff, zoff+zn), and zeros elsewhere; it compares
// a window at a time so that no copy of the whole export is made.
func requireContents(t *testing.T, m *nbdtest.Mem, rs []region, zoff, zn int64) {
	t.Helper()
	const window = 4 * mib
	got, want := make([]byte, window), make([]byte, window)
	for off := int64(0); off < m.Size(); off += window {
		n := min(window, m.Size()-off)
		g, w := got[:n], want[:n]
		if err := m.ReadAt(context.Background(), g, off); err != nil {
			t.Fatal(err)
		}
		clear(w)
		for _, r := range rs {
			lo, hi := max(r.off, off), min(r.off+int64(len(r.data)), off+n)
			if lo < hi {
				copy(w[lo-off:hi-off], r.data[lo-r.off:])
			}
		}
		if lo, hi := max(zoff, off), min(zoff+zn, off+n); lo < hi {
			clear(w[lo-off : hi-off])
		}
		if bytes.Equal(g, w) {
			continue
		}
		i := firstDiff(g, w)
		t.Fatalf("export differs first at byte %d (got %#x, want %#x)", off+int64(i), g[i], w[i])
	}
}

// TestLongZeroAndTrim: write zeroes and trim carry no payload, so the
// maximum payload size (MaxRequest, 32 MiB by default) does not bound
// them; the export size does (issue 11: nbdcopy and qemu-img zero holes
// longer than 32 MiB in one request). The export gets them in pieces of at
// most 64 MiB cut at multiples of 64 MiB.
func TestLongZeroAndTrim(t *testing.T) {
	errUnsup := fmt.Errorf("cannot: %w", cairn.ErrUnsupported)
	tests := []struct {
		name   string
		fast   bool                 // the export advertises fast zero
		fail   map[nbdtest.Op]error // errors the export returns
		flags  uint16
		typ    uint16
		off    uint64
		length uint32
		want   uint32
	}{
		{name: "zero-32M", typ: cmdWriteZeroes, length: 32 * mib},
		{name: "zero-32M+4K", typ: cmdWriteZeroes, length: 32*mib + 4096},
		{name: "zero-64M", typ: cmdWriteZeroes, off: 4096, length: 64 * mib},
		{name: "zero-64M-unaligned", typ: cmdWriteZeroes, off: 1000, length: 64*mib + 3000},
		{name: "zero-whole", typ: cmdWriteZeroes, length: longSize},
		{name: "zero-fua-40M", flags: flagFUA, typ: cmdWriteZeroes, off: 8 * mib, length: 40 * mib},
		{name: "zero-no-hole-32M+4K", flags: flagNoHole, typ: cmdWriteZeroes, off: 4096, length: 32*mib + 4096},
		{name: "zero-no-hole-64M", flags: flagNoHole, typ: cmdWriteZeroes, off: 2 * mib, length: 64 * mib},
		{name: "zero-no-hole-whole", flags: flagNoHole | flagFUA, typ: cmdWriteZeroes, length: longSize},
		{name: "zero-fast-64M", fast: true, flags: flagFastZero, typ: cmdWriteZeroes, off: 4096, length: 64 * mib},
		{name: "zero-fast-no-hole-whole", fast: true, flags: flagFastZero | flagNoHole, typ: cmdWriteZeroes, length: longSize},
		{name: "zero-fast-refused-by-export", fast: true, fail: map[nbdtest.Op]error{nbdtest.OpZero: errUnsup},
			flags: flagFastZero, typ: cmdWriteZeroes, length: 64 * mib, want: eNOTSUP},
		{name: "zero-written-by-fallback-40M", fail: map[nbdtest.Op]error{nbdtest.OpZero: errUnsup},
			typ: cmdWriteZeroes, off: 3000, length: 40 * mib},
		{name: "trim-32M", typ: cmdTrim, length: 32 * mib},
		{name: "trim-32M+4K", typ: cmdTrim, off: 4096, length: 32*mib + 4096},
		{name: "trim-64M", typ: cmdTrim, off: 8192, length: 64 * mib},
		{name: "trim-fua-whole", flags: flagFUA, typ: cmdTrim, length: longSize},
		{name: "zero-beyond-end", typ: cmdWriteZeroes, off: longSize - 32*mib, length: 32*mib + 4096, want: eNOSPC},
		{name: "zero-no-hole-beyond-end", flags: flagNoHole, typ: cmdWriteZeroes, length: longSize + 4096, want: eNOSPC},
		{name: "zero-past-end", typ: cmdWriteZeroes, off: longSize + 4096, length: 64 * mib, want: eNOSPC},
		{name: "trim-beyond-end", typ: cmdTrim, off: longSize - 64*mib, length: 64*mib + 4096, want: eINVAL},
		{name: "trim-offset-overflow", typ: cmdTrim, off: 1<<64 - 4096, length: 64 * mib, want: eINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := nbdtest.NewMem(longSize, nbdtest.MemOptions{FastZero: tt.fast})
			off, n := int64(tt.off), int64(tt.length)
			written := fillAround(m, min(off, longSize), n)
			var calls pieceLog
			m.SetHook(calls.hook(tt.fail))
			cat := nbdtest.NewCatalog()
			cat.Add("disk", "", m)
			log, sl := newLogger(t, false)
			sock := nbdtest.Serve(t, cat, nbd.Options{Logger: log}) // the default maximum payload, 32 MiB
			c := connect(t, sock, "disk", true, false)

			r := c.do(tt.flags, tt.typ, tt.off, tt.length, nil)
			if r.err != tt.want {
				t.Fatalf("error %d (%q), want %d", r.err, r.msg, tt.want)
			}
			c.read(0, 4096) // the connection goes on
			c.disconnect()

			op := nbdtest.OpZero
			if tt.typ == cmdTrim {
				op = nbdtest.OpTrim
			}
			switch {
			case tt.want == eNOTSUP:
				if len(sl.warnings()) != 0 {
					t.Errorf("a fast zero the export cannot do was logged as a warning: %q", sl.warnings())
				}
			case tt.want != 0:
				if p := calls.get(op); len(p) != 0 {
					t.Errorf("a refused request reached the export: %v", p)
				}
				if !hasAny(sl.warnings(), "refused") {
					t.Errorf("the refused request was not logged as a warning (warnings %q)", sl.warnings())
				}
			default:
				if w := sl.warnings(); len(w) != 0 {
					t.Errorf("server warnings: %q", w)
				}
				checkPieces(t, op.String(), calls.get(op), off, n, zeroPiece, zeroPiece)
			}
			if tt.want != 0 {
				requireContents(t, m, written, 0, 0) // unchanged
				return
			}
			requireContents(t, m, written, off, n)

			if tt.fail[nbdtest.OpZero] != nil {
				// Zeros written instead, a bounded buffer at a time.
				checkPieces(t, "fallback writes", calls.get(nbdtest.OpWrite), off, n, mib, mib)
			}
			// Allocation: NO_HOLE keeps the whole pages allocated, trim and
			// plain write zeroes punch holes.
			first, end := (off+4095)/4096*4096, (off+n)/4096*4096
			if off+n == longSize {
				end = longSize
			}
			es, err := m.BlockStatus(context.Background(), first, end-first)
			if err != nil {
				t.Fatal(err)
			}
			var holes, covered int64
			for _, e := range es {
				if e.Hole {
					holes += e.Length
				}
				covered += e.Length
			}
			switch {
			case covered != end-first:
				t.Errorf("block status covers %d of %d bytes", covered, end-first)
			case tt.flags&flagNoHole != 0 || tt.fail[nbdtest.OpZero] != nil:
				if holes != 0 {
					t.Errorf("%d bytes of holes after zeroing with NO_HOLE or written zeros", holes)
				}
			case holes != end-first:
				t.Errorf("%d bytes of holes, want %d: whole pages not freed", holes, end-first)
			}
			if tt.flags&flagFUA != 0 && !m.Synced(off, n) {
				t.Errorf("FUA: the range is not synced at the reply")
			}
		})
	}
}

// TestLongBlockStatus: block status carries no request payload either; a
// query of the whole export is answered from its offset onward.
func TestLongBlockStatus(t *testing.T) {
	m := nbdtest.NewMem(longSize, nbdtest.MemOptions{})
	m.Fill(randomBytes(1, 4096), 40*mib)
	cat := nbdtest.NewCatalog()
	cat.Add("disk", "", m)
	sock := nbdtest.Serve(t, cat, nbd.Options{})
	c := connect(t, sock, "disk", true, true)
	r := c.do(0, cmdBlockStatus, 0, longSize, nil)
	if r.err != 0 {
		t.Fatalf("block status of the whole export: error %d %q", r.err, r.msg)
	}
	want := []ext{{40 * mib, stHole | stZero}, {4096, 0}, {longSize - 40*mib - 4096, stHole | stZero}}
	if extentsString(r.extents) != extentsString(want) {
		t.Errorf("extents %s, want %s", extentsString(r.extents), extentsString(want))
	}
	c.disconnect()
}

// TestLongZeroStopsAtShutdown: a long write zeroes runs in pieces, and a
// server whose context ended (with no grace period) stops between them
// instead of zeroing gigabytes more.
func TestLongZeroStopsAtShutdown(t *testing.T) {
	const size = 4<<30 + 8192
	m := nbdtest.NewMem(size, nbdtest.MemOptions{})
	started := make(chan struct{})
	var calls pieceLog
	record := calls.hook(nil)
	m.SetHook(func(ctx context.Context, op nbdtest.Op, off, length int64) error {
		record(ctx, op, off, length)
		if op == nbdtest.OpZero && off == 0 {
			close(started)
			<-ctx.Done() // the first piece completes only once the request is cancelled
		}
		return nil
	})
	cat := nbdtest.NewCatalog()
	cat.Add("disk", "", m)
	srv := startServer(t, cat, nbd.Options{ShutdownTimeout: -1})
	c := connect(t, srv.sock, "disk", true, false)
	c.submit(0, cmdWriteZeroes, 0, 1<<32-4096, nil)
	replied := make(chan *reply, 1)
	bg := &bgT{}
	c.t = bg
	go func() {
		defer close(replied)
		replied <- c.next()
	}()
	select {
	case <-started:
	case r := <-replied:
		c.t = t
		bg.check(t)
		if r != nil {
			t.Fatalf("the server answered the 4 GiB write zeroes without zeroing: error %d %q", r.err, r.msg)
		}
		t.Fatalf("no reply")
	}
	srv.cancel()
	r := <-replied
	c.t = t
	bg.check(t)
	if r == nil || r.err != 108 {
		t.Fatalf("reply %+v, want ESHUTDOWN", r)
	}
	if p := calls.get(nbdtest.OpZero); len(p) != 1 || p[0] != [2]int64{0, zeroPiece} {
		t.Errorf("zero pieces %v, want only the first one of 64 MiB", p)
	}
	c.expectClosed()
	srv.wait(t)
}

// recordHandler keeps every record a logger writes, with its attributes.
type recordHandler struct {
	mu    *sync.Mutex
	recs  *[]string
	attrs []slog.Attr
}

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s=%q", a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%q", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	*h.recs = append(*h.recs, b.String())
	h.mu.Unlock()
	return nil
}

func (h recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return h
}

func (h recordHandler) WithGroup(string) slog.Handler { return h }

// TestRefusedRequestLogged: a request the server refuses leaves a log
// line naming the command, its offset and length and the error (issue 11:
// the client failed with EINVAL and the server logged nothing). The first
// refusal of a connection is a warning, later ones are at debug level.
func TestRefusedRequestLogged(t *testing.T) {
	var (
		mu   sync.Mutex
		recs []string
	)
	cat := nbdtest.NewCatalog()
	cat.Add("disk", "", nbdtest.NewMem(diskSize, nbdtest.MemOptions{}))
	sock := nbdtest.Serve(t, cat, nbd.Options{Logger: slog.New(recordHandler{mu: &mu, recs: &recs}), MaxRequest: 64 << 10})
	c := connect(t, sock, "disk", true, false)
	if r := c.do(0, cmdWriteZeroes, diskSize-4096, 8192, nil); r.err != eNOSPC {
		t.Fatalf("write zeroes beyond the end: error %d, want ENOSPC", r.err)
	}
	if r := c.do(0, cmdRead, 0, 128<<10, nil); r.err != eINVAL {
		t.Fatalf("read above the maximum payload: error %d, want EINVAL", r.err)
	}
	c.disconnect()

	mu.Lock()
	defer mu.Unlock()
	var refused []string
	for _, r := range recs {
		if strings.Contains(r, "refused") {
			refused = append(refused, r)
		}
	}
	want := []string{
		`WARN nbd: request refused`, `request="WRITE_ZEROES`, fmt.Sprintf("offset=%d length=8192", diskSize-4096), `errno="ENOSPC"`, `export="disk"`,
		`DEBUG nbd: request refused`, `request="READ`, "offset=0 length=131072", `errno="EINVAL"`, "exceeds the maximum",
	}
	if len(refused) != 2 {
		t.Fatalf("%d log lines about refused requests, want 2:\n%s", len(refused), strings.Join(recs, "\n"))
	}
	for i, w := range want {
		if line := refused[i/5]; !strings.Contains(line, w) {
			t.Errorf("log line %q lacks %q", line, w)
		}
	}
}

// TestLongZeroExportErrors: an export failing part-way through a long
// write zeroes fails the request; the pieces after the failure are not
// attempted.
func TestLongZeroExportErrors(t *testing.T) {
	m := nbdtest.NewMem(longSize, nbdtest.MemOptions{})
	var calls pieceLog
	record := calls.hook(nil)
	errDisk := errors.New("disk on fire")
	m.SetHook(func(ctx context.Context, op nbdtest.Op, off, length int64) error {
		record(ctx, op, off, length)
		if op == nbdtest.OpZero && off == zeroPiece {
			return errDisk
		}
		return nil
	})
	cat := nbdtest.NewCatalog()
	cat.Add("disk", "", m)
	log, sl := newLogger(t, false)
	sock := nbdtest.Serve(t, cat, nbd.Options{Logger: log})
	c := connect(t, sock, "disk", true, false)
	if r := c.do(0, cmdWriteZeroes, 4096, longSize-8192, nil); r.err != eIO {
		t.Fatalf("error %d %q, want EIO", r.err, r.msg)
	}
	c.disconnect()
	if p := calls.get(nbdtest.OpZero); len(p) != 2 || p[1][0] != zeroPiece {
		t.Errorf("zero pieces %v, want two, the second failing", p)
	}
	if !hasAny(sl.warnings(), "export I/O failed") {
		t.Errorf("the export failure was not logged: %q", sl.warnings())
	}
}
