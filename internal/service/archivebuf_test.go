package service

import (
	"testing"

	"github.com/cairnproject/cairn/internal/pgwal"
)

// TestPendingTake: caught up, the flusher takes all that waits; more
// than a segment behind the server, whole segments only, so each is
// stored once; at the stream's end, all.
func TestPendingTake(t *testing.T) {
	const seg = 1 << 20
	ends := []pgwal.End{{EndLSN: 3*seg + 10}, {EndLSN: 4 * seg}, {EndLSN: 4*seg + 5}}
	for _, tc := range []struct {
		name           string
		start, n       uint64
		serverEnd      uint64
		final          bool
		wantTake       uint64 // bytes taken
		wantEnds, left int
	}{
		{"caught up", 3*seg + 4, seg + 100, 4*seg + 104, false, seg + 100, 3, 0},
		{"caught up within a segment", 3*seg + 4, seg + 100, 5*seg + 104, false, seg + 100, 3, 0},
		{"behind: to the last boundary", 3*seg + 4, seg + 100, 9 * seg, false, seg - 4, 2, 1},
		{"behind, no whole segment yet", 3*seg + 4, 100, 9 * seg, false, 0, 0, 0},
		{"behind, at the stream's end", 3*seg + 4, seg + 100, 9 * seg, true, seg + 100, 3, 0},
		{"behind, ending on a boundary", 3 * seg, seg, 9 * seg, false, seg, 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := make([]byte, tc.n)
			for i := range data {
				data[i] = byte(i)
			}
			var kept []pgwal.End
			for _, e := range ends {
				if e.EndLSN > tc.start && e.EndLSN <= tc.start+tc.n {
					kept = append(kept, e)
				}
			}
			p := &pending{start: tc.start, data: append([]byte(nil), data...), ends: kept}
			out := p.take(seg, tc.serverEnd, tc.final)
			if out.start != tc.start || uint64(len(out.data)) != tc.wantTake || len(out.ends) != tc.wantEnds {
				t.Fatalf("took %d bytes from %d with %d ends, want %d from %d with %d", len(out.data), out.start, len(out.ends),
					tc.wantTake, tc.start, tc.wantEnds)
			}
			if p.start != tc.start+tc.wantTake || uint64(len(p.data)) != tc.n-tc.wantTake || len(out.ends)+len(p.ends) != len(kept) {
				t.Fatalf("kept %d bytes from %d with %d ends", len(p.data), p.start, len(p.ends))
			}
			if tc.left > 0 && len(p.ends) == 0 {
				t.Fatalf("the ends after the cut were dropped")
			}
			// Taken and kept are the bytes in order.
			if got := append(append([]byte(nil), out.data...), p.data...); string(got) != string(data) {
				t.Fatal("the bytes taken and kept are not the bytes given")
			}
		})
	}
}
