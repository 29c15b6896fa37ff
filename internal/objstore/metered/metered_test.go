package metered_test

import (
	"testing"

	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/mem"
	"github.com/cairnproject/cairn/internal/objstore/metered"
	"github.com/cairnproject/cairn/internal/objstore/objstoretest"
)

// Counting changes nothing: the wrapper is a conforming backend.
func TestConformance(t *testing.T) {
	objstoretest.Run(t, objstoretest.Options{}, func(t *testing.T) objstore.Backend {
		return metered.New(mem.New(mem.Options{}))
	})
}

func TestCounts(t *testing.T) {
	b := metered.New(mem.New(mem.Options{}))
	ctx := t.Context()
	if err := b.Put(ctx, "chunks/aa/x", []byte("12345"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "config", []byte("1"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := objstore.ReadAll(ctx, b, "chunks/aa/x", 1, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stat(ctx, "config"); err != nil {
		t.Fatal(err)
	}
	if err := b.List(ctx, "", func(objstore.ObjectInfo) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "config"); err != nil {
		t.Fatal(err)
	}
	want := metered.Counts{Puts: 2, PutBytes: 6, Gets: 1, GetBytes: 3, Stats: 1, Lists: 1, Deletes: 1, ChunkPuts: 1}
	if got := b.Counts(); got != want {
		t.Fatalf("counts = %+v, want %+v", got, want)
	}
}
