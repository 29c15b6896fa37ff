package sqlite

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// benchBackups is how many backups the benchmarks' project holds.
const benchBackups = 10_000

// benchStore returns a store holding benchBackups backups in one project,
// and their IDs.
func benchStore(b *testing.B) (*Store, string, []string) {
	b.Helper()
	s := open(b, filepath.Join(b.TempDir(), "catalog.db"))
	ctx := b.Context()
	p := cairn.Project{ID: cairn.NewUUID(), Name: "bench", Quota: cairn.Unlimited, CreatedAt: time.Now().UTC()}
	ids := make([]string, benchBackups)
	err := s.Update(ctx, func(tx catalog.Tx) error {
		if err := tx.InsertProject(ctx, p); err != nil {
			return err
		}
		base := time.Now().UTC().Truncate(time.Microsecond)
		for i := range ids {
			ids[i] = cairn.NewUUID()
			at := base.Add(time.Duration(i) * time.Millisecond)
			err := tx.InsertBackup(ctx, cairn.Backup{
				ID: ids[i], ProjectID: p.ID, VolumeID: cairn.NewUUID(), Name: fmt.Sprintf("backup-%d", i),
				Description: "benchmark backup", Container: "backups", Status: cairn.StatusAvailable,
				Size: 10, ObjectCount: 100, StoredBytes: 1 << 30, Incremental: i%10 != 0,
				DataTimestamp: at, RepoID: cairn.NewID().String(), CreatedAt: at, UpdatedAt: at,
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return s, p.ID, ids
}

// BenchmarkBackupShow: one backup by ID, in a View of its own.
func BenchmarkBackupShow(b *testing.B) {
	s, _, ids := benchStore(b)
	ctx := b.Context()
	i := 0
	for b.Loop() {
		id := ids[i%len(ids)]
		i++
		err := s.View(ctx, func(tx catalog.Tx) error {
			_, err := tx.Backup(ctx, id)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBackupList: the first page of 100 of a project's backups, in
// the default order (newest first).
func BenchmarkBackupList(b *testing.B) {
	s, project, _ := benchStore(b)
	ctx := b.Context()
	for b.Loop() {
		err := s.View(ctx, func(tx catalog.Tx) error {
			list, err := tx.Backups(ctx, catalog.Filter{ProjectID: project, Limit: 100})
			if err == nil && len(list) != 100 {
				err = fmt.Errorf("%d backups, want 100", len(list))
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBackupListDeepPage: a page of 100 after a marker half way
// down the list (keyset paging: no cost for the rows skipped).
func BenchmarkBackupListDeepPage(b *testing.B) {
	s, project, ids := benchStore(b)
	ctx := b.Context()
	marker := ids[benchBackups/2]
	for b.Loop() {
		err := s.View(ctx, func(tx catalog.Tx) error {
			list, err := tx.Backups(ctx, catalog.Filter{ProjectID: project, Marker: marker, Limit: 100})
			if err == nil && len(list) != 100 {
				err = fmt.Errorf("%d backups, want 100", len(list))
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
