package s3

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/cairnproject/cairn/internal/objstore"
)

// connTracker knows the open connections of a transport and its copies,
// through the dial function they share. The AWS SDK keeps its transport
// out of reach (each change of its client copies the transport, and the
// client it builds hides the transport's CloseIdleConnections), so
// closing what the dialer handed out is how a Backend releases its
// connections.
type connTracker struct {
	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

// track makes tr dial through the tracker.
func (c *connTracker) track(tr *http.Transport) {
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: conn, tracker: c}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed {
			conn.Close()
			return nil, fmt.Errorf("s3: dial %s: %w", addr, objstore.ErrClosed)
		}
		c.conns[tc] = struct{}{}
		return tc, nil
	}
}

// closeAll closes every connection and refuses new ones.
func (c *connTracker) closeAll() {
	c.mu.Lock()
	c.closed = true
	conns := c.conns
	c.conns = map[*trackedConn]struct{}{}
	c.mu.Unlock()
	for tc := range conns {
		tc.Conn.Close()
	}
}

type trackedConn struct {
	net.Conn
	tracker *connTracker
}

func (t *trackedConn) Close() error {
	t.tracker.mu.Lock()
	delete(t.tracker.conns, t)
	t.tracker.mu.Unlock()
	return t.Conn.Close()
}
