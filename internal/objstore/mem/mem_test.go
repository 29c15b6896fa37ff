package mem_test

import (
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/mem"
	"github.com/cairnproject/cairn/internal/objstore/objstoretest"
)

func TestConformance(t *testing.T) {
	objstoretest.Run(t, objstoretest.Options{}, func(t *testing.T) objstore.Backend {
		return mem.New(mem.Options{})
	})
}

func TestConformanceEventuallyConsistent(t *testing.T) {
	lag := 300 * time.Millisecond
	objstoretest.Run(t, objstoretest.Options{ListLag: lag}, func(t *testing.T) objstore.Backend {
		return mem.New(mem.Options{ListLag: lag})
	})
}

func TestListingLags(t *testing.T) {
	now := time.Unix(1000, 0)
	b := mem.New(mem.Options{ListLag: time.Minute, Now: func() time.Time { return now }})
	ctx := t.Context()
	if err := b.Put(ctx, "a/x", []byte("x"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		n := 0
		_ = b.List(ctx, "a/", func(objstore.ObjectInfo) error { n++; return nil })
		return n
	}
	if count() != 0 {
		t.Fatal("new object listed before the lag")
	}
	if _, err := b.Stat(ctx, "a/x"); err != nil {
		t.Fatalf("stat of a new object: %v", err)
	}
	now = now.Add(time.Minute)
	if count() != 1 {
		t.Fatal("object not listed after the lag")
	}
	if err := b.Delete(ctx, "a/x"); err != nil {
		t.Fatal(err)
	}
	if count() != 1 {
		t.Fatal("deleted object vanished from the listing before the lag")
	}
	now = now.Add(time.Minute)
	if count() != 0 {
		t.Fatal("deleted object still listed after the lag")
	}
}
