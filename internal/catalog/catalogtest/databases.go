package catalogtest

// The suite's cases of database instances, database backups and backup
// strategies.

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

func fullInstance(project string, i int) cairn.Instance {
	return cairn.Instance{
		ID: cairn.NewUUID(), ProjectID: project, Name: fmt.Sprintf("instance-%d, ünïcode ✓", i),
		Status: cairn.InstanceActive, OperatingStatus: cairn.OperatingHealthy, FailReason: "none yet",
		Datastore:  cairn.DatastoreRef{Type: cairn.DatastorePostgreSQL, Version: "15", VersionID: cairn.NewUUID()},
		VolumeSize: int64(i + 1), VolumeUsed: 1<<33 + int64(i), Address: "127.0.0.1", Port: 54320 + i,
		BackupID: cairn.NewUUID(), VolumeID: cairn.NewUUID(),
		CreatedAt: at(i), UpdatedAt: at(i + 1),
		Recovery: &cairn.InstanceRecovery{ID: cairn.NewUUID(), Status: cairn.RecoveryFailed, FailReason: "why ✓",
			PointInTime: at(i - 1), BackupID: cairn.NewUUID(), SafetySnapshot: cairn.NewID().String(),
			RestorePoint: cairn.NewUUID(), BaseTime: at(i - 2), ArchiveTimeline: uint32(i + 3), CreatedAt: at(i), UpdatedAt: at(i + 2)},
		Metadata: map[string]string{"tier": "gold", "ünïcode ✓": fmt.Sprint(i)},
	}
}

func fullDatabaseBackup(project string, i int) cairn.DatabaseBackup {
	return cairn.DatabaseBackup{
		ID: cairn.NewUUID(), ProjectID: project, InstanceID: cairn.NewUUID(),
		Name: fmt.Sprintf("database-backup-%d", i), Description: "a database backup, ünïcode ✓",
		Status: cairn.DatabaseBackupCompleted, FailReason: "reason", Strategy: cairn.StrategyPhysical,
		Container: "database-backups", ParentID: cairn.NewUUID(),
		Datastore: cairn.DatastoreRef{Type: cairn.DatastoreMariaDB, Version: "10.11", VersionID: cairn.NewUUID()},
		Size:      1<<40 + int64(i), VolumeSize: int64(i + 2), Location: "database-backups/" + cairn.NewID().String(),
		DataTimestamp: at(i - 100), VolumeID: cairn.NewUUID(), SnapshotID: cairn.NewUUID(),
		Data: cairn.NewID().String(), Overlay: cairn.NewID().String(),
		// Opaque bytes: JSON by contract, but whatever they are comes
		// back exactly, NUL and invalid UTF-8 included.
		Record:    append([]byte(`{"lsn":"0/3000028","label":"cairn ✓"}`), 0, 0xff, 0xfe),
		CreatedAt: at(i), UpdatedAt: at(i + 3),
	}
}

func testInstanceCRUD(t *testing.T, s catalog.Store) {
	testCRUD(t, s, crud[cairn.Instance]{
		make: fullInstance,
		// Every field changes; those the JSON omits when empty become
		// empty, which must come back empty.
		change: func(v cairn.Instance, project string) cairn.Instance {
			return cairn.Instance{
				ID: v.ID, ProjectID: project, Name: v.Name + "x", Status: cairn.InstanceError,
				OperatingStatus: cairn.OperatingNone, FailReason: "",
				Datastore:  cairn.DatastoreRef{Type: cairn.DatastoreMariaDB, Version: "10.11", VersionID: "v2"},
				VolumeSize: v.VolumeSize + 10, VolumeUsed: 0, Address: "", Port: 0, BackupID: "", VolumeID: "",
				CreatedAt: v.CreatedAt.Add(-time.Hour), UpdatedAt: v.UpdatedAt.Add(time.Hour), Recovery: nil, Metadata: nil,
			}
		},
		id:     func(v cairn.Instance) string { return v.ID },
		insert: func(ctx context.Context, tx catalog.Tx, v cairn.Instance) error { return tx.InsertInstance(ctx, v) },
		get: func(ctx context.Context, tx catalog.Tx, id string) (cairn.Instance, error) {
			return tx.Instance(ctx, id)
		},
		update: func(ctx context.Context, tx catalog.Tx, v cairn.Instance) error { return tx.UpdateInstance(ctx, v) },
		del:    func(ctx context.Context, tx catalog.Tx, id string) error { return tx.DeleteInstance(ctx, id) },
	})
}

func testDatabaseBackupCRUD(t *testing.T, s catalog.Store) {
	testCRUD(t, s, crud[cairn.DatabaseBackup]{
		make: fullDatabaseBackup,
		change: func(v cairn.DatabaseBackup, project string) cairn.DatabaseBackup {
			return cairn.DatabaseBackup{
				ID: v.ID, ProjectID: project, InstanceID: "i2", Name: v.Name + "x", Description: "",
				Status: cairn.DatabaseBackupFailed, FailReason: "", Strategy: cairn.StrategySnapshot,
				Container: "container-b", ParentID: "",
				Datastore: cairn.DatastoreRef{Type: cairn.DatastorePostgreSQL, Version: "16", VersionID: "v2"},
				Size:      0, VolumeSize: v.VolumeSize + 10, Location: "", DataTimestamp: time.Time{},
				VolumeID: "", SnapshotID: "", Data: "", Overlay: "", Record: nil,
				CreatedAt: v.CreatedAt.Add(-time.Hour), UpdatedAt: v.UpdatedAt.Add(time.Hour),
			}
		},
		id: func(v cairn.DatabaseBackup) string { return v.ID },
		insert: func(ctx context.Context, tx catalog.Tx, v cairn.DatabaseBackup) error {
			return tx.InsertDatabaseBackup(ctx, v)
		},
		get: func(ctx context.Context, tx catalog.Tx, id string) (cairn.DatabaseBackup, error) {
			return tx.DatabaseBackup(ctx, id)
		},
		update: func(ctx context.Context, tx catalog.Tx, v cairn.DatabaseBackup) error {
			return tx.UpdateDatabaseBackup(ctx, v)
		},
		del: func(ctx context.Context, tx catalog.Tx, id string) error { return tx.DeleteDatabaseBackup(ctx, id) },
	})

	// A Record of no bytes comes back nil; a zero DataTimestamp zero,
	// also on insert.
	p := addProjects(t, s, 1)[0]
	b := fullDatabaseBackup(p, 1)
	b.Record, b.DataTimestamp = []byte{}, time.Time{}
	update(t, s, func(ctx context.Context, tx catalog.Tx) error { return tx.InsertDatabaseBackup(ctx, b) })
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := tx.DatabaseBackup(ctx, b.ID)
		if err != nil {
			return err
		}
		if got.Record != nil || !got.DataTimestamp.IsZero() {
			t.Errorf("empty Record, zero DataTimestamp came back %q, %v; want nil, zero", got.Record, got.DataTimestamp)
		}
		return nil
	})
}

// instanceStatus gives the suite's instances one of four statuses.
func instanceStatus(i int) cairn.InstanceStatus {
	return []cairn.InstanceStatus{cairn.InstanceActive, cairn.InstanceBuild, cairn.InstanceError, cairn.InstanceShutdown}[i%4]
}

// databaseBackupStatus gives the suite's database backups one of four
// statuses.
func databaseBackupStatus(i int) cairn.DatabaseBackupStatus {
	return []cairn.DatabaseBackupStatus{cairn.DatabaseBackupCompleted, cairn.DatabaseBackupSaving,
		cairn.DatabaseBackupFailed, cairn.DatabaseBackupDeleteFailed}[i%4]
}

// datastore gives the suite's rows one of two datastores, the other
// half of the time for each project of two (i%2).
func datastore(i int) string {
	return []string{cairn.DatastorePostgreSQL, cairn.DatastoreMariaDB}[(i/2)%2]
}

func instanceField(v cairn.Instance, key string) any {
	switch key {
	case "name":
		return v.Name
	case "status":
		return string(v.Status)
	case "size":
		return v.VolumeSize
	case "created_at":
		return v.CreatedAt
	case "updated_at":
		return v.UpdatedAt
	}
	panic(key)
}

func databaseBackupField(v cairn.DatabaseBackup, key string) any {
	switch key {
	case "name":
		return v.Name
	case "status":
		return string(v.Status)
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

func testInstanceFilters(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 2)
	var rows []cairn.Instance
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for i := range 24 {
			v := fullInstance(p[i%2], i)
			v.Name = fmt.Sprintf("name-%d", i%3)
			v.Status = instanceStatus(i)
			v.Datastore.Type = datastore(i)
			rows = append(rows, v)
			if err := tx.InsertInstance(ctx, v); err != nil {
				return err
			}
		}
		return nil
	})
	since := at(10)
	build := cairn.Status(cairn.InstanceBuild)
	checkFilters(t, s, rows, func(v cairn.Instance) string { return v.ID }, instanceField,
		func(ctx context.Context, tx catalog.Tx, f catalog.Filter) ([]cairn.Instance, error) {
			return tx.Instances(ctx, f)
		},
		[]filterCase[cairn.Instance]{
			{"all", catalog.Filter{}, nil},
			{"project", catalog.Filter{ProjectID: p[1]}, func(v cairn.Instance) bool { return v.ProjectID == p[1] }},
			{"name", catalog.Filter{Name: "name-1"}, func(v cairn.Instance) bool { return v.Name == "name-1" }},
			{"status", catalog.Filter{Status: build}, func(v cairn.Instance) bool { return v.Status == cairn.InstanceBuild }},
			{"datastore", catalog.Filter{Datastore: cairn.DatastoreMariaDB},
				func(v cairn.Instance) bool { return v.Datastore.Type == cairn.DatastoreMariaDB }},
			{"since", catalog.Filter{Since: since}, func(v cairn.Instance) bool { return !v.CreatedAt.Before(since) }},
			{"project+datastore", catalog.Filter{ProjectID: p[0], Datastore: cairn.DatastorePostgreSQL},
				func(v cairn.Instance) bool {
					return v.ProjectID == p[0] && v.Datastore.Type == cairn.DatastorePostgreSQL
				}},
			{"project+datastore+status, sorted by name", catalog.Filter{ProjectID: p[1], Datastore: cairn.DatastoreMariaDB,
				Status: cairn.Status(cairn.InstanceShutdown), Sort: []catalog.SortKey{{Key: "name"}}},
				func(v cairn.Instance) bool {
					return v.ProjectID == p[1] && v.Datastore.Type == cairn.DatastoreMariaDB && v.Status == cairn.InstanceShutdown
				}},
			// The datastore's version is not its type.
			{"none", catalog.Filter{Datastore: "15"}, func(cairn.Instance) bool { return false }},
		})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := tx.Instances(ctx, catalog.Filter{Limit: 5})
		if err != nil {
			return err
		}
		if len(got) != 5 {
			t.Errorf("Limit 5: %d rows", len(got))
		}
		_, err = tx.Instances(ctx, catalog.Filter{Limit: -1})
		wantErr(t, "negative limit", err, cairn.ErrInvalid)
		return nil
	})
}

func testDatabaseBackupFilters(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 2)
	insts := []string{cairn.NewUUID(), cairn.NewUUID(), cairn.NewUUID()}
	var rows []cairn.DatabaseBackup
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for i := range 30 {
			v := fullDatabaseBackup(p[i%2], i)
			v.Name = fmt.Sprintf("name-%d", i%3)
			v.Status = databaseBackupStatus(i)
			v.InstanceID = insts[i%len(insts)]
			v.Datastore.Type = datastore(i)
			v.ParentID = ""
			if i >= 5 {
				v.ParentID = rows[i%5].ID
			}
			rows = append(rows, v)
			if err := tx.InsertDatabaseBackup(ctx, v); err != nil {
				return err
			}
		}
		return nil
	})
	since := at(20)
	parent := rows[3].ID
	failed := cairn.Status(cairn.DatabaseBackupFailed)
	checkFilters(t, s, rows, func(v cairn.DatabaseBackup) string { return v.ID }, databaseBackupField,
		func(ctx context.Context, tx catalog.Tx, f catalog.Filter) ([]cairn.DatabaseBackup, error) {
			return tx.DatabaseBackups(ctx, f)
		},
		[]filterCase[cairn.DatabaseBackup]{
			{"all", catalog.Filter{}, nil},
			{"project", catalog.Filter{ProjectID: p[0]}, func(v cairn.DatabaseBackup) bool { return v.ProjectID == p[0] }},
			{"name", catalog.Filter{Name: "name-2"}, func(v cairn.DatabaseBackup) bool { return v.Name == "name-2" }},
			{"status", catalog.Filter{Status: failed},
				func(v cairn.DatabaseBackup) bool { return v.Status == cairn.DatabaseBackupFailed }},
			{"instance", catalog.Filter{InstanceID: insts[1]},
				func(v cairn.DatabaseBackup) bool { return v.InstanceID == insts[1] }},
			{"datastore", catalog.Filter{Datastore: cairn.DatastorePostgreSQL},
				func(v cairn.DatabaseBackup) bool { return v.Datastore.Type == cairn.DatastorePostgreSQL }},
			{"parent", catalog.Filter{ParentID: parent}, func(v cairn.DatabaseBackup) bool { return v.ParentID == parent }},
			{"since", catalog.Filter{Since: since}, func(v cairn.DatabaseBackup) bool { return !v.CreatedAt.Before(since) }},
			{"project+instance", catalog.Filter{ProjectID: p[1], InstanceID: insts[2]},
				func(v cairn.DatabaseBackup) bool { return v.ProjectID == p[1] && v.InstanceID == insts[2] }},
			{"instance+datastore+status, sorted by size", catalog.Filter{InstanceID: insts[0], Datastore: cairn.DatastoreMariaDB,
				Status: cairn.Status(cairn.DatabaseBackupDeleteFailed), Sort: []catalog.SortKey{{Key: "size", Desc: true}}},
				func(v cairn.DatabaseBackup) bool {
					return v.InstanceID == insts[0] && v.Datastore.Type == cairn.DatastoreMariaDB &&
						v.Status == cairn.DatabaseBackupDeleteFailed
				}},
			{"none", catalog.Filter{InstanceID: "no such instance"}, func(cairn.DatabaseBackup) bool { return false }},
		})
}

func testInstancePaging(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 2)
	var rows []cairn.Instance
	var other cairn.Instance
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for i := range 250 {
			v := fullInstance(p[0], i)
			v.Name = fmt.Sprintf("instance-%02d", tied(i, 11))
			v.Status = instanceStatus(tied(i, 3))
			v.VolumeSize = int64(tied(i, 5))
			v.CreatedAt = at(tied(i, 50))
			v.UpdatedAt = at(tied(i, 31))
			rows = append(rows, v)
			// Another project's rows, which must never show.
			other = fullInstance(p[1], i)
			if err := errors.Join(tx.InsertInstance(ctx, v), tx.InsertInstance(ctx, other)); err != nil {
				return err
			}
		}
		return nil
	})
	checkPaging(t, s, p[0], rows, []string{"id", "name", "status", "size", "created_at", "updated_at"},
		func(v cairn.Instance) string { return v.ID }, instanceField,
		func(ctx context.Context, tx catalog.Tx, f catalog.Filter) ([]cairn.Instance, error) {
			return tx.Instances(ctx, f)
		})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		_, err := tx.Instances(ctx, catalog.Filter{ProjectID: p[0], Marker: other.ID})
		wantErr(t, "another project's instance as marker", err, cairn.ErrNotFound)
		return nil
	})
}

func testDatabaseBackupPaging(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 2)
	var rows []cairn.DatabaseBackup
	var other cairn.DatabaseBackup
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for i := range 250 {
			v := fullDatabaseBackup(p[0], i)
			v.Name = fmt.Sprintf("database-backup-%02d", tied(i, 9))
			v.Status = databaseBackupStatus(tied(i, 3))
			v.Size = int64(tied(i, 7))
			v.CreatedAt = at(tied(i, 60))
			v.UpdatedAt = at(tied(i, 23))
			v.DataTimestamp = at(tied(i, 17))
			if i%10 == 0 {
				v.DataTimestamp = time.Time{}
			}
			rows = append(rows, v)
			other = fullDatabaseBackup(p[1], i)
			if err := errors.Join(tx.InsertDatabaseBackup(ctx, v), tx.InsertDatabaseBackup(ctx, other)); err != nil {
				return err
			}
		}
		return nil
	})
	checkPaging(t, s, p[0], rows, []string{"id", "name", "status", "size", "created_at", "updated_at", "data_timestamp"},
		func(v cairn.DatabaseBackup) string { return v.ID }, databaseBackupField,
		func(ctx context.Context, tx catalog.Tx, f catalog.Filter) ([]cairn.DatabaseBackup, error) {
			return tx.DatabaseBackups(ctx, f)
		})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		_, err := tx.DatabaseBackups(ctx, catalog.Filter{ProjectID: p[0], Marker: other.ID})
		wantErr(t, "another project's database backup as marker", err, cairn.ErrNotFound)
		return nil
	})
}

// testBackupStrategies: a project's default (instance "") and its
// instances' strategies are created, replaced and deleted by their key,
// each project's apart from the others'.
func testBackupStrategies(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 2)
	inst := []string{"instance-a", "instance-b"}
	def := cairn.BackupStrategy{ProjectID: p[0], InstanceID: "", Strategy: cairn.StrategyLogical, Container: "c0", Backend: "s3"}
	a := cairn.BackupStrategy{ProjectID: p[0], InstanceID: inst[0], Strategy: cairn.StrategyPhysical, Container: "", Backend: "local"}
	b := cairn.BackupStrategy{ProjectID: p[0], InstanceID: inst[1], Strategy: "", Container: "c2", Backend: "swift"}
	// Another project's, with the same instance ID.
	o := cairn.BackupStrategy{ProjectID: p[1], InstanceID: inst[0], Strategy: cairn.StrategySnapshot, Container: "o", Backend: "local"}
	list := func(ctx context.Context, tx catalog.Tx, project, instance string, want ...cairn.BackupStrategy) {
		t.Helper()
		got, err := tx.BackupStrategies(ctx, project, instance)
		if err != nil {
			t.Errorf("BackupStrategies(%s, %q): %v", project, instance, err)
			return
		}
		if want == nil {
			want = []cairn.BackupStrategy{}
		}
		wantEqual(t, fmt.Sprintf("BackupStrategies(%s, %q)", project, instance), got, want)
	}
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		list(ctx, tx, p[0], "")
		list(ctx, tx, p[0], inst[0])
		return nil
	})
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		// Inserted out of order: the list is by instance ID.
		for _, st := range []cairn.BackupStrategy{b, o, def, a} {
			if err := tx.PutBackupStrategy(ctx, st); err != nil {
				return err
			}
		}
		// A missing project fails without breaking the transaction.
		wantErr(t, "strategy of a missing project",
			tx.PutBackupStrategy(ctx, cairn.BackupStrategy{ProjectID: cairn.NewUUID(), InstanceID: inst[0]}), cairn.ErrNotFound)
		list(ctx, tx, p[0], "", def, a, b)
		return nil
	})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		list(ctx, tx, p[0], "", def, a, b)
		list(ctx, tx, p[0], inst[0], a)
		list(ctx, tx, p[0], inst[1], b)
		list(ctx, tx, p[0], "no such instance")
		list(ctx, tx, p[1], "", o)
		list(ctx, tx, p[1], inst[1])
		list(ctx, tx, cairn.NewUUID(), "")
		return nil
	})

	// Put replaces every field of the row with its key, and only that.
	a2 := cairn.BackupStrategy{ProjectID: p[0], InstanceID: inst[0], Strategy: "", Container: "c1", Backend: "swift"}
	def2 := cairn.BackupStrategy{ProjectID: p[0], InstanceID: "", Strategy: cairn.StrategySnapshot, Container: "", Backend: "local"}
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		return errors.Join(tx.PutBackupStrategy(ctx, a2), tx.PutBackupStrategy(ctx, def2))
	})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		list(ctx, tx, p[0], "", def2, a2, b)
		list(ctx, tx, p[1], "", o)
		return nil
	})

	// Delete removes one row by its key; the project's default is
	// instance "".
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		if err := tx.DeleteBackupStrategy(ctx, p[0], ""); err != nil {
			return err
		}
		wantErr(t, "deleting the default again", tx.DeleteBackupStrategy(ctx, p[0], ""), cairn.ErrNotFound)
		wantErr(t, "deleting an instance's strategy of another project",
			tx.DeleteBackupStrategy(ctx, p[1], inst[1]), cairn.ErrNotFound)
		wantErr(t, "deleting a missing project's strategy",
			tx.DeleteBackupStrategy(ctx, cairn.NewUUID(), ""), cairn.ErrNotFound)
		return tx.DeleteBackupStrategy(ctx, p[0], inst[1])
	})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		list(ctx, tx, p[0], "", a2)
		list(ctx, tx, p[0], inst[1])
		list(ctx, tx, p[1], "", o)
		return nil
	})
}

// testDeleteProjectDatabases: a project owning any instance or database
// backup, whatever its status, is not deleted; a deleted project's
// backup strategies go with it.
func testDeleteProjectDatabases(t *testing.T, s catalog.Store) {
	for _, c := range []struct {
		name   string
		insert func(ctx context.Context, tx catalog.Tx, project string) (id string, err error)
		del    func(ctx context.Context, tx catalog.Tx, id string) error
	}{
		{"instance",
			func(ctx context.Context, tx catalog.Tx, p string) (string, error) {
				v := fullInstance(p, 1)
				v.Status = cairn.InstanceShutdown
				return v.ID, tx.InsertInstance(ctx, v)
			},
			func(ctx context.Context, tx catalog.Tx, id string) error { return tx.DeleteInstance(ctx, id) }},
		{"database backup",
			func(ctx context.Context, tx catalog.Tx, p string) (string, error) {
				v := fullDatabaseBackup(p, 1)
				v.Status = cairn.DatabaseBackupDeleteFailed
				return v.ID, tx.InsertDatabaseBackup(ctx, v)
			},
			func(ctx context.Context, tx catalog.Tx, id string) error { return tx.DeleteDatabaseBackup(ctx, id) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newProject(1)
			strategies := []cairn.BackupStrategy{
				{ProjectID: p.ID, InstanceID: "", Strategy: cairn.StrategyLogical, Container: "c", Backend: "local"},
				{ProjectID: p.ID, InstanceID: cairn.NewUUID(), Strategy: cairn.StrategyPhysical, Container: "d", Backend: "local"},
			}
			var id string
			update(t, s, func(ctx context.Context, tx catalog.Tx) error {
				if err := tx.InsertProject(ctx, p); err != nil {
					return err
				}
				var err error
				if id, err = c.insert(ctx, tx, p.ID); err != nil {
					return err
				}
				return errors.Join(tx.PutBackupStrategy(ctx, strategies[0]), tx.PutBackupStrategy(ctx, strategies[1]))
			})
			update(t, s, func(ctx context.Context, tx catalog.Tx) error {
				wantErr(t, "DeleteProject of a project owning the "+c.name, tx.DeleteProject(ctx, p.ID), cairn.ErrConflict)
				if _, err := tx.Project(ctx, p.ID); err != nil {
					t.Errorf("project after refused delete: %v", err)
				}
				got, err := tx.BackupStrategies(ctx, p.ID, "")
				if err != nil {
					return err
				}
				wantEqual(t, "strategies after refused delete", len(got), 2)
				return c.del(ctx, tx, id)
			})
			update(t, s, func(ctx context.Context, tx catalog.Tx) error { return tx.DeleteProject(ctx, p.ID) })
			// A project made again with the same ID starts with no
			// strategies.
			update(t, s, func(ctx context.Context, tx catalog.Tx) error { return tx.InsertProject(ctx, p) })
			view(t, s, func(ctx context.Context, tx catalog.Tx) error {
				got, err := tx.BackupStrategies(ctx, p.ID, "")
				if err != nil {
					return err
				}
				wantEqual(t, "strategies of a deleted project", got, []cairn.BackupStrategy{})
				return nil
			})
		})
	}
}

func fullRestorePoint(project, instance string, i int) cairn.RestorePoint {
	return cairn.RestorePoint{
		ID: cairn.NewUUID(), ProjectID: project, InstanceID: instance, VolumeID: cairn.NewID().String(),
		SnapshotID: cairn.NewID().String(), Container: "archive ✓", Overlay: cairn.NewID().String(),
		DataTimestamp: at(i), Record: append([]byte(`{"label":"rp ✓"}`), 0, 0xff), CreatedAt: at(i + 1),
	}
}

// testRestorePoints: every field comes back; an instance's points are
// listed by data time, and only its own; a duplicate, a missing project
// and a missing point are refused; a project's delete removes its
// points.
func testRestorePoints(t *testing.T, s catalog.Store) {
	ps := addProjects(t, s, 2)
	inst, other := cairn.NewUUID(), cairn.NewUUID()
	late, early, mid := fullRestorePoint(ps[0], inst, 30), fullRestorePoint(ps[0], inst, 10), fullRestorePoint(ps[0], inst, 20)
	mid.Overlay, mid.Record = "", nil
	elsewhere := fullRestorePoint(ps[1], other, 15)
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for _, p := range []cairn.RestorePoint{late, early, mid, elsewhere} {
			if err := tx.InsertRestorePoint(ctx, p); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := tx.RestorePoints(ctx, inst)
		if err != nil {
			return err
		}
		wantEqual(t, "restore points", got, []cairn.RestorePoint{early, mid, late})
		none, err := tx.RestorePoints(ctx, cairn.NewUUID())
		if err != nil {
			return err
		}
		wantEqual(t, "restore points of an unknown instance", none, []cairn.RestorePoint{})
		return nil
	})
	err := s.Update(t.Context(), func(tx catalog.Tx) error { return tx.InsertRestorePoint(t.Context(), early) })
	wantErr(t, "a duplicate restore point", err, cairn.ErrExists)
	err = s.Update(t.Context(), func(tx catalog.Tx) error {
		return tx.InsertRestorePoint(t.Context(), fullRestorePoint(cairn.NewUUID(), inst, 1))
	})
	wantErr(t, "a restore point of a missing project", err, cairn.ErrNotFound)

	update(t, s, func(ctx context.Context, tx catalog.Tx) error { return tx.DeleteRestorePoint(ctx, mid.ID) })
	err = s.Update(t.Context(), func(tx catalog.Tx) error { return tx.DeleteRestorePoint(t.Context(), mid.ID) })
	wantErr(t, "deleting a deleted restore point", err, cairn.ErrNotFound)
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := tx.RestorePoints(ctx, inst)
		if err != nil {
			return err
		}
		wantEqual(t, "restore points after a delete", got, []cairn.RestorePoint{early, late})
		return nil
	})

	update(t, s, func(ctx context.Context, tx catalog.Tx) error { return tx.DeleteProject(ctx, ps[1]) })
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := tx.RestorePoints(ctx, other)
		if err != nil {
			return err
		}
		wantEqual(t, "restore points of a deleted project", got, []cairn.RestorePoint{})
		return nil
	})
}
