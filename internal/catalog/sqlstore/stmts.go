package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
)

// maxDynamicStmts bounds the list queries kept prepared: their text
// varies only with which filters, sort keys and paging a list uses.
const maxDynamicStmts = 256

// stmtCache holds the statements prepared on one pool. The fixed ones
// (gets, inserts, updates) are prepared by New, before any transaction
// runs. A list query is prepared the first time it is seen, in the
// background: preparing takes a connection of the pool, and the caller
// holds one (the writer pool has only one), so the caller runs its query
// unprepared this time instead of waiting.
//
// A nil *stmtCache holds nothing (a dialect that does not prepare).
type stmtCache struct {
	db    *sql.DB
	fixed map[string]*sql.Stmt // read-only after prepareFixed

	mu      sync.Mutex
	dynamic map[string]*sql.Stmt
	pending map[string]bool
	ctx     context.Context // ends at close
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func newStmtCache(db *sql.DB) *stmtCache {
	ctx, cancel := context.WithCancel(context.Background())
	return &stmtCache{db: db, fixed: map[string]*sql.Stmt{}, dynamic: map[string]*sql.Stmt{},
		pending: map[string]bool{}, ctx: ctx, cancel: cancel}
}

func (c *stmtCache) prepareFixed(ctx context.Context, name string, qs []string) error {
	for _, q := range qs {
		if c.fixed[q] != nil {
			continue
		}
		st, err := c.db.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("%s: preparing %q: %w", name, q, err)
		}
		c.fixed[q] = st
	}
	return nil
}

// get returns q's prepared statement, or nil (and prepares it for the
// next time, unless the cache is full).
func (c *stmtCache) get(q string) *sql.Stmt {
	if c == nil {
		return nil
	}
	if st := c.fixed[q]; st != nil {
		return st
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.dynamic[q]; st != nil {
		return st
	}
	if c.pending[q] || len(c.dynamic)+len(c.pending) >= maxDynamicStmts || c.ctx.Err() != nil {
		return nil
	}
	c.pending[q] = true
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		st, err := c.db.PrepareContext(c.ctx, q)
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.pending, q)
		if err != nil {
			return // run unprepared; tried again next time
		}
		if c.ctx.Err() != nil {
			st.Close()
			return
		}
		c.dynamic[q] = st
	}()
	return nil
}

// close stops background preparing and closes every statement.
func (c *stmtCache) close() {
	if c == nil {
		return
	}
	c.cancel()
	c.wg.Wait()
	for _, st := range c.fixed {
		st.Close()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.dynamic {
		st.Close()
	}
}
