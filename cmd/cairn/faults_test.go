package main

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/crypto"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/faulty"
	"github.com/cairnproject/cairn/internal/objstore/mem"
	"github.com/cairnproject/cairn/internal/objstore/retry"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/repo/repotest"
)

// TestInjectedFaults runs backups and restores through a store that fails
// 10% of requests (some after the write reached the store), corrupts or
// truncates 5% of reads each, and lists slowly, behind the retry policy.
// Every backup must complete or stop with a clear error; the repository
// must then check clean; a restore must never write a wrong byte.
func TestInjectedFaults(t *testing.T) {
	t.Parallel()
	kits := append([]storeKit{{name: "mem", fresh: func(*testing.T, string) (string, objstore.Backend) {
		return "mem", mem.New(mem.Options{})
	}}}, storeKits(t)...)
	for _, kit := range kits {
		t.Run(kit.name, func(t *testing.T) {
			t.Parallel()
			_, clean := kit.fresh(t, t.TempDir())
			testInjectedFaults(t, clean)
		})
	}
}

func testInjectedFaults(t *testing.T, clean objstore.Backend) {
	ctx := t.Context()
	fb := faulty.New(clean, faulty.Options{Seed: 42, FailRate: 0.10, FailAfterRate: 0.05, CorruptRate: 0.05, TruncateRate: 0.05, ListDelay: time.Millisecond})
	be := retry.New(fb, retry.Policy{InitialDelay: time.Millisecond, MaxDelay: 20 * time.Millisecond, MaxElapsed: 10 * time.Second})
	secret := repo.Secret{Kind: format.KeyKindPassword, Bytes: []byte("pw")}
	opts := repo.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, Transfers: 8}
	r, err := repo.Init(ctx, be, secret, repo.InitOptions{ChunkSize: 64 << 10}, opts)
	if err != nil {
		t.Fatalf("init through faults: %v", err)
	}
	data := repotest.Mixed(1, 3<<20, 64<<10)
	versions := map[cairn.ID][]byte{}
	completed, stopped := 0, 0
	for i := range 6 {
		repotest.Scribble(uint64(i), data, 4, 200<<10)
		m, err := r.Backup(ctx, &repotest.Source{Data: data}, repo.BackupOptions{SourceName: "src"})
		if err != nil {
			// A stop must say what failed, where.
			if msg := err.Error(); !bytes.Contains([]byte(msg), []byte("injected")) && !errors.Is(err, cairn.ErrCorrupt) {
				t.Fatalf("backup %d stopped with an unclear error: %v", i, err)
			}
			stopped++
			continue
		}
		completed++
		versions[m.ID] = bytes.Clone(data)
	}
	if completed == 0 {
		t.Fatal("no backup completed through 10% faults")
	}
	if fb.Injected() == 0 {
		t.Fatal("no fault was injected")
	}
	t.Logf("%d backups completed, %d stopped, %d faults injected", completed, stopped, fb.Injected())

	// Seen directly, the store holds a clean repository.
	direct, err := repo.Open(ctx, clean, secret, opts)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := direct.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("check after faulty backups: %v", rep.Problems)
	}
	// Restores through the faults: exact, or failed without a wrong byte.
	for id, want := range versions {
		m, err := direct.Manifest(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		tgt := repotest.NewTarget(m.Size)
		_, err = r.Restore(ctx, m, tgt, nil)
		for i := range tgt.Data {
			if tgt.Data[i] != want[i] && tgt.Data[i] != 0 {
				t.Fatalf("restore of %s wrote a wrong byte at %d (restore error: %v)", id.Short(), i, err)
			}
		}
		if err == nil && !bytes.Equal(tgt.Data, want) {
			t.Fatalf("restore of %s succeeded with wrong content", id.Short())
		}
		if err != nil {
			t.Logf("restore of %s stopped: %v", id.Short(), err)
		}
	}

	// When retries run out, backups stop, clearly, and leave the
	// repository clean.
	fb.SetOptions(faulty.Options{Seed: 7, FailRate: 0.5, Prefix: "chunks/"})
	tight := retry.New(fb, retry.Policy{InitialDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond, MaxElapsed: 5 * time.Millisecond})
	rt, err := repo.Open(ctx, tight, secret, opts)
	if err != nil {
		t.Fatal(err)
	}
	stopped = 0
	for i := range 3 {
		repotest.Scribble(uint64(100+i), data, 20, 200<<10)
		_, err := rt.Backup(ctx, &repotest.Source{Data: data}, repo.BackupOptions{SourceName: "src"})
		if err == nil {
			completed++ // every retry happened to succeed
			continue
		}
		if !errors.Is(err, cairn.ErrUnavailable) || !bytes.Contains([]byte(err.Error()), []byte("gave up after")) {
			t.Fatalf("a backup out of retries stopped with an unclear error: %v", err)
		}
		stopped++
	}
	if stopped == 0 {
		t.Fatal("no backup stopped at a 50% failure rate with a 5 ms retry budget")
	}
	rep, err = direct.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("check after stopped backups: %v", rep.Problems)
	}
	list, err := direct.Backups(ctx)
	if err != nil || len(list.Backups) != completed {
		t.Fatalf("%d backups visible after %d completed and some stopped: %v", len(list.Backups), completed, err)
	}
	_ = fmt.Sprint
}
