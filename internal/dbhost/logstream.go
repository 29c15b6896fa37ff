package dbhost

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// logKind names the log a stream reads: an instance runs at most one
// stream of each kind at a time.
type logKind string

const (
	kindWAL    logKind = "WAL"
	kindBinlog logKind = "binary log"
)

// streamKey is a running stream's place in Host.streams.
type streamKey struct {
	kind logKind
	id   string
}

// logStream is an instance's running log stream. Its owner (the call
// streaming) closes done when it returns; anyone may cancel it.
type logStream struct {
	cancel context.CancelFunc
	done   chan struct{}
	// flushed is where the archive has stored everything before (WAL
	// streams only).
	flushed atomic.Uint64
}

// startStream makes s the running stream of key. A stream already
// running there (its reader gone, its end not yet noticed) is ended
// first, and waited for, so the newest reader wins. It fails once the
// host is closing, or when ctx ends while it waits. The caller must call
// the returned func once s has ended, which unregisters it.
func (h *Host) startStream(ctx context.Context, key streamKey, s *logStream) (func(), error) {
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return nil, fmt.Errorf("instance host: closing: %w", cairn.ErrUnavailable)
		}
		old := h.streams[key]
		if old == nil {
			if h.streams == nil {
				h.streams = map[streamKey]*logStream{}
			}
			h.streams[key] = s
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
	return func() {
		h.mu.Lock()
		if h.streams[key] == s {
			delete(h.streams, key)
		}
		h.mu.Unlock()
	}, nil
}

// stream returns the running stream of key, or nil.
func (h *Host) stream(key streamKey) *logStream {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.streams[key]
}

// endStreams ends every running stream and waits for them: Close does it
// (after setting closed, so no new one starts) before it stops the
// servers.
func (h *Host) endStreams() {
	h.mu.Lock()
	list := make([]*logStream, 0, len(h.streams))
	for _, s := range h.streams {
		list = append(list, s)
	}
	h.mu.Unlock()
	for _, s := range list {
		s.cancel()
		<-s.done
	}
}

// agent returns the agent of a ready instance whose server answers. The
// instance's other calls wait only for the look-up: a log stream lasts
// as long as the archive runs and holds no instance lock.
func (h *Host) agent(ctx context.Context, id string) (dbagent.Instance, string, error) {
	inst := h.get(id)
	if inst == nil {
		return nil, "", fmt.Errorf("instance %s: %w", id, cairn.ErrNotFound)
	}
	inst.op.Lock()
	defer inst.op.Unlock()
	if inst.rec.Phase != PhaseReady {
		return nil, "", fmt.Errorf("instance %s is %s: %w", id, inst.rec.Phase, cairn.ErrConflict)
	}
	if err := h.serving(ctx, inst); err != nil {
		return nil, "", fmt.Errorf("instance %s: %w", id, err)
	}
	eng, err := h.engine(inst.rec.Spec.Datastore, inst.rec.Spec.Version)
	if err != nil {
		return nil, "", err
	}
	ai, err := eng.Instance(h.config(&inst.rec))
	if err != nil {
		return nil, "", err
	}
	return ai, inst.rec.Spec.Datastore, nil
}
