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

// TestArchiveTrimmedWithBackups: deleting an instance's oldest backups
// deletes the WAL before the segment where the oldest left starts, and
// nothing the backups left need: the archive still holds the WAL from
// there on without a hole, and the recoverable window starts at that
// backup. Nothing goes while an instance is being restored from one of
// the backups, nor once no backup with a point in the WAL is left.
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
	pieces := func() []repo.LogRef {
		list, _ := archived(t, r.store("volumebackups"), id)
		return list
	}
	var backups []string
	var starts []uint64
	for range 3 {
		starts = append(starts, write(3*fakeSeg+fakeSeg/2)) // in a segment: its start stays
		makeDBBackup(r, f)
		backups = append(backups, f.backup)
	}
	end := write(2 * fakeSeg)
	before := pieces()

	// b1 goes while an instance is restored from b3: nothing is trimmed.
	gate := r.faults.Hold("InstanceHost.Provision", false)
	restored := must[cairn.Instance](t)(r.svc.CreateInstance(ctx, caller, cairn.InstanceCreate{Name: "restored", BackupID: backups[2]}))
	<-gate.Reached()
	if err := r.svc.DeleteDatabaseBackup(ctx, caller, backups[0]); err != nil {
		t.Fatal(err)
	}
	r.done(backups[0])
	if got := pieces(); len(got) != len(before) {
		t.Fatalf("%d pieces before b1's deletion during a restore, %d after", len(before), len(got))
	}
	gate.Open()
	r.done(restored.ID)

	// b2 goes: what b1 and b2 needed goes too.
	if err := r.svc.DeleteDatabaseBackup(ctx, caller, backups[1]); err != nil {
		t.Fatal(err)
	}
	r.done(backups[1])
	after := pieces()
	var wal []repo.LogRef
	for _, p := range after {
		if p.Log == "wal-00000001" {
			wal = append(wal, p)
		}
	}
	start3 := starts[2]
	spans := repo.LogSpans(wal)
	if len(spans) != 1 || spans[0].Start != start3-start3%fakeSeg || spans[0].End != end {
		t.Fatalf("the archive after b2's deletion: %+v (b3 starts at %x, the WAL ends at %x)", spans, start3, end)
	}
	if len(after) >= len(before) {
		t.Fatalf("%d pieces before the deletions, %d after", len(before), len(after))
	}
	ev := r.eventsOf("dbbackup.delete.end")
	trimmed, _ := ev[len(ev)-1].Payload["archive_trimmed"].(map[string]any)
	if trimmed == nil || trimmed["pieces"] != len(before)-len(after) {
		t.Fatalf("the deletion's event: %v", ev[len(ev)-1].Payload)
	}
	in := must[cairn.Instance](t)(r.svc.Instance(ctx, caller, f.vol))
	if w := in.RecoverableWindow; w == nil || !w.From.Equal(r.dbBackup(backups[2]).DataTimestamp) {
		t.Fatalf("the recoverable window after the deletions: %+v, want from b3's %s", w, r.dbBackup(backups[2]).DataTimestamp)
	}

	// The last backup goes: the archive stays as it is.
	if err := r.svc.DeleteDatabaseBackup(ctx, caller, backups[2]); err != nil {
		t.Fatal(err)
	}
	r.done(backups[2])
	if last := pieces(); len(last) != len(after) {
		t.Fatalf("%d pieces after the last backup's deletion, %d before", len(last), len(after))
	}
}
