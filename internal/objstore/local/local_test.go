package local_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/local"
	"github.com/cairnproject/cairn/internal/objstore/objstoretest"
)

func TestConformance(t *testing.T) {
	objstoretest.Run(t, objstoretest.Options{}, func(t *testing.T) objstore.Backend {
		b, err := local.New(t.TempDir(), false)
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func TestMissingDirectory(t *testing.T) {
	if _, err := local.New(filepath.Join(t.TempDir(), "nope"), false); err == nil {
		t.Fatal("opening a missing directory succeeded")
	}
}

func TestTemporaryFilesHiddenAndRemoved(t *testing.T) {
	dir := t.TempDir()
	b, err := local.New(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Put(t.Context(), "chunks/aa/x", []byte("x"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// A writer killed between create and rename leaves a temporary file.
	tmp := filepath.Join(dir, "chunks", "aa", ".cairn-tmp-dead")
	if err := os.WriteFile(tmp, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := b.List(t.Context(), "chunks/", func(i objstore.ObjectInfo) error { names = append(names, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != "chunks/aa/x" {
		t.Fatalf("listing shows %v", names)
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(tmp, old, old); err != nil {
		t.Fatal(err)
	}
	n, err := b.RemoveTemporary(t.Context(), time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("RemoveTemporary = %d, %v", n, err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatal("temporary file still there")
	}
}
