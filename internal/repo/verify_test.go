package repo_test

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore/faulty"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/repo/repotest"
)

// TestVerifyBackup: a sound backup verifies clean, reading each of its
// distinct chunks once; a flipped bit and a deleted chunk are found and
// name the backup, while another backup sharing none of them stays
// clean; a share reads a sample; a store that cannot be read gives an
// error, not a verdict.
func TestVerifyBackup(t *testing.T) {
	r, be := newMemRepo(t)
	ctx := t.Context()
	a := backup(t, r, &repotest.Source{Data: repotest.Mixed(31, 20*testChunk, testChunk)}, repo.BackupOptions{SourceName: "a"})
	b := backup(t, r, &repotest.Source{Data: repotest.Mixed(32, 20*testChunk, testChunk)}, repo.BackupOptions{SourceName: "b"})

	rep, err := r.VerifyBackup(ctx, a, repo.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := r.Index(ctx, a)
	distinct := map[format.ChunkID]bool{}
	for _, e := range entries {
		if !e.Zero {
			distinct[e.Chunk] = true
		}
	}
	if len(rep.Problems) != 0 || rep.Chunks != len(distinct) || rep.ChunksRead != len(distinct) || rep.BytesRead == 0 {
		t.Fatalf("sound backup: %+v (%d distinct chunks)", rep, len(distinct))
	}

	sample, err := r.VerifyBackup(ctx, a, repo.VerifyOptions{Share: 0.5, Rand: rand.New(rand.NewPCG(1, 2))})
	if err != nil {
		t.Fatal(err)
	}
	if sample.ChunksRead == 0 || sample.ChunksRead >= rep.Chunks || len(sample.Problems) != 0 {
		t.Fatalf("half of %d chunks: read %d", rep.Chunks, sample.ChunksRead)
	}

	var chunks []format.ChunkID
	for c := range distinct {
		chunks = append(chunks, c)
	}
	if err := be.Corrupt(chunks[0].ObjectName(), 77); err != nil {
		t.Fatal(err)
	}
	if err := be.Delete(ctx, chunks[1].ObjectName()); err != nil {
		t.Fatal(err)
	}
	rep, err = r.VerifyBackup(ctx, a, repo.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, p := range rep.Problems {
		if len(p.Backups) != 1 || p.Backups[0] != a.ID {
			t.Fatalf("problem %v does not name backup a", p)
		}
		kinds[p.Kind] = p.Object
	}
	if len(rep.Problems) != 2 || kinds[repo.ProblemCorruptChunk] != chunks[0].ObjectName() || kinds[repo.ProblemMissingChunk] != chunks[1].ObjectName() {
		t.Fatalf("damaged backup: %+v", rep.Problems)
	}
	if rb, err := r.VerifyBackup(ctx, b, repo.VerifyOptions{}); err != nil || len(rb.Problems) != 0 {
		t.Fatalf("the other backup: %+v, %v", rb, err)
	}

	// An unreadable store is no verdict on the data.
	rf := reopen(t, faulty.New(be, faulty.Options{FailRate: 1, Prefix: format.ChunksPrefix}))
	if _, err := rf.VerifyBackup(ctx, b, repo.VerifyOptions{}); !errors.Is(err, cairn.ErrUnavailable) {
		t.Fatalf("verify through a failing store: %v", err)
	}
}
