package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/pgwal"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"golang.org/x/sync/errgroup"
)

// Continuous archiving: every active PostgreSQL instance has an archiver
// that streams its WAL from the data plane, over the instance's archive
// slot, into a log archive in the repository of the instance's
// container. The store is the archive's truth: an archiver that starts
// reads where the archive ends from the store, and the slot keeps on the
// server everything not yet confirmed stored, so a service that dies
// loses nothing. What the API shows of an archive (its window, lag and
// gaps) is the archiver's view, kept in memory.

const (
	// defaultArchiveInterval is how often buffered WAL is stored as a
	// piece: a commit is durable in the archive this long after the
	// server wrote it, plus the store's write.
	defaultArchiveInterval = 500 * time.Millisecond
	// maxArchiveBuffer cuts a piece early when this much waits.
	maxArchiveBuffer = 16 << 20
	// archiveBackoff bounds the pause after a failed session.
	archiveBackoffMin, archiveBackoffMax = 500 * time.Millisecond, 30 * time.Second
	// defaultArchiveCheck is how often an archiver reads the server's
	// slot and lists its archive again (to find pieces gone from the
	// store).
	defaultArchiveCheck = 10 * time.Second
	// archiveLagAlarm is the lag past which an archive raises an event.
	archiveLagAlarm = 30 * time.Second
)

// walLog names the log of a timeline; historyLog that of its history
// file.
func walLog(tli uint32) string     { return fmt.Sprintf("wal-%08x", tli) }
func historyLog(tli uint32) string { return fmt.Sprintf("history-%08x", tli) }

// parseWALLog reads a timeline back from its log's name.
func parseWALLog(log string) (uint32, bool) {
	h, ok := strings.CutPrefix(log, "wal-")
	if !ok || len(h) != 8 {
		return 0, false
	}
	v, err := strconv.ParseUint(h, 16, 32)
	return uint32(v), err == nil && v > 0
}

// ArchiveID is the archive of an instance: its ID's 16 bytes.
func ArchiveID(instance string) (cairn.ID, error) {
	return cairn.ParseID(strings.ReplaceAll(instance, "-", ""))
}

// archiveSet owns the archivers: one goroutine each, started and ended
// by the service.
type archiveSet struct {
	mu       sync.Mutex
	byInst   map[string]*archiver
	stopped  bool
	wg       sync.WaitGroup
	on       bool
	interval time.Duration
	check    time.Duration
	after    func(time.Duration) <-chan time.Time
}

// archiver archives one instance.
type archiver struct {
	s         *Service
	inst      string
	id        cairn.ID
	container string
	cancel    context.CancelFunc
	done      chan struct{}

	mu sync.Mutex
	st archiveView
	// seg is the segment being compacted (see compact).
	seg *segmentBuf
}

// archiveView is what an archiver knows; mu guards it.
type archiveView struct {
	state, err string
	loaded     bool
	segSize    uint64
	timeline   uint32
	// end is where the archive of timeline ends: everything before it
	// is stored.
	end uint64
	// completeAt is the latest server time the archive holds everything
	// written by.
	completeAt, lastTxn time.Time
	// pendingSince is when the oldest byte not yet stored arrived.
	pendingSince time.Time
	// reported is the latest (end, time) the server told: once the
	// archive ends at or past it, it is complete up to that time.
	reportedEnd  uint64
	reportedTime time.Time
	gaps         []cairn.ArchiveGap
	// switches are the current timeline's history: where each timeline
	// before it on that history switched to the next.
	switches map[uint32]uint64
	// spans are the stretches of each timeline the archive holds.
	spans map[uint32][]repo.LogSpan
	// slot is the server's archive slot as last read, slotChecked when.
	slot        *cairn.ArchiveSlot
	slotChecked time.Time
	// lagging and slotLow are alarms raised (an event each) and not yet
	// cleared.
	lagging, slotLow bool
	// points sums up the instance's restore points as last counted;
	// pointFailures counts the points in a row that failed.
	points        cairn.RestorePointSummary
	pointFailures int

	// MariaDB: timeline is the binary log's generation (the server's,
	// which the window follows); binFile is the
	// file the archive ends in (at end), binGTID the GTID position
	// there; reportedFile is the file of reportedEnd; binSpans are the
	// stretches of files the archive holds, in order.
	mariadb      bool
	binMaxGen    uint32 // the highest generation the archive holds
	binFile      string
	binGTID      string
	reportedFile string
	binSpans     []binlogSpan
}

// startArchiver starts archiving an instance, unless it is archived
// already, the service stops, or it has no instance host. The
// archive's container is the service's default.
func (s *Service) startArchiver(inst cairn.Instance) {
	if !s.archives.on || s.host == nil || inst.Datastore.Type != dbagent.PostgreSQL && inst.Datastore.Type != dbagent.MariaDB {
		return
	}
	id, err := ArchiveID(inst.ID)
	if err != nil {
		s.log.Warn("an instance ID that names no archive", "instance", inst.ID, "err", err)
		return
	}
	a := &s.archives
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped || a.byInst[inst.ID] != nil {
		return
	}
	if a.byInst == nil {
		a.byInst = map[string]*archiver{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	ar := &archiver{s: s, inst: inst.ID, id: id, container: s.defCont, cancel: cancel, done: make(chan struct{}),
		st: archiveView{state: "starting", mariadb: inst.Datastore.Type == dbagent.MariaDB}}
	a.byInst[inst.ID] = ar
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer close(ar.done)
		// The restore points are taken beside the archive they depend
		// on, and end with it.
		var points sync.WaitGroup
		if s.points.interval > 0 {
			points.Go(func() { ar.keepRestorePoints(ctx) })
		}
		ar.run(ctx)
		points.Wait()
	}()
}

// stopArchiver ends an instance's archiver and waits for it.
func (s *Service) stopArchiver(id string) {
	a := &s.archives
	a.mu.Lock()
	ar := a.byInst[id]
	delete(a.byInst, id)
	a.mu.Unlock()
	if ar != nil {
		ar.cancel()
		<-ar.done
	}
}

// stopArchivers ends every archiver and waits for them; none starts
// after.
func (s *Service) stopArchivers() {
	a := &s.archives
	a.mu.Lock()
	a.stopped = true
	list := make([]*archiver, 0, len(a.byInst))
	for _, ar := range a.byInst {
		list = append(list, ar)
	}
	a.mu.Unlock()
	for _, ar := range list {
		ar.cancel()
	}
	a.wg.Wait()
}

// archiverOf returns an instance's archiver, nil when none runs.
func (s *Service) archiverOf(id string) *archiver {
	s.archives.mu.Lock()
	defer s.archives.mu.Unlock()
	return s.archives.byInst[id]
}

// run archives until ctx ends, starting again after a failure.
func (ar *archiver) run(ctx context.Context) {
	pause := archiveBackoffMin
	session := ar.session
	if ar.view().mariadb {
		session = ar.binlogSession
	}
	for ctx.Err() == nil {
		progressed, err := session(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, cairn.ErrUnsupported) {
			ar.set(func(v *archiveView) { v.state, v.err = "unsupported", err.Error() })
			return
		}
		if err == nil {
			pause = archiveBackoffMin
			continue // a timeline ended: the next one at once
		}
		if progressed {
			pause = archiveBackoffMin
		}
		ar.set(func(v *archiveView) { v.state, v.err = "failing", err.Error() })
		ar.s.log.Warn("archiving an instance's log", "instance", ar.inst, "err", err, "again_in", pause)
		select {
		case <-ctx.Done():
			return
		case <-ar.s.archives.after(pause):
		}
		pause = min(2*pause, archiveBackoffMax)
	}
}

func (ar *archiver) set(fn func(*archiveView)) {
	ar.mu.Lock()
	defer ar.mu.Unlock()
	fn(&ar.st)
}

func (ar *archiver) view() archiveView {
	ar.mu.Lock()
	defer ar.mu.Unlock()
	v := ar.st
	v.gaps = slices.Clone(v.gaps)
	v.binSpans = slices.Clone(v.binSpans)
	return v
}

// load reads where the archive stands from the store (loadArchive).
func (ar *archiver) load(ctx context.Context, r Repository) error {
	v, err := loadArchive(ctx, r, ar.id, 0)
	if err != nil {
		return err
	}
	ar.set(func(st *archiveView) {
		st.loaded, st.spans, st.switches, st.gaps = true, v.spans, v.switches, v.gaps
		st.timeline, st.end, st.lastTxn, st.completeAt = v.timeline, v.end, v.lastTxn, v.completeAt
	})
	return nil
}

// loadArchive reads an archive's state from the store alone: the
// timelines it holds, where the newest ends, its holes, the timelines'
// switch points (from their history files), and the times of its last
// pieces. The segment size is not in the store: the caller sets it.
//
// tli is the timeline to read the archive along (the one its server is
// on), 0 for the newest the archive holds WAL of. They differ after a
// recover in place was undone: the server is back on an older timeline
// than the one the recover began.
func loadArchive(ctx context.Context, r Repository, id cairn.ID, tli uint32) (archiveView, error) {
	pieces, _, err := r.LogPieces(ctx, id)
	if err != nil {
		return archiveView{}, err
	}
	spans := map[uint32][]repo.LogSpan{}
	switches := map[uint32]uint64{}
	histories := map[uint32]map[uint32]uint64{}
	var gaps []cairn.ArchiveGap
	for _, sp := range repo.LogSpans(pieces) {
		tli, ok := parseWALLog(sp.Log)
		if !ok {
			continue
		}
		if prev := spans[tli]; len(prev) > 0 {
			gaps = append(gaps, cairn.ArchiveGap{Timeline: tli, From: dbagent.LSN(prev[len(prev)-1].End).String(),
				To: dbagent.LSN(sp.Start).String(), Reason: "missing from the archive"})
		}
		spans[tli] = append(spans[tli], sp)
	}
	newest := tli
	if newest == 0 {
		abandoned, err := abandonedLogs(ctx, r, id)
		if err != nil {
			return archiveView{}, err
		}
		var top uint32
		for _, p := range pieces {
			if t, ok := parseWALLog(p.Log); ok {
				top = max(top, t)
				if !abandoned[t] {
					newest = max(newest, t)
				}
			}
		}
		if newest == 0 {
			newest = top
		}
	}
	var wal []repo.LogRef // of timeline newest, in order
	for _, p := range pieces {
		if t, ok := parseWALLog(p.Log); ok {
			if t == newest {
				wal = append(wal, p)
			}
			continue
		}
		var t uint32
		if _, err := fmt.Sscanf(p.Log, "history-%08x", &t); err != nil || p.Start != 0 {
			continue
		}
		_, body, err := r.ReadLogPiece(ctx, p)
		if err != nil {
			return archiveView{}, fmt.Errorf("timeline %d history: %w", t, err)
		}
		histories[t] = parseHistory(body)
	}
	v := archiveView{spans: spans, switches: switches, gaps: gaps}
	if len(wal) == 0 {
		return v, nil
	}
	last := wal[len(wal)-1]
	v.timeline = newest
	if h := histories[newest]; h != nil {
		v.switches = h
	}
	for _, p := range wal {
		v.end = max(v.end, p.End)
	}
	// The last transaction: in the last pieces that hold one (an idle
	// server's last pieces may hold none); a bounded look back.
	for i := len(wal) - 1; i >= 0 && i >= len(wal)-64; i-- {
		h, _, err := r.ReadLogPiece(ctx, wal[i])
		if err != nil {
			return archiveView{}, fmt.Errorf("archive piece %s: %w", wal[i].Name(), err)
		}
		if wal[i] == last {
			v.completeAt = h.ServerTime
		}
		if !h.LastTime.IsZero() {
			v.lastTxn = h.LastTime
			break
		}
	}
	return v, nil
}

// parseHistory reads a timeline history file: lines "parent-timeline
// switch-LSN reason", giving where each earlier timeline ended.
func parseHistory(b []byte) map[uint32]uint64 {
	out := map[uint32]uint64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		tli, err1 := strconv.ParseUint(f[0], 10, 32)
		lsn, err2 := dbagent.ParseLSN(f[1])
		if err1 == nil && err2 == nil {
			out[uint32(tli)] = uint64(lsn)
		}
	}
	return out
}

// pending is WAL received and not yet stored: bytes [start, start +
// len(data)) and the transaction ends in them.
type pending struct {
	start uint64
	data  []byte
	ends  []pgwal.End
}

// take returns what the flusher stores now and keeps the rest. While the
// stream is more than a segment behind the server (catching up after a
// restart or a slow store), it takes whole segments only: each is then
// stored once, as one piece, where pieces cut at every interval would be
// stored twice (as pieces, then whole). Caught up, or at the stream's
// end, it takes everything, so the newest commits are stored at once.
func (p *pending) take(seg, serverEnd uint64, final bool) pending {
	end := p.start + uint64(len(p.data))
	cut := end
	if !final && seg <= maxArchiveBuffer && serverEnd > end+seg {
		cut = end - end%seg
		if cut <= p.start {
			return pending{start: p.start}
		}
	}
	out := pending{start: p.start, data: p.data[:cut-p.start]}
	var rest []pgwal.End
	for _, e := range p.ends {
		if e.EndLSN <= cut {
			out.ends = append(out.ends, e)
		} else {
			rest = append(rest, e)
		}
	}
	p.data = append([]byte(nil), p.data[cut-p.start:]...)
	if len(p.data) == 0 {
		p.data = nil
	}
	p.start, p.ends = cut, rest
	return out
}

// session archives one timeline until the stream ends: the timeline's
// end (nil, after storing its switch) or a failure. progressed says
// whether anything was stored.
func (ar *archiver) session(ctx context.Context) (progressed bool, err error) {
	host := ar.s.host
	ident, err := host.WALIdentity(ctx, ar.inst)
	if err != nil {
		return false, fmt.Errorf("the server's WAL: %w", err)
	}
	seg := uint64(ident.SegmentSize)
	if seg == 0 || seg&(seg-1) != 0 {
		return false, fmt.Errorf("WAL segment size %d: %w", seg, cairn.ErrCorrupt)
	}
	r, err := ar.s.repoFor(ctx, ar.container)
	if err != nil {
		return false, err
	}
	if !ar.view().loaded {
		if _, err := r.ArchiveInfo(ctx, ar.id); errors.Is(err, cairn.ErrNotFound) {
			if err := r.PutArchiveInfo(ctx, format.ArchiveInfo{ID: ar.id, Datastore: dbagent.PostgreSQL, Instance: ar.inst,
				Created: ar.s.nowUTC(), SystemID: ident.SystemID}); err != nil {
				return false, err
			}
		} else if err != nil {
			return false, err
		}
		if err := ar.load(ctx, r); err != nil {
			return false, err
		}
	}
	ar.seg = nil
	tli, end, err := ar.follow(ctx, r, ident, seg)
	if err != nil {
		return false, err
	}
	// The stream starts where the archive's segment starts, so the
	// decoder gets in step; what lies before end is decoded, not stored
	// again.
	start := end - end%seg
	dec := pgwal.NewDecoder(start, seg, false)
	pos := start
	var mu sync.Mutex
	buf := &pending{start: end}
	g, gctx := errgroup.WithContext(ctx)
	streamed := make(chan struct{})
	// full asks the flusher to store at once (maxArchiveBuffer waits);
	// drained tells the stream, held while twice that waits, that the
	// flusher took it: memory stays bounded when the store is slow.
	full, drained := make(chan struct{}, 1), make(chan struct{}, 1)
	var tlEnd *dbagent.TimelineEnd
	g.Go(func() error {
		defer close(streamed)
		var err error
		tlEnd, err = host.StreamWAL(gctx, ar.inst, tli, dbagent.LSN(start), func(m dbagent.WALMessage) error {
			mu.Lock()
			defer mu.Unlock()
			for len(buf.data) >= 2*maxArchiveBuffer {
				mu.Unlock()
				select {
				case <-drained:
				case <-gctx.Done():
				}
				mu.Lock()
				if gctx.Err() != nil {
					return gctx.Err()
				}
			}
			ar.set(func(v *archiveView) {
				if uint64(m.ServerEnd) >= v.reportedEnd && !m.ServerTime.IsZero() {
					v.reportedEnd, v.reportedTime = uint64(m.ServerEnd), m.ServerTime
				}
				if len(buf.data) == 0 && v.end >= v.reportedEnd && v.reportedTime.After(v.completeAt) {
					v.completeAt = v.reportedTime
				}
			})
			if len(m.Data) == 0 {
				return nil
			}
			if uint64(m.Start) != pos {
				return fmt.Errorf("WAL from %s, want %s: %w", m.Start, dbagent.LSN(pos), cairn.ErrCorrupt)
			}
			ends := dec.Write(m.Data)
			from := pos
			pos += uint64(len(m.Data))
			if pos <= buf.start {
				return nil // stored before
			}
			data := m.Data
			if from < buf.start {
				data = data[buf.start-from:]
			}
			if len(buf.data) == 0 {
				now := ar.s.now()
				ar.set(func(v *archiveView) { v.pendingSince = now })
			}
			buf.data = append(buf.data, data...)
			if len(buf.data) >= maxArchiveBuffer {
				select {
				case full <- struct{}{}:
				default:
				}
			}
			for _, e := range ends {
				if e.EndLSN > buf.start {
					buf.ends = append(buf.ends, e)
				}
			}
			return nil
		})
		return err
	})
	// The flusher stores what waits every interval, and once more when
	// the stream has ended.
	g.Go(func() error {
		for {
			final := false
			select {
			case <-gctx.Done():
				return nil
			case <-streamed:
				final = true
			case <-full:
			case <-ar.s.archives.after(ar.s.archives.interval):
			}
			takenAt := ar.s.now()
			mu.Lock()
			out := buf.take(seg, ar.view().reportedEnd, final)
			mu.Unlock()
			select {
			case drained <- struct{}{}:
			default:
			}
			if len(out.data) > 0 {
				if err := ar.store(gctx, r, tli, out); err != nil {
					return err
				}
				progressed = true
				// What take kept back waits from now on.
				mu.Lock()
				left := len(buf.data) > 0
				mu.Unlock()
				if left {
					ar.set(func(v *archiveView) {
						if v.pendingSince.IsZero() {
							v.pendingSince = takenAt
						}
					})
				}
			}
			ar.monitor(gctx, r)
			if final {
				return nil
			}
		}
	})
	if err := g.Wait(); err != nil {
		if errors.Is(err, cairn.ErrGone) {
			ar.gap(tli, ident, err)
		}
		return progressed, err
	}
	if tlEnd == nil {
		return progressed, fmt.Errorf("the WAL stream of timeline %d ended without its end: %w", tli, cairn.ErrUnavailable)
	}
	// The timeline ended: its successor's history, then the successor
	// from the start of the segment it switched in.
	hist, err := host.TimelineHistory(ctx, ar.inst, tlEnd.Next)
	if err != nil {
		return progressed, fmt.Errorf("timeline %d history: %w", tlEnd.Next, err)
	}
	if len(hist) > 0 {
		if _, err := r.PutLogPiece(ctx, format.LogPiece{Archive: ar.id, Log: historyLog(tlEnd.Next), Start: 0,
			End: uint64(len(hist)), Archived: ar.s.nowUTC()}, hist); err != nil {
			return progressed, err
		}
	}
	sw := uint64(tlEnd.Switch)
	ar.set(func(v *archiveView) {
		if len(hist) > 0 {
			v.switches = parseHistory(hist)
		}
		v.switches[tli] = sw
		v.timeline, v.end = tlEnd.Next, sw-sw%seg
		v.reportedEnd, v.reportedTime = 0, time.Time{}
	})
	ar.s.log.Info("archive moved to a new timeline", "instance", ar.inst, "timeline", tlEnd.Next, "switch", tlEnd.Switch)
	return true, nil
}

// follow decides where a session streams from: the archive's timeline
// and end, unless the server's history has left them.
//   - A new archive starts at the server's segment.
//   - A server on a later timeline that forked from the archive's
//     before the archive's end (the instance was recovered in place to
//     an earlier point) is followed onto the timeline that came next on
//     its history, from the segment of the fork: the old timeline's
//     WAL past the fork stays in the archive, off the current history.
//   - A server on an earlier timeline (a recover undone: the volume is
//     back as it was before) goes on with that timeline from where the
//     archive holds it to, when the server still has it.
//
// It sets the view to the result, with the current timeline's history.
func (ar *archiver) follow(ctx context.Context, r Repository, ident dbagent.WALIdentity, seg uint64) (uint32, uint64, error) {
	v := ar.view()
	tli, end := v.timeline, v.end
	switches := v.switches
	history := func(t uint32) ([]byte, error) {
		if t < 2 {
			return nil, nil
		}
		hist, err := ar.s.host.TimelineHistory(ctx, ar.inst, t)
		if err != nil {
			return nil, fmt.Errorf("timeline %d history: %w", t, err)
		}
		if _, err := r.PutLogPiece(ctx, format.LogPiece{Archive: ar.id, Log: historyLog(t), Start: 0,
			End: uint64(len(hist)), Archived: ar.s.nowUTC()}, hist); err != nil {
			return nil, err
		}
		return hist, nil
	}
	flushedSeg := uint64(ident.Flushed) - uint64(ident.Flushed)%seg
	switch {
	case tli == 0:
		tli, end = ident.Timeline, flushedSeg
	case tli > ident.Timeline:
		hist, err := history(ident.Timeline)
		if err != nil {
			return 0, 0, err
		}
		switches = parseHistory(hist)
		from := flushedSeg
		if spans := v.spans[ident.Timeline]; len(spans) > 0 && spans[len(spans)-1].End <= uint64(ident.Flushed) {
			from = spans[len(spans)-1].End
		}
		ar.s.log.Warn("the server is back on an earlier timeline than its archive's (a recover undone?): archiving it again",
			"instance", ar.inst, "timeline", ident.Timeline, "archive_timeline", tli, "from", dbagent.LSN(from))
		tli, end = ident.Timeline, from
	case tli < ident.Timeline:
		hist, err := ar.s.host.TimelineHistory(ctx, ar.inst, ident.Timeline)
		if err != nil {
			return 0, 0, fmt.Errorf("timeline %d history: %w", ident.Timeline, err)
		}
		anc := parseHistory(hist)
		sw, ok := anc[tli]
		if !ok || sw >= end {
			break // the stream of tli runs to its switch, then moves on
		}
		next := ident.Timeline
		for t := range anc {
			if t > tli && t < next {
				next = t
			}
		}
		nh, err := history(next)
		if err != nil {
			return 0, 0, err
		}
		switches = parseHistory(nh)
		ar.s.log.Info("the server's timeline forked from the archive's before its end (a recover in place): following it",
			"instance", ar.inst, "timeline", tli, "fork", dbagent.LSN(sw), "archive_end", dbagent.LSN(end), "next", next)
		tli, end = next, sw-sw%seg
	}
	ar.set(func(v *archiveView) {
		if tli != v.timeline {
			v.reportedEnd, v.reportedTime = 0, time.Time{}
		}
		v.segSize, v.timeline, v.end, v.state, v.err = seg, tli, end, "streaming", ""
		v.switches = switches
		if v.spans == nil {
			v.spans = map[uint32][]repo.LogSpan{}
		}
		if v.switches == nil {
			v.switches = map[uint32]uint64{}
		}
	})
	return tli, end, nil
}

// segmentBuf is the segment being archived as its pieces were stored,
// from its start: once whole, it is stored again as one piece and its
// pieces deleted, so a segment written over minutes ends as one object.
// Only the flusher of the running session touches it.
type segmentBuf struct {
	log    string
	start  uint64
	data   []byte
	pieces []format.LogPiece
}

// compact follows the pieces of the current segment (of seg bytes; a
// binary log's stretch) and, when it is whole, stores it as one piece,
// then deletes the pieces it replaces. A segment whose start this
// session did not store (it began before a restart) keeps its pieces. A crash between the two steps leaves
// overlapping pieces, which readers take as they come.
func (ar *archiver) compact(ctx context.Context, r Repository, seg uint64, h format.LogPiece, data []byte) error {
	b := ar.seg
	switch {
	case h.Start%seg == 0:
		b = &segmentBuf{log: h.Log, start: h.Start}
	case b == nil || b.log != h.Log || b.start+uint64(len(b.data)) != h.Start:
		ar.seg = nil
		return nil
	}
	b.data = append(b.data, data...)
	b.pieces = append(b.pieces, h)
	ar.seg = b
	if uint64(len(b.data)) < seg {
		return nil
	}
	ar.seg = nil
	return ar.storeWhole(ctx, r, b)
}

// storeWhole stores the pieces b follows as one piece, then deletes
// them; with fewer than two it does nothing.
func (ar *archiver) storeWhole(ctx context.Context, r Repository, b *segmentBuf) error {
	if len(b.pieces) < 2 {
		return nil
	}
	whole := format.LogPiece{Archive: ar.id, Log: b.log, Start: b.start, End: b.start + uint64(len(b.data)), Archived: ar.s.nowUTC()}
	var refs []repo.LogRef
	for _, p := range b.pieces {
		if whole.FirstTime.IsZero() {
			whole.FirstTime = p.FirstTime
		}
		if !p.LastTime.IsZero() {
			whole.LastTime = p.LastTime
		}
		whole.Transactions += p.Transactions
		whole.ServerTime = p.ServerTime
		if p.Position != "" {
			whole.Position = p.Position
		}
		refs = append(refs, repo.LogRef{Archive: ar.id, Log: p.Log, Start: p.Start, End: p.End})
	}
	if _, err := r.PutLogPiece(ctx, whole, b.data); err != nil {
		return fmt.Errorf("storing %s from %d whole: %w", b.log, b.start, err)
	}
	if err := r.DeleteLogPieces(ctx, refs); err != nil && ctx.Err() == nil {
		ar.s.log.Warn("deleting the pieces of a stretch stored whole", "instance", ar.inst, "log", b.log, "start", b.start, "err", err)
	}
	return nil
}

// store stores pending WAL as pieces, one per segment it touches, then
// tells the data plane the slot may let go of it.
func (ar *archiver) store(ctx context.Context, r Repository, tli uint32, p pending) error {
	seg := ar.view().segSize
	at := p.start
	data := p.data
	for len(data) > 0 {
		n := min(uint64(len(data)), seg-at%seg)
		h := format.LogPiece{Archive: ar.id, Log: walLog(tli), Start: at, End: at + n, Archived: ar.s.nowUTC()}
		for _, e := range p.ends {
			if e.EndLSN > at && e.EndLSN <= at+n {
				if h.FirstTime.IsZero() {
					h.FirstTime = e.Time
				}
				h.LastTime = e.Time
				h.Transactions++
			}
		}
		v := ar.view()
		if at+n >= v.reportedEnd && !v.reportedTime.IsZero() {
			h.ServerTime = v.reportedTime
		}
		if _, err := r.PutLogPiece(ctx, h, data[:n]); err != nil {
			return err
		}
		if err := ar.compact(ctx, r, seg, h, data[:n]); err != nil {
			return err
		}
		ar.set(func(v *archiveView) {
			v.end = h.End
			if !h.LastTime.IsZero() {
				v.lastTxn = h.LastTime
			}
			if !h.ServerTime.IsZero() && h.ServerTime.After(v.completeAt) {
				v.completeAt = h.ServerTime
			}
			spans := v.spans[tli]
			if k := len(spans); k > 0 && spans[k-1].End >= h.Start {
				spans[k-1].End = max(spans[k-1].End, h.End)
			} else {
				spans = append(spans, repo.LogSpan{Log: h.Log, Start: h.Start, End: h.End})
			}
			v.spans[tli] = spans
		})
		at += n
		data = data[n:]
	}
	ar.s.host.ConfirmWAL(ar.inst, dbagent.LSN(at))
	ar.set(func(v *archiveView) {
		v.pendingSince = time.Time{}
		if v.end >= v.reportedEnd && v.reportedTime.After(v.completeAt) {
			v.completeAt = v.reportedTime
		}
	})
	return nil
}

// gap records that the server no longer has the archive's next WAL: the
// archive goes on from the server's current segment.
func (ar *archiver) gap(tli uint32, ident dbagent.WALIdentity, cause error) {
	ar.set(func(v *archiveView) {
		next := uint64(ident.Flushed) - uint64(ident.Flushed)%v.segSize
		if ident.Timeline != tli || next <= v.end {
			return
		}
		v.gaps = append(v.gaps, cairn.ArchiveGap{Timeline: tli, From: dbagent.LSN(v.end).String(),
			To: dbagent.LSN(next).String(), Reason: cause.Error()})
		v.end = next
	})
	ar.s.log.Error("the archive lost WAL the server no longer has", "instance", ar.inst, "timeline", tli, "err", cause)
	ar.event("instance.archive.gap", map[string]any{"timeline": tli, "reason": cause.Error()})
}

// event raises an archive event for the instance's project.
func (ar *archiver) event(typ string, payload map[string]any) {
	ctx := context.Background()
	inst, err := ar.s.instanceRow(ctx, ar.inst)
	if err != nil {
		ar.s.log.Warn("an archive event for an instance not found", "instance", ar.inst, "event", typ, "err", err)
		return
	}
	payload["instance_id"] = ar.inst
	ar.s.event(ctx, typ, inst.ProjectID, payload)
}

// monitor, every check interval, reads the server's slot and lists the
// archive again; it raises an event when the archive starts to lag past
// archiveLagAlarm, when the slot comes within a quarter of losing WAL
// (each once until it clears), and when pieces went missing from the
// store.
func (ar *archiver) monitor(ctx context.Context, r Repository) {
	now := ar.s.now()
	v := ar.view()
	if (v.slotChecked.IsZero() || now.Sub(v.slotChecked) >= ar.s.archives.check) && v.mariadb {
		ar.relistBinlog(ctx, r)
		ar.set(func(v *archiveView) { v.slotChecked = now })
	} else if v.slotChecked.IsZero() || now.Sub(v.slotChecked) >= ar.s.archives.check {
		ar.relist(ctx, r)
		slot, err := ar.s.host.WALSlot(ctx, ar.inst)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, cairn.ErrUnsupported) {
				ar.s.log.Warn("reading an instance's archive slot", "instance", ar.inst, "err", err)
			}
		} else if slot.Exists {
			low := slot.Status == "unreserved" || slot.Status == "lost" ||
				slot.KeepBytes > 0 && slot.SafeBytes >= 0 && slot.SafeBytes < slot.KeepBytes/4
			raise := false
			ar.set(func(v *archiveView) {
				v.slot = &cairn.ArchiveSlot{Status: slot.Status, SafeBytes: slot.SafeBytes, KeepBytes: slot.KeepBytes}
				raise = low && !v.slotLow
				v.slotLow = low
			})
			if raise {
				ar.s.log.Warn("an instance's archive slot is close to losing WAL", "instance", ar.inst,
					"wal_status", slot.Status, "safe_bytes", slot.SafeBytes, "keep_bytes", slot.KeepBytes)
				ar.event("instance.archive.slot", map[string]any{"wal_status": slot.Status,
					"safe_bytes": slot.SafeBytes, "keep_bytes": slot.KeepBytes})
			}
		}
		ar.set(func(v *archiveView) { v.slotChecked = now })
	}
	lag := time.Duration(0)
	if !v.pendingSince.IsZero() {
		lag = now.Sub(v.pendingSince)
	}
	raise := false
	ar.set(func(v *archiveView) {
		over := lag > archiveLagAlarm
		raise = over && !v.lagging
		v.lagging = over
	})
	if raise {
		ar.s.log.Warn("an instance's archive lags", "instance", ar.inst, "lag", lag)
		ar.event("instance.archive.lag", map[string]any{"lag_seconds": lag.Seconds()})
	}
}

// relist lists the archive's pieces again: holes that appeared inside
// what it held (pieces deleted or lost in the store) become gaps, and
// the window shrinks with them.
func (ar *archiver) relist(ctx context.Context, r Repository) {
	pieces, _, err := r.LogPieces(ctx, ar.id)
	if err != nil {
		if ctx.Err() == nil {
			ar.s.log.Warn("listing an instance's archive", "instance", ar.inst, "err", err)
		}
		return
	}
	spans := map[uint32][]repo.LogSpan{}
	for _, sp := range repo.LogSpans(pieces) {
		if tli, ok := parseWALLog(sp.Log); ok {
			spans[tli] = append(spans[tli], sp)
		}
	}
	var found []cairn.ArchiveGap
	ar.set(func(v *archiveView) {
		for tli, list := range spans {
			// Holes inside what the archiver had stored (monitor runs
			// between stores, so nothing is stored meanwhile).
			old := v.spans[tli]
			if len(old) == 0 {
				continue
			}
			for i := 1; i < len(list); i++ {
				from, to := list[i-1].End, list[i].Start
				if from < old[len(old)-1].End && !hasGap(v.gaps, tli, from) {
					g := cairn.ArchiveGap{Timeline: tli, From: dbagent.LSN(from).String(), To: dbagent.LSN(to).String(),
						Reason: "missing from the archive"}
					v.gaps = append(v.gaps, g)
					found = append(found, g)
				}
			}
			// Pieces gone from the start (retention) only move where the
			// archive starts: the window follows from the spans.
			// The spans shown are the store's, up to what the archiver
			// itself stored since.
			if k := len(list); k > 0 && list[k-1].End < old[len(old)-1].End {
				list[k-1].End = old[len(old)-1].End
			}
			v.spans[tli] = list
		}
	})
	for _, g := range found {
		ar.s.log.Error("pieces of an instance's archive are missing from the store", "instance", ar.inst,
			"timeline", g.Timeline, "from", g.From, "to", g.To)
		ar.event("instance.archive.gap", map[string]any{"timeline": g.Timeline, "from": g.From, "to": g.To, "reason": g.Reason})
	}
}

func hasGap(gaps []cairn.ArchiveGap, tli uint32, from uint64) bool {
	s := dbagent.LSN(from).String()
	for _, g := range gaps {
		if g.Timeline == tli && g.From == s {
			return true
		}
	}
	return false
}

// abandonedLogs reads which timelines or generations of archive id an
// undone recover left (format.ArchiveInfo.Abandoned); none when the
// archive has no description yet.
func abandonedLogs(ctx context.Context, r Repository, id cairn.ID) (map[uint32]bool, error) {
	info, err := r.ArchiveInfo(ctx, id)
	if errors.Is(err, cairn.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make(map[uint32]bool, len(info.Abandoned))
	for _, t := range info.Abandoned {
		out[t] = true
	}
	return out, nil
}

// abandonLogs records in the description of instance inst's archive
// that the timelines or generations after from, the ones an undone
// recover began, are not the server's history. Marking them again is
// harmless.
func (s *Service) abandonLogs(ctx context.Context, inst string, from uint32, mariadb bool) error {
	id, err := ArchiveID(inst)
	if err != nil {
		return fmt.Errorf("archive of instance %s: %w", inst, err)
	}
	r, err := s.repoFor(ctx, s.defCont)
	if err != nil {
		return err
	}
	pieces, _, err := r.LogPieces(ctx, id)
	if err != nil {
		return err
	}
	info, err := r.ArchiveInfo(ctx, id)
	if errors.Is(err, cairn.ErrNotFound) {
		return nil // nothing archived, nothing to mark
	}
	if err != nil {
		return err
	}
	marked := slices.Clone(info.Abandoned)
	for _, p := range pieces {
		t, ok := parseWALLog(p.Log)
		if mariadb {
			t, _, ok = parseBinlogLog(p.Log)
		}
		if ok && t > from && !slices.Contains(marked, t) {
			marked = append(marked, t)
		}
	}
	if len(marked) == len(info.Abandoned) {
		return nil
	}
	slices.Sort(marked)
	info.Abandoned = marked
	if err := r.PutArchiveInfo(ctx, *info); err != nil {
		return fmt.Errorf("marking the undone recover's log: %w", err)
	}
	s.log.Info("an undone recover's log marked abandoned", "instance", inst, "abandoned", marked)
	return nil
}

// Archives returns the state of every archive, by instance: what the
// metrics show.
func (s *Service) Archives() map[string]cairn.ArchiveState {
	s.archives.mu.Lock()
	ids := make([]string, 0, len(s.archives.byInst))
	for id := range s.archives.byInst {
		ids = append(ids, id)
	}
	s.archives.mu.Unlock()
	out := make(map[string]cairn.ArchiveState, len(ids))
	for _, id := range ids {
		if st := s.archiveState(id); st != nil {
			out[id] = *st
		}
	}
	return out
}

// archiveState is what the API shows of an instance's archive, nil when
// none runs.
func (s *Service) archiveState(id string) *cairn.ArchiveState {
	ar := s.archiverOf(id)
	if ar == nil {
		return nil
	}
	v := ar.view()
	st := &cairn.ArchiveState{Container: ar.container, State: v.state, Timeline: v.timeline,
		CompleteAt: v.completeAt, LastTransaction: v.lastTxn, Gaps: v.gaps, Slot: v.slot, Error: v.err,
		RestorePointFailures: v.pointFailures, RestorePoints: v.points}
	switch {
	case v.mariadb && v.binFile != "":
		st.ArchivedPosition, st.ArchivedGTID = binlogPosString(v.binFile, v.end), v.binGTID
	case !v.mariadb && v.end > 0:
		st.ArchivedLSN = dbagent.LSN(v.end).String()
	}
	if !v.pendingSince.IsZero() {
		st.LagSeconds = s.now().Sub(v.pendingSince).Seconds()
	}
	return st
}

// startArchivers starts an archiver for every active instance.
func (s *Service) startArchivers(ctx context.Context) {
	if s.host == nil {
		return
	}
	var list []cairn.Instance
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		list, err = tx.Instances(ctx, catalog.Filter{})
		return err
	})
	if err != nil {
		s.log.Warn("listing the instances to archive", "err", err)
		return
	}
	for _, inst := range list {
		switch inst.Status {
		case cairn.InstanceActive, cairn.InstanceBackup:
			s.startArchiver(inst)
		}
	}
}

// recoverableWindow is the time a point-in-time restore of an instance
// can reach: from the earliest backup whose WAL the archive holds without
// a hole up to its end, to the latest time the archive is complete at.
// nil when no backup can be rolled forward.
func (s *Service) recoverableWindow(ctx context.Context, id string) (*cairn.TimeWindow, error) {
	ar := s.archiverOf(id)
	if ar == nil {
		return nil, nil
	}
	backups, err := s.completedBackups(ctx, id)
	if err != nil {
		return nil, err
	}
	from, to := ar.view().window(backups)
	if from.IsZero() {
		return nil, nil
	}
	return &cairn.TimeWindow{From: from.UTC(), To: to.UTC()}, nil
}

// completedBackups lists an instance's completed database backups.
func (s *Service) completedBackups(ctx context.Context, id string) ([]cairn.DatabaseBackup, error) {
	var backups []cairn.DatabaseBackup
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		backups, err = tx.DatabaseBackups(ctx, catalog.Filter{InstanceID: id, Status: cairn.Status(cairn.DatabaseBackupCompleted)})
		return err
	})
	return backups, err
}

// rollsForward says whether the archive replays backup b's log: a
// snapshot or physical backup whose WAL (PostgreSQL) or binary log
// (MariaDB) it holds without a hole from b's start to its end.
func (v archiveView) rollsForward(b cairn.DatabaseBackup) bool {
	if b.Strategy == cairn.StrategyLogical || b.DataTimestamp.IsZero() {
		return false
	}
	rec, err := dbRecord(b)
	if err != nil {
		return false
	}
	if v.mariadb {
		return rec.MariaDB != nil && rec.MariaDB.BinlogFile != "" && max(rec.MariaDB.BinlogGeneration, 1) == v.timeline &&
			v.binlogReaches(rec.MariaDB.BinlogFile, rec.MariaDB.BinlogPos)
	}
	return rec.PostgreSQL != nil && v.reaches(rec.PostgreSQL.Timeline, uint64(rec.PostgreSQL.StartLSN))
}

// window is the recoverable window over backups: from the earliest the
// archive rolls forward to the latest time the archive is complete at;
// zero times when there is none.
func (v archiveView) window(backups []cairn.DatabaseBackup) (from, to time.Time) {
	to = v.completeAt
	if v.lastTxn.After(to) {
		to = v.lastTxn
	}
	if to.IsZero() || !v.mariadb && v.segSize == 0 {
		return time.Time{}, time.Time{}
	}
	for _, b := range backups {
		if v.rollsForward(b) && (from.IsZero() || b.DataTimestamp.Before(from)) {
			from = b.DataTimestamp
		}
	}
	if from.IsZero() || to.Before(from) {
		return time.Time{}, time.Time{}
	}
	return from, to
}

// reaches says whether the archive holds the WAL from lsn on timeline
// tli, without a hole, to its end (walChain).
func (v archiveView) reaches(tli uint32, lsn uint64) bool {
	_, err := v.walChain(tli, lsn)
	return err == nil
}
