package repo_test

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/extents"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/repo/repotest"
)

// scribblePages writes n random runs of 1-4 pages (4 KiB), some of them
// zeros, and returns the exact changed extents.
func scribblePages(r *rand.Rand, data []byte, n int) []cairn.Extent {
	const page = 4096
	var out []cairn.Extent
	for range n {
		pages := 1 + r.IntN(4)
		off := int64(r.IntN(len(data)/page-pages)) * page
		l := int64(pages * page)
		if r.IntN(5) == 0 {
			clear(data[off : off+l])
		} else {
			for i := off; i < off+l; i++ {
				data[i] = byte(r.Uint32())
			}
		}
		out = append(out, cairn.Extent{Offset: off, Length: l})
	}
	return extents.Normalize(out)
}

// TestDeltaBackupChain: with exact changed extents, an incremental reads
// only the changed bytes; every backup of a long chain restores byte for
// byte, alone, after its ancestors are forgotten and collected; regions
// fold back into whole chunks before they need too many.
func TestDeltaBackupChain(t *testing.T) {
	ctx := t.Context()
	r, _ := newMemRepo(t)
	const regions = 48
	src := &repotest.Source{Data: repotest.Mixed(7, regions*testChunk+5000, testChunk)}
	rng := rand.New(rand.NewPCG(8, 9))
	var chain []*format.Manifest
	var contents [][]byte
	chain = append(chain, backup(t, r, src, repo.BackupOptions{}))
	contents = append(contents, bytes.Clone(src.Data))
	maxEntries := 0
	for step := range 30 {
		changed := scribblePages(rng, src.Data, 20+rng.IntN(30))
		src.BytesRead.Store(0)
		m := backup(t, r, src, repo.BackupOptions{Delta: true, Changed: &extents.List{Size: -1, Extents: changed}})
		want := extents.Total(changed)
		// Folded regions are read whole: at most a few per step.
		if got := src.BytesRead.Load(); got < want || got > want+8*testChunk {
			t.Fatalf("step %d: read %d bytes for %d changed", step, got, want)
		}
		chain = append(chain, m)
		contents = append(contents, bytes.Clone(src.Data))
		// Bounded fragmentation: per region at most the limits.
		entries, err := r.Index(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		checkFragmentation(t, entries, testChunk)
		if len(entries) > maxEntries {
			maxEntries = len(entries)
		}
	}
	// The chain did go through delta regions.
	if maxEntries < 2*regions {
		t.Fatalf("at most %d index entries for %d regions: no delta regions", maxEntries, regions)
	}
	for i, m := range chain {
		restoreAndCompare(t, r, m, contents[i])
	}
	checkClean(t, r)
	// Forget all but every fifth backup; the rest still restore.
	var forget []cairn.ID
	for i, m := range chain {
		if i%5 != 4 {
			forget = append(forget, m.ID)
		}
	}
	if err := r.Forget(ctx, forget); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GC(ctx, repo.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	for i, m := range chain {
		if i%5 == 4 {
			restoreAndCompare(t, r, m, contents[i])
		}
	}
	checkClean(t, r)
}

func checkFragmentation(t *testing.T, entries []format.Entry, chunk int64) {
	t.Helper()
	var off int64
	perRegion := map[int64]int{}
	chunks := map[int64]map[format.ChunkID]bool{}
	for _, e := range entries {
		reg := off / chunk
		if (off+e.Length-1)/chunk != reg {
			t.Fatalf("entry at %d crosses a region boundary", off)
		}
		perRegion[reg]++
		if !e.Zero {
			if chunks[reg] == nil {
				chunks[reg] = map[format.ChunkID]bool{}
			}
			chunks[reg][e.Chunk] = true
		}
		off += e.Length
	}
	for reg, n := range perRegion {
		if n > 64 || len(chunks[reg]) > 8 {
			t.Fatalf("region %d has %d entries in %d chunks", reg, n, len(chunks[reg]))
		}
	}
}
