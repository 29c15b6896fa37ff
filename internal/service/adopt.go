package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/repo/format"
)

// Restores from another deployment's store. A deployment pointed at the
// store and key of another (cairn serve --backup-store --backup-key-file)
// has none of its catalog: a restore naming an instance its catalog does
// not know looks for the instance in the store, where each database
// backup's data carries the instance, the volume's size and the engine's
// record in its tags, and the instance's log archive says whose logs it
// holds. The backups found are adopted into the caller's project (rows
// of a deleted instance, as the catalog keeps for any), and the restore
// goes on as for an instance of this deployment.

// adoptBackups adopts the completed snapshot and full physical backups
// of instance source that the default container's repository holds and
// the catalog does not, and that were made in the caller's project (an
// admin's: any), into the caller's project, and returns how many.
// The store must hold source's log archive: cairn.ErrNotFound when it
// does not, which is the answer for an instance found nowhere.
func (s *Service) adoptBackups(ctx context.Context, c Caller, source string) (int, error) {
	notFound := errorf(cairn.ErrNotFound, "instance %s not found, here or in the store", source)
	aid, err := ArchiveID(source)
	if err != nil {
		return 0, notFound
	}
	r, err := s.repoFor(ctx, s.defCont)
	if err != nil {
		return 0, err
	}
	info, err := r.ArchiveInfo(ctx, aid)
	if errors.Is(err, cairn.ErrNotFound) {
		return 0, notFound
	}
	if err != nil {
		return 0, fmt.Errorf("instance %s's archive: %w", source, err)
	}
	list, err := r.Backups(ctx)
	if err != nil {
		return 0, fmt.Errorf("listing the store's backups: %w", err)
	}
	// The overlays and stream records, by backup.
	side := map[string]*format.Manifest{}
	for _, m := range list.Backups {
		if id := m.Tags[TagDBOverlay]; id != "" && strings.HasPrefix(m.Source, "instance-"+source+"/") {
			side[id] = m
		}
	}
	var found []cairn.DatabaseBackup
	for _, m := range list.Backups {
		id := m.Tags[TagBackup]
		if id == "" || m.Tags[TagDBInstance] != source || !c.may(m.Tags[TagProject]) {
			continue // not this instance's, or not the caller's
		}
		b := cairn.DatabaseBackup{ID: id, ProjectID: c.ProjectID, InstanceID: source, Name: "adopted-" + id,
			Description: fmt.Sprintf("backup %s of instance %s, found in the store", id, source),
			Status:      cairn.DatabaseBackupCompleted, Container: s.defCont, Size: m.Size,
			Location: s.defCont + "/" + m.ID.String(), Data: m.ID.String(), CreatedAt: s.nowUTC(), UpdatedAt: s.nowUTC()}
		b.VolumeSize, _ = strconv.ParseInt(m.Tags[TagDBVolumeSize], 10, 64)
		var rec []byte
		switch {
		case m.Tags[TagDBRecord] != "":
			b.Strategy, rec = cairn.StrategySnapshot, []byte(m.Tags[TagDBRecord])
			if o := side[id]; o != nil {
				b.Overlay = o.ID.String()
			}
		case m.Tags[TagDBStream] == string(cairn.StrategyPhysical):
			o := side[id]
			if o == nil {
				continue // its record was never stored: not a backup
			}
			var buf bytes.Buffer
			if _, err := r.RestoreStream(ctx, o, &buf, nil); err != nil {
				return 0, fmt.Errorf("backup %s's record: %w", id, err)
			}
			b.Strategy, b.Overlay, rec = cairn.StrategyPhysical, o.ID.String(), buf.Bytes()
		default:
			continue // a logical backup: no point in the log to roll forward from
		}
		var r dbagent.Record
		if err := json.Unmarshal(rec, &r); err != nil {
			return 0, fmt.Errorf("backup %s's record: %v: %w", id, err, cairn.ErrCorrupt)
		}
		if r.Datastore.Type != info.Datastore || r.MariaDB != nil && r.MariaDB.Incremental {
			continue // an incremental part restores only with its chain
		}
		b.Record, b.DataTimestamp = rec, r.Time.UTC()
		b.Datastore = cairn.DatastoreRef{Type: r.Datastore.Type, Version: r.Datastore.Version, VersionID: versionID(r.Datastore)}
		found = append(found, b)
	}
	if len(found) == 0 {
		return 0, notFound // nothing of it the caller may see
	}
	n := 0
	err = s.update(ctx, func(tx catalog.Tx) error {
		n = 0
		for _, b := range found {
			if _, err := tx.DatabaseBackup(ctx, b.ID); err == nil {
				continue
			} else if !errors.Is(err, cairn.ErrNotFound) {
				return err
			}
			if err := tx.InsertDatabaseBackup(ctx, b); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if n > 0 {
		s.log.Info("adopted backups from the store", "instance", source, "backups", n, "project", c.ProjectID)
	}
	return n, nil
}
