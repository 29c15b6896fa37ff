// Package catalogtest is the conformance suite every catalog.Store
// passes: Run it from an implementation's tests with a function that
// opens a fresh, empty store.
package catalogtest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// Run runs the suite. open returns a new, empty store for one subtest;
// it arranges (with t.Cleanup) for the store to be closed. The subtests
// run in parallel, so open is called from several goroutines.
func Run(t *testing.T, open func(t *testing.T) catalog.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s catalog.Store)
	}{
		{"ProjectCRUD", testProjectCRUD},
		{"QuotaClasses", testQuotaClasses},
		{"TokenCRUD", testTokenCRUD},
		{"VolumeCRUD", testVolumeCRUD},
		{"SnapshotCRUD", testSnapshotCRUD},
		{"Metadata", testMetadata},
		{"BackupCRUD", testBackupCRUD},
		{"TaskCRUD", testTaskCRUD},
		{"InstanceCRUD", testInstanceCRUD},
		{"DatabaseBackupCRUD", testDatabaseBackupCRUD},
		{"BackupStrategies", testBackupStrategies},
		{"RestorePoints", testRestorePoints},
		{"MissingProject", testMissingProject},
		{"Times", testTimes},
		{"VolumeFilters", testVolumeFilters},
		{"SnapshotFilters", testSnapshotFilters},
		{"BackupFilters", testBackupFilters},
		{"TaskFilters", testTaskFilters},
		{"InstanceFilters", testInstanceFilters},
		{"DatabaseBackupFilters", testDatabaseBackupFilters},
		{"InvalidSort", testInvalidSort},
		{"UnknownMarker", testUnknownMarker},
		{"VolumeSortAndPaging", testVolumePaging},
		{"SnapshotSortAndPaging", testSnapshotPaging},
		{"BackupSortAndPaging", testBackupPaging},
		{"TaskPaging", testTaskPaging},
		{"InstanceSortAndPaging", testInstancePaging},
		{"DatabaseBackupSortAndPaging", testDatabaseBackupPaging},
		{"Usage", testUsage},
		{"HasDependents", testHasDependents},
		{"Summaries", testSummaries},
		{"DeleteProject", testDeleteProject},
		{"DeleteProjectDatabases", testDeleteProjectDatabases},
		{"Rollback", testRollback},
		{"ConcurrentIncrements", testConcurrentIncrements},
		{"SerializableQuotaCheck", testSerializableQuotaCheck},
		{"ViewIsolation", testViewIsolation},
		{"ViewReadOnly", testViewReadOnly},
		{"VolumeTypes", testVolumeTypes},
		{"VolumeTypeInUseRace", testVolumeTypeInUseRace},
		{"VolumeTransfers", testVolumeTransfers},
		{"Policies", testPolicies},
		{"PolicySlotOnce", testPolicySlotOnce},
		{"PrunePolicySlots", testPrunePolicySlots},
		{"FiringPolicySlots", testFiringPolicySlots},
		{"UnnotifiedPolicySlots", testUnnotifiedPolicySlots},
		{"PolicyBatches", testPolicyBatches},
		{"ServiceLeases", testServiceLeases},
		{"BackupMarks", testBackupMarks},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

// at is a time of the suite: base plus i seconds and i microseconds,
// with microsecond precision, in UTC.
func at(i int) time.Time {
	return time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC).
		Add(time.Duration(i)*time.Second + time.Duration(i)*time.Microsecond)
}

func update(t *testing.T, s catalog.Store, fn func(ctx context.Context, tx catalog.Tx) error) {
	t.Helper()
	ctx := t.Context()
	if err := s.Update(ctx, func(tx catalog.Tx) error { return fn(ctx, tx) }); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func view(t *testing.T, s catalog.Store, fn func(ctx context.Context, tx catalog.Tx) error) {
	t.Helper()
	ctx := t.Context()
	if err := s.View(ctx, func(tx catalog.Tx) error { return fn(ctx, tx) }); err != nil {
		t.Fatalf("View: %v", err)
	}
}

// wantErr fails t unless err wraps target.
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: error %v, want one wrapping %v", what, err, target)
	}
}

func wantEqual[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func newProject(i int) cairn.Project {
	return cairn.Project{
		ID:        cairn.NewUUID(),
		Name:      fmt.Sprintf("project-%d", i),
		Quota:     cairn.Quota{Volumes: 10 + int64(i), Gigabytes: 1000, Snapshots: 20, Backups: -1, BackupGigabytes: 5000, PerVolumeGigabytes: 100 + int64(i)},
		CreatedAt: at(i),
	}
}

// addProjects inserts n projects and returns their IDs.
func addProjects(t *testing.T, s catalog.Store, n int) []string {
	t.Helper()
	ids := make([]string, n)
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for i := range ids {
			p := newProject(i)
			ids[i] = p.ID
			if err := tx.InsertProject(ctx, p); err != nil {
				return err
			}
		}
		return nil
	})
	return ids
}

func fullVolume(project string, i int) cairn.Volume {
	return cairn.Volume{
		ID: cairn.NewUUID(), ProjectID: project, Name: fmt.Sprintf("volume-%d", i),
		Description: "a volume, ünïcode ✓", Size: int64(i + 1), Status: cairn.StatusAvailable,
		FailReason: "none yet", SnapshotID: cairn.NewUUID(), BackupID: cairn.NewUUID(),
		EngineID: "engine-" + cairn.NewID().String(), Attached: true,
		Metadata: metadataOf(i), CreatedAt: at(i), UpdatedAt: at(i + 1),
		UserID: fmt.Sprintf("user-%d ✓", i), SourceVolID: cairn.NewUUID(), Bootable: i%2 == 0,
		AdminMetadata: metadataOf(i + 1),
	}
}

// metadataOf is one of the suite's metadata values, by i: none, one
// key, or several with unicode, JSON's special characters, an empty value
// and a long one.
func metadataOf(i int) map[string]string {
	return []map[string]string{
		nil,
		{"a": "b"},
		{"owner": "ünïcode ✓ 日本語", "tier": "gold", "empty": "", `quote"back\slash`: "<&>\n\t\u2028", "k": strings.Repeat("v", 255)},
	}[(i%3+3)%3]
}

func fullSnapshot(project string, i int) cairn.Snapshot {
	return cairn.Snapshot{
		ID: cairn.NewUUID(), ProjectID: project, VolumeID: cairn.NewUUID(),
		Name: fmt.Sprintf("snapshot-%d", i), Description: "a snapshot", Size: int64(i + 2),
		Status: cairn.StatusCreating, FailReason: "reason", EngineID: "snap-engine",
		Metadata: metadataOf(i + 1), CreatedAt: at(i), UpdatedAt: at(i + 2),
		UserID: fmt.Sprintf("user-%d", i),
	}
}

func fullBackup(project string, i int) cairn.Backup {
	return cairn.Backup{
		ID: cairn.NewUUID(), ProjectID: project, VolumeID: cairn.NewUUID(), SnapshotID: cairn.NewUUID(),
		Name: fmt.Sprintf("backup-%d", i), Description: "a backup", Container: "container-a",
		Status: cairn.StatusBackingUp, FailReason: "reason", Size: int64(i + 3),
		ObjectCount: 1234567, StoredBytes: 1 << 40, Incremental: true, ParentID: cairn.NewUUID(),
		DataTimestamp: at(i - 100), RepoID: cairn.NewID().String(),
		TempSnapshotEngineID: "temp-snap", CreatedAt: at(i), UpdatedAt: at(i + 3),
		UserID: fmt.Sprintf("user-%d", i), VolumeMetadata: map[string]string{"k": fmt.Sprint(i), "ü": "✓"},
	}
}

func fullTask(project string, i int) cairn.Task {
	return cairn.Task{
		ID: cairn.NewUUID(), ProjectID: project, Kind: "volume.create", ResourceID: cairn.NewUUID(),
		State: cairn.TaskRunning, Params: []byte(`{"size":10,"name":"x"}`), Error: "cleanup failed, retrying: an error",
		FailCause: "the cause", Attempts: 3, ProgressDone: 1 << 33, ProgressTotal: 1 << 34,
		CreatedAt: at(i), UpdatedAt: at(i + 4), FinishedAt: at(i + 5),
		RequestID: "req-" + cairn.NewUUID(),
	}
}

// crud is the life of one row type.
type crud[T any] struct {
	make   func(project string, i int) T
	change func(v T, project string) T // every field but the ID
	id     func(T) string
	insert func(context.Context, catalog.Tx, T) error
	get    func(context.Context, catalog.Tx, string) (T, error)
	update func(context.Context, catalog.Tx, T) error
	del    func(context.Context, catalog.Tx, string) error // nil: no delete
}

func testCRUD[T any](t *testing.T, s catalog.Store, c crud[T]) {
	p := addProjects(t, s, 2)
	v := c.make(p[0], 1)
	id := c.id(v)
	update(t, s, func(ctx context.Context, tx catalog.Tx) error { return c.insert(ctx, tx, v) })
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := c.get(ctx, tx, id)
		if err != nil {
			return err
		}
		wantEqual(t, "after insert", got, v)
		_, err = c.get(ctx, tx, cairn.NewUUID())
		wantErr(t, "get missing", err, cairn.ErrNotFound)
		return nil
	})

	// A duplicate insert fails with ErrExists, changes nothing, and
	// leaves the transaction usable.
	dup := c.change(v, p[1])
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		wantErr(t, "duplicate insert", c.insert(ctx, tx, dup), cairn.ErrExists)
		got, err := c.get(ctx, tx, id)
		if err != nil {
			return fmt.Errorf("get after duplicate insert: %w", err)
		}
		wantEqual(t, "after duplicate insert", got, v)
		return nil
	})

	changed := c.change(v, p[1])
	update(t, s, func(ctx context.Context, tx catalog.Tx) error { return c.update(ctx, tx, changed) })
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := c.get(ctx, tx, id)
		if err != nil {
			return err
		}
		wantEqual(t, "after update", got, changed)
		return nil
	})
	missing := c.make(p[0], 2)
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		wantErr(t, "update missing", c.update(ctx, tx, missing), cairn.ErrNotFound)
		return nil
	})

	if c.del == nil {
		return
	}
	update(t, s, func(ctx context.Context, tx catalog.Tx) error { return c.del(ctx, tx, id) })
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		_, err := c.get(ctx, tx, id)
		wantErr(t, "get deleted", err, cairn.ErrNotFound)
		return nil
	})
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		wantErr(t, "delete missing", c.del(ctx, tx, id), cairn.ErrNotFound)
		return nil
	})
}

func testProjectCRUD(t *testing.T, s catalog.Store) {
	testCRUD(t, s, crud[cairn.Project]{
		make: func(_ string, i int) cairn.Project { return newProject(100 + i) },
		change: func(p cairn.Project, _ string) cairn.Project {
			p.Name += "-renamed"
			p.Quota = cairn.Quota{Volumes: 1, Gigabytes: 2, Snapshots: 3, Backups: 4, BackupGigabytes: 5}
			p.CreatedAt = at(-1000)
			return p
		},
		id:     func(p cairn.Project) string { return p.ID },
		insert: func(ctx context.Context, tx catalog.Tx, p cairn.Project) error { return tx.InsertProject(ctx, p) },
		get:    func(ctx context.Context, tx catalog.Tx, id string) (cairn.Project, error) { return tx.Project(ctx, id) },
		update: func(ctx context.Context, tx catalog.Tx, p cairn.Project) error { return tx.UpdateProject(ctx, p) },
		del:    func(ctx context.Context, tx catalog.Tx, id string) error { return tx.DeleteProject(ctx, id) },
	})

	// Projects lists every project, oldest first.
	var want []cairn.Project
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for _, i := range []int{5, 3, 9} {
			p := newProject(i)
			want = append(want, p)
			if err := tx.InsertProject(ctx, p); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		all, err := tx.Projects(ctx)
		if err != nil {
			return err
		}
		// Two projects from testCRUD's addProjects come first (at(0), at(1)).
		if len(all) != 5 {
			t.Fatalf("Projects: %d, want 5", len(all))
		}
		wantEqual(t, "Projects", all[2:], []cairn.Project{want[1], want[0], want[2]})
		return nil
	})
}

func testTokenCRUD(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 2)
	tok := func(project string, i int) cairn.Token {
		return cairn.Token{
			ID: cairn.NewUUID(), ProjectID: project, Name: fmt.Sprintf("token-%d", i),
			Admin: i%2 == 0, Hash: []byte(fmt.Sprintf("%032d", i)), CreatedAt: at(i),
		}
	}
	t1, t2, t3 := tok(p[0], 1), tok(p[0], 2), tok(p[1], 3)
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for _, x := range []cairn.Token{t3, t2, t1} {
			if err := tx.InsertToken(ctx, x); err != nil {
				return err
			}
		}
		dupID := tok(p[0], 4)
		dupID.ID = t1.ID
		wantErr(t, "duplicate token ID", tx.InsertToken(ctx, dupID), cairn.ErrExists)
		dupHash := tok(p[0], 5)
		dupHash.Hash = t2.Hash
		wantErr(t, "duplicate token hash", tx.InsertToken(ctx, dupHash), cairn.ErrExists)
		return nil
	})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for _, x := range []cairn.Token{t1, t2, t3} {
			got, err := tx.TokenByHash(ctx, x.Hash)
			if err != nil {
				return err
			}
			wantEqual(t, "TokenByHash", got, x)
		}
		_, err := tx.TokenByHash(ctx, []byte("no such hash"))
		wantErr(t, "TokenByHash missing", err, cairn.ErrNotFound)
		got, err := tx.Tokens(ctx, p[0])
		if err != nil {
			return err
		}
		wantEqual(t, "Tokens(project)", got, []cairn.Token{t1, t2})
		got, err = tx.Tokens(ctx, "")
		if err != nil {
			return err
		}
		wantEqual(t, "Tokens(\"\")", got, []cairn.Token{t1, t2, t3})
		got, err = tx.Tokens(ctx, cairn.NewUUID())
		if err != nil {
			return err
		}
		if len(got) != 0 {
			t.Errorf("Tokens(unknown project) = %v, want none", got)
		}
		return nil
	})
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		if err := tx.DeleteToken(ctx, t1.ID); err != nil {
			return err
		}
		wantErr(t, "DeleteToken again", tx.DeleteToken(ctx, t1.ID), cairn.ErrNotFound)
		_, err := tx.TokenByHash(ctx, t1.Hash)
		wantErr(t, "TokenByHash deleted", err, cairn.ErrNotFound)
		return nil
	})
}

func testVolumeCRUD(t *testing.T, s catalog.Store) {
	testCRUD(t, s, crud[cairn.Volume]{
		make: fullVolume,
		change: func(v cairn.Volume, project string) cairn.Volume {
			return cairn.Volume{
				ID: v.ID, ProjectID: project, Name: v.Name + "x", Description: "changed",
				Size: v.Size + 10, Status: cairn.StatusError, FailReason: "changed",
				SnapshotID: "s2", BackupID: "b2", EngineID: "e2", Attached: !v.Attached,
				Metadata:  map[string]string{"changed": "yes"},
				CreatedAt: v.CreatedAt.Add(-time.Hour), UpdatedAt: v.UpdatedAt.Add(time.Hour),
				UserID: v.UserID + "x", SourceVolID: "", Bootable: !v.Bootable,
				AdminMetadata: map[string]string{cairn.ReadOnlyKey: "True"},
			}
		},
		id:     func(v cairn.Volume) string { return v.ID },
		insert: func(ctx context.Context, tx catalog.Tx, v cairn.Volume) error { return tx.InsertVolume(ctx, v) },
		get:    func(ctx context.Context, tx catalog.Tx, id string) (cairn.Volume, error) { return tx.Volume(ctx, id) },
		update: func(ctx context.Context, tx catalog.Tx, v cairn.Volume) error { return tx.UpdateVolume(ctx, v) },
		del:    func(ctx context.Context, tx catalog.Tx, id string) error { return tx.DeleteVolume(ctx, id) },
	})
}

func testSnapshotCRUD(t *testing.T, s catalog.Store) {
	testCRUD(t, s, crud[cairn.Snapshot]{
		make: fullSnapshot,
		change: func(v cairn.Snapshot, project string) cairn.Snapshot {
			return cairn.Snapshot{
				ID: v.ID, ProjectID: project, VolumeID: "v2", Name: v.Name + "x", Description: "changed",
				Size: v.Size + 10, Status: cairn.StatusAvailable, FailReason: "", EngineID: "e2",
				Metadata:  nil,
				CreatedAt: v.CreatedAt.Add(-time.Hour), UpdatedAt: v.UpdatedAt.Add(time.Hour),
				UserID: "", Progress: "80%",
			}
		},
		id:     func(v cairn.Snapshot) string { return v.ID },
		insert: func(ctx context.Context, tx catalog.Tx, v cairn.Snapshot) error { return tx.InsertSnapshot(ctx, v) },
		get: func(ctx context.Context, tx catalog.Tx, id string) (cairn.Snapshot, error) {
			return tx.Snapshot(ctx, id)
		},
		update: func(ctx context.Context, tx catalog.Tx, v cairn.Snapshot) error { return tx.UpdateSnapshot(ctx, v) },
		del:    func(ctx context.Context, tx catalog.Tx, id string) error { return tx.DeleteSnapshot(ctx, id) },
	})
}

// testMetadata: a volume's and a snapshot's metadata come back as they
// were written, through insert, update, get and list: none (nil, and an
// empty map, which reads back nil), one key, several with unicode and
// JSON's special characters, and the most the service accepts (128 keys
// of 255 characters with values of 255).
func testMetadata(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 1)[0]
	most := map[string]string{}
	for i := range 128 {
		most[fmt.Sprintf("%03d", i)+strings.Repeat("ķ", 252)] = strings.Repeat("✓", 255)
	}
	values := []map[string]string{nil, {}, metadataOf(1), metadataOf(2), most}
	// read is what the catalog gives back for m.
	read := func(m map[string]string) map[string]string {
		if len(m) == 0 {
			return nil
		}
		return m
	}
	vols := make([]cairn.Volume, len(values))
	snaps := make([]cairn.Snapshot, len(values))
	for i, m := range values {
		vols[i], snaps[i] = fullVolume(p, i), fullSnapshot(p, i)
		vols[i].Metadata, snaps[i].Metadata = m, m
	}
	check := func(what string) {
		t.Helper()
		view(t, s, func(ctx context.Context, tx catalog.Tx) error {
			for i := range values {
				v, err := tx.Volume(ctx, vols[i].ID)
				if err != nil {
					return err
				}
				wantEqual(t, fmt.Sprintf("%s: volume %d", what, i), v.Metadata, read(vols[i].Metadata))
				sn, err := tx.Snapshot(ctx, snaps[i].ID)
				if err != nil {
					return err
				}
				wantEqual(t, fmt.Sprintf("%s: snapshot %d", what, i), sn.Metadata, read(snaps[i].Metadata))
			}
			vl, err := tx.Volumes(ctx, catalog.Filter{ProjectID: p})
			if err != nil {
				return err
			}
			sl, err := tx.Snapshots(ctx, catalog.Filter{ProjectID: p})
			if err != nil {
				return err
			}
			if len(vl) != len(vols) || len(sl) != len(snaps) {
				t.Fatalf("%s: listed %d volumes and %d snapshots, want %d of each", what, len(vl), len(sl), len(values))
			}
			for _, v := range vl {
				i := slices.IndexFunc(vols, func(w cairn.Volume) bool { return w.ID == v.ID })
				wantEqual(t, fmt.Sprintf("%s: listed volume %d", what, i), v.Metadata, read(vols[i].Metadata))
			}
			for _, sn := range sl {
				i := slices.IndexFunc(snaps, func(w cairn.Snapshot) bool { return w.ID == sn.ID })
				wantEqual(t, fmt.Sprintf("%s: listed snapshot %d", what, i), sn.Metadata, read(snaps[i].Metadata))
			}
			return nil
		})
	}
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for i := range values {
			if err := errors.Join(tx.InsertVolume(ctx, vols[i]), tx.InsertSnapshot(ctx, snaps[i])); err != nil {
				return err
			}
		}
		return nil
	})
	check("after insert")
	// Each row takes the next row's value: every value replaces every
	// other kind (none by some, some by none, few by many, many by few).
	for round := range 2 {
		update(t, s, func(ctx context.Context, tx catalog.Tx) error {
			for i := range values {
				vols[i].Metadata = values[(i+round+1)%len(values)]
				snaps[i].Metadata = values[(i+round+2)%len(values)]
				if err := errors.Join(tx.UpdateVolume(ctx, vols[i]), tx.UpdateSnapshot(ctx, snaps[i])); err != nil {
					return err
				}
			}
			return nil
		})
		check(fmt.Sprintf("after update %d", round+1))
	}
}

func testBackupCRUD(t *testing.T, s catalog.Store) {
	testCRUD(t, s, crud[cairn.Backup]{
		make: fullBackup,
		change: func(v cairn.Backup, project string) cairn.Backup {
			return cairn.Backup{
				ID: v.ID, ProjectID: project, VolumeID: "v2", SnapshotID: "", Name: v.Name + "x",
				Description: "changed", Container: "container-b", Status: cairn.StatusAvailable,
				FailReason: "", Size: v.Size + 10, ObjectCount: 7, StoredBytes: 8, Incremental: false,
				ParentID: "", DataTimestamp: time.Time{}, RepoID: "r2", TempSnapshotEngineID: "",
				CreatedAt: v.CreatedAt.Add(-time.Hour), UpdatedAt: v.UpdatedAt.Add(time.Hour),
				UserID: "another user",
			}
		},
		id:     func(v cairn.Backup) string { return v.ID },
		insert: func(ctx context.Context, tx catalog.Tx, v cairn.Backup) error { return tx.InsertBackup(ctx, v) },
		get:    func(ctx context.Context, tx catalog.Tx, id string) (cairn.Backup, error) { return tx.Backup(ctx, id) },
		update: func(ctx context.Context, tx catalog.Tx, v cairn.Backup) error { return tx.UpdateBackup(ctx, v) },
		del:    func(ctx context.Context, tx catalog.Tx, id string) error { return tx.DeleteBackup(ctx, id) },
	})
}

func testTaskCRUD(t *testing.T, s catalog.Store) {
	testCRUD(t, s, crud[cairn.Task]{
		make: fullTask,
		change: func(v cairn.Task, project string) cairn.Task {
			return cairn.Task{
				ID: v.ID, ProjectID: project, Kind: "backup.restore", ResourceID: "r2",
				State: cairn.TaskDone, Params: nil, Error: "", FailCause: "", Attempts: v.Attempts + 1,
				ProgressDone: 5, ProgressTotal: 6,
				CreatedAt: v.CreatedAt.Add(-time.Hour), UpdatedAt: v.UpdatedAt.Add(time.Hour),
				FinishedAt: time.Time{}, RequestID: "", MessageDeleted: true,
			}
		},
		id:     func(v cairn.Task) string { return v.ID },
		insert: func(ctx context.Context, tx catalog.Tx, v cairn.Task) error { return tx.InsertTask(ctx, v) },
		get:    func(ctx context.Context, tx catalog.Tx, id string) (cairn.Task, error) { return tx.Task(ctx, id) },
		update: func(ctx context.Context, tx catalog.Tx, v cairn.Task) error { return tx.UpdateTask(ctx, v) },
	})
}

// testMissingProject: a row naming a project that does not exist is
// refused with ErrNotFound.
func testMissingProject(t *testing.T, s catalog.Store) {
	p := cairn.NewUUID()
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		wantErr(t, "volume of missing project", tx.InsertVolume(ctx, fullVolume(p, 1)), cairn.ErrNotFound)
		wantErr(t, "snapshot of missing project", tx.InsertSnapshot(ctx, fullSnapshot(p, 1)), cairn.ErrNotFound)
		wantErr(t, "backup of missing project", tx.InsertBackup(ctx, fullBackup(p, 1)), cairn.ErrNotFound)
		wantErr(t, "token of missing project", tx.InsertToken(ctx, cairn.Token{ID: "t", ProjectID: p, Hash: []byte("h")}), cairn.ErrNotFound)
		wantErr(t, "instance of missing project", tx.InsertInstance(ctx, fullInstance(p, 1)), cairn.ErrNotFound)
		wantErr(t, "database backup of missing project", tx.InsertDatabaseBackup(ctx, fullDatabaseBackup(p, 1)), cairn.ErrNotFound)
		wantErr(t, "backup strategy of missing project", tx.PutBackupStrategy(ctx, cairn.BackupStrategy{ProjectID: p}), cairn.ErrNotFound)
		return nil
	})
}

// testTimes: times come back in UTC, truncated to the microsecond; zero
// times come back zero.
func testTimes(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 1)[0]
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	in := time.Date(2031, 12, 31, 23, 59, 59, 999999999, zone)
	want := time.Date(2031, 12, 31, 18, 29, 59, 999999000, time.UTC)
	task := fullTask(p, 1)
	task.CreatedAt, task.UpdatedAt, task.FinishedAt = in, in, time.Time{}
	task.Params = nil
	b := fullBackup(p, 1)
	b.DataTimestamp = time.Time{}
	b.CreatedAt = in
	old := fullVolume(p, 1)
	old.CreatedAt = time.Date(1901, 2, 3, 4, 5, 6, 7000, time.UTC)
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		return errors.Join(tx.InsertTask(ctx, task), tx.InsertBackup(ctx, b), tx.InsertVolume(ctx, old))
	})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		gt, err := tx.Task(ctx, task.ID)
		if err != nil {
			return err
		}
		if gt.CreatedAt != want || gt.UpdatedAt != want || gt.CreatedAt.Location() != time.UTC {
			t.Errorf("task times %v, %v; want %v (UTC)", gt.CreatedAt, gt.UpdatedAt, want)
		}
		if !gt.FinishedAt.IsZero() || gt.Params != nil {
			t.Errorf("task FinishedAt %v, Params %q; want zero, nil", gt.FinishedAt, gt.Params)
		}
		gb, err := tx.Backup(ctx, b.ID)
		if err != nil {
			return err
		}
		if !gb.DataTimestamp.IsZero() || gb.CreatedAt != want {
			t.Errorf("backup DataTimestamp %v CreatedAt %v; want zero, %v", gb.DataTimestamp, gb.CreatedAt, want)
		}
		gv, err := tx.Volume(ctx, old.ID)
		if err != nil {
			return err
		}
		wantEqual(t, "volume from 1901", gv, old)
		return nil
	})
}

// ids returns the IDs of rows.
func ids[T any](rows []T, id func(T) string) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = id(r)
	}
	return out
}

// sorted returns the IDs of the rows that keep selects, in the order
// keys give (the default created_at descending when none), ties broken
// by id in the last key's direction.
func sorted[T any](rows []T, id func(T) string, field func(T, string) any, keep func(T) bool, keys []catalog.SortKey) []string {
	if len(keys) == 0 {
		keys = []catalog.SortKey{{Key: "created_at", Desc: true}}
	}
	keys = append(slices.Clip(keys), catalog.SortKey{Key: "id", Desc: keys[len(keys)-1].Desc})
	var sel []T
	for _, r := range rows {
		if keep == nil || keep(r) {
			sel = append(sel, r)
		}
	}
	slices.SortStableFunc(sel, func(a, b T) int {
		for _, k := range keys {
			var c int
			if k.Key == "id" {
				c = strings.Compare(id(a), id(b))
			} else {
				c = compare(field(a, k.Key), field(b, k.Key))
			}
			if k.Desc {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return 0
	})
	return ids(sel, id)
}

func compare(a, b any) int {
	switch a := a.(type) {
	case string:
		return strings.Compare(a, b.(string))
	case cairn.Status:
		return strings.Compare(string(a), string(b.(cairn.Status)))
	case int64:
		return cmp.Compare(a, b.(int64))
	case time.Time:
		return a.Compare(b.(time.Time))
	}
	panic(fmt.Sprintf("compare %T", a))
}

func volumeField(v cairn.Volume, key string) any {
	switch key {
	case "name":
		return v.Name
	case "status":
		return v.Status
	case "size":
		return v.Size
	case "created_at":
		return v.CreatedAt
	case "updated_at":
		return v.UpdatedAt
	}
	panic(key)
}

func snapshotField(v cairn.Snapshot, key string) any {
	switch key {
	case "name":
		return v.Name
	case "status":
		return v.Status
	case "size":
		return v.Size
	case "created_at":
		return v.CreatedAt
	case "updated_at":
		return v.UpdatedAt
	}
	panic(key)
}

func backupField(v cairn.Backup, key string) any {
	switch key {
	case "name":
		return v.Name
	case "status":
		return v.Status
	case "size":
		return v.Size
	case "created_at":
		return v.CreatedAt
	case "updated_at":
		return v.UpdatedAt
	case "data_timestamp":
		return v.DataTimestamp
	}
	panic(key)
}

func taskField(v cairn.Task, key string) any {
	if key == "created_at" {
		return v.CreatedAt
	}
	panic(key)
}

// filterCase is one list query and the rows it must return.
type filterCase[T any] struct {
	name   string
	filter catalog.Filter
	keep   func(T) bool
}

func checkFilters[T any](t *testing.T, s catalog.Store, rows []T, id func(T) string, field func(T, string) any,
	list func(context.Context, catalog.Tx, catalog.Filter) ([]T, error), cases []filterCase[T]) {
	t.Helper()
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for _, c := range cases {
			got, err := list(ctx, tx, c.filter)
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
				continue
			}
			want := sorted(rows, id, field, c.keep, c.filter.Sort)
			if len(want) == 0 && c.name != "none" {
				t.Fatalf("%s: the case selects nothing; fix the suite", c.name)
			}
			if g := ids(got, id); !slices.Equal(g, want) {
				t.Errorf("%s: got %d rows %v\nwant %d rows %v", c.name, len(g), g, len(want), want)
			}
			if got == nil {
				t.Errorf("%s: nil slice, want an empty one", c.name)
			}
			// Whole rows come back, not only IDs.
			for _, g := range got {
				i := slices.IndexFunc(rows, func(r T) bool { return id(r) == id(g) })
				if i >= 0 {
					wantEqual(t, c.name+": row", g, rows[i])
				}
			}
		}
		return nil
	})
}

// status gives the suite's rows one of four statuses, deleted among them.
func status(i int) cairn.Status {
	return []cairn.Status{cairn.StatusAvailable, cairn.StatusInUse, cairn.StatusError, cairn.StatusDeleted}[i%4]
}

func testVolumeFilters(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 2)
	var rows []cairn.Volume
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for i := range 24 {
			v := fullVolume(p[i%2], i)
			v.Name = fmt.Sprintf("name-%d", i%3)
			v.Status = status(i)
			v.Bootable = i%3 == 0
			rows = append(rows, v)
			if err := tx.InsertVolume(ctx, v); err != nil {
				return err
			}
		}
		return nil
	})
	since := at(12)
	yes, no := true, false
	checkFilters(t, s, rows, func(v cairn.Volume) string { return v.ID }, volumeField,
		func(ctx context.Context, tx catalog.Tx, f catalog.Filter) ([]cairn.Volume, error) {
			return tx.Volumes(ctx, f)
		},
		[]filterCase[cairn.Volume]{
			{"all", catalog.Filter{}, nil},
			{"project", catalog.Filter{ProjectID: p[1]}, func(v cairn.Volume) bool { return v.ProjectID == p[1] }},
			{"name", catalog.Filter{Name: "name-2"}, func(v cairn.Volume) bool { return v.Name == "name-2" }},
			{"status", catalog.Filter{Status: cairn.StatusError}, func(v cairn.Volume) bool { return v.Status == cairn.StatusError }},
			{"since", catalog.Filter{Since: since}, func(v cairn.Volume) bool { return !v.CreatedAt.Before(since) }},
			{"project+name+status", catalog.Filter{ProjectID: p[0], Name: "name-0", Status: cairn.StatusAvailable},
				func(v cairn.Volume) bool {
					return v.ProjectID == p[0] && v.Name == "name-0" && v.Status == cairn.StatusAvailable
				}},
			{"bootable", catalog.Filter{Bootable: &yes}, func(v cairn.Volume) bool { return v.Bootable }},
			{"not bootable", catalog.Filter{Bootable: &no}, func(v cairn.Volume) bool { return !v.Bootable }},
			{"bootable+project", catalog.Filter{ProjectID: p[1], Bootable: &yes},
				func(v cairn.Volume) bool { return v.ProjectID == p[1] && v.Bootable }},
			{"none", catalog.Filter{Name: "no such name"}, func(cairn.Volume) bool { return false }},
		})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := tx.Volumes(ctx, catalog.Filter{Limit: 5})
		if err != nil {
			return err
		}
		if len(got) != 5 {
			t.Errorf("Limit 5: %d rows", len(got))
		}
		_, err = tx.Volumes(ctx, catalog.Filter{Limit: -1})
		wantErr(t, "negative limit", err, cairn.ErrInvalid)
		return nil
	})
}

func testSnapshotFilters(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 2)
	vols := []string{cairn.NewUUID(), cairn.NewUUID(), cairn.NewUUID()}
	var rows []cairn.Snapshot
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for i := range 24 {
			v := fullSnapshot(p[i%2], i)
			v.Name = fmt.Sprintf("name-%d", i%3)
			v.Status = status(i)
			v.VolumeID = vols[i%len(vols)]
			rows = append(rows, v)
			if err := tx.InsertSnapshot(ctx, v); err != nil {
				return err
			}
		}
		return nil
	})
	since := at(7)
	checkFilters(t, s, rows, func(v cairn.Snapshot) string { return v.ID }, snapshotField,
		func(ctx context.Context, tx catalog.Tx, f catalog.Filter) ([]cairn.Snapshot, error) {
			return tx.Snapshots(ctx, f)
		},
		[]filterCase[cairn.Snapshot]{
			{"all", catalog.Filter{}, nil},
			{"project", catalog.Filter{ProjectID: p[0]}, func(v cairn.Snapshot) bool { return v.ProjectID == p[0] }},
			{"name", catalog.Filter{Name: "name-1"}, func(v cairn.Snapshot) bool { return v.Name == "name-1" }},
			{"status", catalog.Filter{Status: cairn.StatusDeleted}, func(v cairn.Snapshot) bool { return v.Status == cairn.StatusDeleted }},
			{"volume", catalog.Filter{VolumeID: vols[1]}, func(v cairn.Snapshot) bool { return v.VolumeID == vols[1] }},
			{"since", catalog.Filter{Since: since}, func(v cairn.Snapshot) bool { return !v.CreatedAt.Before(since) }},
			{"project+volume", catalog.Filter{ProjectID: p[1], VolumeID: vols[2]},
				func(v cairn.Snapshot) bool { return v.ProjectID == p[1] && v.VolumeID == vols[2] }},
			{"none", catalog.Filter{VolumeID: "no such volume"}, func(cairn.Snapshot) bool { return false }},
		})
}

func testBackupFilters(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 2)
	vols := []string{cairn.NewUUID(), cairn.NewUUID(), cairn.NewUUID()}
	snaps := []string{"", cairn.NewUUID()}
	var rows []cairn.Backup
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for i := range 30 {
			v := fullBackup(p[i%2], i)
			v.Name = fmt.Sprintf("name-%d", i%3)
			v.Status = status(i)
			v.VolumeID = vols[i%len(vols)]
			v.SnapshotID = snaps[i%len(snaps)]
			v.ParentID = ""
			if i >= 5 {
				v.ParentID = rows[i%5].ID
			}
			rows = append(rows, v)
			if err := tx.InsertBackup(ctx, v); err != nil {
				return err
			}
		}
		return nil
	})
	since := at(20)
	parent := rows[2].ID
	checkFilters(t, s, rows, func(v cairn.Backup) string { return v.ID }, backupField,
		func(ctx context.Context, tx catalog.Tx, f catalog.Filter) ([]cairn.Backup, error) {
			return tx.Backups(ctx, f)
		},
		[]filterCase[cairn.Backup]{
			{"all", catalog.Filter{}, nil},
			{"project", catalog.Filter{ProjectID: p[1]}, func(v cairn.Backup) bool { return v.ProjectID == p[1] }},
			{"name", catalog.Filter{Name: "name-0"}, func(v cairn.Backup) bool { return v.Name == "name-0" }},
			{"status", catalog.Filter{Status: cairn.StatusInUse}, func(v cairn.Backup) bool { return v.Status == cairn.StatusInUse }},
			{"volume", catalog.Filter{VolumeID: vols[0]}, func(v cairn.Backup) bool { return v.VolumeID == vols[0] }},
			{"snapshot", catalog.Filter{SnapshotID: snaps[1]}, func(v cairn.Backup) bool { return v.SnapshotID == snaps[1] }},
			{"parent", catalog.Filter{ParentID: parent}, func(v cairn.Backup) bool { return v.ParentID == parent }},
			{"since", catalog.Filter{Since: since}, func(v cairn.Backup) bool { return !v.CreatedAt.Before(since) }},
			{"volume+snapshot+status", catalog.Filter{VolumeID: vols[1], SnapshotID: snaps[1], Status: cairn.StatusInUse},
				func(v cairn.Backup) bool {
					return v.VolumeID == vols[1] && v.SnapshotID == snaps[1] && v.Status == cairn.StatusInUse
				}},
			{"none", catalog.Filter{ParentID: "no such parent"}, func(cairn.Backup) bool { return false }},
		})
}

func testTaskFilters(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 2)
	res := []string{cairn.NewUUID(), cairn.NewUUID(), cairn.NewUUID()}
	states := []cairn.TaskState{cairn.TaskPending, cairn.TaskRunning, cairn.TaskDone, cairn.TaskFailed}
	var rows []cairn.Task
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		// Inserted newest first, with ties in created_at.
		for i := 23; i >= 0; i-- {
			v := fullTask(p[i%2], i/2)
			v.ResourceID = res[i%len(res)]
			v.State = states[i%len(states)]
			rows = append(rows, v)
			if err := tx.InsertTask(ctx, v); err != nil {
				return err
			}
		}
		return nil
	})
	oldest := []catalog.SortKey{{Key: "created_at"}}
	since := at(6)
	in := func(v cairn.Task, states ...cairn.TaskState) bool { return slices.Contains(states, v.State) }
	cases := []filterCase[cairn.Task]{
		{"all", catalog.Filter{}, nil},
		{"all, sorted newest first (ignored)", catalog.Filter{Sort: []catalog.SortKey{{Key: "created_at", Desc: true}}}, nil},
		{"all, sorted by status (ignored)", catalog.Filter{Sort: []catalog.SortKey{{Key: "status"}, {Key: "id", Desc: true}}}, nil},
		{"project", catalog.Filter{ProjectID: p[0]}, func(v cairn.Task) bool { return v.ProjectID == p[0] }},
		{"resource", catalog.Filter{ResourceID: res[2]}, func(v cairn.Task) bool { return v.ResourceID == res[2] }},
		{"one state", catalog.Filter{TaskStates: []cairn.TaskState{cairn.TaskDone}}, func(v cairn.Task) bool { return in(v, cairn.TaskDone) }},
		{"states", catalog.Filter{TaskStates: []cairn.TaskState{cairn.TaskPending, cairn.TaskRunning}},
			func(v cairn.Task) bool { return in(v, cairn.TaskPending, cairn.TaskRunning) }},
		{"since", catalog.Filter{Since: since}, func(v cairn.Task) bool { return !v.CreatedAt.Before(since) }},
		{"project+resource+states", catalog.Filter{ProjectID: p[1], ResourceID: res[0], TaskStates: []cairn.TaskState{cairn.TaskRunning, cairn.TaskFailed}},
			func(v cairn.Task) bool {
				return v.ProjectID == p[1] && v.ResourceID == res[0] && in(v, cairn.TaskRunning, cairn.TaskFailed)
			}},
		{"none", catalog.Filter{ResourceID: "no such resource"}, func(cairn.Task) bool { return false }},
	}
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for _, c := range cases {
			got, err := tx.Tasks(ctx, c.filter)
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
				continue
			}
			want := sorted(rows, func(v cairn.Task) string { return v.ID }, taskField, c.keep, oldest)
			if g := ids(got, func(v cairn.Task) string { return v.ID }); !slices.Equal(g, want) {
				t.Errorf("%s: got %v\nwant %v", c.name, g, want)
			}
			if got == nil {
				t.Errorf("%s: nil slice, want an empty one", c.name)
			}
		}
		return nil
	})
}

func testInvalidSort(t *testing.T, s catalog.Store) {
	bad := func(key string) catalog.Filter { return catalog.Filter{Sort: []catalog.SortKey{{Key: key}}} }
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for _, c := range []struct {
			name string
			list func(catalog.Filter) error
			keys []string
		}{
			{"volumes", func(f catalog.Filter) error { _, err := tx.Volumes(ctx, f); return err },
				[]string{"bogus", "data_timestamp", "created_at; DROP TABLE volumes", "project_id", ""}},
			{"snapshots", func(f catalog.Filter) error { _, err := tx.Snapshots(ctx, f); return err },
				[]string{"bogus", "data_timestamp", "volume_id"}},
			{"backups", func(f catalog.Filter) error { _, err := tx.Backups(ctx, f); return err },
				[]string{"bogus", "parent_id", "CREATED_AT"}},
			{"tasks", func(f catalog.Filter) error { _, err := tx.Tasks(ctx, f); return err },
				[]string{"bogus", "size", "name", "data_timestamp"}},
			{"instances", func(f catalog.Filter) error { _, err := tx.Instances(ctx, f); return err },
				[]string{"bogus", "data_timestamp", "volume_size", "datastore_type", "project_id"}},
			{"database backups", func(f catalog.Filter) error { _, err := tx.DatabaseBackups(ctx, f); return err },
				[]string{"bogus", "instance_id", "volume_size", "strategy", "record"}},
		} {
			for _, k := range c.keys {
				wantErr(t, fmt.Sprintf("%s sorted by %q", c.name, k), c.list(bad(k)), cairn.ErrInvalid)
			}
			// A bad key after a good one.
			f := catalog.Filter{Sort: []catalog.SortKey{{Key: "created_at"}, {Key: "bogus", Desc: true}}}
			wantErr(t, c.name+" sorted by created_at, bogus", c.list(f), cairn.ErrInvalid)
		}
		return nil
	})
}

func testUnknownMarker(t *testing.T, s catalog.Store) {
	ps := addProjects(t, s, 2)
	p := ps[0]
	var vol cairn.Volume
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		vol = fullVolume(p, 1)
		return tx.InsertVolume(ctx, vol)
	})
	f := catalog.Filter{Marker: cairn.NewUUID()}
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		_, err := tx.Volumes(ctx, f)
		wantErr(t, "volumes after unknown marker", err, cairn.ErrNotFound)
		_, err = tx.Snapshots(ctx, f)
		wantErr(t, "snapshots after unknown marker", err, cairn.ErrNotFound)
		_, err = tx.Backups(ctx, f)
		wantErr(t, "backups after unknown marker", err, cairn.ErrNotFound)
		_, err = tx.Tasks(ctx, f)
		wantErr(t, "tasks after unknown marker", err, cairn.ErrNotFound)
		_, err = tx.Instances(ctx, f)
		wantErr(t, "instances after unknown marker", err, cairn.ErrNotFound)
		_, err = tx.DatabaseBackups(ctx, f)
		wantErr(t, "database backups after unknown marker", err, cairn.ErrNotFound)
		// A volume's ID names no instance nor database backup.
		_, err = tx.Instances(ctx, catalog.Filter{Marker: vol.ID})
		wantErr(t, "instances after a volume's ID", err, cairn.ErrNotFound)
		_, err = tx.DatabaseBackups(ctx, catalog.Filter{Marker: vol.ID})
		wantErr(t, "database backups after a volume's ID", err, cairn.ErrNotFound)
		// A volume's ID names no snapshot.
		_, err = tx.Snapshots(ctx, catalog.Filter{Marker: vol.ID})
		wantErr(t, "snapshots after a volume's ID", err, cairn.ErrNotFound)
		// Another project's row is no marker for a project's list.
		_, err = tx.Volumes(ctx, catalog.Filter{ProjectID: ps[1], Marker: vol.ID})
		wantErr(t, "another project's volume as marker", err, cairn.ErrNotFound)
		// The last row as marker: an empty page.
		got, err := tx.Volumes(ctx, catalog.Filter{Marker: vol.ID})
		if err != nil || len(got) != 0 {
			t.Errorf("volumes after the only volume: %v, %v; want none", got, err)
		}
		return nil
	})
}

// sorts returns every sort key of keys in both directions, the default
// order, and orders of several keys in mixed directions.
func sorts(keys []string) [][]catalog.SortKey {
	out := [][]catalog.SortKey{nil}
	for _, k := range keys {
		out = append(out, []catalog.SortKey{{Key: k}}, []catalog.SortKey{{Key: k, Desc: true}})
	}
	return append(out,
		[]catalog.SortKey{{Key: "status"}, {Key: "size", Desc: true}},
		[]catalog.SortKey{{Key: "name", Desc: true}, {Key: "created_at"}},
		[]catalog.SortKey{{Key: "size"}, {Key: "name"}, {Key: "updated_at", Desc: true}},
		[]catalog.SortKey{{Key: "status", Desc: true}, {Key: "id"}},
		[]catalog.SortKey{{Key: "id", Desc: true}, {Key: "name"}},
	)
}

// checkPaging lists rows (all in project) in every order of keys, whole
// and in pages of 7 following the marker, and checks each against the
// order computed here.
func checkPaging[T any](t *testing.T, s catalog.Store, project string, rows []T, keys []string,
	id func(T) string, field func(T, string) any, list func(context.Context, catalog.Tx, catalog.Filter) ([]T, error)) {
	t.Helper()
	for _, order := range sorts(keys) {
		name := fmt.Sprint(order)
		want := sorted(rows, id, field, nil, order)
		view(t, s, func(ctx context.Context, tx catalog.Tx) error {
			all, err := list(ctx, tx, catalog.Filter{ProjectID: project, Sort: order})
			if err != nil {
				t.Errorf("%s: %v", name, err)
				return nil
			}
			if g := ids(all, id); !slices.Equal(g, want) {
				t.Errorf("%s: whole list\n got %v\nwant %v", name, g, want)
			}
			var paged []string
			marker := ""
			for pages := 0; ; pages++ {
				if pages > len(rows) {
					t.Fatalf("%s: paging does not end", name)
				}
				page, err := list(ctx, tx, catalog.Filter{ProjectID: project, Sort: order, Marker: marker, Limit: 7})
				if err != nil {
					t.Errorf("%s: page %d: %v", name, pages, err)
					return nil
				}
				if len(page) > 7 {
					t.Fatalf("%s: page %d has %d rows, limit 7", name, pages, len(page))
				}
				paged = append(paged, ids(page, id)...)
				if len(page) < 7 {
					break
				}
				marker = id(page[len(page)-1])
			}
			if !slices.Equal(paged, want) {
				t.Errorf("%s: pages\n got %v\nwant %v", name, paged, want)
			}
			// Offset skips rows after the marker, with and without a
			// limit; past the end it gives none.
			for _, c := range []struct {
				marker        int // index of the marker row in want, -1 for none
				offset, limit int
			}{{-1, 3, 7}, {-1, 5, 0}, {4, 2, 7}, {10, 1, 0}, {-1, len(want), 5}, {-1, len(want) + 9, 0}} {
				f := catalog.Filter{ProjectID: project, Sort: order, Offset: c.offset, Limit: c.limit}
				from := c.offset
				if c.marker >= 0 {
					f.Marker = want[c.marker]
					from += c.marker + 1
				}
				from = min(from, len(want))
				to := len(want)
				if c.limit > 0 {
					to = min(from+c.limit, len(want))
				}
				page, err := list(ctx, tx, f)
				if err != nil {
					t.Errorf("%s: %+v: %v", name, c, err)
					return nil
				}
				if g := ids(page, id); !slices.Equal(g, want[from:to]) {
					t.Errorf("%s: offset %+v\n got %v\nwant %v", name, c, g, want[from:to])
				}
			}
			_, err = list(ctx, tx, catalog.Filter{ProjectID: project, Sort: order, Offset: -1})
			wantErr(t, name+": negative offset", err, cairn.ErrInvalid)
			return nil
		})
	}
}

// tied gives values with many ties: row i of n takes value i%k.
func tied(i, k int) int { return (i * 7919) % k }

func testVolumePaging(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 2)
	var rows []cairn.Volume
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for i := range 250 {
			v := fullVolume(p[0], i)
			v.Name = fmt.Sprintf("vol-%02d", tied(i, 11))
			v.Status = status(tied(i, 3))
			v.Size = int64(tied(i, 5))
			v.CreatedAt = at(tied(i, 50))
			v.UpdatedAt = at(tied(i, 31))
			rows = append(rows, v)
			// Another project's rows, which must never show.
			o := fullVolume(p[1], i)
			if err := errors.Join(tx.InsertVolume(ctx, v), tx.InsertVolume(ctx, o)); err != nil {
				return err
			}
		}
		return nil
	})
	checkPaging(t, s, p[0], rows, []string{"id", "name", "status", "size", "created_at", "updated_at"},
		func(v cairn.Volume) string { return v.ID }, volumeField,
		func(ctx context.Context, tx catalog.Tx, f catalog.Filter) ([]cairn.Volume, error) {
			return tx.Volumes(ctx, f)
		})
}

func testSnapshotPaging(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 1)
	var rows []cairn.Snapshot
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for i := range 250 {
			v := fullSnapshot(p[0], i)
			v.Name = fmt.Sprintf("snap-%02d", tied(i, 13))
			v.Status = status(tied(i, 4))
			v.Size = int64(tied(i, 6))
			v.CreatedAt = at(tied(i, 40))
			v.UpdatedAt = at(tied(i, 29))
			rows = append(rows, v)
			if err := tx.InsertSnapshot(ctx, v); err != nil {
				return err
			}
		}
		return nil
	})
	checkPaging(t, s, p[0], rows, []string{"id", "name", "status", "size", "created_at", "updated_at"},
		func(v cairn.Snapshot) string { return v.ID }, snapshotField,
		func(ctx context.Context, tx catalog.Tx, f catalog.Filter) ([]cairn.Snapshot, error) {
			return tx.Snapshots(ctx, f)
		})
}

func testBackupPaging(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 1)
	var rows []cairn.Backup
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for i := range 250 {
			v := fullBackup(p[0], i)
			v.Name = fmt.Sprintf("backup-%02d", tied(i, 9))
			v.Status = status(tied(i, 3))
			v.Size = int64(tied(i, 7))
			v.CreatedAt = at(tied(i, 60))
			v.UpdatedAt = at(tied(i, 23))
			v.DataTimestamp = at(tied(i, 17))
			if i%10 == 0 {
				v.DataTimestamp = time.Time{}
			}
			rows = append(rows, v)
			if err := tx.InsertBackup(ctx, v); err != nil {
				return err
			}
		}
		return nil
	})
	checkPaging(t, s, p[0], rows, []string{"id", "name", "status", "size", "created_at", "updated_at", "data_timestamp"},
		func(v cairn.Backup) string { return v.ID }, backupField,
		func(ctx context.Context, tx catalog.Tx, f catalog.Filter) ([]cairn.Backup, error) {
			return tx.Backups(ctx, f)
		})
}

func testTaskPaging(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 1)
	var rows []cairn.Task
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for i := range 250 {
			v := fullTask(p[0], tied(i, 40))
			rows = append(rows, v)
			if err := tx.InsertTask(ctx, v); err != nil {
				return err
			}
		}
		return nil
	})
	id := func(v cairn.Task) string { return v.ID }
	want := sorted(rows, id, taskField, nil, []catalog.SortKey{{Key: "created_at"}})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		var paged []string
		marker := ""
		for range len(rows) {
			page, err := tx.Tasks(ctx, catalog.Filter{Marker: marker, Limit: 7})
			if err != nil {
				return err
			}
			paged = append(paged, ids(page, id)...)
			if len(page) < 7 {
				break
			}
			marker = page[len(page)-1].ID
		}
		if !slices.Equal(paged, want) {
			t.Errorf("task pages\n got %v\nwant %v", paged, want)
		}
		return nil
	})
}

func testUsage(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 2)
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		var errs []error
		vol := func(project string, size int64, st cairn.Status) {
			v := fullVolume(project, 0)
			v.Size, v.Status = size, st
			errs = append(errs, tx.InsertVolume(ctx, v))
		}
		snap := func(project string, size int64, st cairn.Status) {
			v := fullSnapshot(project, 0)
			v.Size, v.Status = size, st
			errs = append(errs, tx.InsertSnapshot(ctx, v))
		}
		backup := func(project string, size int64, st cairn.Status) {
			v := fullBackup(project, 0)
			v.Size, v.Status = size, st
			errs = append(errs, tx.InsertBackup(ctx, v))
		}
		vol(p[0], 1, cairn.StatusAvailable)
		vol(p[0], 2, cairn.StatusInUse)
		vol(p[0], 4, cairn.StatusDeleted)
		vol(p[0], 8, cairn.StatusError)
		snap(p[0], 16, cairn.StatusAvailable)
		snap(p[0], 32, cairn.StatusDeleted)
		snap(p[0], 64, cairn.StatusCreating)
		backup(p[0], 128, cairn.StatusAvailable)
		backup(p[0], 256, cairn.StatusDeleted)
		backup(p[0], 512, cairn.StatusError)
		vol(p[1], 1000, cairn.StatusAvailable)
		backup(p[1], 2000, cairn.StatusAvailable)
		return errors.Join(errs...)
	})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for _, c := range []struct {
			project string
			want    cairn.Usage
		}{
			{p[0], cairn.Usage{Volumes: 3, Gigabytes: 1 + 2 + 8 + 16 + 64, Snapshots: 2, Backups: 2, BackupGigabytes: 128 + 512}},
			{p[1], cairn.Usage{Volumes: 1, Gigabytes: 1000, Backups: 1, BackupGigabytes: 2000}},
			{cairn.NewUUID(), cairn.Usage{}},
		} {
			got, err := tx.Usage(ctx, c.project)
			if err != nil {
				return err
			}
			wantEqual(t, "Usage", got, c.want)
		}
		return nil
	})
}

func testHasDependents(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 1)[0]
	full, incr, other := fullBackup(p, 1), fullBackup(p, 2), fullBackup(p, 3)
	full.ParentID, full.Incremental = "", false
	incr.ParentID = full.ID
	incr.Status = cairn.StatusDeleted // any status counts
	other.ParentID = cairn.NewUUID()
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		return errors.Join(tx.InsertBackup(ctx, full), tx.InsertBackup(ctx, incr), tx.InsertBackup(ctx, other))
	})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for _, c := range []struct {
			id   string
			want bool
		}{{full.ID, true}, {incr.ID, false}, {other.ID, false}, {other.ParentID, true}, {cairn.NewUUID(), false}, {"", false}} {
			got, err := tx.HasDependents(ctx, c.id)
			if err != nil {
				return err
			}
			if got != c.want {
				t.Errorf("HasDependents(%q) = %v, want %v", c.id, got, c.want)
			}
		}
		return nil
	})
	update(t, s, func(ctx context.Context, tx catalog.Tx) error { return tx.DeleteBackup(ctx, incr.ID) })
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := tx.HasDependents(ctx, full.ID)
		if err != nil || got {
			t.Errorf("HasDependents after deleting the child = %v, %v; want false", got, err)
		}
		return nil
	})
}

func testDeleteProject(t *testing.T, s catalog.Store) {
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		wantErr(t, "DeleteProject missing", tx.DeleteProject(ctx, cairn.NewUUID()), cairn.ErrNotFound)
		return nil
	})
	type owned struct {
		name    string
		insert  func(ctx context.Context, tx catalog.Tx, project string, st cairn.Status) (id string, err error)
		setDead func(ctx context.Context, tx catalog.Tx, id string) error
		get     func(ctx context.Context, tx catalog.Tx, id string) error
	}
	for _, c := range []owned{
		{"volume",
			func(ctx context.Context, tx catalog.Tx, p string, st cairn.Status) (string, error) {
				v := fullVolume(p, 1)
				v.Status = st
				return v.ID, tx.InsertVolume(ctx, v)
			},
			func(ctx context.Context, tx catalog.Tx, id string) error {
				v, err := tx.Volume(ctx, id)
				if err != nil {
					return err
				}
				v.Status = cairn.StatusDeleted
				return tx.UpdateVolume(ctx, v)
			},
			func(ctx context.Context, tx catalog.Tx, id string) error { _, err := tx.Volume(ctx, id); return err }},
		{"snapshot",
			func(ctx context.Context, tx catalog.Tx, p string, st cairn.Status) (string, error) {
				v := fullSnapshot(p, 1)
				v.Status = st
				return v.ID, tx.InsertSnapshot(ctx, v)
			},
			func(ctx context.Context, tx catalog.Tx, id string) error {
				v, err := tx.Snapshot(ctx, id)
				if err != nil {
					return err
				}
				v.Status = cairn.StatusDeleted
				return tx.UpdateSnapshot(ctx, v)
			},
			func(ctx context.Context, tx catalog.Tx, id string) error { _, err := tx.Snapshot(ctx, id); return err }},
		{"backup",
			func(ctx context.Context, tx catalog.Tx, p string, st cairn.Status) (string, error) {
				v := fullBackup(p, 1)
				v.Status = st
				return v.ID, tx.InsertBackup(ctx, v)
			},
			func(ctx context.Context, tx catalog.Tx, id string) error {
				v, err := tx.Backup(ctx, id)
				if err != nil {
					return err
				}
				v.Status = cairn.StatusDeleted
				return tx.UpdateBackup(ctx, v)
			},
			func(ctx context.Context, tx catalog.Tx, id string) error { _, err := tx.Backup(ctx, id); return err }},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newProject(1)
			tok := cairn.Token{ID: cairn.NewUUID(), ProjectID: p.ID, Name: "t", Hash: []byte(cairn.NewID().String() + c.name), CreatedAt: at(1)}
			var live, dead string
			update(t, s, func(ctx context.Context, tx catalog.Tx) error {
				if err := tx.InsertProject(ctx, p); err != nil {
					return err
				}
				var err1, err2 error
				live, err1 = c.insert(ctx, tx, p.ID, cairn.StatusError)
				dead, err2 = c.insert(ctx, tx, p.ID, cairn.StatusDeleted)
				return errors.Join(err1, err2, tx.InsertToken(ctx, tok))
			})
			update(t, s, func(ctx context.Context, tx catalog.Tx) error {
				wantErr(t, "DeleteProject owning a live "+c.name, tx.DeleteProject(ctx, p.ID), cairn.ErrConflict)
				if _, err := tx.Project(ctx, p.ID); err != nil {
					t.Errorf("project after refused delete: %v", err)
				}
				return c.setDead(ctx, tx, live)
			})
			update(t, s, func(ctx context.Context, tx catalog.Tx) error { return tx.DeleteProject(ctx, p.ID) })
			view(t, s, func(ctx context.Context, tx catalog.Tx) error {
				_, err := tx.Project(ctx, p.ID)
				wantErr(t, "deleted project", err, cairn.ErrNotFound)
				_, err = tx.TokenByHash(ctx, tok.Hash)
				wantErr(t, "deleted project's token", err, cairn.ErrNotFound)
				wantErr(t, "deleted project's deleted "+c.name, c.get(ctx, tx, dead), cairn.ErrNotFound)
				return nil
			})
		})
	}
}

// testRollback: when fn fails, nothing it wrote stays, and Update
// returns fn's error.
func testRollback(t *testing.T, s catalog.Store) {
	boom := errors.New("boom")
	p := newProject(1)
	v := fullVolume(p.ID, 1)
	ctx := t.Context()
	err := s.Update(ctx, func(tx catalog.Tx) error {
		if err := tx.InsertProject(ctx, p); err != nil {
			return err
		}
		if err := tx.InsertVolume(ctx, v); err != nil {
			return err
		}
		return fmt.Errorf("wrapped: %w", boom)
	})
	wantErr(t, "Update whose fn fails", err, boom)
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		_, err := tx.Project(ctx, p.ID)
		wantErr(t, "project of a rolled-back Update", err, cairn.ErrNotFound)
		_, err = tx.Volume(ctx, v.ID)
		wantErr(t, "volume of a rolled-back Update", err, cairn.ErrNotFound)
		return nil
	})
	// The store still works.
	update(t, s, func(ctx context.Context, tx catalog.Tx) error { return tx.InsertProject(ctx, p) })
}

// testConcurrentIncrements: 8 goroutines each make 50 read-modify-write
// increments of one field; none is lost and none fails, while readers
// see the field only grow.
func testConcurrentIncrements(t *testing.T, s catalog.Store) {
	const workers, each = 8, 50
	p := newProject(1)
	p.Quota.Volumes = 0
	update(t, s, func(ctx context.Context, tx catalog.Tx) error { return tx.InsertProject(ctx, p) })
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, workers+1)
	for range workers {
		wg.Go(func() {
			for range each {
				err := s.Update(ctx, func(tx catalog.Tx) error {
					q, err := tx.Project(ctx, p.ID)
					if err != nil {
						return err
					}
					q.Quota.Volumes++
					return tx.UpdateProject(ctx, q)
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() {
		last := int64(-1)
		for {
			select {
			case <-stop:
				return
			default:
			}
			err := s.View(ctx, func(tx catalog.Tx) error {
				q, err := tx.Project(ctx, p.ID)
				if err != nil {
					return err
				}
				if q.Quota.Volumes < last {
					return fmt.Errorf("readers saw %d after %d", q.Quota.Volumes, last)
				}
				last = q.Quota.Volumes
				return nil
			})
			if err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent transaction: %v", err)
	}
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		q, err := tx.Project(ctx, p.ID)
		if err != nil {
			return err
		}
		if q.Quota.Volumes != workers*each {
			t.Errorf("after %d increments: %d", workers*each, q.Quota.Volumes)
		}
		return nil
	})
}

// testSerializableQuotaCheck: transactions that each count a project's
// volumes and add one only below the quota never exceed it together
// (no write skew: each reads what the others insert, not a row they
// all update).
func testSerializableQuotaCheck(t *testing.T, s catalog.Store) {
	const workers, quota = 8, 3
	p := newProject(1)
	p.Quota.Volumes = quota
	update(t, s, func(ctx context.Context, tx catalog.Tx) error { return tx.InsertProject(ctx, p) })
	ctx := t.Context()
	var wg sync.WaitGroup
	var mu sync.Mutex
	added := 0
	for i := range workers {
		wg.Go(func() {
			err := s.Update(ctx, func(tx catalog.Tx) error {
				u, err := tx.Usage(ctx, p.ID)
				if err != nil {
					return err
				}
				if u.Volumes >= quota {
					return cairn.ErrQuota
				}
				return tx.InsertVolume(ctx, fullVolume(p.ID, i))
			})
			switch {
			case err == nil:
				mu.Lock()
				added++
				mu.Unlock()
			case !errors.Is(err, cairn.ErrQuota):
				t.Errorf("worker %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		u, err := tx.Usage(ctx, p.ID)
		if err != nil {
			return err
		}
		if u.Volumes != quota || added != quota {
			t.Errorf("%d workers under quota %d: %d volumes, %d reported added", workers, quota, u.Volumes, added)
		}
		return nil
	})
}

// testViewIsolation: a View sees only committed transactions.
func testViewIsolation(t *testing.T, s catalog.Store) {
	p := newProject(1)
	ctx := t.Context()
	err := s.Update(ctx, func(tx catalog.Tx) error {
		if err := tx.InsertProject(ctx, p); err != nil {
			return err
		}
		return s.View(ctx, func(vt catalog.Tx) error {
			_, err := vt.Project(ctx, p.ID)
			wantErr(t, "View during the inserting Update", err, cairn.ErrNotFound)
			all, err := vt.Projects(ctx)
			if err != nil {
				return err
			}
			if len(all) != 0 {
				t.Errorf("View during the inserting Update lists %v", all)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := tx.Project(ctx, p.ID)
		if err != nil {
			return err
		}
		wantEqual(t, "after commit", got, p)
		return nil
	})
}

// testViewReadOnly: a View cannot write.
func testViewReadOnly(t *testing.T, s catalog.Store) {
	p := newProject(1)
	ctx := t.Context()
	err := s.View(ctx, func(tx catalog.Tx) error { return tx.InsertProject(ctx, p) })
	if err == nil {
		t.Error("InsertProject in a View succeeded")
	}
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		_, err := tx.Project(ctx, p.ID)
		wantErr(t, "project inserted in a View", err, cairn.ErrNotFound)
		return nil
	})
}

// testSummaries: Summaries gives the IDs and names of exactly the rows,
// in exactly the order, of the full list with the same filter; and
// WithDependents agrees with HasDependents.
func testSummaries(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 2)
	var parents []string
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for i := range 30 {
			v := fullVolume(p[i%2], i)
			sn := fullSnapshot(p[i%2], i)
			b := fullBackup(p[i%2], i)
			b.ParentID = ""
			if i%3 == 1 {
				b.ParentID = parents[len(parents)-1]
			}
			parents = append(parents, b.ID)
			for _, err := range []error{tx.InsertVolume(ctx, v), tx.InsertSnapshot(ctx, sn), tx.InsertBackup(ctx, b)} {
				if err != nil {
					return err
				}
			}
		}
		return nil
	})
	filters := []catalog.Filter{
		{},
		{ProjectID: p[0]},
		{ProjectID: p[1], Limit: 4, Sort: []catalog.SortKey{{Key: "name"}}},
		{Sort: []catalog.SortKey{{Key: "size", Desc: true}}, Limit: 7},
	}
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for _, f := range filters {
			for _, kind := range []catalog.Kind{catalog.KindVolumes, catalog.KindSnapshots, catalog.KindBackups} {
				var want []catalog.Summary
				switch kind {
				case catalog.KindVolumes:
					l, err := tx.Volumes(ctx, f)
					if err != nil {
						return err
					}
					for _, v := range l {
						want = append(want, catalog.Summary{ID: v.ID, Name: v.Name})
					}
				case catalog.KindSnapshots:
					l, err := tx.Snapshots(ctx, f)
					if err != nil {
						return err
					}
					for _, v := range l {
						want = append(want, catalog.Summary{ID: v.ID, Name: v.Name})
					}
				default:
					l, err := tx.Backups(ctx, f)
					if err != nil {
						return err
					}
					for _, v := range l {
						want = append(want, catalog.Summary{ID: v.ID, Name: v.Name})
					}
				}
				got, err := tx.Summaries(ctx, kind, f)
				if err != nil {
					return err
				}
				if len(got) != len(want) || (len(got) > 0 && !reflect.DeepEqual(got, want)) {
					t.Errorf("%s %+v: summaries %v, want %v", kind, f, got, want)
				}
				if len(want) > 1 {
					f2 := f
					f2.Marker = want[0].ID
					got2, err := tx.Summaries(ctx, kind, f2)
					if err != nil {
						return err
					}
					if len(got2) == 0 || got2[0] != want[1] {
						t.Errorf("%s after marker: %v, want first %v", kind, got2, want[1])
					}
				}
			}
		}
		if _, err := tx.Summaries(ctx, "widgets", catalog.Filter{}); !errors.Is(err, cairn.ErrInvalid) {
			t.Errorf("summaries of widgets: %v", err)
		}
		with, err := tx.WithDependents(ctx, append(parents, cairn.NewUUID()))
		if err != nil {
			return err
		}
		for _, id := range parents {
			has, err := tx.HasDependents(ctx, id)
			if err != nil {
				return err
			}
			if has != with[id] {
				t.Errorf("backup %s: HasDependents %v, WithDependents %v", id, has, with[id])
			}
		}
		if len(with) != 10 {
			t.Errorf("WithDependents found %d parents, want 10", len(with))
		}
		if none, err := tx.WithDependents(ctx, nil); err != nil || len(none) != 0 {
			t.Errorf("WithDependents(nil): %v %v", none, err)
		}
		return nil
	})
}

// testQuotaClasses: the default class exists from the start with the
// block storage API's defaults, is written whole and read back; other
// classes are not found.
func testQuotaClasses(t *testing.T, s catalog.Store) {
	ctx := t.Context()
	var got cairn.Quota
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		var err error
		got, err = tx.QuotaClass(ctx, "default")
		return err
	})
	wantEqual(t, "default class", got, cairn.Quota{Volumes: 10, Gigabytes: 1000, Snapshots: 10, Backups: 10, BackupGigabytes: 1000, PerVolumeGigabytes: -1})
	want := cairn.Quota{Volumes: 1, Gigabytes: 2, Snapshots: 3, Backups: 4, BackupGigabytes: 5, PerVolumeGigabytes: 6}
	update(t, s, func(ctx context.Context, tx catalog.Tx) error { return tx.SetQuotaClass(ctx, "default", want) })
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		var err error
		got, err = tx.QuotaClass(ctx, "default")
		return err
	})
	wantEqual(t, "default class after a write", got, want)
	err := s.View(ctx, func(tx catalog.Tx) error {
		_, err := tx.QuotaClass(ctx, "gold")
		return err
	})
	wantErr(t, "class gold", err, cairn.ErrNotFound)
	err = s.Update(ctx, func(tx catalog.Tx) error { return tx.SetQuotaClass(ctx, "gold", want) })
	wantErr(t, "writing class gold", err, cairn.ErrNotFound)
}
