package nbd

import (
	"context"
	"log/slog"
	"time"
)

// Export is one block device served over NBD. Implementations are safe for concurrent use.
//
// Errors returned by the I/O methods are reported to the client as NBD_EIO
// (and logged), except that errors matching syscall.ENOSPC, EDQUOT or EFBIG
// become NBD_ENOSPC, and syscall.EPERM, syscall.EROFS or cairn.ErrDenied
// become NBD_EPERM. An "unsupported" error (errors.ErrUnsupported,
// cairn.ErrUnsupported or syscall.ENOTSUP) from Trim makes the trim a
// successful no-op; from Zero it makes the server write zeros with WriteAt
// instead, or, for a client asking for a fast zero, fail with NBD_ENOTSUP.
//
// The server validates every request before calling the Export: offsets and
// lengths are within Size, read and write lengths are at most
// Options.MaxRequest, and nothing that writes reaches a read-only export.
// Trim and write-zeroes requests carry no payload, so only the export size
// bounds them (one request may cover up to 4 GiB - 1); the server calls
// Trim and Zero on pieces of such a request cut at multiples of 64 MiB, in
// order, stopping at the first error.
type Export interface {
	Size() int64
	ReadOnly() bool
	// ReadAt fills p from off; it returns an error rather than a short read.
	ReadAt(ctx context.Context, p []byte, off int64) error
	// WriteAt writes p at off, and does not retain p (the servers reuse
	// their buffers). Never called on read-only exports.
	WriteAt(ctx context.Context, p []byte, off int64) error
	// Flush makes every write that completed before the call durable,
	// whichever connection made it.
	Flush(ctx context.Context) error
	// Trim may discard [off, off+length); later reads return zeros or the old data.
	Trim(ctx context.Context, off, length int64) error
	// Zero makes [off, off+length) read as zeros; with noHole the range must stay allocated.
	Zero(ctx context.Context, off, length int64, noHole bool) error
	// FastZero reports whether Zero is much cheaper than writing zeros (for NBD_CMD_FLAG_FAST_ZERO).
	FastZero() bool
	// BlockStatus describes allocation from off onward: extents covering at least a
	// non-empty prefix of [off, off+length) and never past Size.
	BlockStatus(ctx context.Context, off, length int64) ([]Extent, error)
	// MultiConn reports whether Flush on one connection covers writes completed on others.
	MultiConn() bool
}

// Extent is a run of an export with NBD base:allocation state.
type Extent struct {
	Length int64
	Hole   bool // NBD_STATE_HOLE
	Zero   bool // NBD_STATE_ZERO
}

// Catalog names the exports a server offers.
type Catalog interface {
	// Open returns the named export for one client connection ("" is the default export);
	// release is called when the client disconnects. A missing export wraps cairn.ErrNotFound
	// (package github.com/cairnproject/cairn, root of the module; use errors.Is).
	Open(ctx context.Context, name string) (e Export, release func(), err error)
	// List describes the exports for NBD_OPT_LIST.
	List(ctx context.Context) ([]ExportInfo, error)
}

// ExportInfo names and describes one export for NBD_OPT_LIST (and
// NBD_INFO_DESCRIPTION).
type ExportInfo struct{ Name, Description string }

// Describer is optionally implemented by an Export to give the description
// sent for NBD_INFO_DESCRIPTION. Without it the server looks the export up in
// Catalog.List.
type Describer interface {
	Description() string
}

// Options tune a Server. The zero value is usable.
type Options struct {
	Logger *slog.Logger // nil: discard
	// MaxRequest bounds the length of reads and writes, the requests with a
	// payload (default 32 MiB); larger ones get EINVAL (or, for writes whose
	// payload cannot be skipped safely, a disconnect). It is advertised as
	// the maximum payload size in NBD_INFO_BLOCK_SIZE. Trim, write zeroes
	// and block status carry no payload and are bounded by the export size
	// only, as the protocol allows.
	// Values below 4096 are raised to 4096 and values above 1 GiB lowered to 1 GiB.
	MaxRequest int
	// Workers is how many requests of one connection run at once (default 16).
	Workers int
	// HandshakeTimeout bounds the whole option haggling phase of one
	// connection (default 30s; negative: no limit).
	HandshakeTimeout time.Duration
	// IOTimeout bounds how long the server waits for a client to send the
	// payload of a write once its header arrived, and for one reply to be
	// written (default 1 minute; negative: no limit). An idle connection
	// between requests is never timed out.
	IOTimeout time.Duration
	// ShutdownTimeout is how long requests in flight may keep running after
	// the context given to Serve ends before their context is cancelled
	// (default 10s; negative: cancel at once).
	ShutdownTimeout time.Duration
}
