package dbhost

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// StreamOptions say what a stream backup takes.
type StreamOptions struct {
	// Method is dbagent.Physical or dbagent.Logical.
	Method dbagent.Method `json:"method"`
	Label  string         `json:"label"`
	// Parent, for an incremental physical backup (MariaDB), is the
	// record of the backup it builds on.
	Parent *dbagent.Record `json:"parent,omitempty"`
}

// BackupStream writes a physical or logical backup of the instance's
// server to w, as its tool produces it, and returns its record. The
// instance's other calls wait meanwhile.
func (h *Host) BackupStream(ctx context.Context, id string, o StreamOptions, w io.Writer) (dbagent.Record, error) {
	inst := h.get(id)
	if inst == nil {
		return dbagent.Record{}, fmt.Errorf("instance %s: %w", id, cairn.ErrNotFound)
	}
	inst.op.Lock()
	defer inst.op.Unlock()
	if inst.rec.Phase != PhaseReady {
		return dbagent.Record{}, fmt.Errorf("instance %s is %s: %w", id, inst.rec.Phase, cairn.ErrConflict)
	}
	if err := h.serving(ctx, inst); err != nil {
		return dbagent.Record{}, fmt.Errorf("instance %s: %w", id, err)
	}
	eng, err := h.engine(inst.rec.Spec.Datastore, inst.rec.Spec.Version)
	if err != nil {
		return dbagent.Record{}, err
	}
	ai, err := eng.Instance(h.config(&inst.rec))
	if err != nil {
		return dbagent.Record{}, err
	}
	switch o.Method {
	case dbagent.Physical:
		return ai.BackupPhysical(ctx, w, o.Label, o.Parent)
	case dbagent.Logical:
		if o.Parent != nil {
			return dbagent.Record{}, fmt.Errorf("a logical backup has no parent: %w", cairn.ErrInvalid)
		}
		return ai.BackupLogical(ctx, w, o.Label)
	}
	return dbagent.Record{}, fmt.Errorf("backup method %q: want physical or logical: %w", o.Method, cairn.ErrInvalid)
}

// Framed parts: a restore of a physical chain reads its parts from one
// stream, each a big-endian uint64 length and that many bytes, in the
// order of Spec.Parts (oldest first). A logical restore's stream is the
// dump itself.

// WritePart writes one framed part of n bytes from r to w.
func WritePart(w io.Writer, r io.Reader, n int64) error {
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(n))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	m, err := io.Copy(w, io.LimitReader(r, n))
	if err == nil && m != n {
		err = fmt.Errorf("part ended after %d of %d bytes: %w", m, n, io.ErrUnexpectedEOF)
	}
	return err
}

// partReader hands out the framed parts of a stream, each once, in
// order.
type partReader struct {
	r    io.Reader
	next int
	open io.Reader // the part being read, until it is read to its end
}

func (p *partReader) part(i int) (io.ReadCloser, error) {
	if i != p.next {
		return nil, fmt.Errorf("part %d opened out of order (next is %d): %w", i, p.next, cairn.ErrInvalid)
	}
	if p.open != nil {
		// The previous part's rest is skipped.
		if _, err := io.Copy(io.Discard, p.open); err != nil {
			return nil, err
		}
	}
	var hdr [8]byte
	if _, err := io.ReadFull(p.r, hdr[:]); err != nil {
		return nil, fmt.Errorf("part %d: reading its length: %w", i, err)
	}
	n := binary.BigEndian.Uint64(hdr[:])
	if n > 1<<50 {
		return nil, fmt.Errorf("part %d: length %d: %w", i, n, cairn.ErrCorrupt)
	}
	p.next++
	p.open = &exactReader{r: io.LimitReader(p.r, int64(n)), left: int64(n)}
	return io.NopCloser(p.open), nil
}

// skipTo reads past parts up to n (exclusive) not read yet, the rest
// of the one open included, so that what the stream holds after them
// comes next.
func (p *partReader) skipTo(n int) error {
	for p.next < n {
		if _, err := p.part(p.next); err != nil {
			return err
		}
	}
	if p.open != nil {
		if _, err := io.Copy(io.Discard, p.open); err != nil {
			return err
		}
		p.open = nil
	}
	return nil
}

// exactReader fails with io.ErrUnexpectedEOF when its source ends
// before left bytes were read.
type exactReader struct {
	r    io.Reader
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// restoreStream fills the data directory from a physical chain (the
// framed parts of data) or initialises it and loads a dump into the
// running server; the caller then starts (physical) or has started
// (logical) the server.
func (h *Host) restorePhysical(ctx context.Context, eng dbagent.Engine, cfg dbagent.Config, parts []dbagent.Record, data io.Reader) error {
	if data == nil {
		return fmt.Errorf("restoring a physical backup: no stream: %w", cairn.ErrInvalid)
	}
	// A restore cut short leaves part of a data directory: start again.
	if err := os.RemoveAll(cfg.DataDir); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	pr := &partReader{r: data}
	chain := make([]dbagent.Part, len(parts))
	for i, rec := range parts {
		chain[i] = dbagent.Part{Record: rec, Open: func(context.Context) (io.ReadCloser, error) { return pr.part(i) }}
	}
	if err := eng.RestorePhysical(ctx, cfg, chain); err != nil {
		return fmt.Errorf("restoring the physical backup: %w", err)
	}
	// What follows the parts (a recovery's WAL) starts after the last
	// one's end, whatever the engine left of it unread.
	if err := pr.skipTo(len(parts)); err != nil {
		return fmt.Errorf("restoring the physical backup: %w", err)
	}
	return nil
}

// skipParts reads past the first n framed parts of r, as a resumed
// recovery does before its WAL.
func skipParts(r io.Reader, n int) error {
	if err := (&partReader{r: r}).skipTo(n); err != nil {
		return fmt.Errorf("skipping the backup's parts: %w", err)
	}
	return nil
}

// errNeedStream is the error of a Provision that must restore a stream
// but got none (a resumed call must send it again).
var errNeedStream = errors.New("the backup's stream must come with the request")
