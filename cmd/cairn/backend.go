package main

import (
	"fmt"
	"strings"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/local"
)

// openBackend turns a repository location into a backend. A plain path or
// "local:PATH" is a directory. create makes the directory for init.
func openBackend(location string, create bool) (objstore.Backend, error) {
	if location == "" {
		return nil, usageError{fmt.Errorf("no repository given: use --repo or CAIRN_REPO")}
	}
	scheme, rest, found := strings.Cut(location, ":")
	if !found || strings.Contains(scheme, "/") {
		scheme, rest = "local", location
	}
	switch scheme {
	case "local":
		return local.New(rest, create)
	default:
		return nil, fmt.Errorf("repository location %q: unknown scheme %q: %w", location, scheme, cairn.ErrInvalid)
	}
}
