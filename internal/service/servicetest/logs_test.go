package servicetest_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/service/servicetest"
)

// TestFakeBinlog: the fake host serves the binary log a test writes,
// across rotations and as it grows, and fails as a server does for a
// purged file or an instance without a binary log.
func TestFakeBinlog(t *testing.T) {
	ctx := t.Context()
	h := servicetest.NewInstanceHost(servicetest.NewEngine(servicetest.NewFaults()))
	if _, err := h.BinlogState(ctx, "m"); !errors.Is(err, cairn.ErrUnsupported) {
		t.Fatalf("state without a binary log: %v", err)
	}
	if err := h.StreamBinlog(ctx, "m", "mysql-bin.000001", nil); !errors.Is(err, cairn.ErrUnsupported) {
		t.Fatalf("stream without a binary log: %v", err)
	}

	first := append([]byte("\xfebin"), bytes.Repeat([]byte("a"), 100<<10)...)
	h.WriteBinlog("m", first, "0-1-1")
	second := h.RotateBinlog("m")
	h.WriteBinlog("m", []byte("\xfebin"), "")
	st, err := h.BinlogState(ctx, "m")
	if err != nil || st.File != second || st.Pos != 4 || st.GTIDBinlogPos != "0-1-1" || len(st.Files) != 2 || st.Files[0].Size != uint64(len(first)) {
		t.Fatalf("state %+v %v", st, err)
	}

	// A stream sends what there is, a status, then what comes.
	files := map[string][]byte{}
	statuses := make(chan dbagent.BinlogMessage)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var g errgroup.Group
	g.Go(func() error {
		return h.StreamBinlog(sctx, "m", "mysql-bin.000001", func(m dbagent.BinlogMessage) error {
			if m.Data == nil {
				select {
				case statuses <- m:
				case <-sctx.Done():
				}
				return nil
			}
			if uint64(len(files[m.File])) != m.Start {
				return errors.New("a gap in " + m.File)
			}
			files[m.File] = append(files[m.File], m.Data...)
			return nil
		})
	})
	if m := <-statuses; m.ServerFile != second || m.ServerPos != 4 {
		t.Fatalf("status %+v", m)
	}
	h.WriteBinlog("m", []byte("more"), "0-1-2")
	if m := <-statuses; m.ServerFile != second || m.ServerPos != 8 {
		t.Fatalf("status after a write %+v", m)
	}
	cancel()
	if err := g.Wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("stream: %v", err)
	}
	if !bytes.Equal(files["mysql-bin.000001"], first) || string(files[second]) != "\xfebinmore" {
		t.Fatalf("streamed %d and %q", len(files["mysql-bin.000001"]), files[second])
	}

	h.PurgeBinlog("m", second)
	if err := h.StreamBinlog(ctx, "m", "mysql-bin.000001", nil); !errors.Is(err, cairn.ErrGone) {
		t.Fatalf("stream of a purged file: %v", err)
	}
}
