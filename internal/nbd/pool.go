package nbd

import (
	"math/bits"
	"sync"
)

// Buffers are pooled in power-of-two size classes from 4 KiB to 1 GiB, so
// that steady-state requests allocate nothing.
const (
	minBufShift = 12
	maxBufShift = 30
)

var bufPools [maxBufShift + 1]sync.Pool

// getBuf returns a buffer of length n from the pool. Its contents are
// whatever a previous user left.
func getBuf(n int) *[]byte {
	c := bufClass(n)
	if p, _ := bufPools[c].Get().(*[]byte); p != nil {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<c)
	return &b
}

// putBuf returns a buffer obtained from getBuf.
func putBuf(p *[]byte) {
	c := bufClass(cap(*p))
	if cap(*p) != 1<<c {
		return
	}
	bufPools[c].Put(p)
}

func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return minBufShift
	}
	return bits.Len(uint(n - 1))
}

var reqPool = sync.Pool{New: func() any { return new(txReq) }}
