package volumectl_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"sync"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbhost"
	"github.com/cairnproject/cairn/internal/volumectl"
)

// fakeInstances keeps specs in memory: the control socket's transport of
// each call is what is under test.
type fakeInstances struct {
	mu    sync.Mutex
	specs map[string]dbhost.Spec
	data  map[string][]byte // restore streams, by instance
	// The WAL fake's state (wal_test.go).
	confirmed map[string]dbagent.LSN
	idleEnded bool
	// binlogIdleEnded gets the error of each "idle" binary log stream
	// as it ends (binlog_test.go); nil drops them.
	binlogIdleEnded chan error
}

func (f *fakeInstances) Datastores(context.Context) ([]dbagent.Datastore, error) {
	return []dbagent.Datastore{{Type: "postgresql", Version: "15", Release: "15.10"}}, nil
}

func (f *fakeInstances) Provision(_ context.Context, spec dbhost.Spec, data io.Reader) (dbhost.State, error) {
	if err := spec.Validate(); err != nil {
		return dbhost.State{}, err
	}
	var got []byte
	if data != nil {
		var err error
		if got, err = io.ReadAll(data); err != nil {
			return dbhost.State{}, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.specs[spec.ID] = spec
	f.data[spec.ID] = got
	return dbhost.State{ID: spec.ID, Volume: spec.Volume, Phase: dbhost.PhaseReady, Port: 17500, Operating: cairn.OperatingHealthy}, nil
}

func (f *fakeInstances) HostInstances(ctx context.Context) ([]dbhost.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []dbhost.State
	for id := range f.specs {
		out = append(out, dbhost.State{ID: id})
	}
	return out, nil
}

func (f *fakeInstances) HostInstance(_ context.Context, id string) (dbhost.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.specs[id]; !ok {
		return dbhost.State{}, fmt.Errorf("instance %s: %w", id, cairn.ErrNotFound)
	}
	return dbhost.State{ID: id}, nil
}

func (f *fakeInstances) RemoveInstance(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.specs, id)
	return nil
}

func (f *fakeInstances) SnapshotInstance(_ context.Context, id string, o dbhost.SnapshotOptions) (dbhost.SnapshotBackup, error) {
	if o.Name == "" {
		return dbhost.SnapshotBackup{}, fmt.Errorf("no name: %w", cairn.ErrInvalid)
	}
	return dbhost.SnapshotBackup{Snapshot: cairn.NewID(), Record: dbagent.Record{Method: dbagent.Snapshot, Label: o.Label}, Overlay: []byte{0, 1, 2}}, nil
}

// CheckInstance passes, echoing the query, unless the instance is
// unknown.
func (f *fakeInstances) CheckInstance(_ context.Context, id string, req dbagent.CheckRequest) (dbagent.CheckReport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.specs[id]; !ok {
		return dbagent.CheckReport{}, fmt.Errorf("instance %s: %w", id, cairn.ErrNotFound)
	}
	return dbagent.CheckReport{Passed: true, Tool: "fake", Detail: "checked " + req.Database, Result: req.Query}, nil
}

// BackupInstance writes 3 MiB of a pattern, then fails when the label
// says so.
func (f *fakeInstances) BackupInstance(_ context.Context, id string, o dbhost.StreamOptions, w io.Writer) (dbagent.Record, error) {
	if _, err := w.Write(pattern(3 << 20)); err != nil {
		return dbagent.Record{}, err
	}
	if o.Label == "fail" {
		return dbagent.Record{}, fmt.Errorf("the tool died: %w", cairn.ErrConflict)
	}
	return dbagent.Record{Method: o.Method, Label: o.Label, Bytes: 3 << 20}, nil
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func TestInstancesOverTheControlSocket(t *testing.T) {
	ctx := t.Context()
	fake := &fakeInstances{specs: map[string]dbhost.Spec{}, data: map[string][]byte{}}
	sock := filepath.Join(t.TempDir(), "c.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: volumectl.WithInstances(http.NotFoundHandler(), fake)}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	c := volumectl.NewClient(sock)

	ds, err := c.Datastores(ctx)
	if err != nil || len(ds) != 1 || ds[0].Release != "15.10" {
		t.Fatalf("Datastores: %v %v", ds, err)
	}
	// A large overlay crosses the socket whole.
	overlay := make([]byte, 8<<20)
	for i := range overlay {
		overlay[i] = byte(i * 7)
	}
	spec := dbhost.Spec{ID: "i1", Datastore: "postgresql", Version: "15", Volume: cairn.NewID(), Source: dbhost.SourceSnapshot,
		Record: &dbagent.Record{Method: dbagent.Snapshot, Label: "b"}, Overlay: overlay}
	st, err := c.Provision(ctx, spec, nil)
	if err != nil || st.ID != "i1" || st.Operating != cairn.OperatingHealthy {
		t.Fatalf("Provision: %+v %v", st, err)
	}
	if got := fake.specs["i1"]; !reflect.DeepEqual(got, spec) {
		t.Fatal("the spec the host got differs from the one sent")
	}
	for _, tc := range []struct {
		name string
		call func() error
		want error
	}{
		{"bad spec", func() error { _, err := c.Provision(ctx, dbhost.Spec{ID: "i2"}, nil); return err }, cairn.ErrInvalid},
		{"bad spec with a stream", func() error {
			_, err := c.Provision(ctx, dbhost.Spec{ID: "i2"}, bytes.NewReader([]byte("x")))
			return err
		}, cairn.ErrInvalid},
		{"backup failing after its stream began", func() error {
			_, err := c.BackupInstance(ctx, "i1", dbhost.StreamOptions{Method: dbagent.Logical, Label: "fail"}, io.Discard)
			return err
		}, cairn.ErrConflict},
		{"unknown instance", func() error { _, err := c.HostInstance(ctx, "nope"); return err }, cairn.ErrNotFound},
		{"snapshot without a name", func() error { _, err := c.SnapshotInstance(ctx, "i1", dbhost.SnapshotOptions{}); return err }, cairn.ErrInvalid},
		{"known instance", func() error { _, err := c.HostInstance(ctx, "i1"); return err }, nil},
		{"check of an unknown instance", func() error { _, err := c.CheckInstance(ctx, "nope", dbagent.CheckRequest{}); return err }, cairn.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if rep, err := c.CheckInstance(ctx, "i1", dbagent.CheckRequest{Database: "app", Query: "SELECT 1"}); err != nil ||
		!rep.Passed || rep.Result != "SELECT 1" || rep.Detail != "checked app" {
		t.Fatalf("CheckInstance: %+v %v", rep, err)
	}
	b, err := c.SnapshotInstance(ctx, "i1", dbhost.SnapshotOptions{Name: "n", Label: "l"})
	if err != nil || b.Snapshot.IsZero() || b.Record.Label != "l" || len(b.Overlay) != 3 {
		t.Fatalf("SnapshotInstance: %+v %v", b, err)
	}
	// A restore's stream goes with its spec; a backup's comes back with
	// its record after it.
	logical := dbhost.Spec{ID: "i3", Datastore: "postgresql", Version: "15", Volume: cairn.NewID(), Source: dbhost.SourceLogical,
		Record: &dbagent.Record{Method: dbagent.Logical}}
	if _, err := c.Provision(ctx, logical, bytes.NewReader(overlay)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fake.data["i3"], overlay) || !reflect.DeepEqual(fake.specs["i3"], logical) {
		t.Fatal("the restore's stream or spec differs from what was sent")
	}
	// A recovery's stream with a snapshot's large overlay (the WAL a
	// quiesce under load wrote): the spec goes in the body, ahead of
	// the stream, whole.
	recovering := spec
	recovering.ID = "i4"
	recovering.Recovery = &dbhost.Recovery{Timeline: 2}
	if _, err := c.Provision(ctx, recovering, bytes.NewReader(pattern(5<<20))); err != nil {
		t.Fatalf("Provision with a large overlay and a stream: %v", err)
	}
	if !bytes.Equal(fake.data["i4"], pattern(5<<20)) || !reflect.DeepEqual(fake.specs["i4"], recovering) {
		t.Fatal("the recovery's stream or spec differs from what was sent")
	}
	if err := c.RemoveInstance(ctx, "i4"); err != nil {
		t.Fatal(err)
	}
	var stream bytes.Buffer
	rec, err := c.BackupInstance(ctx, "i1", dbhost.StreamOptions{Method: dbagent.Physical, Label: "p"}, &stream)
	if err != nil || rec.Label != "p" || rec.Bytes != 3<<20 || !bytes.Equal(stream.Bytes(), pattern(3<<20)) {
		t.Fatalf("BackupInstance: %+v, %d bytes, %v", rec, stream.Len(), err)
	}
	if err := c.RemoveInstance(ctx, "i3"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveInstance(ctx, "i1"); err != nil {
		t.Fatal(err)
	}
	if list, err := c.HostInstances(ctx); err != nil || len(list) != 0 {
		t.Fatalf("after RemoveInstance: %v %v", list, err)
	}
}
