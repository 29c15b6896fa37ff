package repo_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/crypto"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/mem"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/repo/repotest"
)

const testChunk = 64 << 10

var (
	fastKDF  = crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}
	password = repo.Secret{Kind: format.KeyKindPassword, Bytes: []byte("correct horse")}
)

func testOpts() repo.Options { return repo.Options{KDF: fastKDF, Workers: 2, Transfers: 3} }

func initRepo(t *testing.T, be objstore.Backend) *repo.Repository {
	t.Helper()
	r, err := repo.Init(t.Context(), be, password, repo.InitOptions{
		ChunkSize: testChunk,
		GC:        format.GCParams{SessionTimeout: format.Duration(3 * time.Second)},
	}, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newMemRepo(t *testing.T) (*repo.Repository, *mem.Backend) {
	t.Helper()
	be := mem.New(mem.Options{})
	return initRepo(t, be), be
}

func reopen(t *testing.T, be objstore.Backend) *repo.Repository {
	t.Helper()
	r, err := repo.Open(t.Context(), be, password, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func backup(t *testing.T, r *repo.Repository, src *repotest.Source, opts repo.BackupOptions) *format.Manifest {
	t.Helper()
	if opts.SourceName == "" {
		opts.SourceName = "/dev/test"
	}
	m, err := r.Backup(t.Context(), src, opts)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	return m
}

func restoreAndCompare(t *testing.T, r *repo.Repository, m *format.Manifest, want []byte) repo.RestoreStats {
	t.Helper()
	tgt := repotest.NewTarget(m.Size)
	stats, err := r.Restore(t.Context(), m, tgt, nil)
	if err != nil {
		t.Fatalf("restore %s: %v", m.ID.Short(), err)
	}
	if !bytes.Equal(tgt.Data, want) {
		t.Fatalf("restore of %s differs from the source", m.ID.Short())
	}
	return stats
}

func checkClean(t *testing.T, r *repo.Repository) {
	t.Helper()
	rep, err := r.Check(t.Context(), repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("check found problems: %v", rep.Problems)
	}
}
