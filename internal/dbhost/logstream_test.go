package dbhost

import (
	"context"
	"errors"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/cairnproject/cairn"
)

// TestLogStreams: an instance runs one stream of each log kind at a
// time, the newest reader's; Close's endStreams ends them all and no new
// one starts after.
func TestLogStreams(t *testing.T) {
	h := &Host{}
	var g errgroup.Group
	// stream runs a stream of key the way StreamWAL and StreamBinlog do,
	// until its context ends; it returns once the stream is registered,
	// and ended is closed when it has ended.
	stream := func(key streamKey) (ended chan struct{}) {
		ended = make(chan struct{})
		registered := make(chan error, 1)
		g.Go(func() error {
			defer close(ended)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			s := &logStream{cancel: cancel, done: make(chan struct{})}
			defer close(s.done)
			release, err := h.startStream(ctx, key, s)
			registered <- err
			if err != nil {
				return nil
			}
			defer release()
			<-ctx.Done()
			return nil
		})
		if err := <-registered; err != nil {
			t.Fatalf("stream %v: %v", key, err)
		}
		return ended
	}
	open := func(c chan struct{}) bool {
		select {
		case <-c:
			return false
		default:
			return true
		}
	}

	binlog1 := stream(streamKey{kindBinlog, "a"})
	wal := stream(streamKey{kindWAL, "a"})
	other := stream(streamKey{kindBinlog, "b"})
	if !open(binlog1) {
		t.Fatal("a WAL stream ended the instance's binary log stream")
	}
	// A new reader of a's binary log ends the old one first.
	binlog2 := stream(streamKey{kindBinlog, "a"})
	<-binlog1
	if !open(wal) || !open(other) {
		t.Fatal("a new binary log stream ended another instance's or kind's stream")
	}
	if h.stream(streamKey{kindBinlog, "a"}) == nil {
		t.Fatal("the new stream is not registered")
	}

	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	// endStreams returns once every stream's owner has closed its done,
	// which it does after unregistering it.
	h.endStreams()
	h.mu.Lock()
	left := len(h.streams)
	h.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d streams left registered after endStreams", left)
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []chan struct{}{binlog2, wal, other} {
		if open(c) {
			t.Fatal("a stream's owner did not return")
		}
	}
	s := &logStream{cancel: func() {}, done: make(chan struct{})}
	if _, err := h.startStream(t.Context(), streamKey{kindBinlog, "a"}, s); !errors.Is(err, cairn.ErrUnavailable) {
		t.Fatalf("a stream started on a closing host: %v", err)
	}
}
