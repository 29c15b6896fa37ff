package dbhost

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// walStream is an instance's running WAL stream: one at a time holds the
// archive's slot.
type walStream struct {
	cancel context.CancelFunc
	done   chan struct{}
	// flushed is where the archive has stored everything before.
	flushed atomic.Uint64
}

// walSource returns the agent of a ready instance whose server streams
// its WAL. The instance's other calls wait only for the look-up: a
// stream lasts as long as the archive runs and holds no instance lock.
func (h *Host) walSource(ctx context.Context, id string) (dbagent.WALSource, error) {
	inst := h.get(id)
	if inst == nil {
		return nil, fmt.Errorf("instance %s: %w", id, cairn.ErrNotFound)
	}
	inst.op.Lock()
	defer inst.op.Unlock()
	if inst.rec.Phase != PhaseReady {
		return nil, fmt.Errorf("instance %s is %s: %w", id, inst.rec.Phase, cairn.ErrConflict)
	}
	if err := h.serving(ctx, inst); err != nil {
		return nil, fmt.Errorf("instance %s: %w", id, err)
	}
	eng, err := h.engine(inst.rec.Spec.Datastore, inst.rec.Spec.Version)
	if err != nil {
		return nil, err
	}
	ai, err := eng.Instance(h.config(&inst.rec))
	if err != nil {
		return nil, err
	}
	ws, ok := ai.(dbagent.WALSource)
	if !ok {
		return nil, fmt.Errorf("instance %s: %s has no WAL to stream: %w", id, inst.rec.Spec.Datastore, cairn.ErrUnsupported)
	}
	return ws, nil
}

// WALIdentity says which cluster and timeline an instance's server is
// on and how far it has flushed its WAL.
func (h *Host) WALIdentity(ctx context.Context, id string) (dbagent.WALIdentity, error) {
	ws, err := h.walSource(ctx, id)
	if err != nil {
		return dbagent.WALIdentity{}, err
	}
	return ws.WALIdentity(ctx)
}

// TimelineHistory returns the history file of one of an instance's
// timelines.
func (h *Host) TimelineHistory(ctx context.Context, id string, timeline uint32) ([]byte, error) {
	ws, err := h.walSource(ctx, id)
	if err != nil {
		return nil, err
	}
	return ws.TimelineHistory(ctx, timeline)
}

// WALSlot reports the state of an instance's archive slot.
func (h *Host) WALSlot(ctx context.Context, id string) (dbagent.WALSlot, error) {
	ws, err := h.walSource(ctx, id)
	if err != nil {
		return dbagent.WALSlot{}, err
	}
	return ws.WALSlot(ctx)
}

// StreamWAL streams an instance's WAL from timeline and start to fn (see
// dbagent.WALSource). A stream already running for the instance (its
// reader gone, its end not yet noticed) is ended first, so the newest
// reader gets the slot. The slot is told that everything before start,
// then before what ConfirmWAL reports, is stored.
func (h *Host) StreamWAL(ctx context.Context, id string, timeline uint32, start dbagent.LSN, fn func(dbagent.WALMessage) error) (*dbagent.TimelineEnd, error) {
	ws, err := h.walSource(ctx, id)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &walStream{cancel: cancel, done: make(chan struct{})}
	defer close(s.done)
	s.flushed.Store(uint64(start))
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return nil, fmt.Errorf("instance host: closing: %w", cairn.ErrUnavailable)
		}
		old := h.walStreams[id]
		if old == nil {
			if h.walStreams == nil {
				h.walStreams = map[string]*walStream{}
			}
			h.walStreams[id] = s
			h.mu.Unlock()
			break
		}
		h.mu.Unlock()
		old.cancel()
		select {
		case <-old.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	defer func() {
		h.mu.Lock()
		if h.walStreams[id] == s {
			delete(h.walStreams, id)
		}
		h.mu.Unlock()
	}()
	return ws.StreamWAL(ctx, dbagent.WALStreamRequest{Timeline: timeline, Start: start,
		Flushed: func() dbagent.LSN { return dbagent.LSN(s.flushed.Load()) }}, fn)
}

// ConfirmWAL records that the archive has stored an instance's WAL up to
// lsn; the running stream passes it on to the server, whose slot then
// lets go of what lies before. Without a running stream it does
// nothing: the next stream starts at what is stored.
func (h *Host) ConfirmWAL(id string, lsn dbagent.LSN) {
	h.mu.Lock()
	s := h.walStreams[id]
	h.mu.Unlock()
	if s == nil {
		return
	}
	for {
		cur := s.flushed.Load()
		if uint64(lsn) <= cur || s.flushed.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

// endWALStreams ends every running stream and waits for them: Close does
// it before it stops the servers.
func (h *Host) endWALStreams() {
	h.mu.Lock()
	list := make([]*walStream, 0, len(h.walStreams))
	for _, s := range h.walStreams {
		list = append(list, s)
	}
	h.mu.Unlock()
	for _, s := range list {
		s.cancel()
		<-s.done
	}
}
