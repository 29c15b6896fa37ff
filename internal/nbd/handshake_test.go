package nbd_test

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/nbd"
)

func TestGreeting(t *testing.T) {
	f := setup(t, nbd.Options{})
	c := newClient(t, f.sock)
	if c.hsFlags != cFlagFixedNewstyle|cFlagNoZeroes {
		t.Errorf("handshake flags %#x, want FIXED_NEWSTYLE|NO_ZEROES", c.hsFlags)
	}
}

func TestBadClientFlags(t *testing.T) {
	f := setupLog(t, nbd.Options{}, false)
	for _, flags := range []uint32{1 << 2, 1 << 31, 0xffffffff} {
		c := newClient(t, f.sock)
		c.clientFlags(flags)
		c.expectClosed()
	}
}

// TestNotFixedNewstyle: a client that does not set NBD_FLAG_C_FIXED_NEWSTYLE
// may still use NBD_OPT_EXPORT_NAME.
func TestNotFixedNewstyle(t *testing.T) {
	f := setup(t, nbd.Options{})
	c := newClient(t, f.sock)
	c.clientFlags(0)
	c.sendOption(optExportName, []byte("disk"))
	var b [134]byte
	c.readFull(b[:])
	if size := binary.BigEndian.Uint64(b[:]); size != diskSize {
		t.Fatalf("size %d", size)
	}
	if !bytes.Equal(b[10:], make([]byte, 124)) {
		t.Errorf("reserved bytes are not zero")
	}
}

func TestExportName(t *testing.T) {
	tests := []struct {
		name       string
		export     string
		noZeroes   bool
		structured bool
		size       uint64
		flags      uint16
	}{
		{"zeroes", "disk", false, false, diskSize, tfHasFlags | tfSendFlush | tfSendFUA | tfSendTrim | tfSendZeroes | tfCanMultiConn},
		{"no-zeroes", "disk", true, false, diskSize, tfHasFlags | tfSendFlush | tfSendFUA | tfSendTrim | tfSendZeroes | tfCanMultiConn},
		{"default", "", true, false, roSize, tfHasFlags | tfSendFlush | tfSendFUA | tfSendTrim | tfSendZeroes | tfCanMultiConn},
		{"read-only", "ro", true, false, roSize, tfHasFlags | tfReadOnly | tfSendFlush},
		{"structured", "fast", true, true, diskSize, tfHasFlags | tfSendFlush | tfSendFUA | tfSendTrim | tfSendZeroes | tfSendDF | tfCanMultiConn | tfSendFastZero},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t, nbd.Options{})
			c := newClient(t, f.sock)
			var cf uint32 = cFlagFixedNewstyle
			if tt.noZeroes {
				cf |= cFlagNoZeroes
			}
			c.clientFlags(cf)
			if tt.structured {
				c.negotiateStructured()
			}
			c.sendOption(optExportName, []byte(tt.export))
			n := 134
			if tt.noZeroes {
				n = 10
			}
			b := make([]byte, n)
			c.readFull(b)
			c.size, c.tflags = binary.BigEndian.Uint64(b), binary.BigEndian.Uint16(b[8:])
			if c.size != tt.size || c.tflags != tt.flags {
				t.Errorf("size %d flags %#x, want %d %#x", c.size, c.tflags, tt.size, tt.flags)
			}
			if !bytes.Equal(b[10:], make([]byte, n-10)) {
				t.Errorf("reserved bytes are not zero")
			}
			if f.cat.InUse(tt.export) != 1 {
				t.Errorf("export not held open in transmission")
			}
			// The connection is in transmission: a read works.
			if got := c.read(0, 512); !bytes.Equal(got, make([]byte, 512)) {
				t.Errorf("read of a fresh export is not zero")
			}
			c.disconnect()
			f.waitReleased(t, tt.export)
		})
	}
}

func TestExportNameMissing(t *testing.T) {
	f := setupLog(t, nbd.Options{}, false)
	for _, name := range []string{"nope", strings.Repeat("x", 4097), "a\x00b"} {
		c := newClient(t, f.sock)
		c.clientFlags(cFlagFixedNewstyle)
		c.sendOption(optExportName, []byte(name))
		c.expectClosed()
	}
}

func TestInfo(t *testing.T) {
	f := setup(t, nbd.Options{MaxRequest: 1 << 20})
	c := newClient(t, f.sock)
	c.clientFlags(cFlagFixedNewstyle | cFlagNoZeroes)

	tests := []struct {
		export string
		infos  []uint16
		want   exportInfo
	}{
		{"disk", []uint16{infoName, infoDesc, infoBlockSize},
			exportInfo{size: diskSize, tflags: tfHasFlags | tfSendFlush | tfSendFUA | tfSendTrim | tfSendZeroes | tfCanMultiConn,
				name: "disk", desc: "the disk", gotName: true, gotDesc: true, gotB: true, minBS: 1, prefBS: 4096, maxBS: 1 << 20}},
		{"ro", []uint16{infoDesc, 999 /* unknown: ignored */, infoDesc /* repeated: answered once */},
			exportInfo{size: roSize, tflags: tfHasFlags | tfReadOnly | tfSendFlush,
				desc: "read-only disk", gotDesc: true, gotB: true, minBS: 1, prefBS: 4096, maxBS: 1 << 20}},
		{"", nil,
			exportInfo{size: roSize, tflags: tfHasFlags | tfSendFlush | tfSendFUA | tfSendTrim | tfSendZeroes | tfCanMultiConn,
				gotB: true, minBS: 1, prefBS: 4096, maxBS: 1 << 20}},
		// No description: none is sent even when asked.
		{"fast", []uint16{infoDesc},
			exportInfo{size: diskSize, tflags: tfHasFlags | tfSendFlush | tfSendFUA | tfSendTrim | tfSendZeroes | tfCanMultiConn | tfSendFastZero,
				gotB: true, minBS: 1, prefBS: 4096, maxBS: 1 << 20}},
	}
	for _, tt := range tests {
		rs := c.option(optInfo, infoData(tt.export, tt.infos...))
		if final(rs) != repAck {
			t.Fatalf("NBD_OPT_INFO %q: %#x", tt.export, final(rs))
		}
		if got := parseInfo(t, rs); got != tt.want {
			t.Errorf("NBD_OPT_INFO %q:\n got %+v\nwant %+v", tt.export, got, tt.want)
		}
		if f.cat.InUse(tt.export) != 0 {
			t.Errorf("NBD_OPT_INFO left %q open", tt.export)
		}
	}

	// Unknown export: an error, no information, and the session goes on.
	rs := c.option(optInfo, infoData("nope", infoName))
	if len(rs) != 1 || final(rs) != repErrUnknown || !strings.Contains(string(rs[0].data), "nope") {
		t.Errorf("NBD_OPT_INFO of a missing export: %+v", rs)
	}
	rs = c.option(optGo, infoData("nope"))
	if len(rs) != 1 || final(rs) != repErrUnknown {
		t.Errorf("NBD_OPT_GO of a missing export: %+v", rs)
	}

	// NBD_OPT_GO after NBD_OPT_INFO with the same parameters gives the same answer.
	want := parseInfo(t, c.option(optInfo, infoData("disk", infoName)))
	if got := c.goExport("disk", infoName); got != want {
		t.Errorf("NBD_OPT_GO %+v, NBD_OPT_INFO %+v", got, want)
	}
	if f.cat.InUse("disk") != 1 {
		t.Errorf("NBD_OPT_GO did not keep the export open")
	}
	c.writeAt(0, 0, []byte("hello"))
	if got := c.read(0, 5); string(got) != "hello" {
		t.Errorf("read %q", got)
	}
	c.disconnect()
	f.waitReleased(t, "disk")
}

func TestList(t *testing.T) {
	f := setup(t, nbd.Options{})
	c := newClient(t, f.sock)
	c.clientFlags(cFlagFixedNewstyle | cFlagNoZeroes)
	rs := c.option(optList, nil)
	if final(rs) != repAck {
		t.Fatalf("NBD_OPT_LIST: %#x", final(rs))
	}
	var got []string
	for _, r := range rs[:len(rs)-1] {
		if r.typ != repServer || len(r.data) < 4 {
			t.Fatalf("reply %+v", r)
		}
		n := binary.BigEndian.Uint32(r.data)
		if int(n) > len(r.data)-4 {
			t.Fatalf("name length %d in %d bytes", n, len(r.data))
		}
		got = append(got, string(r.data[4:4+n])+"="+string(r.data[4+n:]))
	}
	want := []string{"disk=the disk", "ro=read-only disk", "fast=", "=default export"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("NBD_OPT_LIST: %q, want %q", got, want)
	}
	if rs := c.option(optList, []byte("x")); len(rs) != 1 || final(rs) != repErrInvalid {
		t.Errorf("NBD_OPT_LIST with data: %+v", rs)
	}
	c.goExport("disk")
}

func TestAbort(t *testing.T) {
	f := setup(t, nbd.Options{})
	for _, data := range [][]byte{nil, []byte("ignored")} {
		c := newClient(t, f.sock)
		c.clientFlags(cFlagFixedNewstyle)
		c.negotiateStructured()
		if rs := c.option(optAbort, data); len(rs) != 1 || final(rs) != repAck {
			t.Errorf("NBD_OPT_ABORT: %+v", rs)
		}
		c.expectClosed()
	}
}

// TestOptionErrors: every refused option gets a clean error reply and the
// negotiation goes on (NBD_OPT_GO works afterwards).
func TestOptionErrors(t *testing.T) {
	long := strings.Repeat("n", 4097)
	tests := []struct {
		name       string
		structured bool
		opt        uint32
		data       []byte
		want       uint32
	}{
		{"starttls", false, optStartTLS, nil, repErrUnsup},
		{"starttls-data", false, optStartTLS, []byte{1}, repErrInvalid},
		{"extended-headers", true, optExtHeaders, nil, repErrUnsup},
		{"peek-export", false, 4, nil, repErrUnsup},
		{"unknown", false, 0xdeadbeef, []byte("some data"), repErrUnsup},
		{"structured-data", false, optStructured, []byte{0}, repErrInvalid},
		{"list-data", false, optList, []byte{0, 0, 0, 0}, repErrInvalid},
		{"go-empty", false, optGo, nil, repErrInvalid},
		{"go-short", false, optGo, []byte{0, 0, 0, 0, 0}, repErrInvalid},
		{"go-name-overflow", false, optGo, []byte{0, 0, 0, 100, 'd', 'i', 's', 'k', 0, 0}, repErrInvalid},
		{"go-name-huge", false, optGo, []byte{0xff, 0xff, 0xff, 0xff, 0, 0}, repErrInvalid},
		{"go-trailing", false, optGo, append(infoData("disk"), 0), repErrInvalid},
		{"go-count-mismatch", false, optGo, infoData("disk", 1)[:4+4+2+1], repErrInvalid},
		{"info-count-too-high", false, optInfo, append(infoData("disk")[:8], 0, 5, 0, 1), repErrInvalid},
		{"info-nul", false, optInfo, infoData("di\x00sk"), repErrInvalid},
		{"info-not-utf8", false, optInfo, infoData("\xff\xfe"), repErrInvalid},
		{"info-long-name", false, optInfo, infoData(long), repErrInvalid},
		{"list-meta-unstructured", false, optListMeta, metaData("disk"), repErrInvalid},
		{"set-meta-unstructured", false, optSetMeta, metaData("disk", "base:allocation"), repErrInvalid},
		{"set-meta-empty", true, optSetMeta, nil, repErrInvalid},
		{"set-meta-truncated", true, optSetMeta, metaData("disk", "base:allocation")[:20], repErrInvalid},
		{"set-meta-trailing", true, optSetMeta, append(metaData("disk", "base:allocation"), 1), repErrInvalid},
		{"set-meta-count-huge", true, optSetMeta, append(metaData("disk")[:8], 0xff, 0xff, 0xff, 0xff), repErrInvalid},
		{"set-meta-no-colon", true, optSetMeta, metaData("disk", "allocation"), repErrInvalid},
		{"set-meta-empty-namespace", true, optSetMeta, metaData("disk", ":allocation"), repErrInvalid},
		{"list-meta-long-query", true, optListMeta, metaData("disk", "base:"+long), repErrInvalid},
		{"list-meta-bad-name", true, optListMeta, metaData(long, "base:"), repErrInvalid},
	}
	f := setup(t, nbd.Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, f.sock)
			c.clientFlags(cFlagFixedNewstyle | cFlagNoZeroes)
			if tt.structured {
				c.negotiateStructured()
			}
			rs := c.option(tt.opt, tt.data)
			if len(rs) != 1 || rs[0].typ != tt.want {
				t.Errorf("replies %+v, want one of type %#x", rs, tt.want)
			}
			if len(rs[0].data) == 0 {
				t.Errorf("error reply without a message")
			}
			c.goExport("disk")
			c.disconnect()
		})
	}
}

func TestOversizedOptions(t *testing.T) {
	f := setupLog(t, nbd.Options{}, false)
	big := make([]byte, 100<<10)

	c := newClient(t, f.sock)
	c.clientFlags(cFlagFixedNewstyle | cFlagNoZeroes)
	if rs := c.option(0x1234, big); len(rs) != 1 || final(rs) != repErrUnsup {
		t.Errorf("unknown option with 100 KiB: %+v", rs)
	}
	if rs := c.option(optGo, big); len(rs) != 1 || final(rs) != repErrTooBig {
		t.Errorf("NBD_OPT_GO with 100 KiB: %+v", rs)
	}
	c.goExport("disk")
	c.disconnect()

	// Lengths not worth skipping, and NBD_OPT_EXPORT_NAME (which cannot
	// fail cleanly), end the session.
	for _, tt := range []struct {
		opt  uint32
		data []byte
	}{{optGo, nil}, {optExportName, big}} {
		c := newClient(t, f.sock)
		c.clientFlags(cFlagFixedNewstyle)
		if tt.data == nil {
			hdr := binary.BigEndian.AppendUint64(nil, cIHaveOpt)
			hdr = binary.BigEndian.AppendUint32(hdr, tt.opt)
			hdr = binary.BigEndian.AppendUint32(hdr, 1<<30)
			c.write(hdr)
		} else {
			c.sendOption(tt.opt, tt.data)
		}
		c.expectClosed()
	}
}

func TestBadOptionMagic(t *testing.T) {
	f := setupLog(t, nbd.Options{}, false)
	c := newClient(t, f.sock)
	c.clientFlags(cFlagFixedNewstyle)
	c.write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	c.expectClosed()
	f.log.waitLogged("negotiation failed", 1)
	if !hasAny(f.log.warnings(), "negotiation failed") {
		t.Errorf("the bad option magic was not logged as a warning: %q", f.log.warnings())
	}
}

func TestTooManyOptions(t *testing.T) {
	f := setupLog(t, nbd.Options{}, false)
	c := newClient(t, f.sock)
	c.clientFlags(cFlagFixedNewstyle)
	for range 1024 {
		if rs := c.option(optStartTLS, nil); final(rs) != repErrUnsup {
			t.Fatalf("reply %+v", rs)
		}
	}
	c.sendOption(optStartTLS, nil)
	c.expectClosed()
}

func TestMetaContexts(t *testing.T) {
	f := setup(t, nbd.Options{})
	c := newClient(t, f.sock)
	c.clientFlags(cFlagFixedNewstyle | cFlagNoZeroes)
	c.negotiateStructured()

	list := []struct {
		queries []string
		want    []string
	}{
		{nil, []string{"base:allocation"}},
		{[]string{"base:"}, []string{"base:allocation"}},
		{[]string{"base:allocation"}, []string{"base:allocation"}},
		{[]string{"base:other"}, nil},
		{[]string{"x-foo:bar", "qemu:dirty-bitmap:b"}, nil},
		{[]string{"x-foo:", "base:allocation", "base:"}, []string{"base:allocation"}},
	}
	for _, tt := range list {
		rs := c.option(optListMeta, metaData("disk", tt.queries...))
		if final(rs) != repAck {
			t.Fatalf("LIST_META_CONTEXT %q: %#x", tt.queries, final(rs))
		}
		var got []string
		for _, m := range parseMetaReplies(t, rs) {
			got = append(got, m.name)
		}
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("LIST_META_CONTEXT %q: %q, want %q", tt.queries, got, tt.want)
		}
	}

	set := []struct {
		queries []string
		want    int
	}{
		{nil, 0},
		{[]string{"base:"}, 0},
		{[]string{"x-foo:bar"}, 0},
		{[]string{"base:allocation", "base:allocation", "qemu:allocation-depth"}, 1},
	}
	for _, tt := range set {
		got := c.setMeta("disk", tt.queries...)
		if len(got) != tt.want {
			t.Errorf("SET_META_CONTEXT %q: %v, want %d contexts", tt.queries, got, tt.want)
		}
		for _, m := range got {
			if m.name != "base:allocation" {
				t.Errorf("SET_META_CONTEXT selected %q", m.name)
			}
		}
	}
	c.goExport("disk")
	r := c.do(0, cmdBlockStatus, 0, 4096, nil)
	if r.err != 0 || len(r.extents) != 1 || r.extents[0] != (ext{4096, stHole | stZero}) {
		t.Errorf("block status: err %d extents %s", r.err, extentsString(r.extents))
	}
}

// TestBlockStatusNeedsContext: block status is refused (EINVAL) unless the
// last NBD_OPT_SET_META_CONTEXT selected base:allocation for the export used.
func TestBlockStatusNeedsContext(t *testing.T) {
	tests := []struct {
		name  string
		setup func(c *client)
		ok    bool
	}{
		{"none", func(c *client) {}, false},
		{"other-export", func(c *client) { c.setMeta("ro", "base:allocation") }, false},
		{"cleared", func(c *client) { c.setMeta("disk", "base:allocation"); c.setMeta("disk") }, false},
		{"cleared-by-failure", func(c *client) {
			c.setMeta("disk", "base:allocation")
			c.option(optSetMeta, []byte{1})
		}, false},
		{"selected", func(c *client) { c.setMeta("disk", "base:allocation") }, true},
		{"selected-last", func(c *client) { c.setMeta("ro", "base:allocation"); c.setMeta("disk", "base:allocation") }, true},
	}
	f := setupLog(t, nbd.Options{}, false) // the refused requests are logged
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, f.sock)
			c.clientFlags(cFlagFixedNewstyle | cFlagNoZeroes)
			c.negotiateStructured()
			tt.setup(c)
			c.goExport("disk")
			r := c.do(0, cmdBlockStatus, 0, 4096, nil)
			if tt.ok && r.err != 0 {
				t.Errorf("block status failed: %d %q", r.err, r.msg)
			}
			if !tt.ok && r.err != eINVAL {
				t.Errorf("block status: error %d, want EINVAL", r.err)
			}
		})
	}

	// Without structured replies, the error is a simple reply.
	c := connect(t, f.sock, "disk", false, false)
	if r := c.do(0, cmdBlockStatus, 0, 4096, nil); r.err != eINVAL || r.structured {
		t.Errorf("block status without structured replies: %+v", r)
	}
}

// TestHandshakeTimeout: a client stalling anywhere in option haggling
// loses its connection once HandshakeTimeout has passed since it
// connected, and not before; in transmission the handshake deadline no
// longer applies, however long the client idles. Time passes only when
// the test advances the server's clock, once the server waits for the
// client's next bytes.
func TestHandshakeTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	f, srv := setupClock(t, nbd.Options{HandshakeTimeout: timeout}, false)
	// What a client sends up to NBD_OPT_GO for "disk".
	stream := binary.BigEndian.AppendUint32(nil, cFlagFixedNewstyle|cFlagNoZeroes)
	stream = binary.BigEndian.AppendUint64(stream, cIHaveOpt)
	stream = binary.BigEndian.AppendUint32(stream, optGo)
	data := infoData("disk")
	stream = binary.BigEndian.AppendUint32(stream, uint32(len(data)))
	stream = append(stream, data...)
	for _, tt := range []struct {
		name    string
		stallAt int // bytes of stream sent before the stall
	}{
		{"after-greeting", 0},
		{"before-option", 4},
		{"mid-option-header", 4 + 5},
		{"mid-option-data", len(stream) - 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, f.sock)
			sc := srv.conn()
			c.write(stream[:tt.stallAt])
			sc.waitReadBlocked(int64(tt.stallAt))
			srv.clock.Advance(timeout)
			if read, _ := sc.timedOut(); !read {
				t.Fatalf("HandshakeTimeout passed and the server's read has no deadline that passed")
			}
			c.expectClosed()

			c = newClient(t, f.sock)
			sc = srv.conn()
			c.write(stream[:tt.stallAt])
			sc.waitReadBlocked(int64(tt.stallAt))
			srv.clock.Advance(timeout - time.Nanosecond)
			c.write(stream[tt.stallAt:])
			c.goReplies("disk")
			sc.waitReadBlocked(int64(len(stream)))
			srv.clock.Advance(100 * timeout)
			c.read(0, 4096)
			c.disconnect()
		})
	}
}
