//go:build !cairn_testhooks

package main

import (
	"net"

	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/nbd"
	"github.com/cairnproject/cairn/internal/objstore"
)

// testHooks exist only in binaries built with -tags cairn_testhooks (see
// testhooks.go), which the end-to-end tests build. In this, a production
// build, there are none: nothing is read from the environment and every
// wrapper returns what it is given.
type testHooks struct{}

func newTestHooks(func(string) string) (*testHooks, error) { return nil, nil }

func (*testHooks) store(be objstore.Backend) objstore.Backend { return be }
func (*testHooks) catalog(c catalog.Store) catalog.Store      { return c }
func (*testHooks) exports(c nbd.Catalog) nbd.Catalog          { return c }
func (*testHooks) listener(l net.Listener) net.Listener       { return l }
func (*testHooks) dbEvents() func(id, ev string)              { return nil }
