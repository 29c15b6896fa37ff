package dbhost

import (
	"context"
	"fmt"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// walSource returns the agent of a ready instance whose server streams
// its WAL.
func (h *Host) walSource(ctx context.Context, id string) (dbagent.WALSource, error) {
	ai, datastore, err := h.agent(ctx, id)
	if err != nil {
		return nil, err
	}
	ws, ok := ai.(dbagent.WALSource)
	if !ok {
		return nil, fmt.Errorf("instance %s: %s has no WAL to stream: %w", id, datastore, cairn.ErrUnsupported)
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
	s := &logStream{cancel: cancel, done: make(chan struct{})}
	defer close(s.done)
	s.flushed.Store(uint64(start))
	release, err := h.startStream(ctx, streamKey{kindWAL, id}, s)
	if err != nil {
		return nil, err
	}
	defer release()
	return ws.StreamWAL(ctx, dbagent.WALStreamRequest{Timeline: timeline, Start: start,
		Flushed: func() dbagent.LSN { return dbagent.LSN(s.flushed.Load()) }}, fn)
}

// ConfirmWAL records that the archive has stored an instance's WAL up to
// lsn; the running stream passes it on to the server, whose slot then
// lets go of what lies before. Without a running stream it does
// nothing: the next stream starts at what is stored.
func (h *Host) ConfirmWAL(id string, lsn dbagent.LSN) {
	s := h.stream(streamKey{kindWAL, id})
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
