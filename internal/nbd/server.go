package nbd

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	defaultMaxRequest       = 32 << 20
	minMaxRequest           = 4096
	maxMaxRequest           = 1 << 30
	defaultWorkers          = 16
	maxWorkers              = 1024
	defaultHandshakeTimeout = 30 * time.Second
	defaultIOTimeout        = time.Minute
	defaultShutdownTimeout  = 10 * time.Second
	preferredBlockSize      = 4096
	// minSkippableWrite is the largest write payload the server always
	// reads and discards (to answer EINVAL) rather than disconnecting,
	// whatever MaxRequest is: the specification says payloads up to 32 MiB
	// should never be treated as a denial of service.
	minSkippableWrite = 32 << 20
)

// Server serves the exports of a Catalog over the NBD protocol (fixed
// newstyle negotiation only). Create it with NewServer.
type Server struct {
	cat   Catalog
	opts  Options
	log   *slog.Logger
	clock clock
	// budget is how many payload bytes one connection may hold in memory
	// for requests in flight.
	budget int64
}

// NewServer returns a server for the exports of cat. Zero option fields take
// their defaults.
func NewServer(cat Catalog, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case opts.MaxRequest <= 0:
		opts.MaxRequest = defaultMaxRequest
	case opts.MaxRequest < minMaxRequest:
		opts.MaxRequest = minMaxRequest
	case opts.MaxRequest > maxMaxRequest:
		opts.MaxRequest = maxMaxRequest
	}
	switch {
	case opts.Workers <= 0:
		opts.Workers = defaultWorkers
	case opts.Workers > maxWorkers:
		opts.Workers = maxWorkers
	}
	if opts.HandshakeTimeout == 0 {
		opts.HandshakeTimeout = defaultHandshakeTimeout
	}
	if opts.IOTimeout == 0 {
		opts.IOTimeout = defaultIOTimeout
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = defaultShutdownTimeout
	}
	return &Server{
		cat:    cat,
		opts:   opts,
		log:    opts.Logger,
		clock:  realClock{},
		budget: max(2*int64(opts.MaxRequest), 64<<20),
	}
}

// Serve accepts connections from l until ctx ends or l is closed; each connection is served
// concurrently; Serve returns after every connection it started has ended.
//
// Serve closes l when it returns. When ctx ends, connections still in option
// haggling are closed, and connections in transmission stop reading new
// requests, finish the ones in flight (cancelling their context after
// Options.ShutdownTimeout) and close. Closing l only stops accepting: the
// connections already accepted are served until their clients disconnect.
// Serve returns nil when ctx ended or l was closed, otherwise the error
// from Accept.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer l.Close()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()

	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if isTemporaryAccept(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("nbd: accept failed; retrying", "err", err, "delay", backoff)
				waited := make(chan struct{})
				stopWait := s.clock.AfterFunc(backoff, func() { close(waited) })
				select {
				case <-waited:
				case <-ctx.Done():
					stopWait()
					return nil
				}
				continue
			}
			return err
		}
		backoff = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, nc)
		}()
	}
}

func isTemporaryAccept(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// conn is one client connection.
type conn struct {
	srv    *Server
	nc     net.Conn
	br     *bufio.Reader
	log    *slog.Logger
	ctx    context.Context // for Export calls; outlives the Serve context by ShutdownTimeout
	cancel context.CancelFunc

	// stopping is set when the connection must not read further requests:
	// the server is shutting down or replies can no longer be written.
	stopping atomic.Bool
	shutdown atomic.Bool // the Serve context ended

	// Negotiated during option haggling.
	noZeroes    bool
	structured  bool
	metaExport  string // export name of the last NBD_OPT_SET_META_CONTEXT
	metaAlloc   bool   // it selected base:allocation
	exp         Export
	release     func()
	name        string
	size        uint64
	tflags      uint16
	blockStatus bool // base:allocation is selected for exp

	wmu  sync.Mutex // serialises replies
	werr error      // first write error; no reply is written after it

	refused atomic.Int64 // requests refused by check

	rhdr   [requestHeaderLen]byte // the reader's request header buffer
	writes writeTracker
	budget budget
}

// serveConn runs one connection to its end.
func (s *Server) serveConn(ctx context.Context, nc net.Conn) {
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := &conn{
		srv:    s,
		nc:     nc,
		br:     bufio.NewReaderSize(nc, 64<<10),
		ctx:    cctx,
		cancel: cancel,
		log:    s.log.With("remote", remoteName(nc)),
	}
	c.writes.cond.L = &c.writes.mu
	c.budget.cond.L = &c.budget.mu
	c.budget.max = s.budget

	var stopGrace atomic.Pointer[func() bool] // the shutdown grace period's timer
	stopAfter := context.AfterFunc(ctx, func() {
		c.shutdown.Store(true)
		c.halt()
		if d := s.opts.ShutdownTimeout; d > 0 {
			stop := s.clock.AfterFunc(d, cancel)
			stopGrace.Store(&stop)
		} else {
			cancel()
		}
	})
	defer func() {
		stopAfter()
		if stop := stopGrace.Load(); stop != nil {
			(*stop)()
		}
		cancel()
		nc.Close()
	}()
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("nbd: panic serving connection", "panic", r, "stack", string(debug.Stack()))
		}
	}()

	err := c.handshake()
	if err != nil {
		switch {
		case errors.Is(err, errAbort):
			c.log.Debug("nbd: client aborted negotiation")
		case c.shutdown.Load():
			c.log.Debug("nbd: negotiation interrupted by shutdown", "err", err)
		case isDisconnect(err):
			c.log.Debug("nbd: client left during negotiation", "err", err)
		case errors.Is(err, errRefused):
			c.log.Info("nbd: negotiation refused", "err", err)
		default:
			c.log.Warn("nbd: negotiation failed", "err", err)
		}
		return
	}
	defer c.release()
	c.log = c.log.With("export", c.name)
	c.log.Debug("nbd: transmission phase", "size", c.size, "flags", c.tflags, "structured", c.structured)
	c.transmit()
}

// halt makes the connection stop reading requests: a blocked read returns
// at once. Requests in flight still complete.
func (c *conn) halt() {
	c.stopping.Store(true)
	c.nc.SetReadDeadline(time.Unix(1, 0))
}

func remoteName(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return "local"
}

// isDisconnect reports whether err is the client going away (or a read
// interrupted by halt), which is not worth a warning.
func isDisconnect(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		(errors.As(err, &ne) && ne.Timeout())
}
