package nbdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/nbd"
)

// Catalog is an nbd.Catalog of exports added with Add. It counts open
// connections per export, and lets a test wait for the count to drop.
type Catalog struct {
	mu       sync.Mutex
	order    []string
	exports  map[string]*entry
	released chan struct{} // closed and replaced whenever an export is released
}

type entry struct {
	exp  nbd.Export
	desc string
	open int
}

var _ nbd.Catalog = (*Catalog)(nil)

// NewCatalog returns an empty catalog.
func NewCatalog() *Catalog {
	return &Catalog{exports: map[string]*entry{}, released: make(chan struct{})}
}

// Add offers e under name ("" is the default export), replacing any export
// of that name.
func (c *Catalog) Add(name, description string, e nbd.Export) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.exports[name]; !ok {
		c.order = append(c.order, name)
	}
	c.exports[name] = &entry{exp: e, desc: description}
}

// Open implements nbd.Catalog.
func (c *Catalog) Open(ctx context.Context, name string) (nbd.Export, func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	en := c.exports[name]
	if en == nil {
		return nil, nil, fmt.Errorf("nbdtest: export %q: %w", name, cairn.ErrNotFound)
	}
	en.open++
	var once sync.Once
	return en.exp, func() {
		once.Do(func() {
			c.mu.Lock()
			en.open--
			close(c.released)
			c.released = make(chan struct{})
			c.mu.Unlock()
		})
	}, nil
}

// List implements nbd.Catalog, in the order exports were added.
func (c *Catalog) List(ctx context.Context) ([]nbd.ExportInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]nbd.ExportInfo, 0, len(c.order))
	for _, name := range c.order {
		out = append(out, nbd.ExportInfo{Name: name, Description: c.exports[name].desc})
	}
	return out, nil
}

// InUse reports how many connections hold the export open.
func (c *Catalog) InUse(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if en := c.exports[name]; en != nil {
		return en.open
	}
	return 0
}

// WaitReleased blocks until no connection holds export name open (at once
// if none does), or until ctx ends, returning its error.
func (c *Catalog) WaitReleased(ctx context.Context, name string) error {
	for {
		c.mu.Lock()
		en, released := c.exports[name], c.released
		idle := en == nil || en.open == 0
		c.mu.Unlock()
		if idle {
			return nil
		}
		select {
		case <-released:
		case <-ctx.Done():
			return fmt.Errorf("nbdtest: waiting for export %q to be released: %w", name, context.Cause(ctx))
		}
	}
}

// Serve runs an nbd.Server for cat on a unix socket in a temporary
// directory and returns the socket's path. The server stops, and Serve
// checks that it returned cleanly, when the test ends.
//
// Unlike nbd.NewServer, Serve disables the handshake and I/O timeouts opts
// leaves unset instead of giving them their defaults: a test client that is
// merely slow on a loaded machine must not be cut off. Tests of the
// timeouts set them.
func Serve(t testing.TB, cat nbd.Catalog, opts nbd.Options) (socket string) {
	t.Helper()
	if opts.HandshakeTimeout == 0 {
		opts.HandshakeTimeout = -1
	}
	if opts.IOTimeout == 0 {
		opts.IOTimeout = -1
	}
	dir := t.TempDir()
	// A unix socket path must fit in 108 bytes.
	if len(dir) > 90 {
		d, err := os.MkdirTemp("", "nbd")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	socket = filepath.Join(dir, "nbd.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := nbd.NewServer(cat, opts)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("nbd: Serve: %v", err)
		}
	})
	return socket
}

// URI is the NBD URI of export name on a unix socket, as nbdinfo, nbdcopy
// and qemu-img take it.
func URI(socket, name string) string {
	return "nbd+unix:///" + url.PathEscape(name) + "?socket=" + socket
}
