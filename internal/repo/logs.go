package repo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/objstore"
	"github.com/cairnproject/cairn/internal/repo/format"
)

// Log archives: a database server's logs, stored as pieces beside the
// backups (docs/format.md, "Log archives"). Pieces are sealed like every
// other object; they are not chunks, so gc never collects them: they go
// when retention deletes them.

// LogRef is a piece as a listing shows it.
type LogRef struct {
	Archive    cairn.ID
	Log        string
	Start, End uint64
	Size       int64 // stored bytes
}

// Name is the piece's object name.
func (p LogRef) Name() string { return format.LogPieceName(p.Archive, p.Log, p.Start, p.End) }

// PutArchiveInfo stores an archive's description. Writing it again with
// the same content is harmless.
func (r *Repository) PutArchiveInfo(ctx context.Context, a format.ArchiveInfo) error {
	a.Version = 1
	if a.ID.IsZero() || a.Datastore == "" {
		return fmt.Errorf("archive info without id or datastore: %w", cairn.ErrInvalid)
	}
	if err := r.putJSON(ctx, format.TypeArchive, format.ArchiveInfoName(a.ID), a, objstore.PutOptions{}); err != nil {
		return fmt.Errorf("storing archive %s: %w", a.ID.Short(), err)
	}
	return nil
}

// ArchiveInfo reads the description of archive id: cairn.ErrNotFound
// when there is none.
func (r *Repository) ArchiveInfo(ctx context.Context, id cairn.ID) (*format.ArchiveInfo, error) {
	data, err := r.getSealed(ctx, format.TypeArchive, format.ArchiveInfoName(id))
	if err != nil {
		return nil, fmt.Errorf("archive %s: %w", id.Short(), err)
	}
	a, err := format.DecodeArchiveInfo(data)
	if err != nil {
		return nil, err
	}
	if a.ID != id {
		return nil, fmt.Errorf("archive %s describes archive %s: %w", id.Short(), a.ID.Short(), cairn.ErrCorrupt)
	}
	return a, nil
}

// Archives lists the archives that have a description, sorted.
func (r *Repository) Archives(ctx context.Context) ([]cairn.ID, error) {
	var ids []cairn.ID
	err := r.be.List(ctx, format.LogsPrefix, func(info objstore.ObjectInfo) error {
		rest := strings.TrimPrefix(info.Name, format.LogsPrefix)
		head, tail, _ := strings.Cut(rest, "/")
		if tail != "info" {
			return nil
		}
		if id, err := cairn.ParseID(head); err == nil {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing archives: %w", err)
	}
	slices.SortFunc(ids, func(a, b cairn.ID) int { return strings.Compare(a.String(), b.String()) })
	return ids, nil
}

// PutLogPiece seals and stores one piece, compressed at the repository's
// level, and returns the bytes stored. When it returns nil the piece is
// durable.
func (r *Repository) PutLogPiece(ctx context.Context, h format.LogPiece, data []byte) (int, error) {
	h.Version = 1
	payload, err := format.EncodeLogPiece(h, data)
	if err != nil {
		return 0, err
	}
	sealed, err := r.sealer.Seal(nil, format.TypeLogPiece, h.Name(), payload, r.cfg.Compression)
	if err != nil {
		return 0, err
	}
	if err := r.be.Put(ctx, h.Name(), sealed, objstore.PutOptions{}); err != nil {
		return 0, fmt.Errorf("storing log piece %s: %w", h.Name(), err)
	}
	return len(sealed), nil
}

// LogPieces lists archive id's pieces, sorted by log and start. Objects
// under the archive whose names are not pieces' are returned in odd.
func (r *Repository) LogPieces(ctx context.Context, id cairn.ID) (pieces []LogRef, odd []string, err error) {
	prefix := format.ArchivePrefix(id)
	err = r.be.List(ctx, prefix, func(info objstore.ObjectInfo) error {
		if info.Name == format.ArchiveInfoName(id) {
			return nil
		}
		aid, log, s, e, perr := format.ParseLogPieceName(info.Name)
		if perr != nil || aid != id {
			odd = append(odd, info.Name)
			return nil
		}
		pieces = append(pieces, LogRef{Archive: id, Log: log, Start: s, End: e, Size: info.Size})
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("listing archive %s: %w", id.Short(), err)
	}
	SortLogRefs(pieces)
	slices.Sort(odd)
	return pieces, odd, nil
}

// SortLogRefs sorts pieces by log, then start, then end.
func SortLogRefs(pieces []LogRef) {
	slices.SortFunc(pieces, func(a, b LogRef) int {
		if c := strings.Compare(a.Log, b.Log); c != 0 {
			return c
		}
		if a.Start != b.Start {
			if a.Start < b.Start {
				return -1
			}
			return 1
		}
		switch {
		case a.End < b.End:
			return -1
		case a.End > b.End:
			return 1
		}
		return 0
	})
}

// ReadLogPiece reads and opens one piece and checks that its header
// says what its name does.
func (r *Repository) ReadLogPiece(ctx context.Context, p LogRef) (format.LogPiece, []byte, error) {
	name := p.Name()
	var err error
	for attempt := 0; attempt < fetchAttempts; attempt++ {
		var data, plain []byte
		data, err = objstore.ReadAll(ctx, r.be, name, 0, -1)
		if err != nil {
			return format.LogPiece{}, nil, fmt.Errorf("log piece %s: %w", name, err)
		}
		plain, err = r.sealer.Open(nil, format.TypeLogPiece, name, data, format.MaxLogPiece+(64<<10))
		if err != nil {
			continue
		}
		h, body, derr := format.DecodeLogPiece(plain)
		if derr != nil {
			return h, nil, fmt.Errorf("log piece %s: %w", name, derr)
		}
		if h.Archive != p.Archive || h.Log != p.Log || h.Start != p.Start || h.End != p.End {
			return h, nil, fmt.Errorf("log piece %s holds %s: %w", name, h.Name(), cairn.ErrCorrupt)
		}
		return h, body, nil
	}
	return format.LogPiece{}, nil, fmt.Errorf("log piece %s: %w", name, err)
}

// DeleteLogPieces deletes pieces (retention's work; a missing one is no
// error).
func (r *Repository) DeleteLogPieces(ctx context.Context, pieces []LogRef) error {
	return forEachParallel(ctx, len(pieces), r.opts.Transfers, func(ctx context.Context, i int) error {
		if err := r.be.Delete(ctx, pieces[i].Name()); err != nil {
			return fmt.Errorf("deleting log piece %s: %w", pieces[i].Name(), err)
		}
		return nil
	})
}

// LogSpan is a contiguous range [Start, End) of one log that the pieces
// cover without a hole.
type LogSpan struct {
	Log        string
	Start, End uint64
}

// LogSpans merges sorted pieces (as LogPieces returns them) into the
// spans they cover: one span per log when nothing is missing, more where
// pieces are missing between others.
func LogSpans(pieces []LogRef) []LogSpan {
	var out []LogSpan
	for _, p := range pieces {
		if n := len(out); n > 0 && out[n-1].Log == p.Log && p.Start <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, p.End)
			continue
		}
		out = append(out, LogSpan{Log: p.Log, Start: p.Start, End: p.End})
	}
	return out
}

// Problem kinds of log archives.
const (
	ProblemLogPiece = "unreadable-log-piece"
	ProblemArchive  = "unreadable-archive"
	ProblemLogName  = "stray-log-object"
)

// checkLogs checks every archive: its description opens, every name
// under it is a piece's, and (as opts read data) the pieces open and say
// what their names do. Holes between pieces are notes: a server's log
// can have real gaps, which the archive state reports.
func (r *Repository) checkLogs(ctx context.Context, opts CheckOptions, problem func(Problem), rep *CheckReport) error {
	var archives []cairn.ID
	described := map[cairn.ID]bool{}
	if ids, err := r.Archives(ctx); err != nil {
		return err
	} else {
		for _, id := range ids {
			described[id] = true
		}
	}
	// Archives without a description still hold pieces to check.
	seen := map[cairn.ID]bool{}
	if err := r.be.List(ctx, format.LogsPrefix, func(info objstore.ObjectInfo) error {
		head, _, _ := strings.Cut(strings.TrimPrefix(info.Name, format.LogsPrefix), "/")
		id, err := cairn.ParseID(head)
		if err != nil {
			problem(Problem{Kind: ProblemLogName, Object: info.Name, Detail: "not under an archive id"})
			return nil
		}
		if !seen[id] {
			seen[id] = true
			archives = append(archives, id)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("listing log archives: %w", err)
	}
	slices.SortFunc(archives, func(a, b cairn.ID) int { return strings.Compare(a.String(), b.String()) })
	var toRead []LogRef
	for _, id := range archives {
		if !described[id] {
			problem(Problem{Kind: ProblemArchive, Object: format.ArchiveInfoName(id), Detail: "the archive has pieces but no description"})
		} else if _, err := r.ArchiveInfo(ctx, id); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			problem(Problem{Kind: ProblemArchive, Object: format.ArchiveInfoName(id), Detail: err.Error()})
		}
		pieces, odd, err := r.LogPieces(ctx, id)
		if err != nil {
			return err
		}
		for _, name := range odd {
			problem(Problem{Kind: ProblemLogName, Object: name, Detail: "not a log piece's name"})
		}
		rep.LogPieces += len(pieces)
		spans := LogSpans(pieces)
		logs := map[string]int{}
		for _, s := range spans {
			logs[s.Log]++
		}
		for log, n := range logs {
			if n > 1 {
				rep.Notes = append(rep.Notes, fmt.Sprintf("archive %s, log %s: %d holes between pieces", id.Short(), log, n-1))
			}
		}
		for _, p := range pieces {
			if opts.ReadData || opts.ReadDataSubset > 0 && rand.Float64() < opts.ReadDataSubset {
				toRead = append(toRead, p)
			}
		}
	}
	return forEachParallel(ctx, len(toRead), max(r.opts.Workers, r.opts.Transfers), func(ctx context.Context, i int) error {
		_, _, err := r.ReadLogPiece(ctx, toRead[i])
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !errors.Is(err, cairn.ErrNotFound) {
			problem(Problem{Kind: ProblemLogPiece, Object: toRead[i].Name(), Detail: err.Error()})
		}
		return nil
	})
}
