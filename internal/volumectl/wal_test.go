package volumectl_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbhost"
	"github.com/cairnproject/cairn/internal/volumectl"
)

// The fake's WAL: instance "i1" streams walMessages and then ends its
// timeline; "fails" fails after one frame; "idle" sends nothing until its
// context ends; others are unknown.
var walMessages = []dbagent.WALMessage{
	{Start: 0x1000, Data: bytes.Repeat([]byte("a"), 100), ServerEnd: 0x1064, ServerTime: time.Unix(1700000000, 5).UTC()},
	{ServerEnd: 0x1064, ServerTime: time.Unix(1700000001, 0).UTC()},
	{Start: 0x1064, Data: bytes.Repeat([]byte("b"), 3<<20), ServerEnd: 0x301064},
}

func (f *fakeInstances) WALIdentity(_ context.Context, id string) (dbagent.WALIdentity, error) {
	if id != "i1" {
		return dbagent.WALIdentity{}, fmt.Errorf("instance %s: %w", id, cairn.ErrNotFound)
	}
	return dbagent.WALIdentity{SystemID: "7", Timeline: 3, Flushed: 0x301064, SegmentSize: 16 << 20}, nil
}

func (f *fakeInstances) WALSlot(context.Context, string) (dbagent.WALSlot, error) {
	return dbagent.WALSlot{Exists: true, RestartLSN: 0x1000, Status: "reserved", SafeBytes: 5, KeepBytes: 9}, nil
}

func (f *fakeInstances) TimelineHistory(_ context.Context, _ string, tli uint32) ([]byte, error) {
	if tli < 2 {
		return nil, fmt.Errorf("timeline %d: %w", tli, cairn.ErrInvalid)
	}
	return []byte("1\t0/3000000\tno recovery target specified\n"), nil
}

func (f *fakeInstances) StreamWAL(ctx context.Context, id string, tli uint32, start dbagent.LSN, fn func(dbagent.WALMessage) error) (*dbagent.TimelineEnd, error) {
	switch id {
	case "i1":
		for _, m := range walMessages {
			if err := fn(m); err != nil {
				return nil, err
			}
		}
		return &dbagent.TimelineEnd{Next: tli + 1, Switch: 0x301064}, nil
	case "fails":
		if err := fn(walMessages[0]); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("requested WAL segment has already been removed: %w", cairn.ErrGone)
	case "idle":
		if err := fn(dbagent.WALMessage{ServerEnd: start}); err != nil {
			return nil, err
		}
		<-ctx.Done()
		f.mu.Lock()
		f.idleEnded = true
		f.mu.Unlock()
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("instance %s: %w", id, cairn.ErrNotFound)
}

func (f *fakeInstances) ConfirmWAL(id string, lsn dbagent.LSN) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.confirmed == nil {
		f.confirmed = map[string]dbagent.LSN{}
	}
	f.confirmed[id] = lsn
}

func serveFake(t *testing.T, fake *fakeInstances) *volumectl.Client {
	sock := filepath.Join(t.TempDir(), "c.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: volumectl.WithInstances(http.NotFoundHandler(), fake)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close(); wg.Wait() })
	return volumectl.NewClient(sock)
}

func TestWALOverTheControlSocket(t *testing.T) {
	ctx := t.Context()
	fake := &fakeInstances{specs: map[string]dbhost.Spec{}, data: map[string][]byte{}}
	c := serveFake(t, fake)

	id, err := c.WALIdentity(ctx, "i1")
	if err != nil || id.Timeline != 3 || id.SystemID != "7" || id.Flushed != 0x301064 {
		t.Fatalf("identity %+v %v", id, err)
	}
	if _, err := c.WALIdentity(ctx, "nope"); !errors.Is(err, cairn.ErrNotFound) {
		t.Fatalf("identity of an unknown instance: %v", err)
	}
	slot, err := c.WALSlot(ctx, "i1")
	if err != nil || slot.Status != "reserved" || slot.SafeBytes != 5 {
		t.Fatalf("slot %+v %v", slot, err)
	}
	h, err := c.TimelineHistory(ctx, "i1", 2)
	if err != nil || !bytes.HasPrefix(h, []byte("1\t0/3000000")) {
		t.Fatalf("history %q %v", h, err)
	}
	if _, err := c.TimelineHistory(ctx, "i1", 1); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("history of timeline 1: %v", err)
	}

	// Every message crosses whole and in order; the timeline's end comes
	// in the trailer.
	var got []dbagent.WALMessage
	end, err := c.StreamWAL(ctx, "i1", 3, 0x1000, func(m dbagent.WALMessage) error {
		m.Data = bytes.Clone(m.Data)
		got = append(got, m)
		return nil
	})
	if err != nil || end == nil || end.Next != 4 || end.Switch != 0x301064 {
		t.Fatalf("stream end %+v %v", end, err)
	}
	if len(got) != len(walMessages) {
		t.Fatalf("%d messages, want %d", len(got), len(walMessages))
	}
	for i, m := range got {
		w := walMessages[i]
		if m.Start != w.Start || m.ServerEnd != w.ServerEnd || !m.ServerTime.Equal(w.ServerTime) || !bytes.Equal(m.Data, w.Data) {
			t.Fatalf("message %d: start %s end %s time %v, %d bytes; want %s %s %v %d", i, m.Start, m.ServerEnd, m.ServerTime, len(m.Data), w.Start, w.ServerEnd, w.ServerTime, len(w.Data))
		}
	}
	// An error before the first frame is an ordinary answer, one after
	// it the trailer's; both keep their class.
	if _, err := c.StreamWAL(ctx, "nope", 1, 0, func(dbagent.WALMessage) error { return nil }); !errors.Is(err, cairn.ErrNotFound) {
		t.Fatalf("stream of an unknown instance: %v", err)
	}
	n := 0
	if _, err := c.StreamWAL(ctx, "fails", 1, 0, func(dbagent.WALMessage) error { n++; return nil }); !errors.Is(err, cairn.ErrGone) || n != 1 {
		t.Fatalf("stream failing after a frame: %v after %d frames", err, n)
	}
	if _, err := c.StreamWAL(ctx, "i1", 0, 0, func(dbagent.WALMessage) error { return nil }); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("stream without a timeline: %v", err)
	}
	// The reader's error ends the stream, and the host's side of it.
	stop := errors.New("enough")
	if _, err := c.StreamWAL(ctx, "idle", 1, 0x2000, func(m dbagent.WALMessage) error {
		if m.ServerEnd != 0x2000 {
			return fmt.Errorf("keepalive says %s", m.ServerEnd)
		}
		return stop
	}); !errors.Is(err, stop) {
		t.Fatalf("stream the reader ended: %v", err)
	}
	for {
		fake.mu.Lock()
		ended := fake.idleEnded
		fake.mu.Unlock()
		if ended {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the host's stream did not end when its reader went")
		case <-time.After(10 * time.Millisecond):
		}
	}
	c.ConfirmWAL("i1", 0x1064)
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if fake.confirmed["i1"] != 0x1064 {
		t.Fatalf("confirmed %v", fake.confirmed)
	}
}

func TestWALFrames(t *testing.T) {
	var buf []byte
	for _, m := range walMessages {
		buf = volumectl.AppendWALFrame(buf, m)
	}
	r := bufio.NewReader(bytes.NewReader(buf))
	var scratch []byte
	for i := range walMessages {
		var m dbagent.WALMessage
		var err error
		m, scratch, err = volumectl.ReadWALFrame(r, scratch)
		if err != nil || m.Start != walMessages[i].Start || len(m.Data) != len(walMessages[i].Data) {
			t.Fatalf("frame %d: %+v %v", i, m.Start, err)
		}
	}
	if _, _, err := volumectl.ReadWALFrame(r, nil); err != io.EOF {
		t.Fatalf("after the last frame: %v", err)
	}
	for cut := 1; cut < 40; cut++ {
		if _, _, err := volumectl.ReadWALFrame(bytes.NewReader(buf[:cut]), nil); !errors.Is(err, cairn.ErrCorrupt) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("frame cut at %d: %v", cut, err)
		}
	}
	for _, bad := range [][]byte{{'x'}, append([]byte{'w'}, make([]byte, 28)...)} {
		if _, _, err := volumectl.ReadWALFrame(bytes.NewReader(bad), nil); !errors.Is(err, cairn.ErrCorrupt) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
}

func FuzzReadWALFrame(f *testing.F) {
	f.Add(volumectl.AppendWALFrame(nil, walMessages[0]))
	f.Add(volumectl.AppendWALFrame(nil, walMessages[1]))
	f.Add([]byte("w\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var buf []byte
		for {
			m, b, err := volumectl.ReadWALFrame(r, buf)
			buf = b
			if err != nil {
				if err != io.EOF && !errors.Is(err, cairn.ErrCorrupt) {
					t.Fatalf("unexpected error class: %v", err)
				}
				return
			}
			again, _, err := volumectl.ReadWALFrame(bytes.NewReader(volumectl.AppendWALFrame(nil, m)), nil)
			if err != nil || again.Start != m.Start || again.ServerEnd != m.ServerEnd || !bytes.Equal(again.Data, m.Data) {
				t.Fatalf("frame does not round-trip: %v", err)
			}
		}
	})
}
