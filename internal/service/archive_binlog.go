package service

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/binlog"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"golang.org/x/sync/errgroup"
)

// Binary log archiving (MariaDB), the counterpart of the WAL archive.
// The data plane streams the server's binary log files as
// mariadb-binlog receives them, from the first byte of a file on and
// across rotations. The archiver stores them as pieces of logs named by
// generation and file (binlogLog), each piece's header holding the
// commits in it and the GTID position at its end. A session starts
// from the first byte of the archive's last file, decoding what it
// stored before without storing it again: the decoder is then in step,
// and the GTIDs' continuity is checked across the restart.
//
// The generation is the binary log's history, as the server reports it
// (dbagent.BinlogState.Generation, kept on its volume): 1 until a
// recover in place replays a binary log into the server and gives it a
// new one (the archive's highest plus one). After that the server
// writes files of the same names as the old history's but other
// content, which the archive keeps apart; an undone recover puts the
// volume, and so the generation, back, and the archive goes on with the
// old history where it ended.

// binlogLog names the log of one binary log file.
func binlogLog(gen uint32, file string) string { return fmt.Sprintf("bl-%08x-%s", gen, file) }

// parseBinlogLog reads a binary log file's generation and name back
// from its log's name.
func parseBinlogLog(log string) (gen uint32, file string, ok bool) {
	rest, ok := strings.CutPrefix(log, "bl-")
	if !ok || len(rest) < 10 || rest[8] != '-' {
		return 0, "", false
	}
	v, err := strconv.ParseUint(rest[:8], 16, 32)
	if err != nil || v == 0 {
		return 0, "", false
	}
	file = rest[9:]
	if _, ok := binlogSeq(file); !ok {
		return 0, "", false
	}
	return uint32(v), file, true
}

// binlogSeq is a binary log file's sequence number: the digits after
// its last dot.
func binlogSeq(file string) (uint64, bool) {
	i := strings.LastIndexByte(file, '.')
	if i <= 0 || len(file)-i-1 < 6 {
		return 0, false
	}
	n, err := strconv.ParseUint(file[i+1:], 10, 64)
	return n, err == nil
}

// binlogAt is a place in a server's binary log.
type binlogAt struct {
	seq uint64
	pos uint64
}

func binlogPlace(file string, pos uint64) binlogAt {
	seq, _ := binlogSeq(file)
	return binlogAt{seq, pos}
}

func (a binlogAt) before(b binlogAt) bool {
	return a.seq < b.seq || a.seq == b.seq && a.pos < b.pos
}

// binlogSpan is a stretch of one file the archive holds.
type binlogSpan struct {
	file       string
	seq        uint64
	start, end uint64
}

// binlogSpans orders the spans of an archive's binary log files of
// generation gen by file, then start.
func binlogSpans(pieces []repo.LogRef, gen uint32) []binlogSpan {
	var out []binlogSpan
	for _, sp := range repo.LogSpans(pieces) {
		g, file, ok := parseBinlogLog(sp.Log)
		if !ok || g != gen {
			continue
		}
		seq, _ := binlogSeq(file)
		out = append(out, binlogSpan{file: file, seq: seq, start: sp.Start, end: sp.End})
	}
	slices.SortStableFunc(out, func(a, b binlogSpan) int {
		return cmp.Or(cmp.Compare(a.seq, b.seq), cmp.Compare(a.start, b.start))
	})
	return out
}

// binlogGaps are the holes between spans: inside a file, or files
// missing between two.
func binlogGaps(spans []binlogSpan, gen uint32) []cairn.ArchiveGap {
	var gaps []cairn.ArchiveGap
	for i := 1; i < len(spans); i++ {
		a, b := spans[i-1], spans[i]
		switch {
		case a.seq == b.seq:
			gaps = append(gaps, cairn.ArchiveGap{Timeline: gen, From: binlogPosString(a.file, a.end),
				To: binlogPosString(b.file, b.start), Reason: "missing from the archive"})
		case b.seq > a.seq+1 || b.start > 0:
			gaps = append(gaps, cairn.ArchiveGap{Timeline: gen, From: binlogPosString(a.file, a.end),
				To: binlogPosString(b.file, b.start), Reason: "binary log files missing from the archive"})
		}
	}
	return gaps
}

func binlogPosString(file string, pos uint64) string { return fmt.Sprintf("%s:%d", file, pos) }

// loadBinlogArchive reads a MariaDB archive's state from the store
// alone: its files, where it ends, its holes, and the times and GTID
// position of its last pieces.
//
// gen is the generation to read, 0 for the archive's highest (1 when it
// holds none); binMaxGen is set to the highest either way.
func loadBinlogArchive(ctx context.Context, r Repository, id cairn.ID, gen uint32) (archiveView, error) {
	pieces, _, err := r.LogPieces(ctx, id)
	if err != nil {
		return archiveView{}, err
	}
	top := uint32(0)
	for _, p := range pieces {
		if g, _, ok := parseBinlogLog(p.Log); ok {
			top = max(top, g)
		}
	}
	if gen == 0 {
		abandoned, err := abandonedLogs(ctx, r, id)
		if err != nil {
			return archiveView{}, err
		}
		for _, p := range pieces {
			if g, _, ok := parseBinlogLog(p.Log); ok && !abandoned[g] {
				gen = max(gen, g)
			}
		}
		if gen == 0 {
			gen = max(top, 1)
		}
	}
	spans := binlogSpans(pieces, gen)
	v := archiveView{mariadb: true, timeline: gen, binMaxGen: top, binSpans: spans, gaps: binlogGaps(spans, gen)}
	if len(spans) == 0 {
		return v, nil
	}
	last := spans[len(spans)-1]
	v.binFile, v.end = last.file, last.end
	// The pieces in archive order, for the look back at the last ones.
	var ordered []repo.LogRef
	for _, p := range pieces {
		if g, _, ok := parseBinlogLog(p.Log); ok && g == gen {
			ordered = append(ordered, p)
		}
	}
	slices.SortStableFunc(ordered, func(a, b repo.LogRef) int {
		_, fa, _ := parseBinlogLog(a.Log)
		_, fb, _ := parseBinlogLog(b.Log)
		sa, _ := binlogSeq(fa)
		sb, _ := binlogSeq(fb)
		return cmp.Or(cmp.Compare(sa, sb), cmp.Compare(a.Start, b.Start), cmp.Compare(a.End, b.End))
	})
	for i := len(ordered) - 1; i >= 0 && i >= len(ordered)-64; i-- {
		h, _, err := r.ReadLogPiece(ctx, ordered[i])
		if err != nil {
			return archiveView{}, fmt.Errorf("archive piece %s: %w", ordered[i].Name(), err)
		}
		if i == len(ordered)-1 {
			v.completeAt, v.binGTID = h.ServerTime, h.Position
		}
		if v.binGTID == "" {
			v.binGTID = h.Position
		}
		if !h.LastTime.IsZero() {
			v.lastTxn = h.LastTime
			break
		}
	}
	return v, nil
}

// binlogReaches says whether the archive holds the binary log from pos
// in file to its end without a hole: the span holding pos, then one
// whole span for each following file, in sequence.
func (v archiveView) binlogReaches(file string, pos uint64) bool {
	_, err := v.binlogChain(file, pos)
	return err == nil
}

// binlogChain returns the spans a replay from pos in file reads, in
// order, or why the archive cannot give them.
func (v archiveView) binlogChain(file string, pos uint64) ([]binlogSpan, error) {
	seq, ok := binlogSeq(file)
	if !ok {
		return nil, fmt.Errorf("binary log file %q: %w", file, cairn.ErrInvalid)
	}
	i := slices.IndexFunc(v.binSpans, func(s binlogSpan) bool { return s.seq == seq && s.start == 0 && s.end >= pos })
	if i < 0 {
		return nil, fmt.Errorf("the archive does not hold binary log %s to %d: %w", file, pos, cairn.ErrInvalid)
	}
	chain := []binlogSpan{v.binSpans[i]}
	for _, s := range v.binSpans[i+1:] {
		prev := chain[len(chain)-1]
		if s.seq != prev.seq+1 || s.start != 0 {
			return nil, fmt.Errorf("the archive's binary log has a hole after %s: %w",
				binlogPosString(prev.file, prev.end), cairn.ErrInvalid)
		}
		chain = append(chain, s)
	}
	return chain, nil
}

// binCommit is a transaction's end in a pending file.
type binCommit struct {
	end  uint64
	time time.Time
	// gtid is the GTID position once the transaction committed.
	gtid string
}

// binPending is binary log received and not yet stored: bytes [start,
// start+len(data)) of file, and the commits ending in them.
type binPending struct {
	file    string
	start   uint64
	data    []byte
	commits []binCommit
	// ended says the stream has moved past the file: its last bytes
	// are these.
	ended bool
}

// binlogSession archives the server's binary log until the stream
// ends; it fails when it does (a binary log has no end short of the
// server's). progressed says whether anything was stored.
func (ar *archiver) binlogSession(ctx context.Context) (progressed bool, err error) {
	host := ar.s.host
	st, err := host.BinlogState(ctx, ar.inst)
	if err != nil {
		return false, fmt.Errorf("the server's binary log: %w", err)
	}
	r, err := ar.s.repoFor(ctx, ar.container)
	if err != nil {
		return false, err
	}
	gen := max(st.Generation, 1)
	if v := ar.view(); !v.loaded || v.timeline != gen {
		if !v.loaded {
			if _, err := r.ArchiveInfo(ctx, ar.id); errors.Is(err, cairn.ErrNotFound) {
				if err := r.PutArchiveInfo(ctx, format.ArchiveInfo{ID: ar.id, Datastore: dbagent.MariaDB, Instance: ar.inst,
					Created: ar.s.nowUTC(), SystemID: st.ServerID}); err != nil {
					return false, err
				}
			} else if err != nil {
				return false, err
			}
		} else {
			ar.s.log.Info("the server's binary log is on another generation: archiving it", "instance", ar.inst,
				"generation", gen, "archive_generation", v.timeline)
		}
		// The view of the server's generation, from the store (the gaps
		// of another generation are not this one's).
		nv, err := loadBinlogArchive(ctx, r, ar.id, gen)
		if err != nil {
			return false, err
		}
		ar.set(func(s *archiveView) {
			s.loaded, s.mariadb, s.timeline, s.binMaxGen, s.binSpans, s.gaps = true, true, nv.timeline, nv.binMaxGen, nv.binSpans, nv.gaps
			s.binFile, s.end, s.binGTID, s.lastTxn, s.completeAt = nv.binFile, nv.end, nv.binGTID, nv.lastTxn, nv.completeAt
			s.reportedFile, s.reportedEnd, s.reportedTime = "", 0, time.Time{}
		})
	}
	startFile, skip, err := ar.binlogStart(st)
	if err != nil {
		return false, err
	}
	ar.set(func(v *archiveView) { v.state, v.err = "streaming", "" })

	var mu sync.Mutex
	var bufs []*binPending // the last is the file being received
	buffered := 0
	file, pos := "", uint64(0)
	var dec *binlog.Decoder
	gtids := binlog.Position{}
	if p, err := binlog.ParsePosition(ar.view().binGTID); err == nil {
		gtids = p
	}
	var open *binlog.GTID // the transaction begun and not yet committed
	g, gctx := errgroup.WithContext(ctx)
	streamed := make(chan struct{})
	full, drained := make(chan struct{}, 1), make(chan struct{}, 1)
	g.Go(func() error {
		defer close(streamed)
		return host.StreamBinlog(gctx, ar.inst, startFile, func(m dbagent.BinlogMessage) error {
			mu.Lock()
			defer mu.Unlock()
			for buffered >= 2*maxArchiveBuffer {
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
			if len(m.Data) == 0 {
				if m.ServerFile != "" && !m.ServerTime.IsZero() {
					ar.set(func(v *archiveView) {
						v.reportedFile, v.reportedEnd, v.reportedTime = m.ServerFile, m.ServerPos, m.ServerTime
						if buffered == 0 && !binlogPlace(v.binFile, v.end).before(binlogPlace(m.ServerFile, m.ServerPos)) &&
							m.ServerTime.After(v.completeAt) {
							v.completeAt = m.ServerTime
						}
					})
				}
				return nil
			}
			if m.File != file {
				seq, ok := binlogSeq(m.File)
				if !ok || format.ValidateLogName(binlogLog(gen, m.File)) != nil {
					return fmt.Errorf("binary log file name %q: %w", m.File, cairn.ErrUnsupported)
				}
				if file == "" && m.File != startFile || file != "" && seq <= binlogPlace(file, 0).seq || m.Start != 0 {
					return fmt.Errorf("binary log %s from %d after %s: %w", m.File, m.Start, binlogPosString(file, pos), cairn.ErrCorrupt)
				}
				if dec != nil && !dec.Boundary() {
					return fmt.Errorf("binary log %s ends inside an event at %d: %w", file, pos, cairn.ErrCorrupt)
				}
				if file != "" {
					if n := len(bufs); n > 0 && bufs[n-1].file == file {
						bufs[n-1].ended = true
					} else {
						bufs = append(bufs, &binPending{file: file, start: pos, ended: true})
					}
				}
				file, pos, dec, open = m.File, 0, binlog.NewDecoder(), nil
			}
			if m.Start != pos {
				return fmt.Errorf("binary log %s from %d, want %d: %w", file, m.Start, pos, cairn.ErrCorrupt)
			}
			events, err := dec.Write(m.Data)
			if err != nil {
				return fmt.Errorf("binary log %s: %w: %w", file, err, cairn.ErrCorrupt)
			}
			from := pos
			pos += uint64(len(m.Data))
			data := m.Data
			if file == startFile {
				if pos <= skip {
					data = nil // stored before
				} else if from < skip {
					data = data[skip-from:]
					from = skip
				}
			}
			var b *binPending
			if len(data) > 0 {
				if n := len(bufs); n > 0 && bufs[n-1].file == file {
					b = bufs[n-1]
				} else {
					b = &binPending{file: file, start: from}
					bufs = append(bufs, b)
				}
				if buffered == 0 {
					now := ar.s.now()
					ar.set(func(v *archiveView) { v.pendingSince = now })
				}
				b.data = append(b.data, data...)
				buffered += len(data)
				if buffered >= maxArchiveBuffer {
					select {
					case full <- struct{}{}:
					default:
					}
				}
			}
			var jumps []string
			for _, e := range events {
				if e.GTID != nil {
					gt := *e.GTID
					open = &gt
				}
				if !e.Commit || open == nil {
					continue
				}
				if !gtids.Follow(*open) {
					jumps = append(jumps, open.String())
				}
				open = nil
				if b != nil && e.End > b.start {
					b.commits = append(b.commits, binCommit{end: e.End, time: e.Time, gtid: gtids.String()})
				}
			}
			for _, j := range jumps {
				ar.binlogJump(gen, file, j)
			}
			return nil
		})
	})
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
			mu.Lock()
			out := bufs
			bufs, buffered = nil, 0
			mu.Unlock()
			select {
			case drained <- struct{}{}:
			default:
			}
			for _, b := range out {
				if err := ar.storeBinlog(gctx, r, gen, b); err != nil {
					return err
				}
				progressed = progressed || len(b.data) > 0
			}
			ar.monitor(gctx, r)
			if final {
				return nil
			}
		}
	})
	err = g.Wait()
	if err == nil {
		err = fmt.Errorf("the binary log stream ended: %w", cairn.ErrUnavailable)
	}
	return progressed, err
}

// binlogStart decides where a session streams from: the first byte of
// the archive's last file, the bytes before the archive's end only
// decoded; a new archive starts with the server's current file. When
// the server no longer has the archive's file, the archive has a gap:
// it goes on with the server's next file.
func (ar *archiver) binlogStart(st dbagent.BinlogState) (file string, skip uint64, err error) {
	v := ar.view()
	if v.binFile == "" {
		if st.File == "" {
			return "", 0, fmt.Errorf("the server writes no binary log: %w", cairn.ErrUnsupported)
		}
		return st.File, 0, nil
	}
	if slices.ContainsFunc(st.Files, func(f dbagent.BinlogFile) bool { return f.Name == v.binFile }) {
		return v.binFile, v.end, nil
	}
	at := binlogPlace(v.binFile, 0).seq
	next := ""
	for _, f := range st.Files {
		if s, ok := binlogSeq(f.Name); ok && s > at {
			next = f.Name
			break
		}
	}
	if next == "" {
		return "", 0, fmt.Errorf("the server's binary log (%s) is behind its archive's (%s): was it reset? %w",
			st.File, binlogPosString(v.binFile, v.end), cairn.ErrConflict)
	}
	gen := v.timeline
	g := cairn.ArchiveGap{Timeline: gen, From: binlogPosString(v.binFile, v.end), To: binlogPosString(next, 0),
		Reason: fmt.Sprintf("the server no longer has binary log %s", v.binFile)}
	ar.set(func(v *archiveView) { v.gaps = append(v.gaps, g) })
	ar.s.log.Error("the archive lost binary log the server no longer has", "instance", ar.inst, "from", g.From, "to", g.To)
	ar.event("instance.archive.gap", map[string]any{"timeline": gen, "from": g.From, "to": g.To, "reason": g.Reason})
	return next, 0, nil
}

// binlogJump records a GTID that does not follow its domain's last one:
// transactions are missing from the binary log between them.
func (ar *archiver) binlogJump(gen uint32, file, gtid string) {
	g := cairn.ArchiveGap{Timeline: gen, From: ar.view().binGTID, To: gtid,
		Reason: fmt.Sprintf("GTID %s in %s does not follow the one before", gtid, file)}
	ar.set(func(v *archiveView) { v.gaps = append(v.gaps, g) })
	ar.s.log.Error("the archive's binary log skips GTIDs", "instance", ar.inst, "file", file, "gtid", gtid)
	ar.event("instance.archive.gap", map[string]any{"timeline": gen, "from": g.From, "to": g.To, "reason": g.Reason})
}

// storeBinlog stores pending bytes of one file as pieces of at most
// maxArchiveBuffer, then folds the file's pieces into whole ones
// (compact).
func (ar *archiver) storeBinlog(ctx context.Context, r Repository, gen uint32, b *binPending) error {
	log := binlogLog(gen, b.file)
	at, data := b.start, b.data
	for len(data) > 0 {
		n := min(uint64(len(data)), maxArchiveBuffer)
		h := format.LogPiece{Archive: ar.id, Log: log, Start: at, End: at + n, Archived: ar.s.nowUTC()}
		v := ar.view()
		h.Position = v.binGTID
		for _, c := range b.commits {
			if c.end > at && c.end <= at+n {
				if h.FirstTime.IsZero() {
					h.FirstTime = c.time
				}
				h.LastTime, h.Position = c.time, c.gtid
				h.Transactions++
			}
		}
		if v.reportedFile != "" && !binlogPlace(b.file, h.End).before(binlogPlace(v.reportedFile, v.reportedEnd)) {
			h.ServerTime = v.reportedTime
		}
		if _, err := r.PutLogPiece(ctx, h, data[:n]); err != nil {
			return err
		}
		// The pieces are folded into whole stretches of
		// maxArchiveBuffer from the file's start, and its last stretch
		// when the file ends (below), so a file written over hours ends
		// as a few objects.
		if err := ar.compact(ctx, r, maxArchiveBuffer, h, data[:n]); err != nil {
			return err
		}
		ar.set(func(v *archiveView) {
			v.binFile, v.end, v.binGTID = b.file, h.End, h.Position
			if !h.LastTime.IsZero() {
				v.lastTxn = h.LastTime
			}
			if !h.ServerTime.IsZero() && h.ServerTime.After(v.completeAt) {
				v.completeAt = h.ServerTime
			}
			seq, _ := binlogSeq(b.file)
			if k := len(v.binSpans); k > 0 && v.binSpans[k-1].seq == seq && v.binSpans[k-1].end >= h.Start {
				v.binSpans[k-1].end = max(v.binSpans[k-1].end, h.End)
			} else {
				v.binSpans = append(v.binSpans, binlogSpan{file: b.file, seq: seq, start: h.Start, end: h.End})
			}
		})
		at += n
		data = data[n:]
	}
	if b.ended && ar.seg != nil && ar.seg.log == log {
		// The file's last stretch is cut by its end.
		whole := ar.seg
		ar.seg = nil
		if err := ar.storeWhole(ctx, r, whole); err != nil {
			return err
		}
	}
	ar.set(func(v *archiveView) {
		v.pendingSince = time.Time{}
		if v.reportedFile != "" && !binlogPlace(v.binFile, v.end).before(binlogPlace(v.reportedFile, v.reportedEnd)) &&
			v.reportedTime.After(v.completeAt) {
			v.completeAt = v.reportedTime
		}
	})
	return nil
}

// relistBinlog lists the archive's pieces again: holes that appeared
// inside what the archiver had stored (pieces deleted or lost in the
// store) become gaps, and the window shrinks with them.
func (ar *archiver) relistBinlog(ctx context.Context, r Repository) {
	pieces, _, err := r.LogPieces(ctx, ar.id)
	if err != nil {
		if ctx.Err() == nil {
			ar.s.log.Warn("listing an instance's archive", "instance", ar.inst, "err", err)
		}
		return
	}
	var found []cairn.ArchiveGap
	ar.set(func(v *archiveView) {
		list := binlogSpans(pieces, v.timeline)
		old := v.binSpans
		if len(old) == 0 {
			return
		}
		oldEnd := binlogPlace(old[len(old)-1].file, old[len(old)-1].end)
		for _, g := range binlogGaps(list, v.timeline) {
			at := binlogGapStart(g.From)
			if at.before(oldEnd) && !slices.ContainsFunc(v.gaps, func(x cairn.ArchiveGap) bool { return x.From == g.From }) {
				v.gaps = append(v.gaps, g)
				found = append(found, g)
			}
		}
		// What the archiver itself stored since stays.
		if k := len(list); k > 0 && binlogPlace(list[k-1].file, list[k-1].end).before(oldEnd) && list[k-1].file == old[len(old)-1].file {
			list[k-1].end = old[len(old)-1].end
		}
		v.binSpans = list
	})
	for _, g := range found {
		ar.s.log.Error("pieces of an instance's archive are missing from the store", "instance", ar.inst, "from", g.From, "to", g.To)
		ar.event("instance.archive.gap", map[string]any{"timeline": g.Timeline, "from": g.From, "to": g.To, "reason": g.Reason})
	}
}

// binlogGapStart reads a gap's "file:offset" back.
func binlogGapStart(s string) binlogAt {
	file, off, ok := strings.Cut(s, ":")
	if !ok {
		return binlogAt{}
	}
	n, _ := strconv.ParseUint(off, 10, 64)
	return binlogPlace(file, n)
}
