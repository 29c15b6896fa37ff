package api_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/api"
	"github.com/cairnproject/cairn/internal/service"
)

// fakeDatabases is an in-memory api.Databases for the database API's
// tests: a test fake, not a service. It keeps the contract the API
// relies on (project scoping, the list order and paging, the first
// states, the checks whose errors the API maps) and runs no task: a test
// moves instances and backups on with setInstance and setBackup. IDs and
// times come from counters, so two runs make the same requests and
// answers.
type fakeDatabases struct {
	mu         sync.Mutex
	n          int // IDs and times made
	instances  map[string]cairn.Instance
	backups    map[string]cairn.DatabaseBackup
	strategies map[[2]string]cairn.BackupStrategy // by project and instance
	// created and backupsCreated are the inputs of the create calls, in
	// order, for tests to check what the API made of a request.
	created        []cairn.InstanceCreate
	backupsCreated []cairn.DatabaseBackupCreate
}

var _ api.Databases = (*fakeDatabases)(nil)

// callerAlpha is the caller of project alpha's token, for calling the
// fake directly.
var callerAlpha = service.Caller{ProjectID: "alpha"}

func newFakeDatabases() *fakeDatabases {
	return &fakeDatabases{instances: map[string]cairn.Instance{}, backups: map[string]cairn.DatabaseBackup{},
		strategies: map[[2]string]cairn.BackupStrategy{}}
}

// fakeEpoch is the fake's first time; each new resource is a second
// later than the one before.
var fakeEpoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// next returns a new ID (a UUID of the counter) and time. Called with
// f.mu held.
func (f *fakeDatabases) next() (string, time.Time) {
	f.n++
	return fmt.Sprintf("00000000-0000-4000-8000-%012d", f.n), fakeEpoch.Add(time.Duration(f.n) * time.Second)
}

func (f *fakeDatabases) Datastores(context.Context) ([]cairn.Datastore, error) {
	return []cairn.Datastore{
		{ID: "mariadb", Name: cairn.DatastoreMariaDB, DefaultVersionID: "mariadb-10.11",
			Versions: []cairn.DatastoreVersion{{ID: "mariadb-10.11", Name: "10.11", Version: "10.11.6"}}},
		{ID: "postgresql", Name: cairn.DatastorePostgreSQL, DefaultVersionID: "postgresql-15",
			Versions: []cairn.DatastoreVersion{{ID: "postgresql-15", Name: "15", Version: "15.10"}}},
	}, nil
}

// resolve finds a datastore and version by name or ID, as the service
// must.
func (f *fakeDatabases) resolve(ds, version string) (cairn.DatastoreRef, error) {
	list, _ := f.Datastores(context.Background())
	for _, d := range list {
		if d.ID != ds && d.Name != ds {
			continue
		}
		for _, v := range d.Versions {
			if v.ID == version || v.Name == version || (version == "" && v.ID == d.DefaultVersionID) {
				return cairn.DatastoreRef{Type: d.Name, Version: v.Name, VersionID: v.ID}, nil
			}
		}
		return cairn.DatastoreRef{}, fmt.Errorf("datastore %s: version %s is not installed: %w", ds, version, cairn.ErrInvalid)
	}
	return cairn.DatastoreRef{}, fmt.Errorf("datastore %s: not installed on this host (installed: mariadb, postgresql): %w", ds, cairn.ErrInvalid)
}

func (f *fakeDatabases) CreateInstance(_ context.Context, c service.Caller, in cairn.InstanceCreate) (cairn.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ref, err := f.resolve(in.Datastore, in.DatastoreVersion)
	if err != nil {
		return cairn.Instance{}, err
	}
	size := in.VolumeSize
	if in.BackupID != "" {
		b, ok := f.backups[in.BackupID]
		if !ok || b.ProjectID != c.ProjectID {
			return cairn.Instance{}, fmt.Errorf("backup %s: %w", in.BackupID, cairn.ErrNotFound)
		}
		if b.Status != cairn.DatabaseBackupCompleted {
			return cairn.Instance{}, fmt.Errorf("backup %s is %s, not COMPLETED: %w", b.ID, b.Status, cairn.ErrConflict)
		}
		if b.Datastore.Type != ref.Type {
			return cairn.Instance{}, fmt.Errorf("backup %s is of %s, not %s: %w", b.ID, b.Datastore.Type, ref.Type, cairn.ErrInvalid)
		}
		if size == 0 {
			size = b.VolumeSize
		}
		if size < b.VolumeSize {
			return cairn.Instance{}, fmt.Errorf("volume size %d GiB: backup %s needs %d: %w", size, b.ID, b.VolumeSize, cairn.ErrInvalid)
		}
	}
	id, now := f.next()
	v := cairn.Instance{ID: id, ProjectID: c.ProjectID, Name: in.Name, Status: cairn.InstanceBuild,
		Datastore: ref, VolumeSize: size, BackupID: in.BackupID, CreatedAt: now, UpdatedAt: now, Metadata: in.Metadata}
	f.instances[id] = v
	f.created = append(f.created, in)
	return v, nil
}

// page returns the page q asks for of items (already in the caller's
// scope): created_at descending, ties by ID, after the marker.
func page[T any](items []T, q service.ListQuery, key func(T) (time.Time, string)) ([]T, error) {
	if q.Limit < 0 || q.Limit > service.MaxLimit {
		return nil, fmt.Errorf("limit %d: want 1 to %d: %w", q.Limit, service.MaxLimit, cairn.ErrInvalid)
	}
	slices.SortFunc(items, func(a, b T) int {
		ta, ia := key(a)
		tb, ib := key(b)
		return cmp.Or(tb.Compare(ta), strings.Compare(ia, ib))
	})
	if q.Marker != "" {
		i := slices.IndexFunc(items, func(v T) bool { _, id := key(v); return id == q.Marker })
		if i < 0 {
			return nil, fmt.Errorf("marker %s: %w", q.Marker, cairn.ErrNotFound)
		}
		items = items[i+1:]
	}
	return items[:min(len(items), q.PageSize())], nil
}

// scope checks an all-projects list: admins only.
func scope(c service.Caller, q service.ListQuery) (all bool, err error) {
	if q.AllProjects && !c.Admin {
		return false, fmt.Errorf("listing every project's databases is for admins: %w", cairn.ErrForbidden)
	}
	return q.AllProjects, nil
}

func (f *fakeDatabases) ListInstances(_ context.Context, c service.Caller, q service.ListQuery) ([]cairn.Instance, error) {
	all, err := scope(c, q)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []cairn.Instance
	for _, v := range f.instances {
		if all || v.ProjectID == c.ProjectID {
			out = append(out, v)
		}
	}
	return page(out, q, func(v cairn.Instance) (time.Time, string) { return v.CreatedAt, v.ID })
}

// instance returns the caller's instance id. Called with f.mu held.
func (f *fakeDatabases) instance(c service.Caller, id string) (cairn.Instance, error) {
	v, ok := f.instances[id]
	if !ok || v.ProjectID != c.ProjectID {
		return cairn.Instance{}, fmt.Errorf("instance %s: %w", id, cairn.ErrNotFound)
	}
	return v, nil
}

func (f *fakeDatabases) Instance(_ context.Context, c service.Caller, id string) (cairn.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.instance(c, id)
}

func (f *fakeDatabases) DeleteInstance(_ context.Context, c service.Caller, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := f.instance(c, id)
	if err != nil {
		return err
	}
	if v.Status == cairn.InstanceShutdown {
		return fmt.Errorf("instance %s is already being deleted: %w", id, cairn.ErrConflict)
	}
	_, v.UpdatedAt = f.next()
	v.Status, v.OperatingStatus = cairn.InstanceShutdown, cairn.OperatingShutdown
	f.instances[id] = v
	return nil
}

// RecoverInstance keeps the service's checks the API maps: an active
// PostgreSQL instance, a point in time, a backup of the instance.
func (f *fakeDatabases) RecoverInstance(_ context.Context, c service.Caller, id string, in cairn.InstanceRecoverRequest) (cairn.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := f.instance(c, id)
	if err != nil {
		return v, err
	}
	switch {
	case v.Datastore.Type != cairn.DatastorePostgreSQL:
		return v, fmt.Errorf("instance %s is %s: %w", id, v.Datastore.Type, cairn.ErrUnsupported)
	case in.PointInTime.IsZero():
		return v, fmt.Errorf("a recover needs point_in_time: %w", cairn.ErrInvalid)
	case v.Status != cairn.InstanceActive:
		return v, fmt.Errorf("instance %s is %s: %w", id, v.Status, cairn.ErrConflict)
	}
	b, ok := f.backups[in.BackupID]
	if in.BackupID != "" && (!ok || b.ProjectID != c.ProjectID) {
		return v, fmt.Errorf("backup %s not found: %w", in.BackupID, cairn.ErrNotFound)
	}
	rid, at := f.next()
	v.Status, v.UpdatedAt = cairn.InstanceRecover, at
	v.Recovery = &cairn.InstanceRecovery{ID: rid, Status: cairn.RecoveryRunning, PointInTime: in.PointInTime.UTC(),
		BackupID: in.BackupID, CreatedAt: at, UpdatedAt: at}
	f.instances[id] = v
	return v, nil
}

func (f *fakeDatabases) UndoRecover(_ context.Context, c service.Caller, id string) (cairn.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := f.instance(c, id)
	if err != nil {
		return v, err
	}
	if v.Recovery == nil || v.Recovery.Status != cairn.RecoveryCompleted || v.Status != cairn.InstanceActive {
		return v, fmt.Errorf("instance %s has no completed recover to undo: %w", id, cairn.ErrConflict)
	}
	rc := *v.Recovery
	_, rc.UpdatedAt = f.next()
	rc.Status = cairn.RecoveryUndoing
	v.Status, v.Recovery, v.UpdatedAt = cairn.InstanceRecover, &rc, rc.UpdatedAt
	f.instances[id] = v
	return v, nil
}

// strategyOf is the strategy and container a backup of v takes: the
// request's, else the instance's, else the project's, else the defaults.
// Called with f.mu held.
func (f *fakeDatabases) strategyOf(v cairn.Instance, in cairn.DatabaseBackupCreate) (cairn.DatabaseStrategy, string) {
	st, container := in.Strategy, in.Container
	for _, key := range [][2]string{{v.ProjectID, v.ID}, {v.ProjectID, ""}} {
		if s, ok := f.strategies[key]; ok {
			st, container = cmp.Or(st, s.Strategy), cmp.Or(container, s.Container)
		}
	}
	return cmp.Or(st, cairn.StrategySnapshot), cmp.Or(container, "databases")
}

func (f *fakeDatabases) CreateDatabaseBackup(_ context.Context, c service.Caller, in cairn.DatabaseBackupCreate) (cairn.DatabaseBackup, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := f.instance(c, in.InstanceID)
	if err != nil {
		return cairn.DatabaseBackup{}, err
	}
	if v.Status != cairn.InstanceActive {
		return cairn.DatabaseBackup{}, fmt.Errorf("instance %s is %s, not ACTIVE: %w", v.ID, v.Status, cairn.ErrConflict)
	}
	parent := in.ParentID
	if parent != "" {
		p, ok := f.backups[parent]
		if !ok || p.ProjectID != c.ProjectID {
			return cairn.DatabaseBackup{}, fmt.Errorf("parent backup %s: %w", parent, cairn.ErrNotFound)
		}
		if p.InstanceID != v.ID || p.Status != cairn.DatabaseBackupCompleted {
			return cairn.DatabaseBackup{}, fmt.Errorf("parent backup %s: not a completed backup of instance %s: %w", parent, v.ID, cairn.ErrConflict)
		}
	} else if in.Incremental {
		var latest cairn.DatabaseBackup
		for _, b := range f.backups {
			if b.InstanceID == v.ID && b.Status == cairn.DatabaseBackupCompleted && b.CreatedAt.After(latest.CreatedAt) {
				latest = b
			}
		}
		parent = latest.ID
	}
	st, container := f.strategyOf(v, in)
	id, now := f.next()
	b := cairn.DatabaseBackup{ID: id, ProjectID: c.ProjectID, InstanceID: v.ID, Name: in.Name,
		Description: in.Description, Status: cairn.DatabaseBackupNew, Strategy: st, Container: container,
		ParentID: parent, Datastore: v.Datastore, VolumeSize: v.VolumeSize, CreatedAt: now, UpdatedAt: now}
	f.backups[id] = b
	f.backupsCreated = append(f.backupsCreated, in)
	return b, nil
}

func (f *fakeDatabases) ListDatabaseBackups(_ context.Context, c service.Caller, q service.ListQuery, flt cairn.DatabaseBackupFilter) ([]cairn.DatabaseBackup, error) {
	all, err := scope(c, q)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []cairn.DatabaseBackup
	for _, b := range f.backups {
		if (all || b.ProjectID == c.ProjectID) && (flt.InstanceID == "" || b.InstanceID == flt.InstanceID) &&
			(flt.Datastore == "" || b.Datastore.Type == flt.Datastore) {
			out = append(out, b)
		}
	}
	return page(out, q, func(b cairn.DatabaseBackup) (time.Time, string) { return b.CreatedAt, b.ID })
}

func (f *fakeDatabases) BackupMarks(ctx context.Context, c service.Caller, id string) (cairn.BackupMarks, error) {
	if _, err := f.DatabaseBackup(ctx, c, id); err != nil {
		return cairn.BackupMarks{}, err
	}
	return cairn.BackupMarks{BackupID: id}, nil
}

func (f *fakeDatabases) DatabaseBackup(_ context.Context, c service.Caller, id string) (cairn.DatabaseBackup, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.backups[id]
	if !ok || b.ProjectID != c.ProjectID {
		return cairn.DatabaseBackup{}, fmt.Errorf("backup %s: %w", id, cairn.ErrNotFound)
	}
	return b, nil
}

func (f *fakeDatabases) DeleteDatabaseBackup(ctx context.Context, c service.Caller, id string) error {
	b, err := f.DatabaseBackup(ctx, c, id)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch b.Status {
	case cairn.DatabaseBackupNew, cairn.DatabaseBackupBuilding, cairn.DatabaseBackupSaving:
		return fmt.Errorf("backup %s is %s: wait for it to end: %w", id, b.Status, cairn.ErrConflict)
	}
	delete(f.backups, id)
	return nil
}

func (f *fakeDatabases) BackupStrategies(_ context.Context, c service.Caller, instanceID string) ([]cairn.BackupStrategy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []cairn.BackupStrategy
	for key, st := range f.strategies {
		if key[0] == c.ProjectID && (instanceID == "" || key[1] == instanceID) {
			out = append(out, st)
		}
	}
	slices.SortFunc(out, func(a, b cairn.BackupStrategy) int { return strings.Compare(a.InstanceID, b.InstanceID) })
	return out, nil
}

func (f *fakeDatabases) SetBackupStrategy(_ context.Context, c service.Caller, st cairn.BackupStrategy) (cairn.BackupStrategy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st.InstanceID != "" {
		if _, err := f.instance(c, st.InstanceID); err != nil {
			return cairn.BackupStrategy{}, err
		}
	}
	st.ProjectID, st.Backend = c.ProjectID, "local"
	f.strategies[[2]string{c.ProjectID, st.InstanceID}] = st
	return st, nil
}

func (f *fakeDatabases) DeleteBackupStrategy(_ context.Context, c service.Caller, instanceID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := [2]string{c.ProjectID, instanceID}
	if _, ok := f.strategies[key]; !ok {
		return fmt.Errorf("backup strategy of project %s, instance %q: %w", c.ProjectID, instanceID, cairn.ErrNotFound)
	}
	delete(f.strategies, key)
	return nil
}

// UpdateInstanceMetadata makes e as the service does (MetadataEdit.Apply);
// the instance's update time stays.
func (f *fakeDatabases) UpdateInstanceMetadata(_ context.Context, c service.Caller, id string, e service.MetadataEdit) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := f.instance(c, id)
	if err != nil {
		return nil, err
	}
	if v.Metadata, err = e.Apply("instance "+id, v.Metadata); err != nil {
		return nil, err
	}
	// No f.next(): the IDs the later calls make stay those of the
	// captured requests, however many edits a test makes.
	f.instances[id] = v
	return v.Metadata, nil
}

// setInstance changes instance id as a task would.
func (f *fakeDatabases) setInstance(id string, change func(*cairn.Instance)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := f.instances[id]
	change(&v)
	_, v.UpdatedAt = f.next()
	f.instances[id] = v
}

// setBackup changes backup id as a task would.
func (f *fakeDatabases) setBackup(id string, change func(*cairn.DatabaseBackup)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.backups[id]
	change(&b)
	_, b.UpdatedAt = f.next()
	f.backups[id] = b
}

// createdInputs returns the inputs of the create calls so far.
func (f *fakeDatabases) createdInputs() ([]cairn.InstanceCreate, []cairn.DatabaseBackupCreate) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.created), slices.Clone(f.backupsCreated)
}
