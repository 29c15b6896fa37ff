package nbd_test

// A minimal NBD client for the tests, written from the protocol
// specification independently of the server: its constants are its own, so
// a mistake in the server's is caught rather than mirrored.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

const (
	cNBDMagic      = 0x4e42444d41474943
	cIHaveOpt      = 0x49484156454F5054
	cOptReplyMagic = 0x0003e889045565a9
	cRequestMagic  = 0x25609513
	cSimpleMagic   = 0x67446698
	cStructMagic   = 0x668e33ef

	cFlagFixedNewstyle = 1
	cFlagNoZeroes      = 2

	tfHasFlags      = 1 << 0
	tfReadOnly      = 1 << 1
	tfSendFlush     = 1 << 2
	tfSendFUA       = 1 << 3
	tfSendTrim      = 1 << 5
	tfSendZeroes    = 1 << 6
	tfSendDF        = 1 << 7
	tfCanMultiConn  = 1 << 8
	tfSendFastZero  = 1 << 11
	tfKnownByClient = 1<<12 - 1

	optExportName  = 1
	optAbort       = 2
	optList        = 3
	optStartTLS    = 5
	optInfo        = 6
	optGo          = 7
	optStructured  = 8
	optListMeta    = 9
	optSetMeta     = 10
	optExtHeaders  = 11
	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repMetaContext = 4
	repErrUnsup    = 0x80000001
	repErrPolicy   = 0x80000002
	repErrInvalid  = 0x80000003
	repErrUnknown  = 0x80000006
	repErrTooBig   = 0x80000009
	infoExport     = 0
	infoName       = 1
	infoDesc       = 2
	infoBlockSize  = 3

	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7

	flagFUA      = 1 << 0
	flagNoHole   = 1 << 1
	flagDF       = 1 << 2
	flagReqOne   = 1 << 3
	flagFastZero = 1 << 4

	chunkDone        = 1
	chunkNone        = 0
	chunkOffsetData  = 1
	chunkOffsetHole  = 2
	chunkBlockStatus = 5
	chunkError       = 0x8001
	chunkErrorOffset = 0x8002

	ePERM     = 1
	eIO       = 5
	eINVAL    = 22
	eNOSPC    = 28
	eOVERFLOW = 75
	eNOTSUP   = 95

	stHole = 1
	stZero = 2
)

// fataler is the part of testing.TB the client needs; bgT implements it for
// goroutines other than the test's.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// bgT collects failures of background goroutines: Fatalf records the
// message and ends the goroutine.
type bgT struct {
	mu   sync.Mutex
	errs []string
}

func (b *bgT) Helper() {}

func (b *bgT) Fatalf(format string, args ...any) {
	b.mu.Lock()
	b.errs = append(b.errs, fmt.Sprintf(format, args...))
	b.mu.Unlock()
	runtime.Goexit()
}

// check fails t with everything b collected.
func (b *bgT) check(t testing.TB) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.errs {
		t.Error(e)
	}
}

type client struct {
	t  fataler
	nc net.Conn
	br *bufio.Reader

	hsFlags    uint16
	structured bool
	size       uint64
	tflags     uint16
	metaID     uint32

	mu         sync.Mutex // guards nextCookie, pending and writes
	nextCookie uint64
	pending    map[uint64]*pendingReq

	sent atomic.Int64 // bytes written by write and submit
}

type pendingReq struct {
	typ    uint16
	offset uint64
	length uint32
	r      *reply
}

// reply is one complete answer to a request.
type reply struct {
	cookie     uint64
	err        uint32 // simple reply error, or the first error chunk's
	msg        string
	data       []byte // read data, assembled
	extents    []ext  // block status
	structured bool
	chunks     int
	covered    uint64 // read bytes described by content chunks
}

type ext struct {
	length uint32
	flags  uint32
}

func dialSocket(t fataler, socket string) net.Conn {
	t.Helper()
	nc, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if tb, ok := t.(testing.TB); ok {
		tb.Cleanup(func() { nc.Close() })
	}
	return nc
}

// newClient connects and reads the server's greeting. The connection has
// no deadline: a client waits for what the server sends, however slow it
// is under load; a server that hangs is caught by go test's -timeout.
func newClient(t fataler, socket string) *client {
	t.Helper()
	return newClientConn(t, dialSocket(t, socket))
}

// newClientConn is newClient on a connection already made.
func newClientConn(t fataler, nc net.Conn) *client {
	t.Helper()
	c := &client{t: t, nc: nc, br: bufio.NewReader(nc), pending: map[uint64]*pendingReq{}}
	var g [18]byte
	c.readFull(g[:])
	if m := binary.BigEndian.Uint64(g[0:]); m != cNBDMagic {
		t.Fatalf("greeting magic %#x", m)
	}
	if m := binary.BigEndian.Uint64(g[8:]); m != cIHaveOpt {
		t.Fatalf("greeting: not newstyle (%#x)", m)
	}
	c.hsFlags = binary.BigEndian.Uint16(g[16:])
	return c
}

// connect performs a whole handshake with NBD_OPT_GO.
func connect(t fataler, socket, name string, structured, meta bool) *client {
	t.Helper()
	return connectConn(t, dialSocket(t, socket), name, structured, meta)
}

// connectConn is connect on a connection already made.
func connectConn(t fataler, nc net.Conn, name string, structured, meta bool) *client {
	t.Helper()
	c := newClientConn(t, nc)
	c.clientFlags(cFlagFixedNewstyle | cFlagNoZeroes)
	if structured {
		c.negotiateStructured()
	}
	if meta {
		if ids := c.setMeta(name, "base:allocation"); len(ids) != 1 {
			t.Fatalf("base:allocation not selected: %v", ids)
		}
	}
	c.goExport(name)
	return c
}

func (c *client) readFull(b []byte) {
	c.t.Helper()
	if _, err := io.ReadFull(c.br, b); err != nil {
		c.t.Fatalf("read from server: %v", err)
	}
}

func (c *client) write(b []byte) {
	c.t.Helper()
	n, err := c.nc.Write(b)
	c.sent.Add(int64(n))
	if err != nil {
		c.t.Fatalf("write to server: %v", err)
	}
}

func (c *client) clientFlags(f uint32) {
	c.t.Helper()
	c.write(binary.BigEndian.AppendUint32(nil, f))
}

func (c *client) sendOption(opt uint32, data []byte) {
	c.t.Helper()
	b := binary.BigEndian.AppendUint64(nil, cIHaveOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	c.write(append(b, data...))
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (c *client) readOptReply(opt uint32) optReply {
	c.t.Helper()
	var h [20]byte
	c.readFull(h[:])
	if m := binary.BigEndian.Uint64(h[0:]); m != cOptReplyMagic {
		c.t.Fatalf("option reply magic %#x", m)
	}
	r := optReply{opt: binary.BigEndian.Uint32(h[8:]), typ: binary.BigEndian.Uint32(h[12:])}
	n := binary.BigEndian.Uint32(h[16:])
	if n > 1<<20 {
		c.t.Fatalf("option reply of %d bytes", n)
	}
	r.data = make([]byte, n)
	c.readFull(r.data)
	if r.opt != opt {
		c.t.Fatalf("reply for option %d, want %d", r.opt, opt)
	}
	return r
}

// option sends opt and reads replies up to the final one (ACK or error).
func (c *client) option(opt uint32, data []byte) []optReply {
	c.t.Helper()
	c.sendOption(opt, data)
	return c.optionReplies(opt)
}

// optionReplies reads the replies to opt up to the final one.
func (c *client) optionReplies(opt uint32) []optReply {
	c.t.Helper()
	var out []optReply
	for {
		r := c.readOptReply(opt)
		out = append(out, r)
		if r.typ == repAck || r.typ&0x80000000 != 0 {
			return out
		}
	}
}

func final(rs []optReply) uint32 { return rs[len(rs)-1].typ }

func (c *client) negotiateStructured() {
	c.t.Helper()
	if rs := c.option(optStructured, nil); final(rs) != repAck || len(rs) != 1 {
		c.t.Fatalf("NBD_OPT_STRUCTURED_REPLY: %+v", rs)
	}
	c.structured = true
}

func metaData(name string, queries ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

type metaCtx struct {
	id   uint32
	name string
}

func parseMetaReplies(t fataler, rs []optReply) []metaCtx {
	t.Helper()
	var out []metaCtx
	for _, r := range rs[:len(rs)-1] {
		if r.typ != repMetaContext || len(r.data) < 4 {
			t.Fatalf("unexpected meta context reply %+v", r)
		}
		out = append(out, metaCtx{binary.BigEndian.Uint32(r.data), string(r.data[4:])})
	}
	return out
}

func (c *client) setMeta(name string, queries ...string) []metaCtx {
	c.t.Helper()
	rs := c.option(optSetMeta, metaData(name, queries...))
	if final(rs) != repAck {
		c.t.Fatalf("NBD_OPT_SET_META_CONTEXT: error %#x %q", final(rs), rs[len(rs)-1].data)
	}
	ctxs := parseMetaReplies(c.t, rs)
	for _, m := range ctxs {
		if m.name == "base:allocation" {
			c.metaID = m.id
		}
	}
	return ctxs
}

func infoData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

type exportInfo struct {
	size                   uint64
	tflags                 uint16
	name, desc             string
	minBS, prefBS, maxBS   uint32
	gotName, gotDesc, gotB bool
}

func parseInfo(t fataler, rs []optReply) exportInfo {
	t.Helper()
	var ei exportInfo
	gotExport := false
	for _, r := range rs[:len(rs)-1] {
		if r.typ != repInfo || len(r.data) < 2 {
			t.Fatalf("unexpected reply %+v", r)
		}
		d := r.data[2:]
		switch binary.BigEndian.Uint16(r.data) {
		case infoExport:
			if len(d) != 10 {
				t.Fatalf("NBD_INFO_EXPORT of %d bytes", len(d))
			}
			gotExport = true
			ei.size, ei.tflags = binary.BigEndian.Uint64(d), binary.BigEndian.Uint16(d[8:])
		case infoName:
			ei.name, ei.gotName = string(d), true
		case infoDesc:
			ei.desc, ei.gotDesc = string(d), true
		case infoBlockSize:
			if len(d) != 12 {
				t.Fatalf("NBD_INFO_BLOCK_SIZE of %d bytes", len(d))
			}
			ei.minBS, ei.prefBS, ei.maxBS = binary.BigEndian.Uint32(d), binary.BigEndian.Uint32(d[4:]), binary.BigEndian.Uint32(d[8:])
			ei.gotB = true
		}
	}
	if final(rs) == repAck && !gotExport {
		t.Fatalf("successful reply without NBD_INFO_EXPORT")
	}
	return ei
}

// goExport sends NBD_OPT_GO and requires success.
func (c *client) goExport(name string, infos ...uint16) exportInfo {
	c.t.Helper()
	c.sendOption(optGo, infoData(name, infos...))
	return c.goReplies(name)
}

// goReplies reads the replies to an NBD_OPT_GO for export name and
// requires success.
func (c *client) goReplies(name string) exportInfo {
	c.t.Helper()
	rs := c.optionReplies(optGo)
	if final(rs) != repAck {
		c.t.Fatalf("NBD_OPT_GO %q: error %#x %q", name, final(rs), rs[len(rs)-1].data)
	}
	ei := parseInfo(c.t, rs)
	c.size, c.tflags = ei.size, ei.tflags
	return ei
}

// submit sends a request and returns its cookie.
func (c *client) submit(flags, typ uint16, off uint64, length uint32, payload []byte) uint64 {
	c.t.Helper()
	return c.submitT(c.t, flags, typ, off, length, payload)
}

// submitT is submit failing through t, for goroutines sending requests
// while the test's goroutine reads replies.
func (c *client) submitT(t fataler, flags, typ uint16, off uint64, length uint32, payload []byte) uint64 {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextCookie++
	cookie := c.nextCookie*0x0101010101 + 0xabc00000000000 // not a small counter: catches truncation
	b := make([]byte, 28, 28+len(payload))
	binary.BigEndian.PutUint32(b[0:], cRequestMagic)
	binary.BigEndian.PutUint16(b[4:], flags)
	binary.BigEndian.PutUint16(b[6:], typ)
	binary.BigEndian.PutUint64(b[8:], cookie)
	binary.BigEndian.PutUint64(b[16:], off)
	binary.BigEndian.PutUint32(b[24:], length)
	if typ != cmdDisc {
		c.pending[cookie] = &pendingReq{typ: typ, offset: off, length: length}
	}
	n, err := c.nc.Write(append(b, payload...))
	c.sent.Add(int64(n))
	if err != nil {
		t.Fatalf("write request: %v", err)
	}
	return cookie
}

func (c *client) lookup(cookie uint64) *pendingReq {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending[cookie]
}

func (c *client) forget(cookie uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, cookie)
}

// next reads messages until one request is complete and returns its reply.
func (c *client) next() *reply {
	c.t.Helper()
	for {
		var m [4]byte
		c.readFull(m[:])
		switch binary.BigEndian.Uint32(m[:]) {
		case cSimpleMagic:
			var h [12]byte
			c.readFull(h[:])
			cookie := binary.BigEndian.Uint64(h[4:])
			p := c.lookup(cookie)
			if p == nil {
				c.t.Fatalf("simple reply for unknown cookie %#x", cookie)
			}
			if c.structured && p.typ == cmdRead {
				c.t.Fatalf("simple reply to a read after structured replies were negotiated")
			}
			c.forget(cookie)
			r := &reply{cookie: cookie, err: binary.BigEndian.Uint32(h[:])}
			if p.typ == cmdRead && r.err == 0 {
				r.data = make([]byte, p.length)
				c.readFull(r.data)
				r.covered = uint64(p.length)
			}
			return r
		case cStructMagic:
			if !c.structured {
				c.t.Fatalf("structured reply chunk without negotiation")
			}
			if r := c.chunk(); r != nil {
				return r
			}
		default:
			c.t.Fatalf("bad reply magic %#x", m)
		}
	}
}

// chunk reads one structured chunk; it returns the reply it completes.
func (c *client) chunk() *reply {
	c.t.Helper()
	var h [16]byte
	c.readFull(h[:])
	flags, typ := binary.BigEndian.Uint16(h[0:]), binary.BigEndian.Uint16(h[2:])
	cookie, n := binary.BigEndian.Uint64(h[4:]), binary.BigEndian.Uint32(h[12:])
	p := c.lookup(cookie)
	if p == nil {
		c.t.Fatalf("chunk for unknown cookie %#x", cookie)
	}
	if n > 64<<20 {
		c.t.Fatalf("chunk of %d bytes", n)
	}
	payload := make([]byte, n)
	c.readFull(payload)
	if p.r == nil {
		p.r = &reply{cookie: cookie, structured: true}
		if p.typ == cmdRead {
			p.r.data = make([]byte, p.length)
		}
	}
	r := p.r
	r.chunks++
	switch typ {
	case chunkNone:
		if n != 0 || flags&chunkDone == 0 {
			c.t.Fatalf("bad NBD_REPLY_TYPE_NONE: length %d flags %#x", n, flags)
		}
	case chunkOffsetData, chunkOffsetHole:
		if p.typ != cmdRead {
			c.t.Fatalf("content chunk for %d", p.typ)
		}
		if n < 9 || (typ == chunkOffsetHole && n != 12) {
			c.t.Fatalf("content chunk of %d bytes", n)
		}
		off := binary.BigEndian.Uint64(payload)
		var l uint64
		if typ == chunkOffsetData {
			l = uint64(n - 8)
		} else {
			l = uint64(binary.BigEndian.Uint32(payload[8:]))
		}
		if off < p.offset || l == 0 || off+l > p.offset+uint64(p.length) {
			c.t.Fatalf("content chunk [%d,+%d) outside request [%d,+%d)", off, l, p.offset, p.length)
		}
		if typ == chunkOffsetData {
			copy(r.data[off-p.offset:], payload[8:])
		} else {
			clear(r.data[off-p.offset : off-p.offset+l])
		}
		r.covered += l
	case chunkBlockStatus:
		if p.typ != cmdBlockStatus || n < 12 || (n-4)%8 != 0 {
			c.t.Fatalf("bad block status chunk: length %d", n)
		}
		if id := binary.BigEndian.Uint32(payload); id != c.metaID {
			c.t.Fatalf("block status for context %d, want %d", id, c.metaID)
		}
		for i := 4; i < int(n); i += 8 {
			e := ext{binary.BigEndian.Uint32(payload[i:]), binary.BigEndian.Uint32(payload[i+4:])}
			if e.length == 0 {
				c.t.Fatalf("zero-length extent")
			}
			r.extents = append(r.extents, e)
		}
	case chunkError, chunkErrorOffset:
		if n < 6 {
			c.t.Fatalf("error chunk of %d bytes", n)
		}
		ml := int(binary.BigEndian.Uint16(payload[4:]))
		if 6+ml > int(n) || (typ == chunkErrorOffset && 14+ml != int(n)) {
			c.t.Fatalf("error chunk: message length %d in %d bytes", ml, n)
		}
		if r.err == 0 {
			r.err = binary.BigEndian.Uint32(payload)
			r.msg = string(payload[6 : 6+ml])
		}
		if r.err == 0 {
			c.t.Fatalf("error chunk with error 0")
		}
	default:
		c.t.Fatalf("unknown chunk type %#x", typ)
	}
	if flags&chunkDone == 0 {
		return nil
	}
	c.forget(cookie)
	if p.typ == cmdRead && r.err == 0 && r.covered != uint64(p.length) {
		c.t.Fatalf("read reply covers %d of %d bytes", r.covered, p.length)
	}
	return r
}

// do sends one request and waits for its reply.
func (c *client) do(flags, typ uint16, off uint64, length uint32, payload []byte) *reply {
	c.t.Helper()
	cookie := c.submit(flags, typ, off, length, payload)
	r := c.next()
	if r.cookie != cookie {
		c.t.Fatalf("reply for cookie %#x, want %#x", r.cookie, cookie)
	}
	return r
}

func (c *client) read(off uint64, n uint32) []byte {
	c.t.Helper()
	r := c.do(0, cmdRead, off, n, nil)
	if r.err != 0 {
		c.t.Fatalf("read [%d,+%d): error %d %q", off, n, r.err, r.msg)
	}
	return r.data
}

func (c *client) writeAt(flags uint16, off uint64, p []byte) {
	c.t.Helper()
	if r := c.do(flags, cmdWrite, off, uint32(len(p)), p); r.err != 0 {
		c.t.Fatalf("write [%d,+%d): error %d %q", off, len(p), r.err, r.msg)
	}
}

func (c *client) ok(flags, typ uint16, off uint64, length uint32) {
	c.t.Helper()
	if r := c.do(flags, typ, off, length, nil); r.err != 0 {
		c.t.Fatalf("command %d [%d,+%d): error %d %q", typ, off, length, r.err, r.msg)
	}
}

// disconnect sends NBD_CMD_DISC and waits for the server to close.
func (c *client) disconnect() {
	c.t.Helper()
	c.submit(0, cmdDisc, 0, 0, nil)
	c.expectClosed()
}

// expectClosed reads until the server closes the connection, however long
// that takes; it fails on anything but a clean close (or a reset).
func (c *client) expectClosed() {
	c.t.Helper()
	n, err := io.Copy(io.Discard, c.br)
	if err != nil && !isReset(err) {
		c.t.Fatalf("waiting for the server to close: %v (after %d bytes)", err, n)
	}
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

// extentsString renders extents for messages.
func extentsString(es []ext) string {
	var b bytes.Buffer
	for _, e := range es {
		fmt.Fprintf(&b, "[%d %d] ", e.length, e.flags)
	}
	return b.String()
}
