package service_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/binlog"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/service/servicetest"
)

// binlogHost is the fake instance host with a scripted binary log: the
// server's files in order, the last being written; files before first
// are purged.
type binlogHost struct {
	*servicetest.InstanceHost

	mu      sync.Mutex
	changed chan struct{}
	names   []string
	files   map[string][]byte
	first   int
	streams int
}

func newBinlogHost(h *servicetest.InstanceHost) *binlogHost {
	return &binlogHost{InstanceHost: h, changed: make(chan struct{}), files: map[string][]byte{}}
}

func (h *binlogHost) change(fn func()) {
	h.mu.Lock()
	fn()
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

// add appends a file, or bytes to the last one.
func (h *binlogHost) add(name string, b []byte) {
	h.change(func() {
		if len(h.names) == 0 || h.names[len(h.names)-1] != name {
			h.names = append(h.names, name)
		}
		h.files[name] = append(h.files[name], b...)
	})
}

func (h *binlogHost) BinlogState(context.Context, string) (dbagent.BinlogState, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := dbagent.BinlogState{ServerID: "7", Time: time.Now()}
	for _, n := range h.names[h.first:] {
		st.Files = append(st.Files, dbagent.BinlogFile{Name: n, Size: uint64(len(h.files[n]))})
	}
	if len(h.names) > 0 {
		last := h.names[len(h.names)-1]
		st.File, st.Pos = last, uint64(len(h.files[last]))
	}
	return st, nil
}

// StreamBinlog sends the files from file on, in pieces of up to 1000
// bytes (cutting events), then a status, then waits for more.
func (h *binlogHost) StreamBinlog(ctx context.Context, _ string, file string, fn func(dbagent.BinlogMessage) error) error {
	h.mu.Lock()
	h.streams++
	i := slices.Index(h.names, file)
	if i < h.first {
		h.mu.Unlock()
		return fmt.Errorf("binary log %s: %w", file, cairn.ErrGone)
	}
	h.mu.Unlock()
	var pos uint64
	for {
		h.mu.Lock()
		name, data, changed := h.names[i], h.files[h.names[i]], h.changed
		more := i < len(h.names)-1
		h.mu.Unlock()
		for pos < uint64(len(data)) {
			n := min(uint64(len(data))-pos, 1000)
			if err := fn(dbagent.BinlogMessage{File: name, Start: pos, Data: data[pos : pos+n]}); err != nil {
				return err
			}
			pos += n
		}
		if more {
			i, pos = i+1, 0
			continue
		}
		if err := fn(dbagent.BinlogMessage{ServerFile: name, ServerPos: pos, ServerTime: time.Now()}); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// archivedFiles returns the archive's files as the store holds them,
// by name, and the pieces. A piece listed and then deleted before it is
// read (pieces stored again whole) has the listing read again.
func archivedFiles(t *testing.T, s *servicetest.Store, id cairn.ID) (map[string][]byte, []repo.LogRef) {
	t.Helper()
	r := s.Open()
listing:
	for {
		pieces, _, err := r.LogPieces(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string][]byte{}
		for _, p := range pieces {
			name, ok := strings.CutPrefix(p.Log, "bl-00000001-")
			if !ok {
				t.Fatalf("a piece of log %q", p.Log)
			}
			have := uint64(len(out[name]))
			if p.Start > have {
				t.Fatalf("piece %s after %d bytes: a hole", p.Name(), have)
			}
			if p.End > have {
				_, b, err := r.ReadLogPiece(t.Context(), p)
				if errors.Is(err, cairn.ErrNotFound) {
					continue listing
				}
				if err != nil {
					t.Fatal(err)
				}
				out[name] = append(out[name], b[have-p.Start:]...)
			}
		}
		return out, pieces
	}
}

// waitBinlogArchived waits until the archive holds the server's files
// as they are.
func waitBinlogArchived(t *testing.T, r *rig, h *binlogHost, id cairn.ID) ([]repo.LogRef, map[string][]byte) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; {
		got, pieces := archivedFiles(t, r.store("volumebackups"), id)
		h.mu.Lock()
		same := true
		for _, n := range h.names[h.first:] {
			same = same && bytes.Equal(got[n], h.files[n])
		}
		h.mu.Unlock()
		if same {
			return pieces, got
		}
		if time.Now().After(deadline) {
			t.Fatalf("the archive never held the server's binary log: %d files", len(got))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBinlogArchiver drives a MariaDB instance's archiver through a
// scripted binary log made of a real one: files stored byte for byte
// across a rotation, compacted, the state shown; a restart goes on
// without storing anything twice; a GTID skipped and a file the server
// purged while the service was down are gaps.
func TestBinlogArchiver(t *testing.T) {
	file, err := os.ReadFile("../binlog/testdata/bin.000001")
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t)
	h := newBinlogHost(r.host)
	half := len(file) / 2
	h.add("mysql-bin.000001", file[:half])
	r.walHost, r.archiveInterval = h, 5*time.Millisecond
	r.restart()
	f := &fixture{}
	makeInstanceOf(r, f, "mariadb")
	id := must[cairn.ID](t)(service.ArchiveID(f.vol))
	waitBinlogArchived(t, r, h, id)
	h.add("mysql-bin.000001", file[half:])
	h.add("mysql-bin.000002", file)
	pieces, _ := waitBinlogArchived(t, r, h, id)
	// The first file, ended, is whole in one piece.
	n1 := 0
	for _, p := range pieces {
		if p.Log == "bl-00000001-mysql-bin.000001" {
			n1++
		}
	}
	if n1 != 1 {
		t.Fatalf("the ended file is in %d pieces: %v", n1, pieces)
	}
	// The archiver's state follows its store: waited for until it
	// reaches the second file's end (the pieces above may be stored
	// before the state says so).
	want := fmt.Sprintf("mysql-bin.000002:%d", len(file))
	var st *cairn.ArchiveState
	for deadline := time.Now().Add(time.Minute); ; {
		st = must[cairn.Instance](t)(r.svc.Instance(t.Context(), caller, f.vol)).Archive
		if st != nil && !st.CompleteAt.IsZero() && st.ArchivedPosition == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("archive state %+v, want it at %s", st, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The test file's last transaction is 0-7-N, N from its events.
	dec := binlog.NewDecoder()
	events, err := dec.Write(file)
	if err != nil {
		t.Fatal(err)
	}
	var lastGTID string
	for _, e := range events {
		if e.GTID != nil {
			lastGTID = e.GTID.String()
		}
	}
	if st.State != "streaming" || st.Timeline != 1 || st.ArchivedGTID != lastGTID || st.LastTransaction.IsZero() || st.ArchivedLSN != "" || len(st.Gaps) != 0 {
		t.Fatalf("archive state %+v (want GTID %s)", st, lastGTID)
	}

	// A restart goes on from the store: nothing is stored again.
	r.stop()
	before := len(pieces)
	r.restart()
	h.add("mysql-bin.000003", file[:100])
	pieces, _ = waitBinlogArchived(t, r, h, id)
	if len(pieces) != before+1 {
		t.Fatalf("after a restart: %d pieces, want %d", len(pieces), before+1)
	}

	// Down, the server purged a file the archive had not finished: the
	// archive goes on with the next one and shows the gap.
	r.stop()
	h.add("mysql-bin.000003", file[100:])
	h.add("mysql-bin.000004", file)
	h.change(func() { h.first = 3 })
	r.restart()
	waitBinlogArchived(t, r, h, id)
	for deadline := time.Now().Add(time.Minute); ; {
		st = must[cairn.Instance](t)(r.svc.Instance(t.Context(), caller, f.vol)).Archive
		if st != nil && len(st.Gaps) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("archive state %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if g := st.Gaps[0]; g.From != "mysql-bin.000003:100" || g.To != "mysql-bin.000004:0" || !strings.Contains(g.Reason, "no longer has") {
		t.Fatalf("gap %+v", g)
	}
	if ev := r.eventsOf("instance.archive.gap"); len(ev) != 1 {
		t.Fatalf("gap events: %v", ev)
	}
}
