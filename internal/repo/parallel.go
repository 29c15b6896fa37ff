package repo

import (
	"context"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

// forEachParallel calls fn(i) for i in [0, n) on up to workers goroutines
// and returns the first error; after an error the remaining calls are not
// made, and those under way see a cancelled context.
func forEachParallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, workers))
	for i := range n {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error { return fn(gctx, i) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// goStage runs n (at least one) copies of fn in g, one stage of a
// pipeline, and calls done once every copy has returned: done closes the
// channel the stage sends to, which ends the next stage. A copy that fails
// returns its error, which cancels g's context; the stages before it must
// send under a select on that context, so none waits for a reader gone.
func goStage(g *errgroup.Group, n int, fn func() error, done func()) {
	n = max(1, n)
	var left atomic.Int64
	left.Store(int64(n))
	for range n {
		g.Go(func() error {
			defer func() {
				if left.Add(-1) == 0 && done != nil {
					done()
				}
			}()
			return fn()
		})
	}
}
