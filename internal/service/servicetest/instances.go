package servicetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbhost"
	"github.com/cairnproject/cairn/internal/service"
)

// InstanceHost is an in-memory service.InstanceHost over a fake Engine:
// instances are specs with a port, and a snapshot backup is a snapshot
// of the fake engine with a made-up record and overlay. Every call goes
// through Faults as "InstanceHost.METHOD", but Datastores.
type InstanceHost struct {
	eng    *Engine
	faults *Faults

	mu        sync.Mutex
	instances map[string]hostInstance
	nextPort  int
	// binlogs are the instances' binary logs (logs.go), made by the
	// first WriteBinlog.
	binlogs map[string]*fakeBinlog
}

type hostInstance struct {
	spec  dbhost.Spec
	state dbhost.State
	// data is what a physical or logical restore read.
	data []byte
}

var _ service.InstanceHost = (*InstanceHost)(nil)

// NewInstanceHost returns a host with PostgreSQL 15 and MariaDB 10.11
// "installed", whose snapshots are eng's.
func NewInstanceHost(eng *Engine) *InstanceHost {
	return &InstanceHost{eng: eng, faults: eng.faults, instances: map[string]hostInstance{}, nextPort: 17500}
}

// Datastores implements service.InstanceHost. It is the one call not
// governed by Faults: requests make it, never tasks, and the tests of
// tasks fail and hold every call a task makes.
func (h *InstanceHost) Datastores(context.Context) ([]dbagent.Datastore, error) {
	return []dbagent.Datastore{
		{Type: dbagent.PostgreSQL, Version: "15", Release: "15.10"},
		{Type: dbagent.MariaDB, Version: "10.11", Release: "10.11.9"},
	}, nil
}

// Provision implements service.InstanceHost: idempotent for one spec.
// A restore's stream is read whole and kept (Data).
func (h *InstanceHost) Provision(ctx context.Context, spec dbhost.Spec, data io.Reader) (dbhost.State, error) {
	c, err := h.faults.Begin(ctx, "InstanceHost.Provision")
	if err != nil {
		return dbhost.State{}, err
	}
	if err := spec.Validate(); err != nil {
		return dbhost.State{}, err
	}
	var got []byte
	switch spec.Source {
	case dbhost.SourcePhysical, dbhost.SourceLogical:
		if data == nil {
			return dbhost.State{}, fmt.Errorf("restore without its stream: %w", cairn.ErrInvalid)
		}
		if got, err = io.ReadAll(data); err != nil {
			return dbhost.State{}, fmt.Errorf("reading the restore's stream: %w", err)
		}
	}
	vols, _ := h.eng.Peek()
	found := false
	for _, v := range vols {
		found = found || v.ID == spec.Volume
	}
	if !found {
		return dbhost.State{}, fmt.Errorf("volume %s: %w", spec.Volume.Short(), cairn.ErrNotFound)
	}
	h.mu.Lock()
	in, ok := h.instances[spec.ID]
	if !ok {
		in = hostInstance{spec: spec, data: got, state: dbhost.State{ID: spec.ID, Datastore: spec.Datastore, Version: spec.Version,
			Volume: spec.Volume, Phase: dbhost.PhaseReady, Address: "127.0.0.1", Port: h.nextPort, Operating: cairn.OperatingHealthy}}
		h.nextPort++
		h.instances[spec.ID] = in
	}
	h.mu.Unlock()
	return in.state, c.End(ctx)
}

// HostInstances implements service.InstanceHost.
func (h *InstanceHost) HostInstances(ctx context.Context) ([]dbhost.State, error) {
	c, err := h.faults.Begin(ctx, "InstanceHost.HostInstances")
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	var out []dbhost.State
	for _, in := range h.instances {
		out = append(out, in.state)
	}
	h.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, c.End(ctx)
}

// HostInstance implements service.InstanceHost.
func (h *InstanceHost) HostInstance(ctx context.Context, id string) (dbhost.State, error) {
	c, err := h.faults.Begin(ctx, "InstanceHost.HostInstance")
	if err != nil {
		return dbhost.State{}, err
	}
	h.mu.Lock()
	in, ok := h.instances[id]
	h.mu.Unlock()
	if !ok {
		return dbhost.State{}, fmt.Errorf("instance %s: %w", id, cairn.ErrNotFound)
	}
	return in.state, c.End(ctx)
}

// RemoveInstance implements service.InstanceHost.
func (h *InstanceHost) RemoveInstance(ctx context.Context, id string) error {
	c, err := h.faults.Begin(ctx, "InstanceHost.RemoveInstance")
	if err != nil {
		return err
	}
	h.mu.Lock()
	delete(h.instances, id)
	h.mu.Unlock()
	return c.End(ctx)
}

// SnapshotInstance implements service.InstanceHost: a snapshot of the
// instance's volume, deleted again when the call fails after it.
func (h *InstanceHost) SnapshotInstance(ctx context.Context, id string, o dbhost.SnapshotOptions) (dbhost.SnapshotBackup, error) {
	c, err := h.faults.Begin(ctx, "InstanceHost.SnapshotInstance")
	if err != nil {
		return dbhost.SnapshotBackup{}, err
	}
	h.mu.Lock()
	in, ok := h.instances[id]
	h.mu.Unlock()
	if !ok {
		return dbhost.SnapshotBackup{}, fmt.Errorf("instance %s: %w", id, cairn.ErrNotFound)
	}
	snap, err := h.eng.CreateSnapshot(ctx, in.spec.Volume, o.Name)
	if err != nil {
		return dbhost.SnapshotBackup{}, err
	}
	rec := dbagent.Record{Datastore: dbagent.Datastore{Type: in.spec.Datastore, Version: in.spec.Version},
		Method: dbagent.Snapshot, Label: o.Label, Time: snap.Created.UTC().Truncate(time.Microsecond)}
	return dbhost.SnapshotBackup{Snapshot: snap.ID, Record: rec, Overlay: []byte("overlay of " + o.Name)}, c.End(ctx)
}

// CheckInstance implements service.InstanceHost: every check passes but
// one whose query holds "damaged", and a query returns the instance's
// datastore.
func (h *InstanceHost) CheckInstance(ctx context.Context, id string, req dbagent.CheckRequest) (dbagent.CheckReport, error) {
	c, err := h.faults.Begin(ctx, "InstanceHost.CheckInstance")
	if err != nil {
		return dbagent.CheckReport{}, err
	}
	h.mu.Lock()
	in, ok := h.instances[id]
	h.mu.Unlock()
	if !ok {
		return dbagent.CheckReport{}, fmt.Errorf("instance %s: %w", id, cairn.ErrNotFound)
	}
	rep := dbagent.CheckReport{Passed: true, Tool: "fake-check", Detail: "fake check of " + in.spec.Datastore + " found no damage"}
	switch {
	case strings.Contains(req.Query, "damaged"):
		rep.Passed, rep.Detail = false, "fake check found damage"
	case req.Query != "":
		rep.Result = in.spec.Datastore
		rep.Detail += fmt.Sprintf("; query in %s returned %q", req.Database, rep.Result)
	}
	return rep, c.End(ctx)
}

// BackupInstance implements service.InstanceHost: the stream is
// StreamOf(id, o), written in pieces.
func (h *InstanceHost) BackupInstance(ctx context.Context, id string, o dbhost.StreamOptions, w io.Writer) (dbagent.Record, error) {
	c, err := h.faults.Begin(ctx, "InstanceHost.BackupInstance")
	if err != nil {
		return dbagent.Record{}, err
	}
	h.mu.Lock()
	in, ok := h.instances[id]
	h.mu.Unlock()
	if !ok {
		return dbagent.Record{}, fmt.Errorf("instance %s: %w", id, cairn.ErrNotFound)
	}
	data := StreamOf(id, o)
	for len(data) > 0 {
		n := min(len(data), 64<<10)
		if _, err := w.Write(data[:n]); err != nil {
			return dbagent.Record{}, err
		}
		data = data[n:]
	}
	rec := dbagent.Record{Datastore: dbagent.Datastore{Type: in.spec.Datastore, Version: in.spec.Version},
		Method: o.Method, Label: o.Label, Time: time.Now().UTC().Truncate(time.Microsecond), Bytes: int64(len(StreamOf(id, o)))}
	return rec, c.End(ctx)
}

// StreamOf is the stream the fake host's backup of instance id writes.
func StreamOf(id string, o dbhost.StreamOptions) []byte {
	parent := ""
	if o.Parent != nil {
		parent = o.Parent.Label
	}
	return bytes.Repeat([]byte(fmt.Sprintf("%s backup %s of %s after %q\n", o.Method, o.Label, id, parent)), 3000)
}

// Data returns what a physical or logical restore of an instance read.
func (h *InstanceHost) Data(id string) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.instances[id].data
}

// Spec returns the spec an instance was provisioned with.
func (h *InstanceHost) Spec(id string) (dbhost.Spec, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	in, ok := h.instances[id]
	return in.spec, ok
}
