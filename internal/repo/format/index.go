package format

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/crypto"
)

// ChunkID names a chunk: the keyed BLAKE3 hash of its plaintext.
type ChunkID [crypto.HashSize]byte

// String returns the 64-character hex form.
func (id ChunkID) String() string { return hex.EncodeToString(id[:]) }

// ObjectName returns the chunk's object name, fanned out over 256
// directories by its first byte.
func (id ChunkID) ObjectName() string {
	s := id.String()
	return "chunks/" + s[:2] + "/" + s
}

// ParseChunkID parses the hex form.
func ParseChunkID(s string) (ChunkID, error) {
	var id ChunkID
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("chunk id %q: %w", s, cairn.ErrInvalid)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("chunk id %q: %w", s, cairn.ErrInvalid)
	}
	return id, nil
}

// ChunkIDFromObjectName parses "chunks/ab/<hex>".
func ChunkIDFromObjectName(name string) (ChunkID, bool) {
	const prefix = "chunks/"
	if len(name) != len(prefix)+3+2*crypto.HashSize || name[:len(prefix)] != prefix || name[len(prefix)+2] != '/' {
		return ChunkID{}, false
	}
	id, err := ParseChunkID(name[len(prefix)+3:])
	if err != nil || name[len(prefix):len(prefix)+2] != id.String()[:2] {
		return ChunkID{}, false
	}
	return id, true
}

// uvarint decodes a minimally encoded unsigned varint; n <= 0 on any
// malformed or non-minimal encoding, so every value has exactly one
// encoding.
func uvarint(p []byte) (uint64, int) {
	v, n := binary.Uvarint(p)
	if n <= 0 {
		return 0, n
	}
	var tmp [binary.MaxVarintLen64]byte
	if binary.PutUvarint(tmp[:], v) != n {
		return 0, -1
	}
	return v, n
}

// Entry maps Length bytes of the source, starting where the previous entry
// ended, to their content: zeros, or the bytes of chunk Chunk starting at
// ChunkOffset.
type Entry struct {
	Length      int64
	Zero        bool
	Chunk       ChunkID
	ChunkOffset int64
}

const (
	kindZero  = 0
	kindChunk = 1
)

var indexMagic = [4]byte{'C', 'I', 'D', 'X'}

// MaxEntryLength bounds one entry; a chunk is never larger.
const MaxEntryLength = 1 << 30

// EncodeIndex serialises index entries (one part of a backup's index).
func EncodeIndex(entries []Entry) []byte {
	out := make([]byte, 0, 16+len(entries)*(crypto.HashSize+6))
	out = append(out, indexMagic[:]...)
	out = append(out, 1) // version
	out = binary.AppendUvarint(out, uint64(len(entries)))
	for _, e := range entries {
		out = binary.AppendUvarint(out, uint64(e.Length))
		if e.Zero {
			out = append(out, kindZero)
			continue
		}
		out = append(out, kindChunk)
		out = append(out, e.Chunk[:]...)
		out = binary.AppendUvarint(out, uint64(e.ChunkOffset))
	}
	return out
}

// DecodeIndex parses EncodeIndex's output. Any malformed input is
// cairn.ErrCorrupt.
func DecodeIndex(data []byte) ([]Entry, error) {
	bad := func(what string) ([]Entry, error) {
		return nil, fmt.Errorf("index: %s: %w", what, cairn.ErrCorrupt)
	}
	if len(data) < 5 || [4]byte(data[:4]) != indexMagic {
		return bad("bad magic")
	}
	if data[4] != 1 {
		return nil, fmt.Errorf("index version %d: %w", data[4], cairn.ErrUnsupported)
	}
	p := data[5:]
	count, n := uvarint(p)
	if n <= 0 {
		return bad("bad count")
	}
	p = p[n:]
	// Every entry takes at least two bytes; a larger count is a lie that
	// must not drive an allocation.
	if count > uint64(len(p))/2 {
		return bad("count exceeds data")
	}
	entries := make([]Entry, 0, count)
	for range count {
		length, n := uvarint(p)
		if n <= 0 || length == 0 || length > MaxEntryLength || len(p) < n+1 {
			return bad("bad entry length")
		}
		kind := p[n]
		p = p[n+1:]
		switch kind {
		case kindZero:
			entries = append(entries, Entry{Length: int64(length), Zero: true})
		case kindChunk:
			if len(p) < crypto.HashSize {
				return bad("truncated chunk id")
			}
			e := Entry{Length: int64(length)}
			copy(e.Chunk[:], p)
			p = p[crypto.HashSize:]
			off, n := uvarint(p)
			if n <= 0 || off > MaxEntryLength {
				return bad("bad chunk offset")
			}
			p = p[n:]
			e.ChunkOffset = int64(off)
			entries = append(entries, e)
		default:
			return bad(fmt.Sprintf("unknown entry kind %d", kind))
		}
	}
	if len(p) != 0 {
		return bad("trailing bytes")
	}
	return entries, nil
}

var idSetMagic = [4]byte{'C', 'I', 'D', 'S'}

// EncodeIDSet serialises a list of chunk IDs.
func EncodeIDSet(ids []ChunkID) []byte {
	out := make([]byte, 0, 16+len(ids)*crypto.HashSize)
	out = append(out, idSetMagic[:]...)
	out = append(out, 1)
	out = binary.AppendUvarint(out, uint64(len(ids)))
	for _, id := range ids {
		out = append(out, id[:]...)
	}
	return out
}

// DecodeIDSet parses EncodeIDSet's output.
func DecodeIDSet(data []byte) ([]ChunkID, error) {
	if len(data) < 5 || [4]byte(data[:4]) != idSetMagic {
		return nil, fmt.Errorf("id set: bad magic: %w", cairn.ErrCorrupt)
	}
	if data[4] != 1 {
		return nil, fmt.Errorf("id set version %d: %w", data[4], cairn.ErrUnsupported)
	}
	count, n := uvarint(data[5:])
	if n <= 0 {
		return nil, fmt.Errorf("id set: bad count: %w", cairn.ErrCorrupt)
	}
	p := data[5+n:]
	if count > uint64(len(p))/crypto.HashSize || uint64(len(p)) != count*crypto.HashSize {
		return nil, fmt.Errorf("id set: %d ids in %d bytes: %w", count, len(p), cairn.ErrCorrupt)
	}
	ids := make([]ChunkID, count)
	for i := range ids {
		copy(ids[i][:], p[i*crypto.HashSize:])
	}
	return ids, nil
}
