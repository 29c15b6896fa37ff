package repo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/repo/format"
)

// VerifyOptions select how much of a backup VerifyBackup reads.
type VerifyOptions struct {
	// Share, in (0,1], is the share of the backup's chunks read, chosen
	// at random; 0 or 1 reads every one.
	Share float64
	// Rand chooses the sample (nil: a random source).
	Rand *rand.Rand
}

// VerifyReport is what VerifyBackup found. The backup is sound when
// Problems is empty.
type VerifyReport struct {
	Chunks     int       `json:"chunks"`      // the backup's distinct chunks
	ChunksRead int       `json:"chunks_read"` // of them, read and checked
	BytesRead  int64     `json:"bytes_read"`
	Problems   []Problem `json:"problems,omitempty"`
}

// VerifyBackup reads back the chunks of one backup (all, or a sampled
// share) and checks each as Check does: stored, its checksum, its
// authentication, its content against its name, its length against what
// the backup uses. The manifest and index are checked by reading them.
// It returns an error only when it could not run.
func (r *Repository) VerifyBackup(ctx context.Context, m *format.Manifest, opts VerifyOptions) (VerifyReport, error) {
	var rep VerifyReport
	entries, err := r.Index(ctx, m)
	if err != nil {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		rep.Problems = append(rep.Problems, Problem{Kind: ProblemIndex, Object: manifestName(m.ID), Detail: err.Error(), Backups: []cairn.ID{m.ID}})
		return rep, nil
	}
	ends := map[format.ChunkID]int64{}
	for _, e := range entries {
		if !e.Zero {
			ends[e.Chunk] = max(ends[e.Chunk], e.ChunkOffset+e.Length)
		}
	}
	chunks := make([]format.ChunkID, 0, len(ends))
	for c := range ends {
		chunks = append(chunks, c)
	}
	slices.SortFunc(chunks, func(a, b format.ChunkID) int { return strings.Compare(string(a[:]), string(b[:])) })
	rep.Chunks = len(chunks)
	if opts.Share > 0 && opts.Share < 1 {
		pick := rand.Float64
		if opts.Rand != nil {
			pick = opts.Rand.Float64
		}
		sample := chunks[:0:0]
		for _, c := range chunks {
			if pick() < opts.Share {
				sample = append(sample, c)
			}
		}
		if len(sample) == 0 && len(chunks) > 0 {
			sample = append(sample, chunks[int(pick()*float64(len(chunks)))%len(chunks)])
		}
		chunks = sample
	}
	var mu sync.Mutex
	err = forEachParallel(ctx, len(chunks), max(r.opts.Workers, r.opts.Transfers), func(ctx context.Context, i int) error {
		c := chunks[i]
		n, err := r.verifyChunk(ctx, c, ends[c])
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !errors.Is(err, cairn.ErrNotFound) && !errors.Is(err, cairn.ErrCorrupt) {
			return fmt.Errorf("chunk %s: %w", c.ObjectName(), err) // not the data's fault: no verdict
		}
		mu.Lock()
		defer mu.Unlock()
		rep.ChunksRead++
		rep.BytesRead += int64(n)
		switch {
		case errors.Is(err, cairn.ErrNotFound):
			rep.Problems = append(rep.Problems, Problem{Kind: ProblemMissingChunk, Object: c.ObjectName(), Detail: "referenced but not stored", Backups: []cairn.ID{m.ID}})
		case err != nil:
			rep.Problems = append(rep.Problems, Problem{Kind: ProblemCorruptChunk, Object: c.ObjectName(), Detail: err.Error(), Backups: []cairn.ID{m.ID}})
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	slices.SortFunc(rep.Problems, func(a, b Problem) int { return strings.Compare(a.Kind+a.Object, b.Kind+b.Object) })
	return rep, nil
}
