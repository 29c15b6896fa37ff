package crypto_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/crypto"
)

var fastKDF = crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

func TestWrapUnwrap(t *testing.T) {
	mk, err := crypto.NewMasterKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	salt := bytes.Repeat([]byte{7}, 16)
	kek, err := crypto.DeriveKEK([]byte("correct horse"), salt, fastKDF)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := crypto.WrapKey(kek, mk, []byte("aad"), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := crypto.UnwrapKey(kek, wrapped, []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Marshal(), mk.Marshal()) {
		t.Fatal("unwrapped key differs")
	}

	wrong, _ := crypto.DeriveKEK([]byte("wrong"), salt, fastKDF)
	tests := []struct {
		name    string
		kek     []byte
		wrapped []byte
		aad     string
		want    error
	}{
		{"wrong password", wrong, wrapped, "aad", cairn.ErrWrongKey},
		{"other key file", kek, wrapped, "other", cairn.ErrWrongKey},
		{"flipped bit", kek, flip(wrapped, 30), "aad", cairn.ErrWrongKey},
		{"truncated", kek, wrapped[:40], "aad", cairn.ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := crypto.UnwrapKey(tc.kek, tc.wrapped, []byte(tc.aad)); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 1
	return c
}

func TestKDFValidation(t *testing.T) {
	bad := []crypto.KDFParams{{Time: 0, MemoryKiB: 64, Threads: 1}, {Time: 1, MemoryKiB: 1, Threads: 1}, {Time: 1, MemoryKiB: 64, Threads: 0}}
	for _, p := range bad {
		if _, err := crypto.DeriveKEK([]byte("x"), make([]byte, 16), p); !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("%+v: %v", p, err)
		}
	}
	if _, err := crypto.DeriveKEK([]byte("x"), make([]byte, 4), fastKDF); !errors.Is(err, cairn.ErrCorrupt) {
		t.Errorf("short salt: %v", err)
	}
}

func TestHasherKeyed(t *testing.T) {
	a, _ := crypto.NewMasterKey(nil)
	b, _ := crypto.NewMasterKey(nil)
	data := []byte("same data")
	if a.NewHasher().Sum(data) == b.NewHasher().Sum(data) {
		t.Fatal("different keys give the same chunk ID")
	}
	h := a.NewHasher()
	first := h.Sum(data)
	if h.Sum(data) != first || a.NewHasher().Sum(data) != first {
		t.Fatal("hash is not deterministic")
	}
}
