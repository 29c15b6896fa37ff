package repo

import "sync/atomic"

// Progress counts what a running backup, restore or check has done. The
// operation updates it; a caller may read it from another goroutine to
// show progress. All counts are bytes of the source or target unless named
// otherwise.
type Progress struct {
	Total     atomic.Int64 // bytes the operation will account for
	Done      atomic.Int64 // bytes accounted for so far
	Read      atomic.Int64 // read from the source or target
	New       atomic.Int64 // in chunks that had to be stored
	Stored    atomic.Int64 // bytes written to the store (compressed, sealed)
	Dedup     atomic.Int64 // in chunks already stored
	Zero      atomic.Int64 // zeros and holes
	Unchanged atomic.Int64 // taken from the parent without reading
	Fetched   atomic.Int64 // bytes read from the store
	Skipped   atomic.Int64 // restore: already correct in the target
}

// add adds n to counter c of p. Callers replace a nil *Progress with a
// throwaway one at the operation's entry (see orDiscard).
func (p *Progress) add(c *atomic.Int64, n int64) { c.Add(n) }

func orDiscard(p *Progress) *Progress {
	if p == nil {
		return &Progress{}
	}
	return p
}
