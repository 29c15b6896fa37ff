package nbd

import "sync"

// writeTracker lets NBD_CMD_FLUSH wait for the write-type requests received
// before it. The reader numbers those requests in arrival order; at most
// Workers+1 are in flight, so a small slice suffices.
type writeTracker struct {
	mu       sync.Mutex
	cond     sync.Cond // L is &mu
	last     uint64    // number of the last write started
	inflight []uint64
	waiters  int
}

// start registers a write-type request and returns its number.
func (t *writeTracker) start() uint64 {
	t.mu.Lock()
	t.last++
	n := t.last
	t.inflight = append(t.inflight, n)
	t.mu.Unlock()
	return n
}

// barrier returns the number of the last write started, for a flush.
func (t *writeTracker) barrier() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last
}

// done unregisters write n.
func (t *writeTracker) done(n uint64) {
	t.mu.Lock()
	for i, v := range t.inflight {
		if v == n {
			last := len(t.inflight) - 1
			t.inflight[i] = t.inflight[last]
			t.inflight = t.inflight[:last]
			break
		}
	}
	if t.waiters > 0 {
		t.cond.Broadcast()
	}
	t.mu.Unlock()
}

// wait blocks until every write numbered up to b has finished.
func (t *writeTracker) wait(b uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.pendingUpTo(b) {
		t.waiters++
		t.cond.Wait()
		t.waiters--
	}
}

func (t *writeTracker) pendingUpTo(b uint64) bool {
	for _, v := range t.inflight {
		if v <= b {
			return true
		}
	}
	return false
}

// budget bounds the payload bytes one connection holds for requests in
// flight. Only the connection's reader acquires, so waiting is FIFO.
type budget struct {
	mu   sync.Mutex
	cond sync.Cond // L is &mu
	used int64
	max  int64
}

// acquire takes n bytes, waiting while that would exceed the budget. A
// request larger than the whole budget runs alone.
func (b *budget) acquire(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	for b.used > 0 && b.used+n > b.max {
		b.cond.Wait()
	}
	b.used += n
	b.mu.Unlock()
}

func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.cond.Broadcast()
	b.mu.Unlock()
}
