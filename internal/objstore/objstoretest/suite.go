// Package objstoretest is the conformance suite every objstore.Backend
// implementation runs.
package objstoretest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
)

// Options describe what the suite may expect of a backend.
type Options struct {
	// ListLag is how long a listing may lag writes and deletes; the suite
	// polls for up to this long (plus a margin) before failing.
	ListLag time.Duration
	// LargeObject is the size of the largest object the suite writes; 0
	// means 8 MiB.
	LargeObject int
}

// Run runs the suite. newBackend must return an empty backend each call;
// the suite closes it when its test ends.
func Run(t *testing.T, opts Options, newBackend func(t *testing.T) objstore.Backend) {
	if opts.LargeObject == 0 {
		opts.LargeObject = 8 << 20
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, b objstore.Backend, opts Options)
	}{
		{"PutGet", testPutGet},
		{"GetRange", testGetRange},
		{"Missing", testMissing},
		{"Overwrite", testOverwrite},
		{"IfAbsent", testIfAbsent},
		{"IfAbsentRace", testIfAbsentRace},
		{"List", testList},
		{"Delete", testDelete},
		{"InvalidNames", testInvalidNames},
		{"Cancelled", testCancelled},
		{"NotRetained", testNotRetained},
		{"Concurrent", testConcurrent},
		{"ModTime", testModTime},
		{"DeleteAll", testDeleteAll},
		{"Close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t)
			t.Cleanup(func() {
				if err := b.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			tc.fn(t, b, opts)
		})
	}
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func mustGet(t *testing.T, b objstore.Backend, name string, off, length int64) []byte {
	t.Helper()
	data, err := objstore.ReadAll(t.Context(), b, name, off, length)
	if err != nil {
		t.Fatalf("get %s [%d,%d): %v", name, off, length, err)
	}
	return data
}

func testPutGet(t *testing.T, b objstore.Backend, opts Options) {
	ctx := t.Context()
	for _, size := range []int{0, 1, 4096, 1 << 20, opts.LargeObject} {
		name := fmt.Sprintf("data/obj-%d", size)
		data := random(t, size)
		if err := b.Put(ctx, name, data, objstore.PutOptions{}); err != nil {
			t.Fatalf("put %d bytes: %v", size, err)
		}
		got := mustGet(t, b, name, 0, -1)
		if !bytes.Equal(got, data) {
			t.Fatalf("size %d: read back %d bytes that differ", size, len(got))
		}
		info, err := b.Stat(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if info.Size != int64(size) || info.Name != name {
			t.Fatalf("stat = %+v, want name %s size %d", info, name, size)
		}
	}
}

func testGetRange(t *testing.T, b objstore.Backend, _ Options) {
	data := random(t, 10000)
	if err := b.Put(t.Context(), "r/x", data, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		off, length int64
		want        []byte
	}{
		{0, -1, data},
		{0, 10, data[:10]},
		{9990, -1, data[9990:]},
		{9990, 100, data[9990:]},
		{5000, 1, data[5000:5001]},
		{1234, 4321, data[1234 : 1234+4321]},
		{10000, -1, nil},
	}
	for _, c := range cases {
		got := mustGet(t, b, "r/x", c.off, c.length)
		if !bytes.Equal(got, c.want) {
			t.Errorf("range [%d,+%d): got %d bytes, want %d", c.off, c.length, len(got), len(c.want))
		}
	}
	if _, err := objstore.ReadAll(t.Context(), b, "r/x", 10001, -1); err == nil {
		t.Error("offset beyond the end: no error")
	}
}

func testMissing(t *testing.T, b objstore.Backend, _ Options) {
	ctx := t.Context()
	if _, err := b.Get(ctx, "no/such", 0, -1); !errors.Is(err, cairn.ErrNotFound) {
		t.Errorf("get missing: %v, want ErrNotFound", err)
	}
	if _, err := b.Stat(ctx, "no/such"); !errors.Is(err, cairn.ErrNotFound) {
		t.Errorf("stat missing: %v, want ErrNotFound", err)
	}
	if ok, err := objstore.Exists(ctx, b, "no/such"); ok || err != nil {
		t.Errorf("exists missing = %v, %v", ok, err)
	}
}

func testOverwrite(t *testing.T, b objstore.Backend, _ Options) {
	ctx := t.Context()
	for i, data := range [][]byte{random(t, 100), random(t, 50), random(t, 3000)} {
		if err := b.Put(ctx, "o/x", data, objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := mustGet(t, b, "o/x", 0, -1); !bytes.Equal(got, data) {
			t.Fatalf("version %d not read back", i)
		}
	}
}

func testIfAbsent(t *testing.T, b objstore.Backend, _ Options) {
	ctx := t.Context()
	first := []byte("first")
	if err := b.Put(ctx, "ia/x", first, objstore.PutOptions{IfAbsent: true}); err != nil {
		t.Fatalf("put if absent on a new name: %v", err)
	}
	err := b.Put(ctx, "ia/x", []byte("second"), objstore.PutOptions{IfAbsent: true})
	if !errors.Is(err, cairn.ErrExists) {
		t.Fatalf("put if absent on an existing name: %v, want ErrExists", err)
	}
	if got := mustGet(t, b, "ia/x", 0, -1); !bytes.Equal(got, first) {
		t.Fatalf("object replaced: %q", got)
	}
}

func testIfAbsentRace(t *testing.T, b objstore.Backend, _ Options) {
	ctx := t.Context()
	const n = 8
	var wins, exists atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			err := b.Put(ctx, "race/config", []byte{byte(i)}, objstore.PutOptions{IfAbsent: true})
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, cairn.ErrExists):
				exists.Add(1)
			default:
				t.Errorf("put: %v", err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 || exists.Load() != n-1 {
		t.Fatalf("%d puts won and %d saw ErrExists; want 1 and %d", wins.Load(), exists.Load(), n-1)
	}
}

// listEventually lists prefix until the result equals want or the lag passes.
func listEventually(t *testing.T, b objstore.Backend, opts Options, prefix string, want map[string]int64) {
	t.Helper()
	deadline := time.Now().Add(opts.ListLag + 10*time.Second)
	for {
		got := map[string]int64{}
		err := b.List(t.Context(), prefix, func(info objstore.ObjectInfo) error {
			got[info.Name] = info.Size
			return nil
		})
		if err != nil {
			t.Fatalf("list %q: %v", prefix, err)
		}
		if fmt.Sprint(sorted(got)) == fmt.Sprint(sorted(want)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("list %q = %v, want %v", prefix, sorted(got), sorted(want))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sorted(m map[string]int64) []string {
	var s []string
	for k, v := range m {
		s = append(s, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(s)
	return s
}

func testList(t *testing.T, b objstore.Backend, opts Options) {
	ctx := t.Context()
	names := map[string]int64{
		"chunks/00/aa": 1, "chunks/00/ab": 2, "chunks/ff/ff": 3,
		"backups/1": 4, "backups/2": 5, "chunksx": 6,
	}
	for name, size := range names {
		if err := b.Put(ctx, name, make([]byte, size), objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	listEventually(t, b, opts, "chunks/", map[string]int64{"chunks/00/aa": 1, "chunks/00/ab": 2, "chunks/ff/ff": 3})
	listEventually(t, b, opts, "chunks/00/a", map[string]int64{"chunks/00/aa": 1, "chunks/00/ab": 2})
	listEventually(t, b, opts, "backups/", map[string]int64{"backups/1": 4, "backups/2": 5})
	listEventually(t, b, opts, "nothing/", map[string]int64{})
	listEventually(t, b, opts, "", names)

	stop := errors.New("stop")
	calls := 0
	err := b.List(ctx, "", func(objstore.ObjectInfo) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("list with a failing callback: %v after %d calls", err, calls)
	}
}

func testDelete(t *testing.T, b objstore.Backend, opts Options) {
	ctx := t.Context()
	if err := b.Put(ctx, "d/x", []byte("x"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "d/y", []byte("y"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "d/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stat(ctx, "d/x"); !errors.Is(err, cairn.ErrNotFound) {
		t.Fatalf("stat after delete: %v", err)
	}
	if err := b.Delete(ctx, "d/x"); err != nil {
		t.Fatalf("deleting a missing object: %v", err)
	}
	listEventually(t, b, opts, "d/", map[string]int64{"d/y": 1})
	// A deleted name can be created again, even with IfAbsent.
	if err := b.Put(ctx, "d/x", []byte("again"), objstore.PutOptions{IfAbsent: true}); err != nil {
		t.Fatalf("recreate after delete: %v", err)
	}
}

func testInvalidNames(t *testing.T, b objstore.Backend, _ Options) {
	ctx := t.Context()
	for _, name := range []string{"", "/abs", "a//b", "../x", "a/../b", "a/", "./a"} {
		if err := b.Put(ctx, name, []byte("x"), objstore.PutOptions{}); !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("put %q: %v, want ErrInvalid", name, err)
		}
		if _, err := b.Get(ctx, name, 0, -1); !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("get %q: %v, want ErrInvalid", name, err)
		}
	}
}

// testCancelled gives every operation a context that has already ended:
// each must fail with the context's error and leave the store as it was.
func testCancelled(t *testing.T, b objstore.Backend, opts Options) {
	live := t.Context()
	kept := []string{"c/kept-1", "c/kept-2", "c/kept-3"}
	for _, name := range kept {
		if err := b.Put(live, name, []byte(name), objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	listEventually(t, b, opts, "c/", map[string]int64{"c/kept-1": 8, "c/kept-2": 8, "c/kept-3": 8})
	ctx, cancel := context.WithCancel(live)
	cancel()
	cancelled := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v, want an error wrapping context.Canceled", op, err)
		}
	}
	cancelled("put", b.Put(ctx, "c/new", []byte("x"), objstore.PutOptions{}))
	cancelled("put if absent", b.Put(ctx, "c/new-if-absent", []byte("x"), objstore.PutOptions{IfAbsent: true}))
	cancelled("put over an object", b.Put(ctx, "c/kept-1", []byte("replaced"), objstore.PutOptions{}))
	rc, err := b.Get(ctx, "c/kept-1", 0, -1)
	if rc != nil {
		rc.Close()
	}
	cancelled("get", err)
	_, err = b.Stat(ctx, "c/kept-1")
	cancelled("stat", err)
	for _, prefix := range []string{"c/", "none/"} {
		calls := 0
		err = b.List(ctx, prefix, func(objstore.ObjectInfo) error { calls++; return nil })
		cancelled(fmt.Sprintf("list %q", prefix), err)
		if calls != 0 {
			t.Errorf("list %q with a cancelled context delivered %d objects", prefix, calls)
		}
	}
	cancelled("delete", b.Delete(ctx, "c/kept-1"))
	deleted := 0
	cancelled("delete all", objstore.DeleteAll(ctx, b, kept, 4, func(n []string) { deleted += len(n) }))
	if deleted != 0 {
		t.Errorf("delete all with a cancelled context reported %d objects deleted", deleted)
	}
	if bd, ok := b.(objstore.BatchDeleter); ok {
		cancelled("delete batch", bd.DeleteBatch(ctx, kept))
	}

	// Nothing changed: checked with a live context.
	for _, name := range []string{"c/new", "c/new-if-absent"} {
		if _, err := b.Stat(live, name); !errors.Is(err, cairn.ErrNotFound) {
			t.Errorf("a cancelled put left %s: %v", name, err)
		}
	}
	for _, name := range kept {
		if got := mustGet(t, b, name, 0, -1); string(got) != name {
			t.Errorf("%s after cancelled calls: %q, want %q", name, got, name)
		}
	}
	listEventually(t, b, opts, "c/", map[string]int64{"c/kept-1": 8, "c/kept-2": 8, "c/kept-3": 8})
}

// testClose closes the backend twice, then expects every call to fail
// with ErrClosed.
func testClose(t *testing.T, b objstore.Backend, _ Options) {
	ctx := t.Context()
	if err := b.Put(ctx, "cl/x", []byte("x"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	closed := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, objstore.ErrClosed) {
			t.Errorf("%s after close: %v, want an error wrapping objstore.ErrClosed", op, err)
		}
	}
	closed("put", b.Put(ctx, "cl/y", []byte("y"), objstore.PutOptions{}))
	rc, err := b.Get(ctx, "cl/x", 0, -1)
	if rc != nil {
		rc.Close()
	}
	closed("get", err)
	_, err = b.Stat(ctx, "cl/x")
	closed("stat", err)
	closed("list", b.List(ctx, "cl/", func(objstore.ObjectInfo) error { return nil }))
	closed("delete", b.Delete(ctx, "cl/x"))
	closed("delete all", objstore.DeleteAll(ctx, b, []string{"cl/x"}, 1, nil))
}

func testNotRetained(t *testing.T, b objstore.Backend, _ Options) {
	data := []byte("original")
	if err := b.Put(t.Context(), "n/x", data, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	copy(data, "CHANGED!")
	if got := mustGet(t, b, "n/x", 0, -1); string(got) != "original" {
		t.Fatalf("backend retained the caller's buffer: %q", got)
	}
}

func testConcurrent(t *testing.T, b objstore.Backend, _ Options) {
	ctx := t.Context()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			name := fmt.Sprintf("conc/%02d", i)
			data := bytes.Repeat([]byte{byte(i)}, 10000+i)
			if err := b.Put(ctx, name, data, objstore.PutOptions{}); err != nil {
				t.Error(err)
				return
			}
			got, err := objstore.ReadAll(ctx, b, name, 0, -1)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("%s: %v, %d bytes", name, err, len(got))
			}
		})
	}
	wg.Wait()
}

func testModTime(t *testing.T, b objstore.Backend, _ Options) {
	before := time.Now()
	if err := b.Put(t.Context(), "m/x", []byte("x"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	info, err := b.Stat(t.Context(), "m/x")
	if err != nil {
		t.Fatal(err)
	}
	// Stores keep their own clocks; allow for skew and coarse timestamps.
	if d := info.ModTime.Sub(before); d < -2*time.Minute || d > 2*time.Minute {
		t.Fatalf("modification time %v is %v away from the local clock", info.ModTime, d)
	}
}

// testDeleteAll deletes many objects at once, some of them missing,
// through the backend's batch delete where it has one.
func testDeleteAll(t *testing.T, b objstore.Backend, opts Options) {
	ctx := t.Context()
	var names []string
	for i := range 30 {
		name := fmt.Sprintf("many/%03d", i)
		names = append(names, name)
		if i%3 == 0 {
			continue // missing objects are not an error
		}
		if err := b.Put(ctx, name, []byte{byte(i)}, objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Put(ctx, "many/keep", []byte("k"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted := 0
	if err := objstore.DeleteAll(ctx, b, names, 4, func(n []string) { deleted += len(n) }); err != nil {
		t.Fatalf("delete all: %v", err)
	}
	if deleted != len(names) {
		t.Fatalf("reported %d deleted of %d", deleted, len(names))
	}
	for _, name := range names {
		if _, err := b.Stat(ctx, name); !errors.Is(err, cairn.ErrNotFound) {
			t.Fatalf("%s after delete: %v", name, err)
		}
	}
	listEventually(t, b, opts, "many/", map[string]int64{"many/keep": 1})
}
