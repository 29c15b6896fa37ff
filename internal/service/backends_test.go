package service_test

import (
	"bytes"
	"testing"

	"github.com/cairnproject/cairn/internal/crypto"
	"github.com/cairnproject/cairn/internal/objstore/mem"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/service/servicetest"
	"github.com/cairnproject/cairn/internal/volume"
	"github.com/cairnproject/cairn/internal/volumectl"
)

// realEngine is a volume engine in a temporary directory, closed when
// the test ends.
func realEngine(t *testing.T) *volume.Engine {
	t.Helper()
	e, err := volume.Open(t.TempDir(), volume.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

var testSecret = repo.Secret{Kind: format.KeyKindFile, Bytes: bytes.Repeat([]byte("k"), 32)}

// realRepository is a repository in memory with small chunks and a cheap
// key.
func realRepository(t *testing.T) *repo.Repository {
	t.Helper()
	r, err := repo.Init(t.Context(), mem.New(mem.Options{}), testSecret,
		repo.InitOptions{ChunkSize: 1 << 20, GC: repo.DefaultGC},
		repo.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestEngineConformance(t *testing.T) {
	t.Run("real", func(t *testing.T) {
		servicetest.RunEngine(t, func(t *testing.T) service.Engine { return service.NewEngine(realEngine(t)) })
	})
	t.Run("fake", func(t *testing.T) {
		servicetest.RunEngine(t, func(*testing.T) service.Engine { return servicetest.NewEngine(nil) })
	})
}

func TestRepositoryConformance(t *testing.T) {
	t.Run("real", func(t *testing.T) {
		servicetest.RunRepository(t, func(t *testing.T) (service.Engine, service.Repository) {
			e := realEngine(t)
			return service.NewEngine(e), service.NewRepository(realRepository(t), volumectl.Direct{E: e}, nil)
		})
	})
	t.Run("fake", func(t *testing.T) {
		servicetest.RunRepository(t, func(*testing.T) (service.Engine, service.Repository) {
			e := servicetest.NewEngine(nil)
			return e, servicetest.NewStore(e, nil).Open()
		})
	})
}
