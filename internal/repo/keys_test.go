package repo_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/objstore/mem"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
)

func TestOpenErrors(t *testing.T) {
	_, be := newMemRepo(t)
	ctx := t.Context()
	if _, err := repo.Open(ctx, be, repo.Secret{Kind: format.KeyKindPassword, Bytes: []byte("wrong")}, testOpts()); !errors.Is(err, cairn.ErrWrongKey) {
		t.Errorf("wrong password: %v", err)
	}
	if _, err := repo.Open(ctx, mem.New(mem.Options{}), password, testOpts()); !errors.Is(err, cairn.ErrNotRepository) {
		t.Errorf("empty store: %v", err)
	}
	junk := mem.New(mem.Options{})
	_ = junk.Put(ctx, "config", []byte("not json"), objstore.PutOptions{})
	if _, err := repo.Open(ctx, junk, password, testOpts()); !errors.Is(err, cairn.ErrNotRepository) {
		t.Errorf("junk config: %v", err)
	}
}

func TestTamperedConfigDetected(t *testing.T) {
	_, be := newMemRepo(t)
	ctx := t.Context()
	data, _ := objstore.ReadAll(ctx, be, "config", 0, -1)
	cfg, err := format.DecodeConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Compression = format.LevelOff
	tampered := []byte(`{"format":"cairn-repository","version":1,"id":"` + cfg.ID.String() + `","chunk_size":65536,"compression":"off","gc":{"consistency_margin":"0s","session_timeout":"3s"},"mac":"` + cfg.MAC + `"}`)
	_ = be.Put(ctx, "config", tampered, objstore.PutOptions{})
	if _, err := repo.Open(ctx, be, password, testOpts()); !errors.Is(err, cairn.ErrCorrupt) {
		t.Fatalf("tampered config: %v", err)
	}
}

func TestKeyManagement(t *testing.T) {
	r, be := newMemRepo(t)
	ctx := t.Context()
	keyfile := repo.Secret{Kind: format.KeyKindFile, Bytes: []byte("0123456789abcdef0123456789abcdef")}
	second, err := r.AddKey(ctx, keyfile)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := r.Keys(ctx)
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys %v %v", keys, err)
	}
	// Both secrets open the repository, to the same master key.
	r2, err := repo.Open(ctx, be, keyfile, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	if r2.KeyID() != second {
		t.Fatalf("opened with %s, want %s", r2.KeyID(), second)
	}
	// The key in use cannot be removed; another key can remove it.
	if err := r.RemoveKey(ctx, r.KeyID()); !errors.Is(err, cairn.ErrConflict) {
		t.Fatalf("removing the key in use: %v", err)
	}
	if err := r2.RemoveKey(ctx, r.KeyID()); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Open(ctx, be, password, testOpts()); !errors.Is(err, cairn.ErrWrongKey) {
		t.Fatalf("removed password still opens: %v", err)
	}
	// The last key is refused.
	if err := r2.RemoveKey(ctx, second); !errors.Is(err, cairn.ErrConflict) {
		t.Fatalf("removing the last key: %v", err)
	}
	// Changing the secret replaces the key in use.
	newPW := repo.Secret{Kind: format.KeyKindPassword, Bytes: []byte("new password")}
	id, err := r2.ChangeSecret(ctx, newPW)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Open(ctx, be, keyfile, testOpts()); !errors.Is(err, cairn.ErrWrongKey) {
		t.Fatalf("old key file still opens: %v", err)
	}
	r3, err := repo.Open(ctx, be, newPW, testOpts())
	if err != nil || r3.KeyID() != id {
		t.Fatalf("new password: %v", err)
	}
	if _, err := r3.ResolveKey(ctx, "zz"); !errors.Is(err, cairn.ErrNotFound) {
		t.Fatalf("resolving an unknown key: %v", err)
	}
	if _, err := r3.AddKey(ctx, repo.Secret{Kind: format.KeyKindPassword}); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("empty password: %v", err)
	}
}

func TestDamagedKeyDoesNotLockOut(t *testing.T) {
	r, be := newMemRepo(t)
	ctx := t.Context()
	_ = be.Put(ctx, "keys/"+cairn.NewID().String(), []byte("{garbage"), objstore.PutOptions{})
	if _, err := repo.Open(ctx, be, password, testOpts()); err != nil {
		t.Fatalf("a damaged extra key locked the repository: %v", err)
	}
	rep, err := r.Check(ctx, repo.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != repo.ProblemKey {
		t.Fatalf("check: %v", rep.Problems)
	}
}

func TestInitRace(t *testing.T) {
	be := mem.New(mem.Options{})
	var wg sync.WaitGroup
	results := make([]error, 6)
	for i := range results {
		wg.Go(func() {
			_, results[i] = repo.Init(t.Context(), be, password, repo.InitOptions{ChunkSize: testChunk}, testOpts())
		})
	}
	wg.Wait()
	wins := 0
	for _, err := range results {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, cairn.ErrExists):
			t.Errorf("init: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d inits succeeded", wins)
	}
	r := reopen(t, be)
	keys, _ := r.Keys(t.Context())
	if len(keys) != 1 {
		t.Fatalf("losing inits left %d keys", len(keys))
	}
	if _, err := repo.Init(t.Context(), be, password, repo.InitOptions{}, testOpts()); !errors.Is(err, cairn.ErrExists) {
		t.Fatalf("init over a repository: %v", err)
	}
}
