package volume

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
)

// benchVolume returns a device of a volume of size bytes written whole,
// so that every later write finds its blocks held by the head.
func benchVolume(b *testing.B, size int64) *Device {
	b.Helper()
	e, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	_, d := newVolume(b, e, size)
	b.Cleanup(func() { d.Close() })
	chunk := bytes.Repeat([]byte{7}, 1<<20)
	for off := int64(0); off < size; off += int64(len(chunk)) {
		if err := d.WriteAt(b.Context(), chunk, off); err != nil {
			b.Fatal(err)
		}
	}
	return d
}

// BenchmarkWriteHeld measures writes from parallel goroutines to blocks
// the head holds whole already: the write fast path, file I/O included.
func BenchmarkWriteHeld(b *testing.B) {
	const size = 64 << 20
	for _, n := range []int{PageSize, BlockSize} {
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			d := benchVolume(b, size)
			ctx := b.Context()
			var seed atomic.Uint64
			b.SetBytes(int64(n))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(seed.Add(1), 1))
				buf := bytes.Repeat([]byte{9}, n)
				for pb.Next() {
					off := r.Int64N(size/int64(n)) * int64(n)
					if err := d.WriteAt(ctx, buf, off); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkMarkHeld measures the fast path's bookkeeping alone, without
// file I/O: parallel goroutines marking blocks the head holds whole.
func BenchmarkMarkHeld(b *testing.B) {
	const size = 64 << 20
	d := benchVolume(b, size)
	rt := d.rt
	var seed atomic.Uint64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(seed.Add(1), 2))
		for pb.Next() {
			off := r.Int64N(size/BlockSize) * BlockSize
			rt.layout.RLock()
			rt.idx.markRange(rt.head, off, off+BlockSize)
			rt.layout.RUnlock()
		}
	})
}
