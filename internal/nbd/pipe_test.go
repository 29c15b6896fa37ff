package nbd_test

// Servers on in-memory connections, for tests run in a synctest bubble
// (testing/synctest). A goroutine blocked on a net.Pipe is durably
// blocked, so synctest.Wait returns once the server has done all it can:
// a test can then assert what the server does not do (start one request
// too many, return from Serve early) as a state read back, with no window
// of time.

import (
	"context"
	"net"
	"sync"
	"testing"

	"github.com/cairnproject/cairn/internal/nbd"
)

// pipeListener is a net.Listener whose connections are net.Pipes made by
// dial. Create it inside the bubble that uses it.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return memAddr{} }

// dial returns the client's end of a new connection, once the server
// accepted it. The connection is closed when the test ends.
func (l *pipeListener) dial(t *testing.T) net.Conn {
	t.Helper()
	client, server := net.Pipe()
	select {
	case l.conns <- server:
	case <-l.closed:
		t.Fatalf("dial: listener closed")
	}
	t.Cleanup(func() { client.Close() })
	return client
}

// pipeServer is a server running on a pipeListener in a synctest bubble.
type pipeServer struct {
	l      *pipeListener
	cancel context.CancelFunc
	done   chan error // receives what Serve returned
}

// servePipe runs a server for cat on a pipeListener. Call it inside a
// synctest bubble; the server stops, and the test waits for Serve to
// return, when the bubble's test ends.
func servePipe(t *testing.T, cat nbd.Catalog, opts nbd.Options) *pipeServer {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger, _ = newLogger(t, true)
	}
	s := &pipeServer{l: newPipeListener(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(t.Context())
	s.cancel = cancel
	srv := nbd.NewServer(cat, opts)
	go func() { s.done <- srv.Serve(ctx, s.l) }()
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	return s
}

// wait waits for Serve to return and fails the test if it returned an
// error.
func (s *pipeServer) wait(t *testing.T) {
	t.Helper()
	err := <-s.done
	s.done <- err // for the cleanup
	if err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// returned reports whether Serve has returned, without waiting.
func (s *pipeServer) returned() bool {
	select {
	case err := <-s.done:
		s.done <- err
		return true
	default:
		return false
	}
}
