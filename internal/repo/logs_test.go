package repo_test

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
)

func putPiece(t *testing.T, r *repo.Repository, id cairn.ID, log string, start uint64, data []byte) repo.LogRef {
	t.Helper()
	h := format.LogPiece{Archive: id, Log: log, Start: start, End: start + uint64(len(data)),
		Archived: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	if _, err := r.PutLogPiece(t.Context(), h, data); err != nil {
		t.Fatal(err)
	}
	return repo.LogRef{Archive: id, Log: log, Start: h.Start, End: h.End}
}

func TestLogArchive(t *testing.T) {
	r, be := newMemRepo(t)
	ctx := t.Context()
	id := cairn.NewID()
	if _, err := r.ArchiveInfo(ctx, id); !errors.Is(err, cairn.ErrNotFound) {
		t.Fatalf("missing archive: %v", err)
	}
	if err := r.PutArchiveInfo(ctx, format.ArchiveInfo{ID: id, Datastore: "postgresql", Instance: "i1", SystemID: "7"}); err != nil {
		t.Fatal(err)
	}
	seg := bytes.Repeat([]byte("wal!"), 3000)
	putPiece(t, r, id, "wal-00000001", 0x1000000, seg[:5000])
	putPiece(t, r, id, "wal-00000001", 0x1000000+5000, seg[5000:])
	// An archiver that restarted sends again what it was unsure of.
	putPiece(t, r, id, "wal-00000001", 0x1000000+4000, seg[4000:6000])
	// A hole, then more.
	putPiece(t, r, id, "wal-00000001", 0x2000000, seg[:100])
	putPiece(t, r, id, "wal-00000002", 0x2000000+50, seg[:10])

	ids, err := r.Archives(ctx)
	if err != nil || !slices.Equal(ids, []cairn.ID{id}) {
		t.Fatalf("archives %v %v", ids, err)
	}
	a, err := r.ArchiveInfo(ctx, id)
	if err != nil || a.Instance != "i1" || a.SystemID != "7" || len(a.Abandoned) != 0 {
		t.Fatalf("archive info %+v %v", a, err)
	}
	// Written again, with the timelines an undone recover left.
	a.Abandoned = []uint32{2}
	if err := r.PutArchiveInfo(ctx, *a); err != nil {
		t.Fatal(err)
	}
	if a, err = r.ArchiveInfo(ctx, id); err != nil || a.Instance != "i1" || !slices.Equal(a.Abandoned, []uint32{2}) {
		t.Fatalf("archive info rewritten: %+v %v", a, err)
	}
	pieces, odd, err := r.LogPieces(ctx, id)
	if err != nil || len(odd) != 0 || len(pieces) != 5 {
		t.Fatalf("pieces %v odd %v err %v", pieces, odd, err)
	}
	spans := repo.LogSpans(pieces)
	want := []repo.LogSpan{
		{Log: "wal-00000001", Start: 0x1000000, End: 0x1000000 + 12000},
		{Log: "wal-00000001", Start: 0x2000000, End: 0x2000000 + 100},
		{Log: "wal-00000002", Start: 0x2000000 + 50, End: 0x2000000 + 60},
	}
	if !slices.Equal(spans, want) {
		t.Fatalf("spans %+v, want %+v", spans, want)
	}
	h, data, err := r.ReadLogPiece(ctx, pieces[1])
	if err != nil || !bytes.Equal(data, seg[4000:6000]) || h.Start != 0x1000000+4000 {
		t.Fatalf("read %+v %d bytes %v", h, len(data), err)
	}

	rep, err := r.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 || rep.LogPieces != 5 || !hasNote(rep.Notes, "1 holes between pieces") {
		t.Fatalf("check: %+v", rep)
	}

	// Damage: a piece moved to another range, a flipped byte, a stray
	// object, pieces of an archive without a description.
	moved := pieces[3]
	raw, err := objstore.ReadAll(ctx, be, moved.Name(), 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	wrong := repo.LogRef{Archive: id, Log: moved.Log, Start: moved.Start + 1, End: moved.End + 1}
	if err := be.Put(ctx, wrong.Name(), raw, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.ReadLogPiece(ctx, wrong); !errors.Is(err, cairn.ErrCorrupt) {
		t.Fatalf("moved piece: %v", err)
	}
	flip := bytes.Clone(raw)
	flip[len(flip)/2] ^= 1
	if err := be.Put(ctx, moved.Name(), flip, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := be.Put(ctx, format.ArchivePrefix(id)+"wal-00000001/junk", []byte("x"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	orphan := cairn.NewID()
	putPiece(t, r, orphan, "binlog.000001", 4, []byte("event"))
	rep, err = r.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, p := range rep.Problems {
		kinds[p.Object] = p.Kind
	}
	if kinds[moved.Name()] != repo.ProblemLogPiece || kinds[wrong.Name()] != repo.ProblemLogPiece ||
		kinds[format.ArchivePrefix(id)+"wal-00000001/junk"] != repo.ProblemLogName ||
		kinds[format.ArchiveInfoName(orphan)] != repo.ProblemArchive || len(rep.Problems) != 4 {
		t.Fatalf("check found %+v", rep.Problems)
	}

	// A gc keeps every piece: they are not chunks.
	if _, err := r.GC(ctx, repo.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	after, _, err := r.LogPieces(ctx, id)
	if err != nil || len(after) != 6 {
		t.Fatalf("after gc: %d pieces, %v", len(after), err)
	}
	if err := r.DeleteLogPieces(ctx, after[:2]); err != nil {
		t.Fatal(err)
	}
	if after, _, _ = r.LogPieces(ctx, id); len(after) != 4 {
		t.Fatalf("after delete: %d pieces", len(after))
	}
}

func TestLogPieceRefusedInput(t *testing.T) {
	r, _ := newMemRepo(t)
	ctx := t.Context()
	for _, h := range []format.LogPiece{
		{Log: "wal", Start: 0, End: 3},                          // no archive
		{Archive: cairn.NewID(), Log: "../x", Start: 0, End: 3}, // bad name
		{Archive: cairn.NewID(), Log: "wal", Start: 0, End: 4},  // length
	} {
		if _, err := r.PutLogPiece(ctx, h, []byte("abc")); !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("%+v: %v, want invalid", h, err)
		}
	}
	if err := r.PutArchiveInfo(ctx, format.ArchiveInfo{ID: cairn.NewID()}); !errors.Is(err, cairn.ErrInvalid) {
		t.Errorf("archive without datastore: %v", err)
	}
}

func hasNote(notes []string, sub string) bool {
	for _, n := range notes {
		if strings.Contains(n, sub) {
			return true
		}
	}
	return false
}
