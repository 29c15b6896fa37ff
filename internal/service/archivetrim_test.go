package service_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbhost"
	"github.com/cairnproject/cairn/internal/repo"
)

// pointingHost is the scripted-WAL host whose snapshot backups record
// where they start in the WAL: the server's end when taken.
type pointingHost struct{ *walHost }

func (h pointingHost) SnapshotInstance(ctx context.Context, id string, o dbhost.SnapshotOptions) (dbhost.SnapshotBackup, error) {
	b, err := h.walHost.SnapshotInstance(ctx, id, o)
	if err != nil {
		return b, err
	}
	h.mu.Lock()
	end := h.base[h.tli] + uint64(len(h.wal[h.tli]))
	b.Record.PostgreSQL = &dbagent.PostgresPoint{Timeline: h.tli, StartLSN: dbagent.LSN(end), StopLSN: dbagent.LSN(end), WALSegmentSize: fakeSeg}
	h.mu.Unlock()
	return b, nil
}

// TestArchiveTrimmedWithBackups: deleting an instance's oldest backup
// deletes the WAL before the segment where the oldest left starts, and
// nothing the backups left need: the archive still holds the WAL from there on
// without a hole, and the recoverable window starts at that backup.
// With no backup left that has a point in the WAL, nothing goes.
func TestArchiveTrimmedWithBackups(t *testing.T) {
	var h *walHost
	r, _, f, id := streamingArchiverWith(t, func(r *rig) {
		h = r.walHost.(*walHost)
		r.walHost = pointingHost{h}
	})
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(3, 4))
	write := func(n int) uint64 {
		end := h.write(rng, n)
		waitArchived(t, r, h, id, 1, end)
		return end
	}
	write(3 * fakeSeg)
	makeDBBackup(r, f)
	b1 := f.backup
	start2 := write(3*fakeSeg + fakeSeg/2) // in a segment: its start stays
	makeDBBackup(r, f)
	b2 := f.backup
	end := write(2 * fakeSeg)
	before, _ := archived(t, r.store("volumebackups"), id)

	if err := r.svc.DeleteDatabaseBackup(ctx, caller, b1); err != nil {
		t.Fatal(err)
	}
	r.done(b1)
	after, _ := archived(t, r.store("volumebackups"), id)
	var wal []repo.LogRef
	for _, p := range after {
		if p.Log == "wal-00000001" {
			wal = append(wal, p)
		}
	}
	spans := repo.LogSpans(wal)
	if len(spans) != 1 || spans[0].Start != start2-start2%fakeSeg || spans[0].End != end {
		t.Fatalf("the archive after b1's deletion: %+v (b2 starts at %x, the WAL ends at %x)", spans, start2, end)
	}
	if len(after) >= len(before) {
		t.Fatalf("%d pieces before b1's deletion, %d after", len(before), len(after))
	}
	ev := r.eventsOf("dbbackup.delete.end")
	trimmed, _ := ev[len(ev)-1].Payload["archive_trimmed"].(map[string]any)
	if trimmed == nil || trimmed["pieces"] != len(before)-len(after) {
		t.Fatalf("the deletion's event: %v", ev[len(ev)-1].Payload)
	}
	in := must[cairn.Instance](t)(r.svc.Instance(ctx, caller, f.vol))
	if w := in.RecoverableWindow; w == nil || !w.From.Equal(r.dbBackup(b2).DataTimestamp) {
		t.Fatalf("the recoverable window after b1's deletion: %+v, want from b2's %s", w, r.dbBackup(b2).DataTimestamp)
	}

	// The last backup goes: the archive stays as it is.
	if err := r.svc.DeleteDatabaseBackup(ctx, caller, b2); err != nil {
		t.Fatal(err)
	}
	r.done(b2)
	if last, _ := archived(t, r.store("volumebackups"), id); len(last) != len(after) {
		t.Fatalf("%d pieces after the last backup's deletion, %d before", len(last), len(after))
	}
}
