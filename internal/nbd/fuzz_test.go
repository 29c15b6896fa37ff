package nbd_test

// Fuzz tests: arbitrary bytes as a client's byte stream, fed to a real
// Server through an in-memory connection, with the server's output checked
// for framing against what the input asked for.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/nbd"
	"github.com/cairnproject/cairn/internal/nbd/nbdtest"
)

// memConn is a net.Conn reading a fixed client stream and recording what
// the server writes.
type memConn struct {
	r      *bytes.Reader
	mu     sync.Mutex
	out    bytes.Buffer
	once   sync.Once
	closed chan struct{}
}

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem" }

func (c *memConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *memConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}
func (c *memConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c *memConn) LocalAddr() net.Addr              { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return memAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// oneListener accepts one connection, then blocks until closed.
type oneListener struct {
	mu     sync.Mutex
	conn   net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *oneListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.conn
	l.conn = nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}
func (l *oneListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *oneListener) Addr() net.Addr { return memAddr{} }

const fuzzMaxRequest = 16 << 10

// serveBytes runs a server on one connection whose client sends in and
// returns what the server wrote.
func serveBytes(t *testing.T, in []byte) []byte {
	t.Helper()
	cat := nbdtest.NewCatalog()
	m := nbdtest.NewMem(64<<10, nbdtest.MemOptions{FastZero: true})
	m.Fill([]byte("some data"), 5000)
	cat.Add("disk", "a disk", m)
	cat.Add("", "", nbdtest.NewMem(4096, nbdtest.MemOptions{ReadOnly: true}))
	srv := nbd.NewServer(cat, nbd.Options{
		Logger:     slog.New(slog.DiscardHandler),
		MaxRequest: fuzzMaxRequest,
		Workers:    4,
	})
	conn := &memConn{r: bytes.NewReader(in), closed: make(chan struct{})}
	l := &oneListener{conn: conn, closed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	// The client's stream is all in memory and memConn has no deadlines,
	// so the server finishes with the connection as soon as it has worked
	// through the input, however loaded the machine. The safety timeout
	// only turns a hang into a failing input while fuzzing, when go test
	// has no -timeout.
	hang := time.NewTimer(hangTimeout)
	defer hang.Stop()
	select {
	case <-conn.closed:
	case <-hang.C:
		dumpGoroutines()
		t.Fatalf("the server did not finish with the connection within %v", hangTimeout)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-hang.C:
		dumpGoroutines()
		t.Fatalf("Serve did not return within %v", hangTimeout)
	}
	if cat.InUse("disk")+cat.InUse("") != 0 {
		t.Fatalf("export left open")
	}
	conn.mu.Lock()
	defer conn.mu.Unlock()
	return bytes.Clone(conn.out.Bytes())
}

// stream builds client byte streams for seeds.
type stream struct{ bytes.Buffer }

func (s *stream) u32(v uint32) *stream { s.Write(binary.BigEndian.AppendUint32(nil, v)); return s }
func (s *stream) opt(o uint32, data []byte) *stream {
	s.Write(binary.BigEndian.AppendUint64(nil, cIHaveOpt))
	s.u32(o).u32(uint32(len(data)))
	s.Write(data)
	return s
}
func (s *stream) req(flags, typ uint16, cookie, off uint64, length uint32, payload []byte) *stream {
	s.Write(requestBytes(flags, typ, cookie, off, length))
	s.Write(payload)
	return s
}

// goPrefix is a client stream negotiating structured replies and
// base:allocation, then entering transmission on "disk".
func goPrefix() []byte {
	var s stream
	s.u32(cFlagFixedNewstyle | cFlagNoZeroes)
	s.opt(optStructured, nil)
	s.opt(optSetMeta, metaData("disk", "base:allocation"))
	s.opt(optGo, infoData("disk", infoBlockSize))
	return bytes.Clone(s.Bytes())
}

// FuzzHandshake feeds arbitrary bytes as the client's side of option
// haggling. The server must answer every complete option it reads with a
// well-formed reply sequence for that option, and close where the protocol
// says it may.
func FuzzHandshake(f *testing.F) {
	seeds := []func(s *stream){
		func(s *stream) {},
		func(s *stream) { s.u32(4) },
		func(s *stream) { s.u32(3).opt(optList, nil).opt(optAbort, nil) },
		func(s *stream) { s.u32(1).opt(optExportName, []byte("disk")).req(0, cmdRead, 1, 0, 512, nil) },
		func(s *stream) { s.u32(1).opt(optExportName, []byte("nope")) },
		func(s *stream) {
			s.u32(1).opt(optInfo, infoData("disk", infoName, infoDesc, infoBlockSize)).opt(optGo, infoData("nope")).opt(optGo, infoData(""))
		},
		func(s *stream) {
			s.u32(3).opt(optStructured, nil).opt(optListMeta, metaData("disk")).opt(optListMeta, metaData("disk", "base:", "x-a:b"))
			s.opt(optSetMeta, metaData("disk", "base:allocation", "nocolon")).opt(optSetMeta, metaData("disk", "base:allocation"))
			s.opt(optGo, infoData("disk")).req(0, cmdBlockStatus, 1, 0, 65536, nil)
		},
		func(s *stream) { s.u32(1).opt(optStartTLS, nil).opt(optStartTLS, []byte{1}).opt(99, []byte("x")) },
		func(s *stream) {
			s.u32(1).opt(optGo, []byte{0, 0, 0, 9, 'd'}).opt(optSetMeta, nil).opt(optStructured, []byte{0})
		},
		func(s *stream) { s.u32(1).opt(optGo, make([]byte, 70000)) },
		func(s *stream) {
			s.u32(1)
			s.Write(binary.BigEndian.AppendUint64(nil, cIHaveOpt))
			s.u32(optInfo).u32(1 << 30)
		},
		func(s *stream) { s.Write(goPrefix()[:30]) },
		func(s *stream) { s.u32(1).Write([]byte("IHAVEOPX\x00\x00\x00\x01\x00\x00\x00\x00")) },
	}
	for _, seed := range seeds {
		var s stream
		seed(&s)
		f.Add(s.Bytes())
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		checkHandshake(t, in, serveBytes(t, in))
	})
}

// checkHandshake walks the client stream and the server's output together.
func checkHandshake(t *testing.T, in, out []byte) {
	t.Helper()
	if len(out) < 18 || binary.BigEndian.Uint64(out) != cNBDMagic || binary.BigEndian.Uint64(out[8:]) != cIHaveOpt {
		t.Fatalf("bad greeting %x", out[:min(len(out), 18)])
	}
	out = out[18:]
	if len(in) < 4 {
		expectEnd(t, out)
		return
	}
	flags := binary.BigEndian.Uint32(in)
	in = in[4:]
	if flags&^3 != 0 {
		expectEnd(t, out)
		return
	}
	for n := 0; ; n++ {
		if len(in) < 16 {
			expectEnd(t, out)
			return
		}
		magic, opt, length := binary.BigEndian.Uint64(in), binary.BigEndian.Uint32(in[8:]), binary.BigEndian.Uint32(in[12:])
		in = in[16:]
		switch {
		case magic != cIHaveOpt, n == 1024, length > 64<<10 && (opt == optExportName || length > 16<<20),
			uint64(length) > uint64(len(in)):
			expectEnd(t, out)
			return
		}
		in = in[length:]
		if opt == optExportName {
			// Either the session ended (unknown export) or transmission
			// started: size and flags, then transmission replies.
			if len(out) != 0 && len(out) < 10 {
				t.Fatalf("short NBD_OPT_EXPORT_NAME reply %x", out)
			}
			return
		}
		var final uint32
		for final == 0 {
			if len(out) < 20 {
				t.Fatalf("option %d: reply missing (%d bytes left)", opt, len(out))
			}
			m, o, typ, l := binary.BigEndian.Uint64(out), binary.BigEndian.Uint32(out[8:]), binary.BigEndian.Uint32(out[12:]), binary.BigEndian.Uint32(out[16:])
			if m != cOptReplyMagic || o != opt {
				t.Fatalf("option %d: reply magic %#x for option %d", opt, m, o)
			}
			if uint64(l) > uint64(len(out)-20) {
				t.Fatalf("option %d: reply length %d beyond output", opt, l)
			}
			switch {
			case typ == repAck && l == 0:
				final = typ
			case typ&0x80000000 != 0:
				if typ > 0x8000000a {
					t.Fatalf("option %d: unknown error %#x", opt, typ)
				}
				final = typ
			case typ == repServer && opt == optList && l >= 4 && binary.BigEndian.Uint32(out[20:]) <= l-4:
			case typ == repInfo && (opt == optInfo || opt == optGo) && l >= 2:
			case typ == repMetaContext && (opt == optListMeta || opt == optSetMeta) && l > 4:
			default:
				t.Fatalf("option %d: unexpected reply type %#x length %d", opt, typ, l)
			}
			out = out[20+l:]
		}
		if opt == optAbort && final != repAck {
			t.Fatalf("NBD_OPT_ABORT answered %#x", final)
		}
		if opt == optAbort || (opt == optGo && final == repAck) {
			if opt == optAbort {
				expectEnd(t, out)
			}
			return
		}
	}
}

func expectEnd(t *testing.T, out []byte) {
	t.Helper()
	if len(out) != 0 {
		t.Fatalf("%d unexpected bytes from the server: %x", len(out), out[:min(len(out), 64)])
	}
}

// FuzzRequestHeader checks the request header parser, then feeds
// arbitrary bytes as the transmission phase (after a fixed negotiation of
// structured replies) and checks every complete request gets exactly one
// well-formed reply.
func FuzzRequestHeader(f *testing.F) {
	seeds := []func(s *stream){
		func(s *stream) { s.req(0, cmdRead, 1, 0, 4096, nil).req(0, cmdDisc, 2, 0, 0, nil) },
		func(s *stream) {
			s.req(flagFUA, cmdWrite, 1, 100, 5, []byte("hello")).req(0, cmdFlush, 2, 0, 0, nil).req(0, cmdRead, 3, 100, 5, nil)
		},
		func(s *stream) {
			s.req(0, cmdTrim, 1, 0, 8192, nil).req(flagNoHole, cmdWriteZeroes, 2, 4096, 4096, nil).req(flagFastZero, cmdWriteZeroes, 3, 0, 100, nil)
		},
		func(s *stream) {
			s.req(flagReqOne, cmdBlockStatus, 1, 0, 65536, nil).req(0, cmdBlockStatus, 2, 4000, 10000, nil).req(0, cmdBlockStatus, 3, 0, 0, nil)
		},
		func(s *stream) { s.req(0, cmdRead, 1, 65000, 1000, nil).req(0, cmdWrite, 2, 65535, 2, []byte{1, 2}) },
		func(s *stream) {
			s.req(0, cmdWrite, 1, 0, 20000, make([]byte, 20000)).req(flagDF, cmdRead, 2, 0, 20000, nil)
		},
		func(s *stream) { s.req(0xffff, 0xffff, 1<<63, 1<<63, 1<<31, nil) },
		func(s *stream) { s.req(0, cmdWrite, 1, 0, 100, make([]byte, 50)) },
		func(s *stream) { s.req(0, cmdWrite, 1, 0, 0xffffffff, nil) },
		func(s *stream) { s.req(0, cmdRead, 1, 0, 0, nil).Write([]byte{0x25, 0x60, 0x95}) },
		// Requests without a payload longer than the maximum payload
		// (16 KiB here): bounded by the export size (64 KiB) only.
		func(s *stream) {
			s.req(0, cmdWriteZeroes, 1, 0, 2*fuzzMaxRequest, nil).req(flagNoHole, cmdWriteZeroes, 2, 0, 64<<10, nil)
			s.req(flagFastZero|flagFUA, cmdWriteZeroes, 3, 16<<10, 48<<10, nil).req(flagFUA, cmdTrim, 4, 0, 64<<10, nil)
			s.req(0, cmdTrim, 5, 4096, 3*fuzzMaxRequest, nil).req(0, cmdBlockStatus, 6, 0, 64<<10, nil)
		},
		func(s *stream) {
			s.req(0, cmdWriteZeroes, 1, 0, 64<<10+1, nil).req(0, cmdTrim, 2, 4096, 64<<10, nil)
			s.req(0, cmdWriteZeroes, 3, 0, 0xffffffff, nil).req(0, cmdTrim, 4, 0, 0xffffffff, nil)
			s.req(flagReqOne, cmdBlockStatus, 5, 0, 0xffffffff, nil).req(0, cmdWriteZeroes, 6, 1<<63, 1<<20, nil)
		},
	}
	for _, seed := range seeds {
		var s stream
		seed(&s)
		f.Add(s.Bytes())
	}
	prefix := goPrefix()
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) >= 28 {
			flags, typ, cookie, off, length, err := nbd.ParseRequest(in)
			if magic := binary.BigEndian.Uint32(in); (magic == cRequestMagic) != (err == nil) {
				t.Fatalf("magic %#x: err %v", magic, err)
			}
			if err == nil && !bytes.Equal(requestBytes(flags, typ, cookie, off, length), in[:28]) {
				t.Fatalf("header does not round-trip")
			}
		}
		out := serveBytes(t, append(bytes.Clone(prefix), in...))
		checkTransmission(t, in, skipNegotiation(t, out))
	})
}

// skipNegotiation returns the server output after the reply to NBD_OPT_GO.
func skipNegotiation(t *testing.T, out []byte) []byte {
	t.Helper()
	out = out[18:]
	for {
		if len(out) < 20 {
			t.Fatalf("negotiation output truncated")
		}
		opt, typ, l := binary.BigEndian.Uint32(out[8:]), binary.BigEndian.Uint32(out[12:]), binary.BigEndian.Uint32(out[16:])
		out = out[20+l:]
		if opt == optGo && typ == repAck {
			return out
		}
		if typ&0x80000000 != 0 {
			t.Fatalf("negotiation failed: option %d error %#x", opt, typ)
		}
	}
}

func checkTransmission(t *testing.T, in, out []byte) {
	t.Helper()
	// The requests the server must answer: every complete one before the
	// stream ends or breaks the protocol.
	want := map[uint64]int{}
	total := 0
	// mustSucceed holds the requests without a payload that are valid
	// whatever their length within the export (64 KiB, longer than the
	// maximum payload of 16 KiB): their reply must not be an error.
	mustSucceed := map[uint64]bool{}
	for len(in) >= 28 {
		if binary.BigEndian.Uint32(in) != cRequestMagic {
			break
		}
		flags, typ, cookie := binary.BigEndian.Uint16(in[4:]), binary.BigEndian.Uint16(in[6:]), binary.BigEndian.Uint64(in[8:])
		off, length := binary.BigEndian.Uint64(in[16:]), binary.BigEndian.Uint32(in[24:])
		in = in[28:]
		if typ == cmdDisc {
			break
		}
		inExport := off <= 64<<10 && uint64(length) <= 64<<10-off
		switch {
		case typ == cmdWriteZeroes && flags&^(flagFUA|flagNoHole|flagFastZero) == 0 && inExport,
			typ == cmdTrim && flags&^flagFUA == 0 && inExport,
			typ == cmdBlockStatus && flags&^(flagFUA|flagReqOne) == 0 && inExport && length > 0:
			mustSucceed[cookie] = want[cookie] == 0 // an ambiguous cookie proves nothing
		default:
			mustSucceed[cookie] = false
		}
		if typ == cmdWrite {
			if length > 32<<20 || uint64(length) > uint64(len(in)) {
				break
			}
			in = in[length:]
		}
		want[cookie]++
		total++
	}
	got := 0
	for len(out) > 0 {
		if len(out) < 16 {
			t.Fatalf("truncated reply %x", out)
		}
		var cookie uint64
		done := false
		var errno uint32
		switch binary.BigEndian.Uint32(out) {
		case cSimpleMagic:
			// Structured replies were negotiated: simple replies have no payload.
			cookie, done, errno = binary.BigEndian.Uint64(out[8:]), true, binary.BigEndian.Uint32(out[4:])
			out = out[16:]
		case cStructMagic:
			if len(out) < 20 {
				t.Fatalf("truncated chunk header")
			}
			flags, typ := binary.BigEndian.Uint16(out[4:]), binary.BigEndian.Uint16(out[6:])
			cookie, done = binary.BigEndian.Uint64(out[8:]), flags&chunkDone != 0
			l := binary.BigEndian.Uint32(out[16:])
			if uint64(l) > uint64(len(out)-20) {
				t.Fatalf("chunk length %d beyond output", l)
			}
			if err := checkChunk(typ, flags, out[20:20+l]); err != nil {
				t.Fatalf("chunk type %d: %v", typ, err)
			}
			if typ == chunkError {
				errno = binary.BigEndian.Uint32(out[20:])
			}
			out = out[20+l:]
		default:
			t.Fatalf("bad reply magic %x", out[:4])
		}
		if errno != 0 && mustSucceed[cookie] {
			t.Fatalf("error %d for the valid request with cookie %#x", errno, cookie)
		}
		if done {
			if want[cookie] == 0 {
				t.Fatalf("reply for cookie %#x, which has no request pending", cookie)
			}
			want[cookie]--
			got++
		}
	}
	if got != total {
		t.Fatalf("%d replies for %d requests", got, total)
	}
}

func checkChunk(typ, flags uint16, p []byte) error {
	switch typ {
	case chunkNone:
		if len(p) != 0 || flags&chunkDone == 0 {
			return fmt.Errorf("length %d flags %#x", len(p), flags)
		}
	case chunkOffsetData:
		if len(p) < 9 || len(p) > 8+fuzzMaxRequest {
			return fmt.Errorf("length %d", len(p))
		}
	case chunkBlockStatus:
		if len(p) < 12 || (len(p)-4)%8 != 0 {
			return fmt.Errorf("length %d", len(p))
		}
		for i := 4; i < len(p); i += 8 {
			if binary.BigEndian.Uint32(p[i:]) == 0 || binary.BigEndian.Uint32(p[i+4:])&^3 != 0 {
				return fmt.Errorf("bad descriptor %x", p[i:i+8])
			}
		}
	case chunkError:
		if len(p) < 6 || binary.BigEndian.Uint32(p) == 0 || 6+int(binary.BigEndian.Uint16(p[4:])) != len(p) {
			return fmt.Errorf("bad error chunk %x", p)
		}
	default:
		return fmt.Errorf("unexpected chunk type")
	}
	return nil
}

var _ io.Reader = (*memConn)(nil)

func dumpGoroutines() {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	os.Stderr.Write(buf[:n])
}
