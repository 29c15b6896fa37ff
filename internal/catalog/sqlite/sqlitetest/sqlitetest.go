// Package sqlitetest opens SQLite catalogs for tests without migrating
// each one. Migrating a fresh file runs every migration's DDL, and SQLite
// parses the whole schema again after each statement; under the race
// detector that took half of a short service test's time (TestTaskKinds
// makes some 480 catalogs). The package migrates one catalog per test
// binary and keeps its bytes; Create writes them at each test's path,
// where sqlite.Open then finds a catalog up to date. The catalog
// package's own tests migrate fresh files, as a deployment does.
package sqlitetest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cairnproject/cairn/internal/catalog/sqlite"
)

// template is the migrated catalog's file, made once per test binary:
// its bytes never change after once.Do, so tests read them concurrently.
var template struct {
	once  sync.Once
	bytes []byte
	err   error
}

// migrated returns the bytes of a freshly migrated, closed catalog.
func migrated() ([]byte, error) {
	template.once.Do(func() {
		template.bytes, template.err = migrate()
	})
	return template.bytes, template.err
}

func migrate() ([]byte, error) {
	dir, err := os.MkdirTemp("", "cairn-catalog-template-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "catalog.db")
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		return nil, err
	}
	// Closing the last connection checkpoints the WAL into the file.
	if err := s.Close(); err != nil {
		return nil, err
	}
	if left, _ := filepath.Glob(path + "-*"); len(left) != 0 {
		return nil, fmt.Errorf("catalog template: %v left after close", left)
	}
	return os.ReadFile(path)
}

// Create writes a migrated catalog at path, for sqlite.Open to open,
// unless a file is there already (a test that restarts its service
// reopens its catalog).
func Create(t testing.TB, path string) {
	t.Helper()
	b, err := migrated()
	if err != nil {
		t.Fatalf("catalog template: %v", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return
	}
	if err == nil {
		_, err = f.Write(b)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatalf("catalog %s: %v", path, err)
	}
}
