package format_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/repo/format"
)

func samplePiece() format.LogPiece {
	at := time.Date(2030, 1, 2, 3, 4, 5, 600000, time.UTC)
	return format.LogPiece{
		Version: 1, Archive: cairn.ID{0xab, 1, 2, 3}, Log: "wal-00000002",
		Start: 0x1000000, End: 0x1000000 + 11,
		FirstTime: at, LastTime: at.Add(time.Second), Transactions: 3,
		ServerTime: at.Add(2 * time.Second), Archived: at.Add(3 * time.Second),
	}
}

func TestLogPieceGolden(t *testing.T) {
	h := samplePiece()
	payload, err := format.EncodeLogPiece(h, []byte("hello world"))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "logpiece.bin", payload)
	s := format.NewSealer(fixedKey(t), format.NewCodec(), zeros{})
	sealed, err := s.Seal(nil, format.TypeLogPiece, h.Name(), payload, format.LevelFastest)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "logpiece-sealed.bin", sealed)

	plain, err := s.Open(nil, format.TypeLogPiece, h.Name(), sealed, format.MaxLogPiece+format.MaxMetadataSize)
	if err != nil {
		t.Fatal(err)
	}
	got, data, err := format.DecodeLogPiece(plain)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "hello world" || !got.FirstTime.Equal(h.FirstTime) || got.Name() != h.Name() || got.Transactions != 3 {
		t.Fatalf("decoded %+v %q", got, data)
	}
	// Renamed: the envelope's additional data catches it.
	other := format.LogPieceName(h.Archive, h.Log, h.Start+1, h.End+1)
	if _, err := s.Open(nil, format.TypeLogPiece, other, sealed, 1<<20); !errors.Is(err, cairn.ErrCorrupt) {
		t.Fatalf("renamed piece opened: %v", err)
	}
}

func TestLogPieceNames(t *testing.T) {
	id := cairn.ID{1}
	name := format.LogPieceName(id, "wal-00000001", 0x16b374d8, 0x16b374d8+4096)
	if want := "logs/" + id.String() + "/wal-00000001/0000000016b374d8-0000000016b384d8"; name != want {
		t.Fatalf("name %s, want %s", name, want)
	}
	gid, log, s, e, err := format.ParseLogPieceName(name)
	if err != nil || gid != id || log != "wal-00000001" || s != 0x16b374d8 || e != s+4096 {
		t.Fatalf("parsed %v %q %x %x %v", gid, log, s, e, err)
	}
	for _, bad := range []string{
		"logs/" + id.String() + "/info",
		"logs/" + id.String() + "/wal/0000000000000010-0000000000000010",                             // empty
		"logs/" + id.String() + "/wal/0000000000000010-0000000000000001",                             // backwards
		"logs/" + id.String() + "/wal/0000000000000000-0000000100000000",                             // too long
		"logs/" + id.String() + "/wal/000000000000000A-000000000000000F",                             // upper case
		"logs/" + id.String() + "/Wal/0000000000000000-0000000000000001",                             // log name
		"logs/" + id.String() + "/info/0000000000000000-0000000000000001",                            // reserved
		"logs/" + id.String() + "/wal/x/0000000000000000-0000000000000001",                           // depth
		"logs/nothex/wal/0000000000000000-0000000000000001",                                          // archive
		"chunks/" + id.String() + "/wal/0000000000000000-0000000000000001",                           // prefix
		"logs/" + id.String() + "/" + strings.Repeat("a", 65) + "/0000000000000000-0000000000000001", // long name
	} {
		if _, _, _, _, err := format.ParseLogPieceName(bad); !errors.Is(err, cairn.ErrCorrupt) {
			t.Errorf("%s: %v, want corrupt", bad, err)
		}
	}
}

func TestLogPieceRefused(t *testing.T) {
	good := samplePiece()
	for _, tc := range []struct {
		name string
		edit func(*format.LogPiece)
		data string
	}{
		{"length differs from the range", func(*format.LogPiece) {}, "hello"},
		{"empty range", func(h *format.LogPiece) { h.End = h.Start }, ""},
		{"no archive", func(h *format.LogPiece) { h.Archive = cairn.ID{} }, "hello world"},
		{"bad log name", func(h *format.LogPiece) { h.Log = "a/b" }, "hello world"},
		{"times backwards", func(h *format.LogPiece) { h.LastTime = h.FirstTime.Add(-1) }, "hello world"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := good
			tc.edit(&h)
			if _, err := format.EncodeLogPiece(h, []byte(tc.data)); !errors.Is(err, cairn.ErrInvalid) {
				t.Fatalf("encode: %v, want invalid", err)
			}
		})
	}
	payload, err := format.EncodeLogPiece(good, []byte("hello world"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		payload []byte
	}{
		{"truncated", payload[:len(payload)-1]},
		{"extended", append(bytes.Clone(payload), 'x')},
		{"no magic", payload[1:]},
		{"header length beyond the payload", append([]byte("CLOG\xff\xff\x00\x00"), payload[8:]...)},
		{"two headers", bytes.Replace(payload, []byte("}hello"), []byte("}{}hello"), 1)},
	} {
		if _, _, err := format.DecodeLogPiece(tc.payload); !errors.Is(err, cairn.ErrCorrupt) {
			t.Errorf("%s: %v, want corrupt", tc.name, err)
		}
	}
}

func TestArchiveInfo(t *testing.T) {
	for _, tc := range []struct {
		js   string
		want error
	}{
		{`{"version":1,"id":"00112233445566778899aabbccddeeff","datastore":"postgresql","instance":"i"}`, nil},
		{`{"version":2,"id":"00112233445566778899aabbccddeeff","datastore":"postgresql"}`, cairn.ErrUnsupported},
		{`{"version":1,"datastore":"postgresql"}`, cairn.ErrCorrupt},
		{`{"version":1,"id":"00112233445566778899aabbccddeeff"}`, cairn.ErrCorrupt},
		{`[`, cairn.ErrCorrupt},
		{`{"version":1,"id":"00112233445566778899aabbccddeeff","datastore":"postgresql","abandoned":[2,3]}`, nil},
		{`{"version":1,"id":"00112233445566778899aabbccddeeff","datastore":"postgresql","abandoned":[0]}`, cairn.ErrCorrupt},
		{`{"version":1,"id":"00112233445566778899aabbccddeeff","datastore":"postgresql","abandoned":[-1]}`, cairn.ErrCorrupt},
	} {
		if _, err := format.DecodeArchiveInfo([]byte(tc.js)); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.js, err, tc.want)
		}
	}
}

func FuzzDecodeLogPiece(f *testing.F) {
	payload, err := format.EncodeLogPiece(samplePiece(), []byte("hello world"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(payload)
	f.Add([]byte("CLOG\x02\x00\x00\x00{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, body, err := format.DecodeLogPiece(data)
		if err != nil {
			if !errors.Is(err, cairn.ErrCorrupt) && !errors.Is(err, cairn.ErrUnsupported) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if uint64(len(body)) != h.End-h.Start {
			t.Fatalf("accepted %d bytes for [%d, %d)", len(body), h.Start, h.End)
		}
		if _, _, _, _, err := format.ParseLogPieceName(h.Name()); err != nil {
			t.Fatalf("accepted a header whose name does not parse: %v", err)
		}
	})
}

func FuzzParseLogPieceName(f *testing.F) {
	f.Add(format.LogPieceName(cairn.ID{1}, "wal-00000001", 0, 8192))
	f.Add("logs/x/y/z")
	f.Fuzz(func(t *testing.T, name string) {
		id, log, s, e, err := format.ParseLogPieceName(name)
		if err != nil {
			return
		}
		if format.LogPieceName(id, log, s, e) != name {
			t.Fatalf("%q parses but does not print back", name)
		}
	})
}
