package service_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/service"
)

// TestAdoptBackups: a point-in-time restore naming an instance this
// deployment's catalog does not know looks for it in the store. An
// instance the store has no archive of is not found; another project's
// backups of one it has are never adopted (the caller learns nothing of
// them); the caller's own are adopted once, as completed backups of
// that instance, and the restore is then planned over them.
func TestAdoptBackups(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	const foreign = "0b1e7a52-58d5-4b5e-9d0a-3c2f4e6a7b8c"
	at := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	restore := func() error {
		_, err := r.svc.CreateInstance(ctx, caller, cairn.InstanceCreate{Name: "again", Datastore: "postgresql",
			SourceInstance: foreign, PointInTime: at.Add(time.Minute)})
		return err
	}
	if err := restore(); !errors.Is(err, cairn.ErrNotFound) {
		t.Fatalf("an instance found nowhere: %v", err)
	}

	st := r.store("volumebackups").Open()
	aid := must[cairn.ID](t)(service.ArchiveID(foreign))
	if err := st.PutArchiveInfo(ctx, format.ArchiveInfo{ID: aid, Datastore: dbagent.PostgreSQL, Instance: foreign, Created: at}); err != nil {
		t.Fatal(err)
	}
	rec, err := json.Marshal(dbagent.Record{Datastore: dbagent.Datastore{Type: dbagent.PostgreSQL, Version: "15"},
		Method: dbagent.Snapshot, Time: at, PostgreSQL: &dbagent.PostgresPoint{Timeline: 1, StartLSN: 1 << 24, StopLSN: 1<<24 + 100, WALSegmentSize: 16 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	image := func(backup, proj string) {
		t.Helper()
		if _, err := st.BackupStream(ctx, bytes.NewReader([]byte("an image")), repo.StreamOptions{Name: "image",
			Tags: map[string]string{service.TagBackup: backup, service.TagProject: proj, service.TagDBRecord: string(rec),
				service.TagDBInstance: foreign, service.TagDBVolumeSize: "3"}}); err != nil {
			t.Fatal(err)
		}
	}
	image("theirs", "another-project")
	if err := restore(); !errors.Is(err, cairn.ErrNotFound) {
		t.Fatalf("a restore from another project's backups: %v, want not found", err)
	}
	if _, err := r.svc.DatabaseBackup(ctx, service.Caller{Admin: true}, "theirs"); !errors.Is(err, cairn.ErrNotFound) {
		t.Fatalf("another project's backup was adopted: %v", err)
	}

	image("mine", project)
	err = restore()
	if !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("a restore over an archive without WAL: %v, want the window refused", err)
	}
	b, err := r.svc.DatabaseBackup(ctx, caller, "mine")
	if err != nil || b.Status != cairn.DatabaseBackupCompleted || b.InstanceID != foreign || b.Strategy != cairn.StrategySnapshot ||
		b.VolumeSize != 3 || !b.DataTimestamp.Equal(at) || b.Datastore.Type != dbagent.PostgreSQL {
		t.Fatalf("the adopted backup: %+v, %v", b, err)
	}
	// Adopted once: a second restore finds it in the catalog.
	if err := restore(); !errors.Is(err, cairn.ErrInvalid) {
		t.Fatalf("again: %v", err)
	}
	list := must[[]cairn.DatabaseBackup](t)(r.svc.ListDatabaseBackups(ctx, caller, service.ListQuery{}, cairn.DatabaseBackupFilter{InstanceID: foreign}))
	if len(list) != 1 {
		t.Fatalf("the caller's backups of the instance: %v", list)
	}
}
