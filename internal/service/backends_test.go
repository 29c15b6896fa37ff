package service_test

import (
	"bytes"
	"net"
	"net/http"
	"path/filepath"
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
// the test ends, as this process holds it: with its export table.
func realEngine(t *testing.T) volumectl.Direct {
	t.Helper()
	dir := t.TempDir()
	e, err := volume.Open(dir, volume.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	x, err := volumectl.OpenExportTable(dir, e)
	if err != nil {
		t.Fatal(err)
	}
	return volumectl.Direct{E: e, X: x}
}

// remoteEngine is a volume engine served on a control socket by this
// process, as cairn volume serve serves it, and the socket's client.
func remoteEngine(t *testing.T) *volumectl.Client {
	t.Helper()
	ops := realEngine(t)
	sock := filepath.Join(t.TempDir(), "control.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: volumectl.Handler(ops)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return volumectl.NewClient(sock)
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
	t.Run("remote", func(t *testing.T) {
		servicetest.RunEngine(t, func(t *testing.T) service.Engine { return service.NewEngine(remoteEngine(t)) })
	})
	t.Run("fake", func(t *testing.T) {
		servicetest.RunEngine(t, func(*testing.T) service.Engine { return servicetest.NewEngine(nil) })
	})
}

func TestRepositoryConformance(t *testing.T) {
	t.Run("real", func(t *testing.T) {
		servicetest.RunRepository(t, func(t *testing.T) (service.Engine, service.Repository) {
			e := realEngine(t)
			return service.NewEngine(e), service.NewRepository(realRepository(t), e, nil)
		})
	})
	t.Run("remote", func(t *testing.T) {
		servicetest.RunRepository(t, func(t *testing.T) (service.Engine, service.Repository) {
			e := remoteEngine(t)
			return service.NewEngine(e), service.NewRepository(realRepository(t), e, nil)
		})
	})
	t.Run("fake", func(t *testing.T) {
		servicetest.RunRepository(t, func(*testing.T) (service.Engine, service.Repository) {
			e := servicetest.NewEngine(nil)
			return e, servicetest.NewStore(e, nil).Open()
		})
	})
}
