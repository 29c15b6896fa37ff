package repo

import (
	"context"
	"fmt"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/extents"
	"github.com/cairnproject/cairn/internal/repo/format"
)

// Diff returns the byte ranges whose content differs between backups a and
// b, computed from their indexes alone. Ranges beyond the smaller backup's
// size count as changed. The result is a valid changed-extents list for a
// backup of b's source with a as its parent. Stream backups have no
// offsets that stay put (content shifts), so they are refused.
func (r *Repository) Diff(ctx context.Context, a, b *format.Manifest) (*extents.List, error) {
	for _, m := range []*format.Manifest{a, b} {
		if m.IsStream() {
			return nil, fmt.Errorf("backup %s is a stream backup: changed byte ranges are for volume backups: %w", m.ID.Short(), cairn.ErrInvalid)
		}
	}
	ea, err := r.Index(ctx, a)
	if err != nil {
		return nil, err
	}
	eb, err := r.Index(ctx, b)
	if err != nil {
		return nil, err
	}
	return &extents.List{Size: b.Size, Extents: diffEntries(ea, eb, a.Size, b.Size)}, nil
}

func diffEntries(ea, eb []format.Entry, sizeA, sizeB int64) []cairn.Extent {
	var out []cairn.Extent
	add := func(off, n int64) {
		if n <= 0 {
			return
		}
		if k := len(out); k > 0 && out[k-1].End() == off {
			out[k-1].Length += n
			return
		}
		out = append(out, cairn.Extent{Offset: off, Length: n})
	}
	var i, j int
	var offA, offB int64 // start of entry i, j
	var pos int64
	common := min(sizeA, sizeB)
	for pos < common {
		for offA+ea[i].Length <= pos {
			offA += ea[i].Length
			i++
		}
		for offB+eb[j].Length <= pos {
			offB += eb[j].Length
			j++
		}
		x, y := ea[i], eb[j]
		end := min(offA+x.Length, offB+y.Length)
		same := x.Zero && y.Zero ||
			!x.Zero && !y.Zero && x.Chunk == y.Chunk && x.ChunkOffset+(pos-offA) == y.ChunkOffset+(pos-offB)
		if !same {
			add(pos, end-pos)
		}
		pos = end
	}
	// Bytes b has beyond a's end are changed; bytes a had beyond b's end
	// are gone, which is a size change, not a range of b.
	add(common, sizeB-common)
	return out
}
