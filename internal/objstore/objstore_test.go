package objstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/mem"
)

// deafDeleter deletes without looking at the context, as a store whose
// request was already on its way does; it calls hook before each delete.
type deafDeleter struct {
	objstore.Backend
	mu      sync.Mutex
	deletes int
	hook    func(n int)
}

func (d *deafDeleter) Delete(_ context.Context, name string) error {
	d.mu.Lock()
	d.deletes++
	n := d.deletes
	d.mu.Unlock()
	if d.hook != nil {
		d.hook(n)
	}
	return d.Backend.Delete(context.Background(), name)
}

// batchDeleter deletes in batches of its own, without looking at the
// context either.
type batchDeleter struct{ *deafDeleter }

func (b *batchDeleter) DeleteBatch(ctx context.Context, names []string) error {
	for _, name := range names {
		if err := b.Delete(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

// DeleteAll must not report success for objects it never deleted: it
// used to return nil when the context ended while it was handing names
// to its workers (almost always, for a context cancelled before the
// call).
func TestDeleteAllStopsWithTheContext(t *testing.T) {
	const total = 2500 // more than two batches
	for _, tc := range []struct {
		name     string
		batches  bool
		cancelAt int // the delete that cancels the context; 0: before the call
	}{
		{"one by one, cancelled before", false, 0},
		{"one by one, cancelled during", false, 50},
		{"batches, cancelled before", true, 0},
		{"batches, cancelled during", true, 1500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			store := mem.New(mem.Options{})
			var names []string
			for i := range total {
				names = append(names, fmt.Sprintf("x/%04d", i))
				if err := store.Put(t.Context(), names[i], []byte{1}, objstore.PutOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			deaf := &deafDeleter{Backend: store, hook: func(n int) {
				if n == tc.cancelAt {
					cancel()
				}
			}}
			var be objstore.Backend = deaf
			if tc.batches {
				be = batchDeleter{deaf}
			}
			if tc.cancelAt == 0 {
				cancel()
			}
			var mu sync.Mutex
			reported := 0
			err := objstore.DeleteAll(ctx, be, names, 8, func(n []string) {
				mu.Lock()
				reported += len(n)
				mu.Unlock()
			})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("delete all with its context cancelled: %v, want context.Canceled", err)
			}
			left := 0
			if err := store.List(t.Context(), "x/", func(objstore.ObjectInfo) error { left++; return nil }); err != nil {
				t.Fatal(err)
			}
			if left == 0 {
				t.Fatal("every object was deleted, yet the call failed")
			}
			if reported != total-left {
				t.Fatalf("reported %d deleted, %d of %d are gone", reported, total-left, total)
			}
		})
	}
}
