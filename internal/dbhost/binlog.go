package dbhost

import (
	"context"
	"fmt"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// binlogSource returns the agent of a ready instance whose server
// streams its binary log.
func (h *Host) binlogSource(ctx context.Context, id string) (dbagent.BinlogSource, error) {
	ai, datastore, err := h.agent(ctx, id)
	if err != nil {
		return nil, err
	}
	bs, ok := ai.(dbagent.BinlogSource)
	if !ok {
		return nil, fmt.Errorf("instance %s: %s has no binary log to stream: %w", id, datastore, cairn.ErrUnsupported)
	}
	return bs, nil
}

// BinlogState says where an instance's server stands in its binary log:
// its files, where it writes next, its GTID position and its clock.
func (h *Host) BinlogState(ctx context.Context, id string) (dbagent.BinlogState, error) {
	bs, err := h.binlogSource(ctx, id)
	if err != nil {
		return dbagent.BinlogState{}, err
	}
	return bs.BinlogState(ctx)
}

// StreamBinlog streams an instance's binary log files to fn from the
// start of file on (see dbagent.BinlogSource), until ctx ends, fn fails,
// the server's stream breaks or the host closes. A stream already
// running for the instance (its reader gone, its end not yet noticed) is
// ended first, so the newest reader is the one served. A file the
// server no longer has fails with cairn.ErrGone.
func (h *Host) StreamBinlog(ctx context.Context, id, file string, fn func(dbagent.BinlogMessage) error) error {
	if !binlogFileName(file) {
		return fmt.Errorf("instance %s: binary log file %q: %w", id, file, cairn.ErrInvalid)
	}
	bs, err := h.binlogSource(ctx, id)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &logStream{cancel: cancel, done: make(chan struct{})}
	defer close(s.done)
	release, err := h.startStream(ctx, streamKey{kindBinlog, id}, s)
	if err != nil {
		return err
	}
	defer release()
	// StatusInterval 0 is the agent's default, 1 s, as the WAL stream
	// uses for its keepalives.
	return bs.StreamBinlog(ctx, dbagent.BinlogStreamRequest{File: file}, fn)
}
