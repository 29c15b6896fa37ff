package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cairnproject/cairn"
)

var (
	errAbort          = errors.New("nbd: client aborted negotiation")
	errServerShutdown = errors.New("nbd: server shutting down")
	// errRefused marks a request the server refused as a matter of course
	// (unknown export), not worth a warning.
	errRefused = errors.New("refused")
)

// haggler runs the option haggling of one connection.
type haggler struct {
	c   *conn
	bw  *bufio.Writer
	buf []byte // option data
}

// handshake runs fixed newstyle negotiation. It returns nil once the
// transmission phase is entered (c.exp is then set), errAbort after
// NBD_OPT_ABORT, or the error that ended the connection.
func (c *conn) handshake() error {
	if d := c.srv.opts.HandshakeTimeout; d > 0 {
		c.nc.SetDeadline(c.srv.clock.Now().Add(d))
	}
	// halt may have run before the deadline above replaced its own.
	if c.stopping.Load() {
		return errServerShutdown
	}
	h := &haggler{c: c, bw: bufio.NewWriterSize(c.nc, 4096)}
	if err := h.run(); err != nil {
		return err
	}
	// Transmission: no deadline on reads between requests. As in handshake
	// start, clear first and then check the flag halt sets first.
	c.nc.SetDeadline(time.Time{})
	if c.stopping.Load() {
		c.release()
		c.exp = nil
		return errServerShutdown
	}
	return nil
}

func (h *haggler) run() error {
	c := h.c
	var greet [18]byte
	binary.BigEndian.PutUint64(greet[0:], magicNBD)
	binary.BigEndian.PutUint64(greet[8:], magicIHaveOpt)
	binary.BigEndian.PutUint16(greet[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := c.nc.Write(greet[:]); err != nil {
		return err
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.br, cf[:]); err != nil {
		return err
	}
	flags := binary.BigEndian.Uint32(cf[:])
	if flags&^(flagFixedNewstyle|flagNoZeroes) != 0 {
		// The specification requires dropping the connection.
		return fmt.Errorf("nbd: unknown client flags %#x", flags)
	}
	c.noZeroes = flags&flagNoZeroes != 0

	for n := 0; ; n++ {
		var hdr [optionHeaderLen]byte
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			return err
		}
		if n == maxOptions {
			return fmt.Errorf("nbd: more than %d options", maxOptions)
		}
		if m := binary.BigEndian.Uint64(hdr[0:]); m != magicIHaveOpt {
			return fmt.Errorf("nbd: bad option magic %#x", m)
		}
		opt := binary.BigEndian.Uint32(hdr[8:])
		length := binary.BigEndian.Uint32(hdr[12:])

		if length > maxOptionData {
			if opt == optExportName || length > maxOptionSkip {
				return fmt.Errorf("nbd: option %s with %d bytes of data", optName(opt), length)
			}
			if _, err := io.CopyN(io.Discard, c.br, int64(length)); err != nil {
				return err
			}
			typ := uint32(repErrTooBig)
			if !knownOption(opt) {
				typ = repErrUnsup
			}
			h.replyErr(opt, typ, "option data too long (%d bytes)", length)
			if err := h.bw.Flush(); err != nil {
				return err
			}
			continue
		}
		if cap(h.buf) < int(length) {
			h.buf = make([]byte, length, max(int(length), 2*cap(h.buf)))
		}
		data := h.buf[:length]
		if _, err := io.ReadFull(c.br, data); err != nil {
			return err
		}

		if c.shutdown.Load() && opt != optAbort {
			h.replyErr(opt, repErrShutdown, "server shutting down")
			h.bw.Flush()
			return errServerShutdown
		}
		done, err := h.option(opt, data)
		if ferr := h.bw.Flush(); err == nil {
			err = ferr
		}
		if err != nil || done {
			return err
		}
	}
}

func knownOption(opt uint32) bool {
	switch opt {
	case optExportName, optAbort, optList, optStartTLS, optInfo, optGo,
		optStructuredReply, optListMetaContext, optSetMetaContext:
		return true
	}
	return false
}

// option handles one option. done reports that transmission starts.
func (h *haggler) option(opt uint32, data []byte) (done bool, err error) {
	c := h.c
	switch opt {
	case optExportName:
		return true, h.exportName(data)
	case optAbort:
		// Any data is ignored, as the specification recommends.
		h.reply(opt, repAck, nil)
		h.bw.Flush()
		return false, errAbort
	case optList:
		if len(data) != 0 {
			h.replyErr(opt, repErrInvalid, "NBD_OPT_LIST takes no data")
			return false, nil
		}
		h.list()
		return false, nil
	case optStartTLS:
		if len(data) != 0 {
			h.replyErr(opt, repErrInvalid, "NBD_OPT_STARTTLS takes no data")
			return false, nil
		}
		h.replyErr(opt, repErrUnsup, "TLS is not supported by this server")
		return false, nil
	case optInfo, optGo:
		return h.infoGo(opt, data)
	case optStructuredReply:
		if len(data) != 0 {
			h.replyErr(opt, repErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
			return false, nil
		}
		c.structured = true
		h.reply(opt, repAck, nil)
		return false, nil
	case optListMetaContext, optSetMetaContext:
		h.metaContext(opt, data)
		return false, nil
	}
	h.replyErr(opt, repErrUnsup, "option %d is not supported", opt)
	return false, nil
}

func (h *haggler) reply(opt, typ uint32, data []byte) {
	var hdr [20]byte
	binary.BigEndian.PutUint64(hdr[0:], magicOptReply)
	binary.BigEndian.PutUint32(hdr[8:], opt)
	binary.BigEndian.PutUint32(hdr[12:], typ)
	binary.BigEndian.PutUint32(hdr[16:], uint32(len(data)))
	// Errors are sticky in bufio.Writer and reported by Flush.
	h.bw.Write(hdr[:])
	h.bw.Write(data)
}

func (h *haggler) replyErr(opt, typ uint32, format string, args ...any) {
	h.reply(opt, typ, []byte(truncate(fmt.Sprintf(format, args...))))
}

// info sends one NBD_REP_INFO.
func (h *haggler) info(opt uint32, typ uint16, payload []byte) {
	b := make([]byte, 2+len(payload))
	binary.BigEndian.PutUint16(b, typ)
	copy(b[2:], payload)
	h.reply(opt, repInfo, b)
}

// truncate shortens s to the protocol's string limit without splitting a
// UTF-8 sequence.
func truncate(s string) string {
	if len(s) <= maxString {
		return s
	}
	s = s[:maxString]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// checkName validates an export name or query string from the client.
func checkName(s string) error {
	switch {
	case len(s) > maxString:
		return fmt.Errorf("string longer than %d bytes", maxString)
	case strings.IndexByte(s, 0) >= 0:
		return errors.New("string contains NUL")
	case !utf8.ValidString(s):
		return errors.New("string is not UTF-8")
	}
	return nil
}

func (h *haggler) exportName(data []byte) error {
	c := h.c
	name := string(data)
	if err := checkName(name); err != nil {
		return fmt.Errorf("nbd: NBD_OPT_EXPORT_NAME: %v", err)
	}
	exp, release, err := c.srv.cat.Open(c.ctx, name)
	if err != nil {
		// NBD_OPT_EXPORT_NAME cannot fail cleanly: the session ends.
		if errors.Is(err, cairn.ErrNotFound) || errors.Is(err, cairn.ErrDenied) {
			return fmt.Errorf("nbd: NBD_OPT_EXPORT_NAME %q: %w: %w", name, errRefused, err)
		}
		return fmt.Errorf("nbd: NBD_OPT_EXPORT_NAME %q: %w", name, err)
	}
	if exp.Size() < 0 {
		release()
		return fmt.Errorf("nbd: export %q has negative size", name)
	}
	c.enter(exp, release, name)
	var b [10 + 124]byte
	binary.BigEndian.PutUint64(b[0:], c.size)
	binary.BigEndian.PutUint16(b[8:], c.tflags)
	n := len(b)
	if c.noZeroes {
		n = 10
	}
	h.bw.Write(b[:n])
	return nil
}

// enter records the export chosen for the transmission phase.
func (c *conn) enter(exp Export, release func(), name string) {
	c.exp, c.release, c.name = exp, release, name
	c.size = uint64(exp.Size())
	c.tflags = c.transmissionFlags(exp)
	c.blockStatus = c.structured && c.metaAlloc && c.metaExport == name
}

func (c *conn) transmissionFlags(exp Export) uint16 {
	f := uint16(tflagHasFlags | tflagSendFlush)
	if exp.ReadOnly() {
		f |= tflagReadOnly
	} else {
		f |= tflagSendFUA | tflagSendTrim | tflagSendWriteZeroes
		if exp.FastZero() {
			f |= tflagSendFastZero
		}
	}
	if c.structured {
		// Reads are always answered with one content chunk.
		f |= tflagSendDF
	}
	if exp.MultiConn() {
		f |= tflagCanMultiConn
	}
	return f
}

// parseInfoRequest decodes the data of NBD_OPT_INFO and NBD_OPT_GO.
func parseInfoRequest(data []byte) (name string, reqs []uint16, ok bool) {
	if len(data) < 6 {
		return "", nil, false
	}
	nl := binary.BigEndian.Uint32(data)
	if uint64(nl) > uint64(len(data)-6) {
		return "", nil, false
	}
	name = string(data[4 : 4+nl])
	rest := data[4+nl:]
	n := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*n {
		return "", nil, false
	}
	reqs = make([]uint16, n)
	for i := range reqs {
		reqs[i] = binary.BigEndian.Uint16(rest[2*i:])
	}
	return name, reqs, true
}

func (h *haggler) infoGo(opt uint32, data []byte) (done bool, err error) {
	c := h.c
	name, reqs, ok := parseInfoRequest(data)
	if !ok {
		h.replyErr(opt, repErrInvalid, "malformed NBD_OPT_%s data", optName(opt))
		return false, nil
	}
	if err := checkName(name); err != nil {
		h.replyErr(opt, repErrInvalid, "export name: %v", err)
		return false, nil
	}
	exp, release, err := c.srv.cat.Open(c.ctx, name)
	if err != nil {
		h.openFailed(opt, name, err)
		return false, nil
	}
	size := exp.Size()
	if size < 0 {
		release()
		c.log.Error("nbd: export has negative size", "export", name, "size", size)
		h.replyErr(opt, repErrUnknown, "export %q is not available", name)
		return false, nil
	}
	flags := c.transmissionFlags(exp)

	var p [14]byte
	binary.BigEndian.PutUint64(p[0:], uint64(size))
	binary.BigEndian.PutUint16(p[8:], flags)
	h.info(opt, infoExport, p[:10])
	// Size constraints are sent whether asked or not; a client that did
	// not ask may ignore them and the server enforces nothing beyond the
	// maximum payload, which it checks on every read and write anyway.
	// Any alignment is served (minimum 1); requests without a payload
	// (trim, write zeroes, block status) are bounded by the export size
	// only, as the protocol's maximum payload size does not apply to them.
	binary.BigEndian.PutUint32(p[0:], 1)
	binary.BigEndian.PutUint32(p[4:], preferredBlockSize)
	binary.BigEndian.PutUint32(p[8:], uint32(c.srv.opts.MaxRequest))
	h.info(opt, infoBlockSize, p[:12])
	var sentName, sentDesc bool
	for _, r := range reqs {
		switch {
		case r == infoName && !sentName:
			sentName = true
			h.info(opt, infoName, []byte(name))
		case r == infoDescription && !sentDesc:
			sentDesc = true
			if d := truncate(c.describe(exp, name)); d != "" {
				h.info(opt, infoDescription, []byte(d))
			}
		}
	}
	h.reply(opt, repAck, nil)
	if opt == optInfo {
		release()
		return false, nil
	}
	c.enter(exp, release, name)
	return true, nil
}

func (h *haggler) openFailed(opt uint32, name string, err error) {
	switch {
	case errors.Is(err, cairn.ErrNotFound):
		h.replyErr(opt, repErrUnknown, "export %q not found", name)
	case errors.Is(err, cairn.ErrDenied):
		h.replyErr(opt, repErrPolicy, "access to export %q denied", name)
	default:
		h.c.log.Warn("nbd: cannot open export", "export", name, "err", err)
		h.replyErr(opt, repErrUnknown, "export %q is not available", name)
	}
}

// describe returns the description of an export for NBD_INFO_DESCRIPTION.
func (c *conn) describe(exp Export, name string) string {
	if d, ok := exp.(Describer); ok {
		return d.Description()
	}
	list, err := c.srv.cat.List(c.ctx)
	if err != nil {
		return ""
	}
	for _, e := range list {
		if e.Name == name {
			return e.Description
		}
	}
	return ""
}

func (h *haggler) list() {
	c := h.c
	list, err := c.srv.cat.List(c.ctx)
	if err != nil {
		c.log.Warn("nbd: cannot list exports", "err", err)
		h.replyErr(optList, repErrPolicy, "cannot list exports")
		return
	}
	for _, e := range list {
		name, desc := truncate(e.Name), truncate(e.Description)
		b := make([]byte, 4+len(name)+len(desc))
		binary.BigEndian.PutUint32(b, uint32(len(name)))
		copy(b[4:], name)
		copy(b[4+len(name):], desc)
		h.reply(optList, repServer, b)
	}
	h.reply(optList, repAck, nil)
}

// parseMetaRequest decodes the data of NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT.
func parseMetaRequest(data []byte) (name string, queries []string, ok bool) {
	str := func() (string, bool) {
		if len(data) < 4 {
			return "", false
		}
		n := binary.BigEndian.Uint32(data)
		if uint64(n) > uint64(len(data)-4) {
			return "", false
		}
		s := string(data[4 : 4+n])
		data = data[4+n:]
		return s, true
	}
	if name, ok = str(); !ok || len(data) < 4 {
		return "", nil, false
	}
	nq := binary.BigEndian.Uint32(data)
	data = data[4:]
	if uint64(nq) > uint64(len(data)/4) { // every query takes at least 4 bytes
		return "", nil, false
	}
	queries = make([]string, nq)
	for i := range queries {
		if queries[i], ok = str(); !ok {
			return "", nil, false
		}
	}
	return name, queries, len(data) == 0
}

// splitQuery splits a metadata context query into namespace and leaf.
func splitQuery(q string) (ns, leaf string, ok bool) {
	i := strings.IndexByte(q, ':')
	if i <= 0 || checkName(q) != nil {
		return "", "", false
	}
	return q[:i], q[i+1:], true
}

func (h *haggler) metaContext(opt uint32, data []byte) {
	c := h.c
	set := opt == optSetMetaContext
	if set {
		// A failed NBD_OPT_SET_META_CONTEXT also clears the selection.
		c.metaAlloc, c.metaExport = false, ""
	}
	if !c.structured {
		h.replyErr(opt, repErrInvalid, "negotiate NBD_OPT_STRUCTURED_REPLY first")
		return
	}
	name, queries, ok := parseMetaRequest(data)
	if !ok {
		h.replyErr(opt, repErrInvalid, "malformed NBD_OPT_%s data", optName(opt))
		return
	}
	if err := checkName(name); err != nil {
		h.replyErr(opt, repErrInvalid, "export name: %v", err)
		return
	}
	alloc := !set && len(queries) == 0 // listing everything
	for _, q := range queries {
		ns, leaf, ok := splitQuery(q)
		if !ok {
			h.replyErr(opt, repErrInvalid, "malformed metadata context query %q", truncate(q))
			return
		}
		// Unknown namespaces and unknown leaves of base: are ignored; the
		// empty leaf is a wildcard when listing.
		if ns == "base" && (leaf == "allocation" || (!set && leaf == "")) {
			alloc = true
		}
	}
	if alloc {
		var b [4 + len(metaContextBaseAllocation)]byte
		if set {
			binary.BigEndian.PutUint32(b[:], baseAllocationID)
		}
		copy(b[4:], metaContextBaseAllocation)
		h.reply(opt, repMetaContext, b[:])
	}
	if set {
		c.metaAlloc, c.metaExport = alloc, name
	}
	h.reply(opt, repAck, nil)
}
