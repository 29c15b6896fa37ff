package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/volbackup"
)

// memLogs is the log-archive part of a Repository, in memory.
type memLogs struct {
	Repository // the rest is not used
	pieces     map[string]memPiece
	info       *format.ArchiveInfo // nil: none stored
}

func (m *memLogs) ArchiveInfo(_ context.Context, id cairn.ID) (*format.ArchiveInfo, error) {
	if m.info == nil || m.info.ID != id {
		return nil, fmt.Errorf("archive %s: %w", id.Short(), cairn.ErrNotFound)
	}
	a := *m.info
	return &a, nil
}

type memPiece struct {
	h    format.LogPiece
	data []byte
}

func (m *memLogs) LogPieces(_ context.Context, id cairn.ID) ([]repo.LogRef, []string, error) {
	var out []repo.LogRef
	for _, p := range m.pieces {
		if p.h.Archive == id {
			out = append(out, repo.LogRef{Archive: id, Log: p.h.Log, Start: p.h.Start, End: p.h.End})
		}
	}
	repo.SortLogRefs(out)
	return out, nil, nil
}

func (m *memLogs) ReadLogPiece(_ context.Context, p repo.LogRef) (format.LogPiece, []byte, error) {
	x, ok := m.pieces[p.Name()]
	if !ok {
		return format.LogPiece{}, nil, fmt.Errorf("%s: %w", p.Name(), cairn.ErrNotFound)
	}
	return x.h, x.data, nil
}

func (m *memLogs) put(h format.LogPiece, data []byte) {
	m.pieces[h.Name()] = memPiece{h: h, data: data}
}

// Unused by these tests; present so memLogs is a Repository.
func (m *memLogs) BackupSnapshot(context.Context, cairn.ID, repo.BackupOptions) (*volbackup.Result, error) {
	return nil, cairn.ErrUnsupported
}
func (m *memLogs) BackupStream(context.Context, io.Reader, repo.StreamOptions) (*format.Manifest, error) {
	return nil, cairn.ErrUnsupported
}

const testSeg = 1 << 16

// TestWALFiles: a chain of two timelines becomes the history file and
// whole segments named by timeline; reading stops after the segment of
// the first transaction past the target; holes are refused, naming
// where.
func TestWALFiles(t *testing.T) {
	ctx := t.Context()
	id := cairn.NewID()
	m := &memLogs{pieces: map[string]memPiece{}}
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	pattern := func(tli uint32, at uint64, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(uint64(tli)*31 + (at+uint64(i))*7)
		}
		return b
	}
	// Timeline 1: segments 4 and 5 whole and 6 in part, a piece a
	// second; it switched at 6*seg+1000 to timeline 2, which holds segment
	// 6 from its start (its first 1000 bytes copied) into segment 7.
	at := uint64(4 * testSeg)
	sec := 0
	add := func(tli uint32, from, to uint64) {
		for p := from; p < to; {
			n := min(to-p, testSeg/4, testSeg-p%testSeg)
			when := t0.Add(time.Duration(sec) * time.Second)
			m.put(format.LogPiece{Archive: id, Log: walLog(tli), Start: p, End: p + n, FirstTime: when, LastTime: when, Transactions: 1}, pattern(tli, p, int(n)))
			p += n
			sec++
		}
	}
	add(1, at, 6*testSeg+1000)
	add(2, 6*testSeg, 7*testSeg+500)
	hist := []byte("1\t0/61000\tno recovery target specified\n")
	m.put(format.LogPiece{Archive: id, Log: historyLog(2), Start: 0, End: uint64(len(hist))}, hist)

	v := archiveView{segSize: testSeg, timeline: 2, end: 7*testSeg + 500,
		switches: map[uint32]uint64{1: 6*testSeg + 1000},
		spans: map[uint32][]repo.LogSpan{
			1: {{Log: walLog(1), Start: at, End: 6*testSeg + 1000}},
			2: {{Log: walLog(2), Start: 6 * testSeg, End: 7*testSeg + 500}},
		}}
	chain, err := v.walChain(1, 4*testSeg+123)
	if err != nil {
		t.Fatal(err)
	}
	want := []walStretch{{1, 4 * testSeg, 6*testSeg + 1000}, {2, 6 * testSeg, 7*testSeg + 500}}
	if !slices.Equal(chain, want) {
		t.Fatalf("chain %+v, want %+v", chain, want)
	}

	files := func(until time.Time) ([]walFile, bool) {
		var out []walFile
		found, err := walFiles(ctx, m, id, testSeg, chain, until, func(f walFile) error { out = append(out, f); return nil })
		if err != nil {
			t.Fatal(err)
		}
		return out, found
	}
	names := func(fs []walFile) []string {
		var out []string
		for _, f := range fs {
			out = append(out, f.Name)
		}
		return out
	}
	all, found := files(time.Time{})
	if found || !slices.Equal(names(all), []string{"00000002.history",
		"000000010000000000000004", "000000010000000000000005", "000000010000000000000006",
		"000000020000000000000006", "000000020000000000000007"}) {
		t.Fatalf("files %v (found %v)", names(all), found)
	}
	for _, f := range all {
		if f.Name == "00000002.history" {
			if !bytes.Equal(f.Data, hist) {
				t.Fatal("history differs")
			}
			continue
		}
		if len(f.Data) != testSeg {
			t.Fatalf("%s holds %d bytes, want a whole segment", f.Name, len(f.Data))
		}
		var tli uint32
		var hi, lo uint64
		fmt.Sscanf(f.Name, "%08X%08X%08X", &tli, &hi, &lo)
		start := lo * testSeg
		end := start + testSeg
		have := map[uint32]uint64{1: 6*testSeg + 1000, 2: 7*testSeg + 500}[tli]
		n := min(end, have) - start
		if !bytes.Equal(f.Data[:n], pattern(tli, start, int(n))) || !allZeros(f.Data[n:]) {
			t.Fatalf("%s: wrong bytes, or not zeros past the archive's end", f.Name)
		}
	}
	// A target inside segment 5 (pieces are a second apart, four to a
	// segment): reading stops after segment 5.
	some, found := files(t0.Add(5500 * time.Millisecond))
	if !found || !slices.Equal(names(some), []string{"00000002.history", "000000010000000000000004", "000000010000000000000005"}) {
		t.Fatalf("to 5.5 s: %v (found %v)", names(some), found)
	}
	// Past every transaction: all of it, and no transaction found.
	if rest, found := files(t0.Add(time.Hour)); found || len(rest) != len(all) {
		t.Fatalf("past the end: %v (found %v)", names(rest), found)
	}

	// Holes: a piece gone from timeline 1, a timeline whose switch is
	// unknown, a backup on a timeline the archive does not have.
	holed := v
	holed.spans = map[uint32][]repo.LogSpan{1: {{Log: walLog(1), Start: at, End: 5 * testSeg}, {Log: walLog(1), Start: 5*testSeg + 10, End: 6*testSeg + 1000}}, 2: v.spans[2]}
	if _, err := holed.walChain(1, at); !errors.Is(err, cairn.ErrInvalid) || !strings.Contains(err.Error(), "timeline 1") {
		t.Fatalf("chain across a hole: %v", err)
	}
	noSwitch := v
	noSwitch.switches = map[uint32]uint64{}
	if _, err := noSwitch.walChain(1, at); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("chain without the switch: %v", err)
	}
	if _, err := v.walChain(3, at); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("chain from timeline 3: %v", err)
	}
	// A fork: timeline 3 left timeline 1 at segment 5, before 2 did (a
	// recover in place); timeline 2 is off its history. The chain goes
	// from 1 to 3, and the files hold every timeline's history, so the
	// server promoted at the end takes timeline 4.
	hist3 := []byte("1\t0/51000\tbefore 2000-01-01 00:00:00+00\n")
	m.put(format.LogPiece{Archive: id, Log: historyLog(3), Start: 0, End: uint64(len(hist3))}, hist3)
	forked := v
	forked.timeline, forked.end, forked.switches = 3, 5*testSeg+3000, map[uint32]uint64{1: 5*testSeg + 0x1000}
	forked.spans = map[uint32][]repo.LogSpan{1: v.spans[1], 2: v.spans[2], 3: {{Log: walLog(3), Start: 5 * testSeg, End: 5*testSeg + 3000}}}
	add(3, 5*testSeg, 5*testSeg+3000)
	fchain, err := forked.walChain(1, 4*testSeg+123)
	if want := []walStretch{{1, 4 * testSeg, 5*testSeg + 0x1000}, {3, 5 * testSeg, 5*testSeg + 3000}}; err != nil || !slices.Equal(fchain, want) {
		t.Fatalf("chain through a fork %+v (%v), want %+v", fchain, err, want)
	}
	if _, err := forked.walChain(2, 6*testSeg); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("a chain from the timeline a fork left: %v", err)
	}
	var fnames []string
	if _, err := walFiles(ctx, m, id, testSeg, fchain, time.Time{}, func(f walFile) error { fnames = append(fnames, f.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fnames, []string{"00000002.history", "00000003.history",
		"000000010000000000000004", "000000010000000000000005", "000000030000000000000005"}) {
		t.Fatalf("files through a fork: %v", fnames)
	}
	// Timeline 1's segment 5 holds what the fork left of timeline 1
	// only up to the switch, zeros after: the history past it (a mistake
	// a recover undid) is never handed to a server, which would replay
	// it if it read that file for want of timeline 3's. And the piece
	// that runs past the switch, whose last commit is after the target,
	// does not end the files before timeline 3's: the target lies on it.
	var seg5 []byte
	var early []string
	if _, err := walFiles(ctx, m, id, testSeg, fchain, t0.Add(3500*time.Millisecond), func(f walFile) error {
		early = append(early, f.Name)
		if f.Name == "000000010000000000000005" {
			seg5 = f.Data
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(early, "000000030000000000000005") {
		t.Fatalf("files through a fork to a target on the new timeline: %v", early)
	}
	if !bytes.Equal(seg5[:0x1000], pattern(1, 5*testSeg, 0x1000)) || !allZeros(seg5[0x1000:]) {
		t.Fatal("timeline 1's switch segment holds more than its history up to the switch")
	}

	delete(m.pieces, format.LogPieceName(id, walLog(1), 5*testSeg, 5*testSeg+testSeg/4))
	if _, err := walFiles(ctx, m, id, testSeg, chain, time.Time{}, func(walFile) error { return nil }); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("files across a missing piece: %v", err)
	}
	if walFileName(1, 0x100000000+3*testSeg, testSeg) != "000000010000000100000003" {
		t.Fatalf("name %s", walFileName(1, 0x100000000+3*testSeg, testSeg))
	}
}

func allZeros(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// TestLoadArchiveAbandoned: read with no timeline named, an archive
// follows its newest timeline or generation that no undone recover left
// (the archive description's abandoned ones); named, it follows the one
// named, abandoned or not.
func TestLoadArchiveAbandoned(t *testing.T) {
	ctx := t.Context()
	id := cairn.NewID()
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	m := &memLogs{pieces: map[string]memPiece{}}
	piece := func(log string, start, end uint64, sec int) {
		when := t0.Add(time.Duration(sec) * time.Second)
		m.put(format.LogPiece{Archive: id, Log: log, Start: start, End: end, FirstTime: when, LastTime: when, Transactions: 1},
			make([]byte, end-start))
	}
	// Timeline 1 to 6 segments and a bit; 2 and 3 branch off it (two
	// recovers) and hold a little each.
	piece(walLog(1), 4*testSeg, 6*testSeg+1000, 1)
	piece(walLog(2), 5*testSeg, 5*testSeg+100, 2)
	piece(walLog(3), 5*testSeg, 5*testSeg+200, 3)
	for tli, at := range map[uint32]string{2: "0/50064", 3: "0/50080"} {
		h := []byte("1\t" + at + "\tbefore\n")
		m.put(format.LogPiece{Archive: id, Log: historyLog(tli), Start: 0, End: uint64(len(h))}, h)
	}
	// MariaDB's generations 1 and 2, in the same store for brevity.
	piece(binlogLog(1, "mysql-bin.000001"), 0, 500, 4)
	piece(binlogLog(2, "mysql-bin.000001"), 0, 300, 5)

	for _, tc := range []struct {
		name      string
		info      *format.ArchiveInfo
		tli       uint32
		wantTLI   uint32
		wantEnd   uint64
		wantGen   uint32
		wantBinTo uint64
	}{
		{"no description", nil, 0, 3, 5*testSeg + 200, 2, 300},
		{"none abandoned", &format.ArchiveInfo{ID: id}, 0, 3, 5*testSeg + 200, 2, 300},
		{"the newest abandoned", &format.ArchiveInfo{ID: id, Abandoned: []uint32{3}}, 0, 2, 5*testSeg + 100, 2, 300},
		{"both branches abandoned", &format.ArchiveInfo{ID: id, Abandoned: []uint32{2, 3}}, 0, 1, 6*testSeg + 1000, 1, 500},
		{"named, though abandoned", &format.ArchiveInfo{ID: id, Abandoned: []uint32{2, 3}}, 3, 3, 5*testSeg + 200, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m.info = tc.info
			v, err := loadArchive(ctx, m, id, tc.tli)
			if err != nil {
				t.Fatal(err)
			}
			if v.timeline != tc.wantTLI || v.end != tc.wantEnd {
				t.Fatalf("WAL archive read along timeline %d to %x, want %d to %x", v.timeline, v.end, tc.wantTLI, tc.wantEnd)
			}
			if tc.wantGen == 0 {
				return
			}
			b, err := loadBinlogArchive(ctx, m, id, 0)
			if err != nil {
				t.Fatal(err)
			}
			if b.timeline != tc.wantGen || b.end != tc.wantBinTo {
				t.Fatalf("binary log archive read along generation %d to %d, want %d to %d", b.timeline, b.end, tc.wantGen, tc.wantBinTo)
			}
		})
	}
}
