package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire constants, named as in the NBD protocol specification
// (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md).
const (
	magicNBD       = 0x4e42444d41474943 // "NBDMAGIC"
	magicIHaveOpt  = 0x49484156454F5054 // "IHAVEOPT"
	magicOptReply  = 0x3e889045565a9
	magicRequest   = 0x25609513
	magicExtendReq = 0x21e41c71 // extended headers; never negotiated here
	magicSimple    = 0x67446698
	magicStructed  = 0x668e33ef

	// Handshake flags (server) and client flags.
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	// Transmission flags.
	tflagHasFlags        = 1 << 0
	tflagReadOnly        = 1 << 1
	tflagSendFlush       = 1 << 2
	tflagSendFUA         = 1 << 3
	tflagSendTrim        = 1 << 5
	tflagSendWriteZeroes = 1 << 6
	tflagSendDF          = 1 << 7
	tflagCanMultiConn    = 1 << 8
	tflagSendFastZero    = 1 << 11

	// Options.
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10

	// Option reply types.
	repAck          = 1
	repServer       = 2
	repInfo         = 3
	repMetaContext  = 4
	repErrUnsup     = 1<<31 + 1
	repErrPolicy    = 1<<31 + 2
	repErrInvalid   = 1<<31 + 3
	repErrUnknown   = 1<<31 + 6
	repErrShutdown  = 1<<31 + 7
	repErrTooBig    = 1<<31 + 9
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3

	// Commands.
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdWriteZeroes = 6
	cmdBlockStatus = 7

	// Command flags.
	cmdFlagFUA      = 1 << 0
	cmdFlagNoHole   = 1 << 1
	cmdFlagDF       = 1 << 2
	cmdFlagReqOne   = 1 << 3
	cmdFlagFastZero = 1 << 4

	// Structured reply flags and types.
	replyFlagDone        = 1 << 0
	replyTypeNone        = 0
	replyTypeOffsetData  = 1
	replyTypeBlockStatus = 5
	replyTypeError       = 1<<15 + 1

	// Error values.
	errPerm     = 1
	errIO       = 5
	errInval    = 22
	errNoSpc    = 28
	errOverflow = 75
	errNotSup   = 95
	errShutdown = 108

	// base:allocation flags.
	stateHole = 1 << 0
	stateZero = 1 << 1
)

const (
	requestHeaderLen    = 28
	simpleReplyLen      = 16
	structuredHeaderLen = 20
	optionHeaderLen     = 16

	// maxString is the longest string (export name, query, message) the
	// protocol allows.
	maxString = 4096
	// maxOptionData is the longest option payload read into memory. The
	// largest legitimate options (NBD_OPT_GO, NBD_OPT_SET_META_CONTEXT)
	// need a few KiB.
	maxOptionData = 64 << 10
	// maxOptionSkip is the longest option payload the server discards to
	// answer NBD_REP_ERR_TOO_BIG; longer ones end the connection.
	maxOptionSkip = 16 << 20
	// maxOptions bounds how many options one connection may send before
	// the server treats it as a denial of service.
	maxOptions = 1024

	metaContextBaseAllocation = "base:allocation"
	// baseAllocationID is the metadata context id of base:allocation.
	baseAllocationID = 1
)

// request is the fixed 28-byte header of a transmission request.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	offset uint64
	length uint32
}

var errBadMagic = errors.New("nbd: bad request magic")

// parseRequest decodes a request header. Only the magic is checked: every
// other value is validated by the command's handler so that the client gets
// an error reply rather than a disconnect.
func parseRequest(b *[requestHeaderLen]byte) (request, error) {
	if m := binary.BigEndian.Uint32(b[0:]); m != magicRequest {
		return request{}, fmt.Errorf("%w %#x", errBadMagic, m)
	}
	return request{
		flags:  binary.BigEndian.Uint16(b[4:]),
		typ:    binary.BigEndian.Uint16(b[6:]),
		cookie: binary.BigEndian.Uint64(b[8:]),
		offset: binary.BigEndian.Uint64(b[16:]),
		length: binary.BigEndian.Uint32(b[24:]),
	}, nil
}

func (r request) String() string {
	return fmt.Sprintf("%s flags=%#x cookie=%#x offset=%d length=%d", cmdName(r.typ), r.flags, r.cookie, r.offset, r.length)
}

func cmdName(t uint16) string {
	switch t {
	case cmdRead:
		return "READ"
	case cmdWrite:
		return "WRITE"
	case cmdDisc:
		return "DISC"
	case cmdFlush:
		return "FLUSH"
	case cmdTrim:
		return "TRIM"
	case cmdWriteZeroes:
		return "WRITE_ZEROES"
	case cmdBlockStatus:
		return "BLOCK_STATUS"
	}
	return fmt.Sprintf("CMD(%d)", t)
}

// errnoName names an NBD error value for logs.
func errnoName(e uint32) string {
	switch e {
	case errPerm:
		return "EPERM"
	case errIO:
		return "EIO"
	case errInval:
		return "EINVAL"
	case errNoSpc:
		return "ENOSPC"
	case errOverflow:
		return "EOVERFLOW"
	case errNotSup:
		return "ENOTSUP"
	case errShutdown:
		return "ESHUTDOWN"
	}
	return fmt.Sprintf("error %d", e)
}

func optName(o uint32) string {
	switch o {
	case optExportName:
		return "EXPORT_NAME"
	case optAbort:
		return "ABORT"
	case optList:
		return "LIST"
	case optStartTLS:
		return "STARTTLS"
	case optInfo:
		return "INFO"
	case optGo:
		return "GO"
	case optStructuredReply:
		return "STRUCTURED_REPLY"
	case optListMetaContext:
		return "LIST_META_CONTEXT"
	case optSetMetaContext:
		return "SET_META_CONTEXT"
	}
	return fmt.Sprintf("OPT(%d)", o)
}

// putSimpleReply encodes a simple reply header into b.
func putSimpleReply(b []byte, errno uint32, cookie uint64) {
	binary.BigEndian.PutUint32(b[0:], magicSimple)
	binary.BigEndian.PutUint32(b[4:], errno)
	binary.BigEndian.PutUint64(b[8:], cookie)
}

// putChunkHeader encodes a structured reply chunk header into b.
func putChunkHeader(b []byte, flags, typ uint16, cookie uint64, length uint32) {
	binary.BigEndian.PutUint32(b[0:], magicStructed)
	binary.BigEndian.PutUint16(b[4:], flags)
	binary.BigEndian.PutUint16(b[6:], typ)
	binary.BigEndian.PutUint64(b[8:], cookie)
	binary.BigEndian.PutUint32(b[16:], length)
}
