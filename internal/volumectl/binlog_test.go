package volumectl_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbhost"
	"github.com/cairnproject/cairn/internal/volumectl"
)

// The fake's binary logs: instance "m1" streams binlogMessages from
// mysql-bin.000001 and then returns; from an earlier file it fails as
// gone. "pg" has no binary log; "fails" fails as gone after one
// message; "idle" sends a status, then nothing until its context ends;
// others are unknown.
var binlogMessages = []dbagent.BinlogMessage{
	{File: "mysql-bin.000001", Start: 0, Data: append([]byte("\xfebin"), bytes.Repeat([]byte("a"), 96)...),
		ServerFile: "mysql-bin.000001", ServerPos: 100, ServerTime: time.Unix(1700000000, 5).UTC()},
	{ServerFile: "mysql-bin.000001", ServerPos: 100, ServerTime: time.Unix(1700000001, 0).UTC()},
	{File: "mysql-bin.000001", Start: 100, Data: bytes.Repeat([]byte("b"), 3<<20)},
	{File: "mysql-bin.000002", Start: 0, Data: []byte("\xfebin")},
	{ServerFile: "mysql-bin.000002", ServerPos: 4},
}

func (f *fakeInstances) BinlogState(_ context.Context, id string) (dbagent.BinlogState, error) {
	switch id {
	case "m1":
		return dbagent.BinlogState{ServerID: "7", Files: []dbagent.BinlogFile{{Name: "mysql-bin.000001", Size: 3<<20 + 100}, {Name: "mysql-bin.000002", Size: 4}},
			File: "mysql-bin.000002", Pos: 4, GTIDBinlogPos: "0-7-12", Time: time.Unix(1700000002, 0).UTC()}, nil
	case "pg":
		return dbagent.BinlogState{}, fmt.Errorf("instance %s: postgresql has no binary log to stream: %w", id, cairn.ErrUnsupported)
	}
	return dbagent.BinlogState{}, fmt.Errorf("instance %s: %w", id, cairn.ErrNotFound)
}

func (f *fakeInstances) StreamBinlog(ctx context.Context, id, file string, fn func(dbagent.BinlogMessage) error) error {
	switch id {
	case "m1":
		if file != "mysql-bin.000001" {
			return fmt.Errorf("could not find first log file name %s: %w", file, cairn.ErrGone)
		}
		for _, m := range binlogMessages {
			if err := fn(m); err != nil {
				return err
			}
		}
		return nil
	case "big":
		// One message larger than a frame: it crosses in several.
		return fn(dbagent.BinlogMessage{File: file, Start: 4, Data: bigBinlog})
	case "pg":
		return fmt.Errorf("instance %s: postgresql has no binary log to stream: %w", id, cairn.ErrUnsupported)
	case "fails":
		if err := fn(binlogMessages[0]); err != nil {
			return err
		}
		return fmt.Errorf("binary log purged under the stream: %w", cairn.ErrGone)
	case "idle":
		err := fn(dbagent.BinlogMessage{ServerFile: file, ServerPos: 4})
		if err == nil {
			<-ctx.Done()
			err = ctx.Err()
		}
		if f.binlogIdleEnded != nil {
			f.binlogIdleEnded <- err
		}
		return err
	}
	return fmt.Errorf("instance %s: %w", id, cairn.ErrNotFound)
}

// bigBinlog is more than one frame's bytes, in a pattern a misplaced
// split shows.
var bigBinlog = func() []byte {
	b := make([]byte, 16<<20+12345)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}()

func TestBinlogOverTheControlSocket(t *testing.T) {
	ctx := t.Context()
	fake := &fakeInstances{specs: map[string]dbhost.Spec{}, data: map[string][]byte{}, binlogIdleEnded: make(chan error, 1)}
	c := serveFake(t, fake)

	st, err := c.BinlogState(ctx, "m1")
	if err != nil || st.ServerID != "7" || st.File != "mysql-bin.000002" || st.Pos != 4 || st.GTIDBinlogPos != "0-7-12" ||
		len(st.Files) != 2 || st.Files[0].Size != 3<<20+100 || !st.Time.Equal(time.Unix(1700000002, 0)) {
		t.Fatalf("state %+v %v", st, err)
	}

	// Every message crosses whole, in order; a stream the host ended
	// without an error ends so for the client.
	var got []dbagent.BinlogMessage
	err = c.StreamBinlog(ctx, "m1", "mysql-bin.000001", func(m dbagent.BinlogMessage) error {
		m.Data = bytes.Clone(m.Data)
		got = append(got, m)
		return nil
	})
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	if len(got) != len(binlogMessages) {
		t.Fatalf("%d messages, want %d", len(got), len(binlogMessages))
	}
	for i, m := range got {
		if w := binlogMessages[i]; !sameBinlogMessage(m, w) {
			t.Fatalf("message %d: %s", i, describe(m, w))
		}
	}

	// A message larger than a frame comes in pieces that make it up.
	var big []byte
	next := uint64(4)
	if err := c.StreamBinlog(ctx, "big", "mysql-bin.000009", func(m dbagent.BinlogMessage) error {
		if m.File != "mysql-bin.000009" || m.Start != next {
			return fmt.Errorf("piece of %s at %d, want at %d", m.File, m.Start, next)
		}
		next += uint64(len(m.Data))
		big = append(big, m.Data...)
		return nil
	}); err != nil || !bytes.Equal(big, bigBinlog) {
		t.Fatalf("a message larger than a frame: %v, %d of %d bytes", err, len(big), len(bigBinlog))
	}

	// Errors keep their class: before the first frame as an ordinary
	// answer, after it in the trailer.
	nothing := func(dbagent.BinlogMessage) error { return nil }
	for _, tc := range []struct {
		name     string
		call     func() error
		want     error
		messages int
	}{
		{"state of a datastore without a binary log", func() error { _, err := c.BinlogState(ctx, "pg"); return err }, cairn.ErrUnsupported, 0},
		{"state of an unknown instance", func() error { _, err := c.BinlogState(ctx, "nope"); return err }, cairn.ErrNotFound, 0},
		{"stream of a datastore without a binary log", func() error { return c.StreamBinlog(ctx, "pg", "mysql-bin.000001", nothing) }, cairn.ErrUnsupported, 0},
		{"stream of a purged file", func() error { return c.StreamBinlog(ctx, "m1", "mysql-bin.000000", nothing) }, cairn.ErrGone, 0},
		{"stream of an unknown instance", func() error { return c.StreamBinlog(ctx, "nope", "mysql-bin.000001", nothing) }, cairn.ErrNotFound, 0},
		{"stream without a file", func() error { return c.StreamBinlog(ctx, "m1", "", nothing) }, cairn.ErrInvalid, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
		})
	}
	n := 0
	if err := c.StreamBinlog(ctx, "fails", "mysql-bin.000001", func(dbagent.BinlogMessage) error { n++; return nil }); !errors.Is(err, cairn.ErrGone) || n != 1 {
		t.Fatalf("stream failing after a frame: %v after %d frames", err, n)
	}

	// The reader's error ends the stream, and the host's side of it.
	stop := errors.New("enough")
	if err := c.StreamBinlog(ctx, "idle", "mysql-bin.000003", func(m dbagent.BinlogMessage) error {
		if m.ServerFile != "mysql-bin.000003" || m.ServerPos != 4 || m.Data != nil {
			return fmt.Errorf("status %+v", m)
		}
		return stop
	}); !errors.Is(err, stop) {
		t.Fatalf("stream the reader ended: %v", err)
	}
	waitBinlogEnd(t, fake)

	// So does the end of the reader's context, once a status came.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	statuses := 0
	err = c.StreamBinlog(sctx, "idle", "mysql-bin.000003", func(m dbagent.BinlogMessage) error {
		statuses++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) || statuses != 1 {
		t.Fatalf("stream whose context ended: %v after %d statuses", err, statuses)
	}
	waitBinlogEnd(t, fake)
}

// waitBinlogEnd waits until the fake's idle stream has ended.
func waitBinlogEnd(t *testing.T, fake *fakeInstances) {
	t.Helper()
	select {
	case err := <-fake.binlogIdleEnded:
		if err == nil {
			t.Fatal("the host's stream ended without an error")
		}
	case <-t.Context().Done():
		t.Fatal("the host's stream did not end when its reader went")
	}
}

func sameBinlogMessage(a, b dbagent.BinlogMessage) bool {
	return a.File == b.File && a.Start == b.Start && bytes.Equal(a.Data, b.Data) && a.ServerFile == b.ServerFile &&
		a.ServerPos == b.ServerPos && a.ServerTime.Equal(b.ServerTime) && (a.Data == nil) == (b.Data == nil)
}

func describe(got, want dbagent.BinlogMessage) string {
	f := func(m dbagent.BinlogMessage) string {
		return fmt.Sprintf("%s@%d %d bytes, server %s@%d %v", m.File, m.Start, len(m.Data), m.ServerFile, m.ServerPos, m.ServerTime)
	}
	return f(got) + "; want " + f(want)
}

func TestBinlogFrames(t *testing.T) {
	var buf []byte
	for _, m := range binlogMessages {
		var err error
		if buf, err = volumectl.AppendBinlogFrame(buf, m); err != nil {
			t.Fatal(err)
		}
	}
	r := bufio.NewReader(bytes.NewReader(buf))
	var scratch []byte
	for i, w := range binlogMessages {
		var m dbagent.BinlogMessage
		var err error
		m, scratch, err = volumectl.ReadBinlogFrame(r, scratch)
		if err != nil || !sameBinlogMessage(m, w) {
			t.Fatalf("frame %d: %v: %s", i, err, describe(m, w))
		}
	}
	if _, _, err := volumectl.ReadBinlogFrame(r, nil); err != io.EOF {
		t.Fatalf("after the last frame: %v", err)
	}
	first, _ := volumectl.AppendBinlogFrame(nil, binlogMessages[0])
	for cut := 1; cut < len(first); cut++ {
		if _, _, err := volumectl.ReadBinlogFrame(bytes.NewReader(first[:cut]), nil); !errors.Is(err, cairn.ErrCorrupt) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("frame cut at %d: %v", cut, err)
		}
	}
	// raw is a data frame as it might come off a broken wire.
	raw := func(start uint64, file string, n uint32, data string) []byte {
		b := binary.BigEndian.AppendUint64([]byte{'b'}, start)
		b = append(b, make([]byte, 16)...) // server position and time
		b = append(b, byte(len(file)), 0)
		b = append(b, file...)
		b = binary.BigEndian.AppendUint32(b, n)
		return append(b, data...)
	}
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"unknown type", []byte{'x'}},
		{"bytes of no file", raw(0, "", 1, "z")},
		{"no bytes", raw(0, "f", 0, "")},
		{"too many bytes", raw(0, "f", 16<<20+1, "")},
		{"range wraps", raw(1<<64-1, "f", 2, "zz")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := volumectl.ReadBinlogFrame(bytes.NewReader(tc.frame), nil); !errors.Is(err, cairn.ErrCorrupt) || errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("%v, want corrupt", err)
			}
		})
	}
	if _, _, err := volumectl.ReadBinlogFrame(bytes.NewReader(raw(0, "f", 16<<20, "")), nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a frame of the most bytes, cut: %v", err)
	}
	long := strings.Repeat("a", 250) + ".000001"
	if _, err := volumectl.AppendBinlogFrame(nil, dbagent.BinlogMessage{File: long, Data: []byte("x")}); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("a name of %d bytes: %v", len(long), err)
	}
}

func FuzzReadBinlogFrame(f *testing.F) {
	for _, m := range binlogMessages[:2] {
		b, _ := volumectl.AppendBinlogFrame(nil, m)
		f.Add(b)
	}
	f.Add([]byte("s\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var buf []byte
		for {
			m, b, err := volumectl.ReadBinlogFrame(r, buf)
			buf = b
			if err != nil {
				if err != io.EOF && !errors.Is(err, cairn.ErrCorrupt) {
					t.Fatalf("unexpected error class: %v", err)
				}
				return
			}
			frame, err := volumectl.AppendBinlogFrame(nil, m)
			if err != nil {
				t.Fatalf("a frame read does not write: %v", err)
			}
			again, _, err := volumectl.ReadBinlogFrame(bytes.NewReader(frame), nil)
			if err != nil || !sameBinlogMessage(again, m) {
				t.Fatalf("frame does not round-trip: %v", err)
			}
		}
	})
}
