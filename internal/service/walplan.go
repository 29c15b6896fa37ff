package service

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/repo"
)

// Recovery to a point in time replays the archive's WAL from a backup's
// start to the target. walPlan finds the pieces that hold it, along the
// chain of timelines from the backup's to the archive's newest, and
// walFiles turns them into the files PostgreSQL's restore_command hands
// out: whole segments named by timeline and number (the last one padded
// with zeros, which the server reads as the end of the WAL), and the
// timelines' history files.

// walFileName is the name of the segment holding lsn on a timeline.
func walFileName(tli uint32, lsn, segSize uint64) string {
	perID := uint64(0x100000000) / segSize
	no := lsn / segSize
	return fmt.Sprintf("%08X%08X%08X", tli, no/perID, no%perID)
}

// historyFileName is the name of a timeline's history file.
func historyFileName(tli uint32) string { return fmt.Sprintf("%08X.history", tli) }

// walStretch is the WAL a recovery reads on one timeline: [from, to).
type walStretch struct {
	tli      uint32
	from, to uint64
}

// walChain is the stretches from a backup's start on its timeline,
// through each later timeline of the current timeline's history, to the
// archive's end: each timeline's stretch starts at the segment its
// predecessor switched in (PostgreSQL copies that segment's earlier part
// to the new timeline). A timeline left by a recover in place is not on
// that history past its fork. It fails, naming the hole, when the
// archive does not hold all of it.
func (v archiveView) walChain(tli uint32, lsn uint64) ([]walStretch, error) {
	if v.segSize == 0 {
		return nil, fmt.Errorf("the archive has no WAL yet: %w", cairn.ErrInvalid)
	}
	if _, ok := v.switches[tli]; tli == 0 || tli != v.timeline && !ok {
		return nil, fmt.Errorf("timeline %d is not in the history of the archive's timeline %d: %w", tli, v.timeline, cairn.ErrInvalid)
	}
	var path []uint32
	for t := range v.switches {
		if t >= tli && t < v.timeline {
			path = append(path, t)
		}
	}
	slices.Sort(path)
	path = append(path, v.timeline)
	var out []walStretch
	from := lsn - lsn%v.segSize
	for _, t := range path {
		to := v.end
		if t != v.timeline {
			to = v.switches[t]
		}
		covered := false
		for _, sp := range v.spans[t] {
			if sp.Start <= from && sp.End >= to {
				covered = true
				break
			}
		}
		if !covered {
			return nil, fmt.Errorf("the archive lacks WAL of timeline %d between %s and %s: %w", t,
				lsnString(from), lsnString(to), cairn.ErrInvalid)
		}
		out = append(out, walStretch{tli: t, from: from, to: to})
		from = to - to%v.segSize
	}
	return out, nil
}

func lsnString(v uint64) string { return fmt.Sprintf("%X/%X", uint32(v>>32), uint32(v)) }

// walFile is one file for the recovery's restore_command.
type walFile struct {
	Name string
	Data []byte
}

// walFiles reads the chain's pieces from r in order and hands fn the
// files a recovery needs: the history files of the chain's later
// timelines first, then every segment from the first stretch's start,
// each whole (zero-padded past the archive's end). It stops after the
// segment holding the first transaction that ended after until (zero:
// read to the end), and reports whether it found one: when it did not,
// the archive ends before any transaction after until, and a recovery
// to until is a recovery to the end of the WAL.
func walFiles(ctx context.Context, r Repository, id cairn.ID, segSize uint64, chain []walStretch, until time.Time,
	fn func(walFile) error) (found bool, err error) {
	pieces, _, err := r.LogPieces(ctx, id)
	if err != nil {
		return false, err
	}
	byLog := map[string][]repo.LogRef{}
	for _, p := range pieces {
		byLog[p.Log] = append(byLog[p.Log], p)
	}
	for _, st := range chain[1:] {
		if len(byLog[historyLog(st.tli)]) == 0 {
			return false, fmt.Errorf("the archive has no history of timeline %d: %w", st.tli, cairn.ErrInvalid)
		}
	}
	// Every timeline's history, not only the chain's: a server promoted
	// at the end of the recovery takes the first timeline with none, so
	// it never takes the ID of one the archive holds (a branch left by
	// an earlier recover in place) and mixes its WAL with that one's.
	var histories []uint32
	for log := range byLog {
		var tli uint32
		if _, err := fmt.Sscanf(log, "history-%08x", &tli); err == nil && historyLog(tli) == log {
			histories = append(histories, tli)
		}
	}
	slices.Sort(histories)
	for _, tli := range histories {
		list := byLog[historyLog(tli)]
		_, b, err := r.ReadLogPiece(ctx, list[len(list)-1])
		if err != nil {
			return false, fmt.Errorf("timeline %d history: %w", tli, err)
		}
		if err := fn(walFile{Name: historyFileName(tli), Data: b}); err != nil {
			return false, err
		}
	}
	for _, st := range chain {
		seg := make([]byte, 0, segSize)
		segStart := st.from
		flush := func() error {
			if len(seg) == 0 {
				return nil
			}
			data := make([]byte, segSize)
			copy(data, seg)
			err := fn(walFile{Name: walFileName(st.tli, segStart, segSize), Data: data})
			seg = seg[:0]
			return err
		}
		// A timeline the chain leaves is handed out only up to its switch
		// point, zeros after: what it holds past it (the history a
		// recover in place left) must never be replayed, and a server
		// reading a switch segment of the old timeline (the new one's
		// copy not being handed out) would replay it. For the same
		// reason a piece that runs past the switch does not count for
		// the stop after until's transaction: its last commit may lie
		// past the switch.
		last := st.tli == chain[len(chain)-1].tli
		end := uint64(math.MaxUint64)
		if !last {
			end = st.to
		}
		pos := st.from
		for _, p := range byLog[walLog(st.tli)] {
			if pos >= end {
				break
			}
			if p.End <= pos || p.Start > pos {
				continue // before what is read, or an overlap already read
			}
			h, body, err := r.ReadLogPiece(ctx, p)
			if err != nil {
				return false, err
			}
			body = body[pos-p.Start:]
			if uint64(len(body)) > end-pos {
				body = body[:end-pos]
			}
			for len(body) > 0 {
				n := min(uint64(len(body)), segStart+segSize-pos)
				seg = append(seg, body[:n]...)
				body, pos = body[n:], pos+n
				if pos == segStart+segSize {
					if err := flush(); err != nil {
						return false, err
					}
					segStart = pos
					if found {
						return true, nil
					}
				}
			}
			if (last || p.End <= end) && !until.IsZero() && h.LastTime.After(until) {
				found = true
			}
		}
		if pos < st.to {
			return false, fmt.Errorf("the archive lacks WAL of timeline %d from %s: %w", st.tli, lsnString(pos), cairn.ErrInvalid)
		}
		if err := flush(); err != nil {
			return false, err
		}
		if found {
			return true, nil
		}
	}
	return found, nil
}
