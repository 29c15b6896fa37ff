package format_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/crypto"
	"github.com/cairnproject/cairn/internal/repo/format"
)

var update = flag.Bool("update", false, "rewrite golden files")

// fixedKey is a master key with known bytes, for golden files.
func fixedKey(t testing.TB) *crypto.MasterKey {
	raw := make([]byte, crypto.MasterKeySize)
	for i := range raw {
		raw[i] = byte(i)
	}
	mk, err := crypto.UnmarshalMasterKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return mk
}

// zeros is a nonce source of zero bytes: deterministic output for goldens.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: encoding changed; a format change needs a new version and docs/format.md", name)
	}
}

func sampleEntries() []format.Entry {
	var id format.ChunkID
	for i := range id {
		id[i] = byte(0xa0 + i)
	}
	return []format.Entry{
		{Length: 4 << 20, Chunk: id},
		{Length: 4 << 20, Zero: true},
		{Length: 1000, Chunk: id, ChunkOffset: 5},
	}
}

func TestGoldenFormats(t *testing.T) {
	mk := fixedKey(t)
	s := format.NewSealer(mk, format.NewCodec(), zeros{})
	text := bytes.Repeat([]byte("cairn chunk data "), 200)

	// zstd output may change with the library version, so the compressed
	// golden file pins what must still be read, not what is written.
	chunk, err := s.Seal(nil, format.TypeChunk, "chunks/aa/x", text, format.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		golden(t, "chunk-zstd.bin", chunk)
	}
	chunk, err = os.ReadFile(filepath.Join("testdata", "golden", "chunk-zstd.bin"))
	if err != nil {
		t.Fatal(err)
	}

	raw, err := s.Seal(nil, format.TypeChunk, "chunks/aa/y", []byte("tiny"), format.LevelDefault)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "chunk-raw.bin", raw)

	golden(t, "index.bin", format.EncodeIndex(sampleEntries()))
	golden(t, "idset.bin", format.EncodeIDSet([]format.ChunkID{sampleEntries()[0].Chunk, {}}))

	for _, tc := range []struct {
		name, object string
		data         []byte
		typ          byte
		want         []byte
	}{
		{"chunk-zstd.bin", "chunks/aa/x", chunk, format.TypeChunk, text},
		{"chunk-raw.bin", "chunks/aa/y", raw, format.TypeChunk, []byte("tiny")},
	} {
		got, err := s.Open(nil, tc.typ, tc.object, tc.data, 1<<20)
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Fatalf("%s: open: %v", tc.name, err)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	mk := fixedKey(t)
	s := format.NewSealer(mk, format.NewCodec(), nil)
	plain := bytes.Repeat([]byte("abc"), 5000)
	sealed, err := s.Seal(nil, format.TypeIndex, "indexes/x/0000", plain, format.LevelFastest)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := crypto.NewMasterKey(nil)
	tests := []struct {
		name   string
		s      *format.Sealer
		typ    byte
		object string
		data   []byte
		limit  int
		want   error
	}{
		{"wrong type", s, format.TypeChunk, "indexes/x/0000", sealed, 1 << 20, cairn.ErrCorrupt},
		{"wrong name", s, format.TypeIndex, "indexes/y/0000", sealed, 1 << 20, cairn.ErrCorrupt},
		{"wrong key", format.NewSealer(other, format.NewCodec(), nil), format.TypeIndex, "indexes/x/0000", sealed, 1 << 20, cairn.ErrCorrupt},
		{"too large", s, format.TypeIndex, "indexes/x/0000", sealed, 100, cairn.ErrCorrupt},
		{"truncated", s, format.TypeIndex, "indexes/x/0000", sealed[:len(sealed)-1], 1 << 20, cairn.ErrCorrupt},
		{"empty", s, format.TypeIndex, "indexes/x/0000", nil, 1 << 20, cairn.ErrCorrupt},
	}
	// A flip anywhere but in the CRC trailer fails authentication (a flip
	// in the trailer leaves the data intact; VerifyChecksum catches it).
	for i := range 8 * (len(sealed) - 4) {
		if i%97 != 0 {
			continue
		}
		flipped := bytes.Clone(sealed)
		flipped[i/8] ^= 1 << (i % 8)
		tests = append(tests, struct {
			name   string
			s      *format.Sealer
			typ    byte
			object string
			data   []byte
			limit  int
			want   error
		}{"bit flip", s, format.TypeIndex, "indexes/x/0000", flipped, 1 << 20, cairn.ErrCorrupt})
	}
	for _, tc := range tests {
		if _, err := tc.s.Open(nil, tc.typ, tc.object, tc.data, tc.limit); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// The keyless check finds every flipped bit too.
	for i := range 8 * len(sealed) {
		flipped := bytes.Clone(sealed)
		flipped[i/8] ^= 1 << (i % 8)
		if format.VerifyChecksum(flipped) == nil {
			t.Fatalf("bit %d flipped, checksum still verifies", i)
		}
	}
}

func TestCompressionChoices(t *testing.T) {
	c := format.NewCodec()
	random := make([]byte, 1<<20)
	for i := range random {
		random[i] = byte(i*7919 ^ i>>3*31 ^ i>>11*17)
	}
	if _, ok := c.Compress(bytes.Repeat([]byte("x"), 1<<20), format.LevelFastest); !ok {
		t.Error("repetitive data not compressed")
	}
	for _, n := range []int{0, 1, 100, 1023, 1024, 1025, 5000} {
		data := bytes.Repeat([]byte("y"), n)
		out, ok := c.Compress(data, format.LevelDefault)
		if !ok {
			continue
		}
		back, err := c.Decompress(nil, out, n)
		if err != nil || !bytes.Equal(back, data) {
			t.Fatalf("%d bytes: %v", n, err)
		}
	}
}

func TestIndexRoundTrip(t *testing.T) {
	entries := sampleEntries()
	got, err := format.DecodeIndex(format.EncodeIndex(entries))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(entries) {
		t.Fatalf("%d entries", len(got))
	}
	for i := range got {
		if got[i] != entries[i] {
			t.Fatalf("entry %d: %+v, want %+v", i, got[i], entries[i])
		}
	}
	empty, err := format.DecodeIndex(format.EncodeIndex(nil))
	if err != nil || len(empty) != 0 {
		t.Fatalf("empty index: %v %v", empty, err)
	}
}

func FuzzDecodeIndex(f *testing.F) {
	f.Add(format.EncodeIndex(sampleEntries()))
	f.Add(format.EncodeIndex(nil))
	f.Add([]byte("CIDX\x01\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := format.DecodeIndex(data)
		if err != nil {
			if !errors.Is(err, cairn.ErrCorrupt) && !errors.Is(err, cairn.ErrUnsupported) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if !bytes.Equal(format.EncodeIndex(entries), data) {
			t.Fatal("index does not re-encode to the same bytes: two encodings decode alike")
		}
	})
}

func FuzzDecodeIDSet(f *testing.F) {
	f.Add(format.EncodeIDSet([]format.ChunkID{{1}, {2}}))
	f.Add(format.EncodeIDSet(nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		ids, err := format.DecodeIDSet(data)
		if err != nil {
			return
		}
		if !bytes.Equal(format.EncodeIDSet(ids), data) {
			t.Fatal("id set does not re-encode to the same bytes")
		}
	})
}

func FuzzOpen(f *testing.F) {
	mk := fixedKey(f)
	s := format.NewSealer(mk, format.NewCodec(), zeros{})
	for _, plain := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("abcd"), 1000)} {
		sealed, err := s.Seal(nil, format.TypeChunk, "chunks/aa/x", plain, format.LevelFastest)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(sealed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := s.Open(nil, format.TypeChunk, "chunks/aa/x", data, 1<<20); err != nil &&
			!errors.Is(err, cairn.ErrCorrupt) && !errors.Is(err, cairn.ErrUnsupported) {
			t.Fatalf("unexpected error class: %v", err)
		}
		_ = format.VerifyChecksum(data)
	})
}

func FuzzDecodeMetadata(f *testing.F) {
	f.Add([]byte(`{"version":1,"id":"00112233445566778899aabbccddeeff","size":4194304,"chunk_size":4194304,"index":[{"name":"indexes/x/0000","entries":1,"length":4194304}]}`))
	f.Add([]byte(`{"format":"cairn-repository","version":1,"chunk_size":4194304,"gc":{"consistency_margin":"0s","session_timeout":"15m0s"}}`))
	f.Add([]byte(`{"version":1,"id":"00112233445566778899aabbccddeeff","kind":"password","kdf":{"algorithm":"argon2id","time":1,"memory_kib":64,"threads":1,"salt":"AAAAAAAAAAAAAAAAAAAAAA=="},"master_key":""}`))
	f.Add([]byte(`{"version":1,"id":"00112233445566778899aabbccddeeff","seen_condemned":[]}`))
	f.Add(mustJSON(f, sampleManifest(format.KindStream)))
	f.Fuzz(func(t *testing.T, data []byte) {
		if m, err := format.DecodeManifest(data); err == nil {
			var total int64
			for _, p := range m.Index {
				total += p.Length
			}
			if total != m.Size {
				t.Fatal("manifest accepted with inconsistent index")
			}
		}
		if c, err := format.DecodeConfig(data); err == nil && format.ValidateChunkSize(c.ChunkSize) != nil {
			t.Fatal("config accepted with a bad chunk size")
		}
		_, _ = format.DecodeKeyFile(data)
		_, _ = format.DecodeSession(data)
	})
}

// sampleManifest returns a manifest of the given kind with every field
// set, for golden files.
func sampleManifest(kind string) *format.Manifest {
	id := cairn.ID{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}
	sess := cairn.ID{0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00}
	at := time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)
	m := &format.Manifest{
		Version: 1, ID: id, Kind: kind, Session: sess, Time: at, DataTime: at.Add(-time.Minute),
		Source: "/dev/vdb", Hostname: "host", Size: 8<<20 + 1000, ChunkSize: 4 << 20, Compression: format.LevelFastest,
		Tags:  map[string]string{"cairn.volume": "v1"},
		Index: []format.IndexPart{{Name: "indexes/00112233445566778899aabbccddeeff/0000", Entries: 3, Length: 8<<20 + 1000}},
		Stats: format.BackupStats{BytesRead: 8<<20 + 1000, BytesZero: 4 << 20, BytesNew: 4<<20 + 1000, BytesStored: 1234,
			ChunksNew: 2, Duration: format.Duration(1500 * time.Millisecond)},
	}
	if kind == format.KindStream {
		m.Version = format.ManifestVersionStream
		m.Source = "db1/pg_dump"
		m.ChunkSize = 8 << 20
		m.Tags = map[string]string{"db": "db1"}
		var h format.Hash
		for i := range h {
			h[i] = byte(0xc0 + i)
		}
		m.Stream = &format.StreamInfo{Hash: h, Chunker: format.ChunkerParams{
			Algorithm: format.ChunkerRabinKeyed, MinSize: 512 << 10, MaxSize: 8 << 20, AverageBits: 20}}
	} else {
		parent := sess
		m.Parent = &parent
	}
	return m
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The manifests' JSON is pinned: a volume manifest of version 1 as
// earlier builds wrote it (no kind), one as this build writes it, and a
// stream manifest (version 2). Each decodes, and re-encodes to itself.
func TestGoldenManifests(t *testing.T) {
	for _, tc := range []struct {
		file, kind string
		wantKind   string
	}{
		{"manifest-volume-v1-nokind.json", "", format.KindVolume},
		{"manifest-volume-v1.json", format.KindVolume, format.KindVolume},
		{"manifest-stream-v2.json", format.KindStream, format.KindStream},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data := mustJSON(t, sampleManifest(tc.kind))
			golden(t, tc.file, data)
			m, err := format.DecodeManifest(data)
			if err != nil {
				t.Fatal(err)
			}
			if m.Kind != tc.wantKind || m.IsStream() != (tc.wantKind == format.KindStream) {
				t.Fatalf("decoded kind %q, want %q", m.Kind, tc.wantKind)
			}
			want := sampleManifest(tc.wantKind)
			if tc.kind == "" {
				want = sampleManifest("")
				want.Kind = format.KindVolume
			}
			if !reflect.DeepEqual(m, want) {
				t.Fatalf("decoded %+v\nwant    %+v", m, want)
			}
		})
	}
}

func TestDecodeManifestRejects(t *testing.T) {
	edit := func(kind string, f func(m *format.Manifest)) []byte {
		m := sampleManifest(kind)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"version 3", edit(format.KindStream, func(m *format.Manifest) { m.Version = 3 }), cairn.ErrUnsupported},
		{"stream kind in version 1", edit(format.KindStream, func(m *format.Manifest) { m.Version = 1 }), cairn.ErrCorrupt},
		{"stream fields in a version-1 volume", edit(format.KindStream, func(m *format.Manifest) { m.Version, m.Kind = 1, "" }), cairn.ErrCorrupt},
		{"unknown kind", edit(format.KindStream, func(m *format.Manifest) { m.Kind = "tape" }), cairn.ErrCorrupt},
		{"version 2 without kind", edit(format.KindStream, func(m *format.Manifest) { m.Kind = "" }), cairn.ErrCorrupt},
		{"stream without stream fields", edit(format.KindStream, func(m *format.Manifest) { m.Stream = nil }), cairn.ErrCorrupt},
		{"volume with stream fields", edit(format.KindStream, func(m *format.Manifest) { m.Kind = format.KindVolume }), cairn.ErrCorrupt},
		{"stream with a parent", edit(format.KindStream, func(m *format.Manifest) { id := m.ID; m.Parent = &id }), cairn.ErrCorrupt},
		{"chunk size not the chunker's maximum", edit(format.KindStream, func(m *format.Manifest) { m.ChunkSize = 4 << 20 }), cairn.ErrCorrupt},
		{"minimum above maximum", edit(format.KindStream, func(m *format.Manifest) { m.Stream.Chunker.MinSize = 16 << 20 }), cairn.ErrCorrupt},
		{"no algorithm", edit(format.KindStream, func(m *format.Manifest) { m.Stream.Chunker.Algorithm = "" }), cairn.ErrCorrupt},
		{"average bits", edit(format.KindStream, func(m *format.Manifest) { m.Stream.Chunker.AverageBits = 0 }), cairn.ErrCorrupt},
		{"short hash", bytes.Replace(mustJSON(t, sampleManifest(format.KindStream)), []byte(`"blake3":"c0c1`), []byte(`"blake3":"c1`), 1), cairn.ErrCorrupt},
		{"upper-case hash", bytes.Replace(mustJSON(t, sampleManifest(format.KindStream)), []byte(`"blake3":"c0c1`), []byte(`"blake3":"C0C1`), 1), cairn.ErrCorrupt},
		{"index short of the size", edit(format.KindStream, func(m *format.Manifest) { m.Size++ }), cairn.ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := format.DecodeManifest(tc.data); !errors.Is(err, tc.want) {
				t.Fatalf("%s: %v, want %v", tc.data, err, tc.want)
			}
		})
	}
}

// FuzzDecodeManifest: a manifest that decodes is consistent (its index
// covers its size; a stream has its fields and the chunker's maximum as
// chunk size; a volume has none), and encoding it again and decoding that
// gives the same manifest.
func FuzzDecodeManifest(f *testing.F) {
	for _, kind := range []string{"", format.KindVolume, format.KindStream} {
		f.Add(mustJSON(f, sampleManifest(kind)))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := format.DecodeManifest(data)
		if err != nil {
			if !errors.Is(err, cairn.ErrCorrupt) && !errors.Is(err, cairn.ErrUnsupported) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		var total int64
		for _, p := range m.Index {
			total += p.Length
		}
		if total != m.Size {
			t.Fatal("manifest accepted with an index that does not cover it")
		}
		switch m.Kind {
		case format.KindVolume:
			if m.Stream != nil {
				t.Fatal("volume manifest accepted with stream fields")
			}
		case format.KindStream:
			if m.Stream == nil || m.Parent != nil || m.ChunkSize != m.Stream.Chunker.MaxSize || m.Version != format.ManifestVersionStream {
				t.Fatalf("stream manifest accepted inconsistent: %+v", m)
			}
		default:
			t.Fatalf("manifest accepted with kind %q", m.Kind)
		}
		again, err := format.DecodeManifest(mustJSON(t, m))
		if err != nil {
			t.Fatalf("a decoded manifest does not decode again: %v", err)
		}
		if !bytes.Equal(mustJSON(t, again), mustJSON(t, m)) {
			t.Fatal("a decoded manifest changes when encoded and decoded again")
		}
	})
}
