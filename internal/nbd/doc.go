// Package nbd is cairn's Network Block Device server, written from the
// protocol specification
// (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md).
//
// A Server serves the exports of a Catalog on any net.Listener (TCP or a
// unix socket). It speaks fixed newstyle negotiation only (oldstyle is
// refused by never being offered) without TLS, and supports:
//
//   - options NBD_OPT_EXPORT_NAME, NBD_OPT_GO, NBD_OPT_INFO (with
//     NBD_INFO_EXPORT, NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME and
//     NBD_INFO_DESCRIPTION), NBD_OPT_LIST, NBD_OPT_ABORT,
//     NBD_OPT_STRUCTURED_REPLY, NBD_OPT_LIST_META_CONTEXT and
//     NBD_OPT_SET_META_CONTEXT for the "base:allocation" context;
//     NBD_OPT_STARTTLS and NBD_OPT_EXTENDED_HEADERS are answered with
//     NBD_REP_ERR_UNSUP;
//   - commands NBD_CMD_READ, WRITE, DISC, FLUSH, TRIM, WRITE_ZEROES (with
//     NO_HOLE and FAST_ZERO) and BLOCK_STATUS (with REQ_ONE), the FUA flag,
//     and the DF flag (a read is always answered with one chunk);
//   - simple replies, and structured replies once negotiated.
//
// Each connection reads requests in one goroutine and runs up to
// Options.Workers of them at once, so replies may come out of order; a
// reply is written whole (header and data in one writev) under a mutex.
// A flush waits for every write-type request received before it to finish,
// then calls Export.Flush; FUA is a write followed by Export.Flush. Reads
// and writes longer than Options.MaxRequest (the maximum payload size) are
// refused with NBD_EINVAL, and the payload bytes one connection holds in
// memory are bounded. Requests without a payload (trim, write zeroes,
// block status) may cover the whole export, as the protocol lets them; the
// export gets long trims and write zeroes in pieces of 64 MiB. Every
// refused request is logged (the first of a connection as a warning).
// Buffers and request state are pooled: steady-state I/O allocates
// nothing.
//
// A misbehaving client only ever loses its own connection: protocol
// violations end it, stalls are bounded by Options.HandshakeTimeout and
// Options.IOTimeout, and panics are recovered (a panicking Export call fails
// its request with NBD_EIO).
//
// Package nbdtest has an in-memory Export and Catalog for tests.
package nbd
