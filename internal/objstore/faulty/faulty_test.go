package faulty_test

import (
	"errors"
	"testing"

	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/faulty"
	"github.com/cairnproject/cairn/internal/objstore/mem"
	"github.com/cairnproject/cairn/internal/objstore/objstoretest"
)

// With no faults configured the wrapper is a conforming backend.
func TestConformanceWithoutFaults(t *testing.T) {
	objstoretest.Run(t, objstoretest.Options{}, func(t *testing.T) objstore.Backend {
		return faulty.New(mem.New(mem.Options{}), faulty.Options{})
	})
}

func TestCrashAfter(t *testing.T) {
	inner := mem.New(mem.Options{})
	b := faulty.New(inner, faulty.Options{CrashAfter: 2})
	ctx := t.Context()
	for i, name := range []string{"a", "b"} {
		if err := b.Put(ctx, name, []byte{byte(i)}, objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Put(ctx, "c", nil, objstore.PutOptions{}); !errors.Is(err, faulty.ErrCrashed) {
		t.Fatalf("third put: %v", err)
	}
	if _, err := b.Stat(ctx, "a"); !errors.Is(err, faulty.ErrCrashed) {
		t.Fatalf("stat after crash: %v", err)
	}
	if ok, _ := objstore.Exists(ctx, inner, "c"); ok {
		t.Fatal("a put after the crash reached the store")
	}
}

func TestCorruptAndTruncate(t *testing.T) {
	inner := mem.New(mem.Options{})
	ctx := t.Context()
	data := make([]byte, 1000)
	if err := inner.Put(ctx, "x", data, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	b := faulty.New(inner, faulty.Options{CorruptRate: 1})
	got, err := objstore.ReadAll(ctx, b, "x", 0, -1)
	if err != nil || len(got) != 1000 {
		t.Fatal(err)
	}
	flipped := 0
	for _, c := range got {
		for ; c != 0; c &= c - 1 {
			flipped++
		}
	}
	if flipped != 1 {
		t.Fatalf("%d bits flipped, want 1", flipped)
	}
	b = faulty.New(inner, faulty.Options{TruncateRate: 1})
	got, _ = objstore.ReadAll(ctx, b, "x", 0, -1)
	if len(got) >= 1000 {
		t.Fatal("not truncated")
	}
	b = faulty.New(inner, faulty.Options{FailRate: 1})
	if _, err := b.Stat(ctx, "x"); !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("fail rate 1: %v", err)
	}
}
