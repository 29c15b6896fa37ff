package service_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/service/servicetest"
)

const fakeSeg = 1 << 20

// walHost is the fake instance host with a scripted WAL: per timeline,
// the bytes written from a base; a timeline ends where switches says;
// WAL before gone is no longer on the server.
type walHost struct {
	*servicetest.InstanceHost

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced at every change
	tli       uint32
	base      map[uint32]uint64
	wal       map[uint32][]byte
	switches  map[uint32]uint64
	gone      map[uint32]uint64
	confirmed dbagent.LSN
	streams   int
	slot      dbagent.WALSlot
	slotReads int
}

func (h *walHost) WALSlot(context.Context, string) (dbagent.WALSlot, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.slotReads++
	return h.slot, nil
}

func newWALHost(h *servicetest.InstanceHost) *walHost {
	return &walHost{InstanceHost: h, changed: make(chan struct{}), tli: 1,
		slot: dbagent.WALSlot{Exists: true, Active: true, Status: "reserved", SafeBytes: 900 << 20, KeepBytes: 1 << 30},
		base: map[uint32]uint64{1: 5 * fakeSeg}, wal: map[uint32][]byte{}, switches: map[uint32]uint64{}, gone: map[uint32]uint64{}}
}

// change edits the WAL and wakes the streams.
func (h *walHost) change(fn func()) {
	h.mu.Lock()
	fn()
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

// write appends n random bytes to the current timeline; it returns the
// end.
func (h *walHost) write(rng *rand.Rand, n int) uint64 {
	var end uint64
	h.change(func() {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		h.wal[h.tli] = append(h.wal[h.tli], b...)
		end = h.base[h.tli] + uint64(len(h.wal[h.tli]))
	})
	return end
}

// promote ends the current timeline at its end and starts the next,
// which holds the old one's bytes from the start of the switch's
// segment, as PostgreSQL copies them.
func (h *walHost) promote() uint64 {
	var sw uint64
	h.change(func() {
		old := h.tli
		sw = h.base[old] + uint64(len(h.wal[old]))
		h.switches[old] = sw
		h.tli++
		start := sw - sw%fakeSeg
		h.base[h.tli] = start
		h.wal[h.tli] = bytes.Clone(h.wal[old][start-h.base[old]:])
	})
	return sw
}

func (h *walHost) WALIdentity(_ context.Context, id string) (dbagent.WALIdentity, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return dbagent.WALIdentity{SystemID: "42", Timeline: h.tli, SegmentSize: fakeSeg,
		Flushed: dbagent.LSN(h.base[h.tli] + uint64(len(h.wal[h.tli])))}, nil
}

func (h *walHost) TimelineHistory(_ context.Context, _ string, tli uint32) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b bytes.Buffer
	for t := uint32(1); t < tli; t++ {
		fmt.Fprintf(&b, "%d\t%s\tno recovery target specified\n", t, dbagent.LSN(h.switches[t]))
	}
	return b.Bytes(), nil
}

func (h *walHost) ConfirmWAL(_ string, lsn dbagent.LSN) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.confirmed = max(h.confirmed, lsn)
}

// StreamWAL sends what the timeline holds from start, in pieces of up
// to 100 KiB, then waits for more, until the timeline ends.
func (h *walHost) StreamWAL(ctx context.Context, _ string, tli uint32, start dbagent.LSN, fn func(dbagent.WALMessage) error) (*dbagent.TimelineEnd, error) {
	h.mu.Lock()
	h.streams++
	if uint64(start) < h.gone[tli] {
		h.mu.Unlock()
		return nil, fmt.Errorf("requested WAL segment has already been removed: %w", cairn.ErrGone)
	}
	h.mu.Unlock()
	pos := uint64(start)
	for {
		h.mu.Lock()
		wal, base, changed := h.wal[tli], h.base[tli], h.changed
		sw, ended := h.switches[tli]
		h.mu.Unlock()
		end := base + uint64(len(wal))
		if ended {
			end = sw
		}
		for pos < end {
			n := min(end-pos, 100<<10)
			if err := fn(dbagent.WALMessage{Start: dbagent.LSN(pos), Data: wal[pos-base : pos-base+n], ServerEnd: dbagent.LSN(end)}); err != nil {
				return nil, err
			}
			pos += n
		}
		if ended {
			return &dbagent.TimelineEnd{Next: tli + 1, Switch: dbagent.LSN(sw)}, nil
		}
		if err := fn(dbagent.WALMessage{ServerEnd: dbagent.LSN(end), ServerTime: time.Now()}); err != nil {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

// archived returns what the store holds of archive id's timeline: its
// bytes from base, and the spans.
func archived(t *testing.T, s *servicetest.Store, id cairn.ID) (pieces []repo.LogRef, read func(p repo.LogRef) []byte) {
	t.Helper()
	r := s.Open()
	list, _, err := r.LogPieces(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return list, func(p repo.LogRef) []byte {
		_, b, err := r.ReadLogPiece(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

// waitArchived waits until the store holds timeline tli up to end, the
// host has been told so, and returns the pieces.
func waitArchived(t *testing.T, r *rig, h *walHost, id cairn.ID, tli uint32, end uint64) []repo.LogRef {
	t.Helper()
	log := fmt.Sprintf("wal-%08x", tli)
	deadline := time.Now().Add(time.Minute)
	for {
		pieces, _ := archived(t, r.store("volumebackups"), id)
		var have uint64
		for _, sp := range repo.LogSpans(pieces) {
			if sp.Log == log {
				have = max(have, sp.End)
			}
		}
		h.mu.Lock()
		conf := h.confirmed
		h.mu.Unlock()
		if have >= end && uint64(conf) >= end {
			return pieces
		}
		if time.Now().After(deadline) {
			t.Fatalf("timeline %d archived to %x (confirmed %s), want %x", tli, have, conf, end)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// streamingArchiver makes an instance on a rig whose host has a scripted
// WAL and waits until its archiver streams: an archive starts at the
// server's segment when it starts, so the WAL written next is all
// archived.
func streamingArchiver(t *testing.T) (*rig, *walHost, *fixture, cairn.ID) {
	t.Helper()
	return streamingArchiverWith(t, func(*rig) {})
}

// streamingArchiverWith is streamingArchiver with the rig's settings
// changed by setup before the service starts.
func streamingArchiverWith(t *testing.T, setup func(*rig)) (*rig, *walHost, *fixture, cairn.ID) {
	t.Helper()
	r := newRig(t)
	h := newWALHost(r.host)
	r.walHost, r.archiveInterval = h, 5*time.Millisecond
	setup(r)
	r.restart()
	f := &fixture{}
	makeInstance(r, f)
	id := must[cairn.ID](t)(service.ArchiveID(f.vol))
	for deadline := time.Now().Add(time.Minute); ; {
		if st := must[cairn.Instance](t)(r.svc.Instance(t.Context(), caller, f.vol)).Archive; st != nil && st.State == "streaming" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the archiver never started streaming")
		}
		time.Sleep(time.Millisecond)
	}
	return r, h, f, id
}

// TestArchiver drives an instance's archiver through a scripted WAL:
// bytes stored exactly and confirmed, pieces within segments, a
// timeline switch (history stored, the new timeline from the switch's
// segment), a service restart that goes on from the store's end, and
// WAL gone from the server, reported as a gap.
func TestArchiver(t *testing.T) {
	r, h, f, id := streamingArchiver(t)
	rng := rand.New(rand.NewPCG(7, 8))

	end1 := h.write(rng, 3*fakeSeg/2)
	pieces := waitArchived(t, r, h, id, 1, end1)
	_, read := archived(t, r.store("volumebackups"), id)
	var got []byte
	for _, p := range pieces {
		if p.Start/fakeSeg != (p.End-1)/fakeSeg {
			t.Fatalf("piece %s crosses a segment", p.Name())
		}
		if p.Start != 5*fakeSeg+uint64(len(got)) {
			t.Fatalf("piece %s after %d bytes: a hole or an overlap (pieces %v)", p.Name(), len(got), pieces)
		}
		got = append(got, read(p)...)
	}
	h.mu.Lock()
	want := bytes.Clone(h.wal[1])
	h.mu.Unlock()
	if !bytes.Equal(got, want) {
		t.Fatal("the archive's bytes differ from the server's")
	}
	// The whole segment is one piece, stored again whole (its pieces
	// gone); the segment being written is in pieces.
	if pieces[0].Start != 5*fakeSeg || pieces[0].End != 6*fakeSeg || len(pieces) < 2 {
		t.Fatalf("the first segment is not one piece: %v", pieces)
	}
	st := must[cairn.Instance](t)(r.svc.Instance(t.Context(), caller, f.vol)).Archive
	if st == nil || st.State != "streaming" || st.Timeline != 1 || st.ArchivedLSN != dbagent.LSN(end1).String() || st.CompleteAt.IsZero() ||
		st.Slot == nil || st.Slot.Status != "reserved" {
		t.Fatalf("archive state %+v", st)
	}
	if ev := r.eventsOf("instance.archive.slot"); len(ev) != 0 {
		t.Fatalf("a slot alarm while the slot is fine: %v", ev)
	}

	// A timeline switch: the history, then the new timeline from the
	// start of the switch's segment.
	sw := h.promote()
	end2 := h.write(rng, fakeSeg/3)
	pieces = waitArchived(t, r, h, id, 2, end2)
	var hist, first2 *repo.LogRef
	for i, p := range pieces {
		switch {
		case p.Log == "history-00000002":
			hist = &pieces[i]
		case p.Log == "wal-00000002" && first2 == nil:
			first2 = &pieces[i]
		}
	}
	if hist == nil || !bytes.HasPrefix(read(*hist), []byte("1\t"+dbagent.LSN(sw).String())) {
		t.Fatalf("history of timeline 2: %v", hist)
	}
	if first2 == nil || first2.Start != sw-sw%fakeSeg {
		t.Fatalf("timeline 2 begins at %v, want the switch's segment %x", first2, sw-sw%fakeSeg)
	}

	// A restart goes on from the store's end: nothing is stored twice.
	r.stop()
	before := len(pieces)
	end3 := h.write(rng, 1000)
	r.start()
	pieces = waitArchived(t, r, h, id, 2, end3)
	if len(pieces) != before+1 {
		t.Fatalf("%d pieces after the restart, want %d: the restart stored again what was stored", len(pieces), before+1)
	}

	// WAL gone from the server while the service was down: a gap, and
	// the archive goes on from the server's segment.
	r.stop()
	h.write(rng, 2*fakeSeg)
	// The server removes whole segments, up to the one it writes.
	h.change(func() { e := h.base[2] + uint64(len(h.wal[2])); h.gone[2] = e - e%fakeSeg })
	end4 := h.write(rng, 500)
	r.start()
	waitArchived(t, r, h, id, 2, end4)
	st = must[cairn.Instance](t)(r.svc.Instance(t.Context(), caller, f.vol)).Archive
	if len(st.Gaps) != 1 || st.Gaps[0].Timeline != 2 || st.Gaps[0].From != dbagent.LSN(end3).String() {
		t.Fatalf("gaps %+v, want one from %s", st.Gaps, dbagent.LSN(end3))
	}
	if ev := r.eventsOf("instance.archive.gap"); len(ev) != 1 || ev[0].Payload["instance_id"] != f.vol {
		t.Fatalf("gap events %v", ev)
	}

	// A slot close to losing WAL: an event, once.
	// (Changed while no service runs, so only the next one reads it.)
	r.stop()
	h.change(func() { h.slot.Status, h.slot.SafeBytes = "extended", 100<<20 })
	r.start() // the slot is read at a session's first store
	end5 := h.write(rng, 100)
	waitArchived(t, r, h, id, 2, end5)
	h.write(rng, 100)
	waitArchived(t, r, h, id, 2, h.write(rng, 100))
	if ev := r.eventsOf("instance.archive.slot"); len(ev) != 1 || ev[0].Payload["safe_bytes"] != int64(100<<20) {
		t.Fatalf("slot events %v", ev)
	}

	// A piece deleted from the store: the next listing finds the hole,
	// reports it and raises an event.
	r.archiveCheck = time.Millisecond
	r.restart()
	pieces = waitArchived(t, r, h, id, 2, h.write(rng, 100))
	// A piece with pieces right before and after it: its hole is
	// exactly its range.
	var victim repo.LogRef
	ends, starts := map[uint64]bool{}, map[uint64]bool{}
	for _, p := range pieces {
		if p.Log == "wal-00000002" {
			ends[p.End], starts[p.Start] = true, true
		}
	}
	for _, p := range pieces {
		if p.Log == "wal-00000002" && ends[p.Start] && starts[p.End] {
			victim = p
			break
		}
	}
	if victim.Log == "" {
		t.Fatalf("no piece of timeline 2 between two others: %v", pieces)
	}
	r.store("volumebackups").DeleteLogPiece(victim)
	deadline := time.Now().Add(time.Minute)
	for len(r.eventsOf("instance.archive.gap")) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no gap event after a piece was deleted")
		}
		waitArchived(t, r, h, id, 2, h.write(rng, 100))
	}
	st = must[cairn.Instance](t)(r.svc.Instance(t.Context(), caller, f.vol)).Archive
	// (The earlier gap, WAL the server lost, is known after a restart
	// from the store alone, where it is as missing as this one.)
	found := false
	for _, g := range st.Gaps {
		found = found || g.From == dbagent.LSN(victim.Start).String() && g.To == dbagent.LSN(victim.End).String()
	}
	if !found || len(st.Gaps) != 2 {
		t.Fatalf("gaps after a piece was deleted: %+v (deleted %s)", st.Gaps, victim.Name())
	}
}

// fork has the server start a new timeline from an earlier point of the
// current one, at, as a recover in place does: the new timeline holds
// the old one's bytes from the start of at's segment up to at, and the
// old one's bytes past at are left behind.
func (h *walHost) fork(at uint64) {
	h.change(func() {
		old := h.tli
		h.switches[old] = at
		h.tli++
		start := at - at%fakeSeg
		h.base[h.tli] = start
		h.wal[h.tli] = bytes.Clone(h.wal[old][start-h.base[old] : at-h.base[old]])
	})
}

// TestArchiverFollowsRecover: a server recovered in place forks a new
// timeline from before the archive's end; the archiver follows it from
// the fork's segment and leaves the old timeline's pieces as they are.
// The recover undone (the server back on the old timeline, as it was),
// the archiver goes on with the old timeline from where it held it.
func TestArchiverFollowsRecover(t *testing.T) {
	r, h, f, id := streamingArchiver(t)
	rng := rand.New(rand.NewPCG(9, 10))
	end1 := h.write(rng, 5*fakeSeg/2)
	waitArchived(t, r, h, id, 1, end1)

	spansOf := func(log string) []repo.LogSpan {
		pieces, _ := archived(t, r.store("volumebackups"), id)
		var out []repo.LogSpan
		for _, sp := range repo.LogSpans(pieces) {
			if sp.Log == log {
				out = append(out, sp)
			}
		}
		return out
	}
	// The recover: the service is down meanwhile, as its task stops the
	// archiver.
	r.stop()
	fork := end1 - fakeSeg - 1000
	h.fork(fork)
	end2 := h.write(rng, fakeSeg/2)
	r.start()
	pieces := waitArchived(t, r, h, id, 2, end2)
	_, read := archived(t, r.store("volumebackups"), id)
	var hist *repo.LogRef
	for i, p := range pieces {
		if p.Log == "history-00000002" {
			hist = &pieces[i]
		}
	}
	if hist == nil || !bytes.HasPrefix(read(*hist), []byte("1\t"+dbagent.LSN(fork).String())) {
		t.Fatalf("history of timeline 2: %v", hist)
	}
	if sp := spansOf("wal-00000002"); len(sp) != 1 || sp[0].Start != fork-fork%fakeSeg || sp[0].End != end2 {
		t.Fatalf("timeline 2 archived as %v, want one span from the fork's segment %x to %x", sp, fork-fork%fakeSeg, end2)
	}
	if sp := spansOf("wal-00000001"); len(sp) != 1 || sp[0].Start != 5*fakeSeg || sp[0].End != end1 {
		t.Fatalf("timeline 1 after the fork: %v, want it as it was, to %x", sp, end1)
	}
	if st := must[cairn.Instance](t)(r.svc.Instance(t.Context(), caller, f.vol)).Archive; st.Timeline != 2 || len(st.Gaps) != 0 {
		t.Fatalf("archive after the recover: %+v", st)
	}

	// The recover undone: the server is back on timeline 1 where it was.
	r.stop()
	h.change(func() { h.tli = 1; delete(h.switches, 1) })
	end3 := h.write(rng, fakeSeg/4)
	r.start()
	waitArchived(t, r, h, id, 1, end3)
	if sp := spansOf("wal-00000001"); len(sp) != 1 || sp[0].Start != 5*fakeSeg || sp[0].End != end3 {
		t.Fatalf("timeline 1 after the undo: %v, want one span to %x", sp, end3)
	}
	st := must[cairn.Instance](t)(r.svc.Instance(t.Context(), caller, f.vol)).Archive
	if st.Timeline != 1 || st.ArchivedLSN != dbagent.LSN(end3).String() || len(st.Gaps) != 0 {
		t.Fatalf("archive after the undo: %+v", st)
	}
}
