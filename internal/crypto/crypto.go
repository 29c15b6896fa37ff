// Package crypto holds the repository's keys and primitives: AES-256-GCM
// for sealing, keyed BLAKE3 for naming chunks, argon2id for turning a
// password or key file into a key-encryption key.
package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"io"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/argon2"

	"github.com/cairnproject/cairn"
)

// Sizes of the primitives' parameters.
const (
	KeySize   = 32
	NonceSize = 12
	TagSize   = 16
	HashSize  = 32
	// MasterKeySize is the length of a marshalled MasterKey.
	MasterKeySize = 2 * KeySize
)

// MasterKey is the repository's secret: one key seals every object, the
// other names chunks. It never leaves memory unwrapped.
type MasterKey struct {
	enc  [KeySize]byte
	mac  [KeySize]byte
	aead cipher.AEAD
}

// NewMasterKey returns a fresh random master key read from r (crypto/rand
// when nil).
func NewMasterKey(r io.Reader) (*MasterKey, error) {
	if r == nil {
		r = rand.Reader
	}
	var raw [MasterKeySize]byte
	if _, err := io.ReadFull(r, raw[:]); err != nil {
		return nil, fmt.Errorf("generating master key: %w", err)
	}
	return UnmarshalMasterKey(raw[:])
}

// UnmarshalMasterKey rebuilds a key from Marshal's output.
func UnmarshalMasterKey(raw []byte) (*MasterKey, error) {
	if len(raw) != MasterKeySize {
		return nil, fmt.Errorf("master key: %d bytes, want %d: %w", len(raw), MasterKeySize, cairn.ErrCorrupt)
	}
	k := &MasterKey{}
	copy(k.enc[:], raw[:KeySize])
	copy(k.mac[:], raw[KeySize:])
	aead, err := newGCM(k.enc[:])
	if err != nil {
		return nil, err
	}
	k.aead = aead
	return k, nil
}

// Marshal returns the raw key bytes, for wrapping under a key-encryption key.
func (k *MasterKey) Marshal() []byte {
	out := make([]byte, 0, MasterKeySize)
	out = append(out, k.enc[:]...)
	return append(out, k.mac[:]...)
}

// AEAD returns the cipher that seals repository objects.
func (k *MasterKey) AEAD() cipher.AEAD { return k.aead }

// NewHasher returns a keyed hasher for chunk IDs. Hashers are not safe for
// concurrent use; give each goroutine its own.
func (k *MasterKey) NewHasher() *Hasher {
	h, err := blake3.NewKeyed(k.mac[:])
	if err != nil {
		panic(err) // only fails for a key of the wrong length
	}
	return &Hasher{h: h}
}

// Hasher computes keyed BLAKE3 hashes.
type Hasher struct{ h *blake3.Hasher }

// Sum returns the keyed hash of data.
func (h *Hasher) Sum(data []byte) [HashSize]byte {
	h.h.Reset()
	_, _ = h.h.Write(data)
	var out [HashSize]byte
	h.h.Sum(out[:0])
	return out
}

// MAC authenticates small plaintext metadata (the repository config).
func (k *MasterKey) MAC(data []byte) [HashSize]byte { return k.NewHasher().Sum(data) }

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	return aead, nil
}

// KDFParams are argon2id's cost parameters.
type KDFParams struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// DefaultKDF follows RFC 9106's second recommended option (64 MiB, t=3, p=4).
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 << 10, Threads: 4}

// Validate rejects parameters too weak to use or too costly to run.
func (p KDFParams) Validate() error {
	switch {
	case p.Time < 1 || p.Time > 100:
		return fmt.Errorf("kdf time %d out of range [1,100]: %w", p.Time, cairn.ErrInvalid)
	case p.MemoryKiB < 8 || p.MemoryKiB > 4<<20:
		return fmt.Errorf("kdf memory %d KiB out of range [8,4194304]: %w", p.MemoryKiB, cairn.ErrInvalid)
	case p.Threads < 1:
		return fmt.Errorf("kdf threads %d: %w", p.Threads, cairn.ErrInvalid)
	}
	return nil
}

// DeriveKEK turns a secret (a password or a key file's contents) into a
// key-encryption key with argon2id.
func DeriveKEK(secret, salt []byte, p KDFParams) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if len(salt) < 16 {
		return nil, fmt.Errorf("kdf salt of %d bytes: %w", len(salt), cairn.ErrCorrupt)
	}
	return argon2.IDKey(secret, salt, p.Time, p.MemoryKiB, p.Threads, KeySize), nil
}

// WrapKey seals the master key under kek; aad binds the result to its key
// file.
func WrapKey(kek []byte, mk *MasterKey, aad []byte, r io.Reader) ([]byte, error) {
	if r == nil {
		r = rand.Reader
	}
	aead, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, NonceSize, NonceSize+MasterKeySize+TagSize)
	if _, err := io.ReadFull(r, nonce); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	return aead.Seal(nonce, nonce, mk.Marshal(), aad), nil
}

// UnwrapKey opens WrapKey's output. A wrong kek is cairn.ErrWrongKey.
func UnwrapKey(kek, wrapped, aad []byte) (*MasterKey, error) {
	aead, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	if len(wrapped) != NonceSize+MasterKeySize+TagSize {
		return nil, fmt.Errorf("wrapped key of %d bytes: %w", len(wrapped), cairn.ErrCorrupt)
	}
	raw, err := aead.Open(nil, wrapped[:NonceSize], wrapped[NonceSize:], aad)
	if err != nil {
		return nil, cairn.ErrWrongKey
	}
	return UnmarshalMasterKey(raw)
}
