// Package repotest has in-memory sources and targets, data generators and
// a fake clock for repository tests.
package repotest

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/cairnproject/cairn"
)

// Source is an in-memory repo.Source that counts what is read from it.
type Source struct {
	Data  []byte
	Alloc []cairn.Extent // nil: allocation unknown
	// Block, when set, is called before every read with its offset.
	Block     func(off int64)
	BytesRead atomic.Int64
}

// ReadAt implements io.ReaderAt.
func (s *Source) ReadAt(p []byte, off int64) (int, error) {
	if s.Block != nil {
		s.Block(off)
	}
	if off >= int64(len(s.Data)) {
		return 0, io.EOF
	}
	n := copy(p, s.Data[off:])
	s.BytesRead.Add(int64(n))
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Size implements repo.Source.
func (s *Source) Size() int64 { return int64(len(s.Data)) }

// Allocated implements repo.Source.
func (s *Source) Allocated() ([]cairn.Extent, bool, error) {
	return s.Alloc, s.Alloc != nil, nil
}

// Target is an in-memory repo.Target. With Alloc set (even empty) it
// says where it may hold data, as repo.AllocatedTarget; the test keeps
// every byte outside Alloc zero.
type Target struct {
	mu      sync.Mutex
	Data    []byte
	IsFresh bool
	Alloc   []cairn.Extent
	Read    atomic.Int64
	Written atomic.Int64
	Zeroed  atomic.Int64
}

// NewTarget returns a fresh zero-filled target of size bytes.
func NewTarget(size int64) *Target { return &Target{Data: make([]byte, size), IsFresh: true} }

// ReadAt implements io.ReaderAt.
func (t *Target) ReadAt(p []byte, off int64) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if off >= int64(len(t.Data)) {
		return 0, io.EOF
	}
	n := copy(p, t.Data[off:])
	t.Read.Add(int64(n))
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt implements io.WriterAt.
func (t *Target) WriteAt(p []byte, off int64) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if off+int64(len(p)) > int64(len(t.Data)) {
		return 0, fmt.Errorf("write [%d,%d) beyond target of %d bytes", off, off+int64(len(p)), len(t.Data))
	}
	t.Written.Add(int64(len(p)))
	return copy(t.Data[off:], p), nil
}

// Zero implements repo.Target.
func (t *Target) Zero(off, n int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.Data[off : off+n])
	t.Zeroed.Add(n)
	return nil
}

// Sync implements repo.Target.
func (t *Target) Sync() error { return nil }

// Fresh implements repo.Target.
func (t *Target) Fresh() bool { return t.IsFresh }

// Allocated implements repo.AllocatedTarget: Alloc, known when set.
func (t *Target) Allocated() ([]cairn.Extent, bool, error) {
	return t.Alloc, t.Alloc != nil, nil
}

// Mixed returns size bytes made of blocks of blockSize that are, in turn at
// random, random bytes, compressible text, or zeros.
func Mixed(seed uint64, size, blockSize int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([]byte, size)
	words := []string{"volume ", "snapshot ", "backup ", "INFO ", "chunk=", "restore\n", "42 "}
	for off := 0; off < size; off += blockSize {
		blk := out[off:min(off+blockSize, size)]
		switch r.IntN(3) {
		case 0:
			for i := range blk {
				blk[i] = byte(r.Uint32())
			}
		case 1:
			var b bytes.Buffer
			for b.Len() < len(blk) {
				b.WriteString(words[r.IntN(len(words))])
			}
			copy(blk, b.Bytes())
		}
	}
	return out
}

// Scribble overwrites n random ranges of up to maxLen bytes with random
// data and returns the ranges.
func Scribble(seed uint64, data []byte, n, maxLen int) []cairn.Extent {
	r := rand.New(rand.NewPCG(seed, 2))
	var out []cairn.Extent
	for range n {
		l := 1 + r.IntN(maxLen)
		off := r.IntN(len(data) - l + 1)
		for i := off; i < off+l; i++ {
			data[i] = byte(r.Uint32())
		}
		out = append(out, cairn.Extent{Offset: int64(off), Length: int64(l)})
	}
	return out
}

// PgbenchDump returns about size bytes shaped like the data section of a
// dump of pgbench's accounts table (pg_dump -Fc -Z0, or COPY text): one
// row per line, "aid<TAB>bid<TAB>abalance<TAB>filler", the filler 84
// spaces, the balances random. Rows are whole; the result ends with a
// newline.
func PgbenchDump(seed uint64, size int) []byte {
	r := rand.New(rand.NewPCG(seed, 4))
	filler := bytes.Repeat([]byte{' '}, 84)
	out := make([]byte, 0, size+128)
	for aid := 1; len(out) < size; aid++ {
		out = fmt.Appendf(out, "%d\t%d\t%d\t", aid, 1+(aid-1)/100000, r.IntN(20001)-10000)
		out = append(out, filler...)
		out = append(out, '\n')
	}
	return out
}
