package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/cairnproject/cairn"
)

// txReq is one request of the transmission phase, from the reader to a
// worker. It is pooled, and so are its buffers.
type txReq struct {
	request
	buf     *[]byte // write payload, read data or block status descriptors
	cost    int64   // bytes taken from the connection's budget
	wseq    uint64  // writeTracker number of a write-type request, 0 if none
	barrier uint64  // for a flush: the last write it must wait for
	errno   uint32  // error the reader found; the worker only replies
	msg     string
	replied bool
	hdr     [32]byte // reply header scratch
	bufs    [2][]byte
	nb      net.Buffers
}

var errStopped = errors.New("nbd: connection stopped")

// maxDescLen is the longest block status descriptor sent: the largest
// 4 KiB multiple that fits the 32-bit length field.
const maxDescLen = 0xFFFFF000

// transmit runs the transmission phase: this goroutine reads requests and
// hands them to Workers goroutines, which reply. It returns once the
// client disconnected (NBD_CMD_DISC or otherwise) and every request read
// has been answered.
func (c *conn) transmit() {
	n := c.srv.opts.Workers
	work := make(chan *txReq)
	var wg sync.WaitGroup
	wg.Add(n)
	for range n {
		go func() {
			defer wg.Done()
			for r := range work {
				c.serve(r)
				c.finish(r)
			}
		}()
	}
	defer func() {
		close(work)
		wg.Wait()
	}()
	for {
		r, err := c.readRequest()
		switch {
		case err == nil && r == nil:
			c.log.Debug("nbd: client disconnected (NBD_CMD_DISC)")
			return
		case err == nil:
			work <- r
			continue
		case c.shutdown.Load():
			c.log.Debug("nbd: connection closed for shutdown")
		case c.stopping.Load() || isDisconnect(err):
			c.log.Debug("nbd: connection ended", "err", err)
		default:
			c.log.Warn("nbd: protocol error; disconnecting", "err", err)
		}
		return
	}
}

// readRequest reads the next request, with its payload, and validates it.
// It returns nil, nil for NBD_CMD_DISC, and an error when the connection
// must end.
func (c *conn) readRequest() (*txReq, error) {
	if c.stopping.Load() {
		return nil, errStopped
	}
	if _, err := io.ReadFull(c.br, c.rhdr[:]); err != nil {
		return nil, err
	}
	req, err := parseRequest(&c.rhdr)
	if err != nil {
		return nil, err
	}
	if req.typ == cmdDisc {
		return nil, nil
	}
	r := reqPool.Get().(*txReq)
	r.request = req
	r.errno, r.msg = c.check(req)

	switch req.typ {
	case cmdWrite:
		if err := c.readPayload(r); err != nil {
			c.finish(r)
			return nil, err
		}
	case cmdRead:
		if r.errno == 0 {
			r.cost = int64(req.length)
			c.budget.acquire(r.cost)
		}
	case cmdFlush:
		r.barrier = c.writes.barrier()
	}
	if r.errno == 0 && isWriteType(req.typ) {
		r.wseq = c.writes.start()
	}
	return r, nil
}

func isWriteType(t uint16) bool {
	return t == cmdWrite || t == cmdWriteZeroes || t == cmdTrim
}

// readPayload reads the data of a write into a pooled buffer, or discards
// it when the request is refused (check refuses writes longer than
// MaxRequest).
func (c *conn) readPayload(r *txReq) error {
	n := int64(r.length)
	maxReq := int64(c.srv.opts.MaxRequest)
	if n > max(maxReq, minSkippableWrite) {
		return fmt.Errorf("nbd: write payload of %d bytes exceeds %d", n, maxReq)
	}
	if d := c.srv.opts.IOTimeout; d > 0 {
		c.nc.SetReadDeadline(c.srv.clock.Now().Add(d))
		// Cleared before the next header is read; halt sets stopping
		// before its deadline, so readRequest sees a halt that this clear
		// undid.
		defer c.nc.SetReadDeadline(time.Time{})
	}
	if r.errno != 0 {
		_, err := io.CopyN(io.Discard, c.br, n)
		return err
	}
	r.cost = n
	c.budget.acquire(n)
	r.buf = getBuf(int(n))
	_, err := io.ReadFull(c.br, *r.buf)
	return err
}

// check validates a request against the negotiated parameters and returns
// the error to answer instead of executing it.
func (c *conn) check(r request) (uint32, string) {
	maxReq := uint64(c.srv.opts.MaxRequest)
	off, n := r.offset, uint64(r.length)
	inRange := off <= c.size && n <= c.size-off

	allowed := uint16(cmdFlagFUA) // valid on every command once SEND_FUA is set
	if c.tflags&tflagSendFUA == 0 {
		allowed = 0
	}
	switch r.typ {
	case cmdRead:
		if c.structured {
			allowed |= cmdFlagDF
		}
	case cmdWriteZeroes:
		allowed |= cmdFlagNoHole
		if c.tflags&tflagSendFastZero != 0 {
			allowed |= cmdFlagFastZero
		}
	case cmdBlockStatus:
		allowed |= cmdFlagReqOne
	}
	if r.flags&^allowed != 0 {
		return errInval, fmt.Sprintf("unsupported flags %#x for %s", r.flags&^allowed, cmdName(r.typ))
	}
	readOnly := c.tflags&tflagReadOnly != 0

	switch r.typ {
	case cmdRead:
		if n > maxReq {
			return errInval, fmt.Sprintf("read of %d bytes exceeds the maximum of %d", n, maxReq)
		}
		if !inRange {
			return errInval, "read beyond the end of the export"
		}
	case cmdWrite:
		if readOnly {
			return errPerm, "export is read-only"
		}
		if n > maxReq {
			return errInval, fmt.Sprintf("write of %d bytes exceeds the maximum of %d", n, maxReq)
		}
		if !inRange {
			return errNoSpc, "write beyond the end of the export"
		}
	case cmdWriteZeroes:
		// No payload: the maximum payload size does not apply, only the
		// export size does.
		if readOnly {
			return errPerm, "export is read-only"
		}
		if !inRange {
			return errNoSpc, "write zeroes beyond the end of the export"
		}
	case cmdTrim:
		if readOnly {
			return errPerm, "export is read-only"
		}
		if !inRange {
			return errInval, "trim beyond the end of the export"
		}
	case cmdFlush:
		// Offset and length are reserved; nonzero values are tolerated.
	case cmdBlockStatus:
		if !c.blockStatus {
			return errInval, "no metadata context was negotiated"
		}
		if n == 0 {
			return errInval, "block status of zero length"
		}
		if !inRange {
			return errInval, "block status beyond the end of the export"
		}
	default:
		return errInval, fmt.Sprintf("unknown command %d", r.typ)
	}
	return 0, ""
}

// finish releases what a request holds and returns it to the pool.
func (c *conn) finish(r *txReq) {
	c.writeDone(r)
	c.budget.release(r.cost)
	if r.buf != nil {
		putBuf(r.buf)
	}
	r.buf, r.cost, r.barrier, r.errno, r.msg, r.replied = nil, 0, 0, 0, "", false
	r.bufs = [2][]byte{}
	r.nb = nil
	reqPool.Put(r)
}

func (c *conn) writeDone(r *txReq) {
	if r.wseq != 0 {
		c.writes.done(r.wseq)
		r.wseq = 0
	}
}

// serve executes one request and replies to it.
func (c *conn) serve(r *txReq) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("nbd: panic handling request", "request", r.String(), "panic", p, "stack", string(debug.Stack()))
			if !r.replied {
				c.replyError(r, errIO, "internal server error")
			}
		}
	}()
	if r.errno != 0 {
		c.logRefused(r, r.errno, r.msg)
		c.replyError(r, r.errno, r.msg)
		return
	}
	ctx, exp := c.ctx, c.exp
	off, n := int64(r.offset), int64(r.length)
	var err error
	switch r.typ {
	case cmdRead:
		c.read(r)
		return
	case cmdBlockStatus:
		c.replyBlockStatus(r)
		return
	case cmdFlush:
		c.writes.wait(r.barrier)
		err = exp.Flush(ctx)
	case cmdWrite:
		if n > 0 {
			err = exp.WriteAt(ctx, *r.buf, off)
		}
	case cmdTrim:
		err = inPieces(ctx, off, n, zeroPiece, func(off, n int64) error { return exp.Trim(ctx, off, n) })
		if isUnsupported(err) {
			err = nil // trimming is only a hint
		}
	case cmdWriteZeroes:
		fast := r.flags&cmdFlagFastZero != 0
		if fast && !exp.FastZero() {
			c.writeDone(r)
			c.refuseFastZero(r)
			return
		}
		noHole := r.flags&cmdFlagNoHole != 0
		zeroed := off // the end of the pieces the export zeroed
		err = inPieces(ctx, off, n, zeroPiece, func(off, n int64) error {
			err := exp.Zero(ctx, off, n, noHole)
			if err == nil {
				zeroed = off + n
			}
			return err
		})
		switch {
		case fast && isUnsupported(err):
			c.writeDone(r)
			c.refuseFastZero(r)
			return
		case isUnsupported(err):
			err = c.writeZeros(zeroed, off+n-zeroed)
		}
	}
	if err == nil && r.flags&cmdFlagFUA != 0 && isWriteType(r.typ) {
		err = exp.Flush(ctx)
	}
	c.writeDone(r)
	if err != nil {
		c.replyError(r, c.errno(r, err), errMessage(err))
		return
	}
	putSimpleReply(r.hdr[:], 0, r.cookie)
	c.send(r, r.hdr[:simpleReplyLen], nil)
}

// zeroPiece bounds the range of one Export.Zero or Export.Trim call. Those
// requests carry no payload, so their length is bounded by the export size
// alone (up to 4 GiB - 1 in one request), not by MaxRequest; the server
// cuts them at multiples of zeroPiece so that one export call holds the
// export's locks for a bounded time, and a request whose context ends
// (shutdown) stops between pieces.
const zeroPiece = 64 << 20

// zeroScratch is the largest buffer of zeros written at once for an export
// that cannot zero (at most MaxRequest too), so that a long write zeroes
// holds little memory whatever its length.
const zeroScratch = 1 << 20

// inPieces calls fn on consecutive pieces of [off, off+n) cut at multiples
// of piece, until one fails or ctx ends.
func inPieces(ctx context.Context, off, n, piece int64, fn func(off, n int64) error) error {
	for end := off + n; off < end; {
		if err := ctx.Err(); err != nil {
			return err
		}
		m := min(end, (off/piece+1)*piece) - off
		if err := fn(off, m); err != nil {
			return err
		}
		off += m
	}
	return nil
}

// writeZeros writes zeros over [off, off+n) with WriteAt, for an export
// whose Zero is unsupported, from one scratch buffer of at most
// zeroScratch bytes.
func (c *conn) writeZeros(off, n int64) error {
	if n == 0 {
		return nil
	}
	piece := int64(min(c.srv.opts.MaxRequest, zeroScratch))
	buf := getBuf(int(min(n, piece)))
	defer putBuf(buf)
	clear(*buf)
	return inPieces(c.ctx, off, n, piece, func(off, n int64) error { return c.exp.WriteAt(c.ctx, (*buf)[:n], off) })
}

// refuseFastZero answers a fast zero the export cannot do fast. Clients
// such as nbdcopy ask for one to learn whether to write zeros themselves,
// so this is not worth more than a debug line.
func (c *conn) refuseFastZero(r *txReq) {
	const msg = "zeroing is not fast on this export"
	c.log.Debug("nbd: request refused", "request", r.String(), "errno", errnoName(errNotSup), "reason", msg)
	c.replyError(r, errNotSup, msg)
}

// logRefused logs a request the server refused before calling the export:
// the first one of a connection as a warning (a client that gets EINVAL
// usually gives up, and its user should find why in the server log), the
// others at debug level so that a client repeating them cannot flood the
// log.
func (c *conn) logRefused(r *txReq, errno uint32, msg string) {
	level := slog.LevelDebug
	if c.refused.Add(1) == 1 {
		level = slog.LevelWarn
	}
	c.log.Log(c.ctx, level, "nbd: request refused", "request", r.String(), "errno", errnoName(errno), "reason", msg)
}

func (c *conn) read(r *txReq) {
	n := int(r.length)
	if n == 0 {
		if c.structured {
			putChunkHeader(r.hdr[:], replyFlagDone, replyTypeNone, r.cookie, 0)
			c.send(r, r.hdr[:structuredHeaderLen], nil)
		} else {
			putSimpleReply(r.hdr[:], 0, r.cookie)
			c.send(r, r.hdr[:simpleReplyLen], nil)
		}
		return
	}
	r.buf = getBuf(n)
	if err := c.exp.ReadAt(c.ctx, *r.buf, int64(r.offset)); err != nil {
		c.replyError(r, c.errno(r, err), errMessage(err))
		return
	}
	if c.structured {
		// The data was read in full before the header goes out, so no
		// error can follow and the one chunk is the last.
		putChunkHeader(r.hdr[:], replyFlagDone, replyTypeOffsetData, r.cookie, uint32(8+n))
		binary.BigEndian.PutUint64(r.hdr[structuredHeaderLen:], r.offset)
		c.send(r, r.hdr[:structuredHeaderLen+8], *r.buf)
		return
	}
	putSimpleReply(r.hdr[:], 0, r.cookie)
	c.send(r, r.hdr[:simpleReplyLen], *r.buf)
}

func (c *conn) replyBlockStatus(r *txReq) {
	length := uint64(r.length)
	exts, err := c.exp.BlockStatus(c.ctx, int64(r.offset), int64(length))
	if err != nil {
		c.replyError(r, c.errno(r, err), errMessage(err))
		return
	}
	reqOne := r.flags&cmdFlagReqOne != 0
	avail := c.size - r.offset
	maxDesc := min(1<<20, c.srv.opts.MaxRequest/8)
	r.buf = getBuf(4 + 8*min(len(exts), maxDesc))
	b := *r.buf
	binary.BigEndian.PutUint32(b, baseAllocationID)

	var (
		nd       int    // descriptors written
		lastLen  uint64 // length of descriptor nd-1
		lastFlag uint32
		sum      uint64
	)
	for _, e := range exts {
		if e.Length <= 0 {
			break
		}
		l := min(uint64(e.Length), avail-sum)
		if l == 0 {
			break
		}
		var st uint32
		if e.Hole {
			st |= stateHole
		}
		if e.Zero {
			st |= stateZero
		}
		full := false
		if nd > 0 && st == lastFlag {
			if room := maxDescLen - lastLen; l > room {
				l, full = room, true
			}
			lastLen += l
		} else {
			if nd == maxDesc || (reqOne && nd == 1) {
				break
			}
			if l > maxDescLen {
				l, full = maxDescLen, true
			}
			nd++
			lastLen, lastFlag = l, st
		}
		binary.BigEndian.PutUint32(b[4+8*(nd-1):], uint32(lastLen))
		binary.BigEndian.PutUint32(b[8+8*(nd-1):], lastFlag)
		sum += l
		if full || sum >= length {
			break
		}
	}
	if nd == 0 {
		c.log.Error("nbd: export returned no usable extents", "request", r.String(), "extents", len(exts))
		c.replyError(r, errIO, "block status failed")
		return
	}
	if reqOne && lastLen > length {
		binary.BigEndian.PutUint32(b[4:], uint32(length))
	}
	payload := b[:4+8*nd]
	putChunkHeader(r.hdr[:], replyFlagDone, replyTypeBlockStatus, r.cookie, uint32(len(payload)))
	c.send(r, r.hdr[:structuredHeaderLen], payload)
}

// replyError answers r with an error: an error chunk when structured
// replies were negotiated, a simple reply otherwise.
func (c *conn) replyError(r *txReq, errno uint32, msg string) {
	if !c.structured {
		putSimpleReply(r.hdr[:], errno, r.cookie)
		c.send(r, r.hdr[:simpleReplyLen], nil)
		return
	}
	msg = truncate(msg)
	b := make([]byte, structuredHeaderLen+6+len(msg))
	putChunkHeader(b, replyFlagDone, replyTypeError, r.cookie, uint32(6+len(msg)))
	binary.BigEndian.PutUint32(b[20:], errno)
	binary.BigEndian.PutUint16(b[24:], uint16(len(msg)))
	copy(b[26:], msg)
	c.send(r, b, nil)
}

// send writes one whole reply; replies never interleave. After a write
// error nothing more is sent and the connection stops.
func (c *conn) send(r *txReq, a, b []byte) {
	r.replied = true
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return
	}
	if d := c.srv.opts.IOTimeout; d > 0 {
		c.nc.SetWriteDeadline(c.srv.clock.Now().Add(d))
	}
	var err error
	if len(b) == 0 {
		_, err = c.nc.Write(a)
	} else {
		r.bufs[0], r.bufs[1] = a, b
		r.nb = r.bufs[:]
		_, err = r.nb.WriteTo(c.nc)
	}
	if err != nil {
		c.werr = err
		c.cancel()
		c.halt()
		if isDisconnect(err) {
			c.log.Debug("nbd: cannot send reply", "err", err)
		} else {
			c.log.Warn("nbd: cannot send reply", "err", err)
		}
	}
}

// errno maps an Export error to an NBD error value, logging failures.
func (c *conn) errno(r *txReq, err error) uint32 {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return errNoSpc
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EROFS), errors.Is(err, cairn.ErrDenied):
		return errPerm
	case errors.Is(err, context.Canceled) && c.ctx.Err() != nil:
		// The server gave up on the request: it is shutting down, or
		// the client is gone and will never see this reply.
		if c.shutdown.Load() {
			return errShutdown
		}
		c.log.Debug("nbd: request cancelled", "request", r.String())
		return errIO
	}
	c.log.Error("nbd: export I/O failed", "request", r.String(), "err", err)
	return errIO
}

// errMessage is the text sent with an error chunk. Backend details stay in
// the server log.
func errMessage(err error) string {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return "no space left on the export"
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EROFS), errors.Is(err, cairn.ErrDenied):
		return "operation not permitted"
	case errors.Is(err, context.Canceled):
		return "request cancelled"
	}
	return "input/output error"
}

func isUnsupported(err error) bool {
	return err != nil && (errors.Is(err, errors.ErrUnsupported) || errors.Is(err, cairn.ErrUnsupported) ||
		errors.Is(err, syscall.ENOTSUP) || errors.Is(err, syscall.EOPNOTSUPP))
}
