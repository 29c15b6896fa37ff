// Package format encodes and decodes every object the repository stores.
// docs/format.md is the prose form of this package; golden files under
// testdata pin the bytes.
package format

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/crypto"
)

// Object types, the fifth byte of every sealed object.
const (
	TypeChunk    byte = 'C'
	TypeIndex    byte = 'I'
	TypeManifest byte = 'M'
	TypeSession  byte = 'S'
	TypeGCSet    byte = 'G'
	TypeMarker   byte = 'K'
)

// Envelope flags.
const (
	FlagZstd byte = 1 << 0
)

var magic = [4]byte{'C', 'R', 'N', '1'}

// Envelope layout sizes.
const (
	headerSize   = 8
	checksumSize = 4
	// Overhead is the size an envelope adds to its (compressed) payload.
	Overhead = headerSize + crypto.NonceSize + crypto.TagSize + checksumSize
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Sealer seals and opens objects with one master key. It is safe for
// concurrent use.
type Sealer struct {
	aead  cipher.AEAD
	codec *Codec
	rand  io.Reader
}

// NewSealer returns a Sealer. rand supplies nonces (crypto/rand when nil;
// tests pass a fixed stream to produce golden files).
func NewSealer(mk *crypto.MasterKey, codec *Codec, rand io.Reader) *Sealer {
	return &Sealer{aead: mk.AEAD(), codec: codec, rand: rand}
}

func aad(header []byte, name string) []byte {
	out := make([]byte, 0, len(header)+len(name))
	out = append(out, header...)
	return append(out, name...)
}

// Seal compresses plaintext at level (storing it raw where compression does
// not pay), encrypts it bound to typ and name, and appends the envelope to
// dst.
func (s *Sealer) Seal(dst []byte, typ byte, name string, plaintext []byte, level Level) ([]byte, error) {
	var flags byte
	payload := plaintext
	if level != LevelOff {
		if c, ok := s.codec.Compress(plaintext, level); ok {
			payload, flags = c, FlagZstd
			defer s.codec.Release(c)
		}
	}
	start := len(dst)
	dst = append(dst, magic[:]...)
	dst = append(dst, typ, flags, 0, 0)
	header := dst[start : start+headerSize]
	nonce := make([]byte, crypto.NonceSize)
	r := s.rand
	if r == nil {
		r = rand.Reader
	}
	if _, err := io.ReadFull(r, nonce); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	dst = append(dst, nonce...)
	dst = s.aead.Seal(dst, nonce, payload, aad(header, name))
	sum := crc32.Checksum(dst[start:], castagnoli)
	return binary.LittleEndian.AppendUint32(dst, sum), nil
}

func authError(data []byte) error {
	if err := VerifyChecksum(data); err != nil {
		return err
	}
	return fmt.Errorf("authentication failed (wrong key, or the object was altered or moved): %w", cairn.ErrCorrupt)
}

// VerifyChecksum checks an envelope's structure and CRC without the key,
// so a verifier without the password can find corrupted objects.
func VerifyChecksum(data []byte) error {
	if len(data) < Overhead {
		return fmt.Errorf("object of %d bytes is shorter than an envelope: %w", len(data), cairn.ErrCorrupt)
	}
	if [4]byte(data[:4]) != magic {
		return fmt.Errorf("bad magic %q: %w", data[:4], cairn.ErrCorrupt)
	}
	body := data[:len(data)-checksumSize]
	want := binary.LittleEndian.Uint32(data[len(data)-checksumSize:])
	if crc32.Checksum(body, castagnoli) != want {
		return fmt.Errorf("checksum mismatch: %w", cairn.ErrCorrupt)
	}
	return nil
}

// Open verifies and decrypts an envelope named name of type typ and
// returns its plaintext, appended to dst. maxPlain bounds the decompressed
// size. Any damage, a wrong type or a wrong name is cairn.ErrCorrupt.
//
// The CRC is checked only when authentication fails, to tell damage in
// storage ("checksum mismatch") from everything else: authentication
// already covers every byte.
func (s *Sealer) Open(dst []byte, typ byte, name string, data []byte, maxPlain int) ([]byte, error) {
	if len(data) < Overhead || [4]byte(data[:4]) != magic {
		return nil, VerifyChecksum(data)
	}
	header := data[:headerSize]
	if header[4] != typ {
		if err := VerifyChecksum(data); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("object type %q, want %q: %w", header[4], typ, cairn.ErrCorrupt)
	}
	flags := header[5]
	if flags&^FlagZstd != 0 || header[6] != 0 || header[7] != 0 {
		if err := VerifyChecksum(data); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("unknown envelope flags %#x: %w", header[5:8], cairn.ErrUnsupported)
	}
	nonce := data[headerSize : headerSize+crypto.NonceSize]
	sealed := data[headerSize+crypto.NonceSize : len(data)-checksumSize]
	if flags&FlagZstd == 0 {
		if len(sealed)-crypto.TagSize > maxPlain {
			return nil, fmt.Errorf("object of %d bytes exceeds the limit of %d: %w", len(sealed)-crypto.TagSize, maxPlain, cairn.ErrCorrupt)
		}
		out, err := s.aead.Open(dst, nonce, sealed, aad(header, name))
		if err != nil {
			return nil, authError(data)
		}
		return out, nil
	}
	compressed, err := s.aead.Open(s.codec.buffer(len(sealed)), nonce, sealed, aad(header, name))
	if err != nil {
		return nil, authError(data)
	}
	defer s.codec.Release(compressed)
	out, err := s.codec.Decompress(dst, compressed, maxPlain)
	if err != nil {
		return nil, err
	}
	return out, nil
}
