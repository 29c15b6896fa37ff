package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbhost"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
)

// Repository tags of a database backup's objects, beside TagBackup and
// TagProject: the engine's record rides on the volume image's manifest,
// so a backup restores from the store alone, and the overlay stream is
// tagged with the backup it belongs to.
const (
	TagDBRecord  = "cairn.service.db-record"
	TagDBOverlay = "cairn.service.db-overlay"
	// TagDBStream marks the stream of a physical or logical backup; its
	// value is the strategy. The backup's record follows it as its
	// overlay (a stream of the record's JSON, tagged TagDBOverlay).
	TagDBStream = "cairn.service.db-stream"
	// TagDBInstance and TagDBVolumeSize, on a backup's data (image or
	// stream), name the instance backed up and its volume's GiB: another
	// deployment pointed at the store finds an instance's backups by
	// them (adoptBackups).
	TagDBInstance   = "cairn.service.db-instance"
	TagDBVolumeSize = "cairn.service.db-volume-size"
)

// DBSnapshotName is the engine name of a database backup's snapshot: a
// task cut short finds it by that name.
func DBSnapshotName(backup string) string { return "dbbackup-" + backup }

// defaultQuiesceTimeout is Config.QuiesceTimeout's default.
const defaultQuiesceTimeout = 30 * time.Second

// BackupStrategies returns the project's backup strategies, or the one
// of instanceID.
func (s *Service) BackupStrategies(ctx context.Context, c Caller, instanceID string) ([]cairn.BackupStrategy, error) {
	var list []cairn.BackupStrategy
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		if instanceID != "" {
			if _, err := getInstance(ctx, tx, c, instanceID); err != nil {
				return err
			}
		}
		var err error
		list, err = tx.BackupStrategies(ctx, c.ProjectID, instanceID)
		return err
	})
	for i := range list {
		list[i].Backend = s.backend
	}
	return list, err
}

// SetBackupStrategy creates or replaces the strategy of (c.ProjectID,
// st.InstanceID).
func (s *Service) SetBackupStrategy(ctx context.Context, c Caller, st cairn.BackupStrategy) (cairn.BackupStrategy, error) {
	if st.Strategy != "" && !st.Strategy.Valid() {
		return st, errorf(cairn.ErrInvalid, "strategy %q: want snapshot, physical or logical", st.Strategy)
	}
	if err := validContainer(st.Container); err != nil {
		return st, err
	}
	st.ProjectID = c.ProjectID
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		if st.InstanceID != "" {
			if _, err := getInstance(ctx, tx, c, st.InstanceID); err != nil {
				return err
			}
		}
		return tx.PutBackupStrategy(ctx, st)
	})
	st.Backend = s.backend
	return st, err
}

// DeleteBackupStrategy removes the strategy of (c.ProjectID, instanceID).
func (s *Service) DeleteBackupStrategy(ctx context.Context, c Caller, instanceID string) error {
	return s.cat.Update(ctx, func(tx catalog.Tx) error {
		return tx.DeleteBackupStrategy(ctx, c.ProjectID, instanceID)
	})
}

// validContainer checks a container name a request gives ("" for the
// default).
func validContainer(name string) error {
	if len(name) > 255 {
		return errorf(cairn.ErrInvalid, "container: longer than 255 bytes")
	}
	for _, r := range name {
		if r < 0x21 || r == 0x7f || r == '/' {
			return errorf(cairn.ErrInvalid, "container %q: no spaces, slashes or control characters", name)
		}
	}
	return nil
}

// strategyFor picks a backup's strategy and container: the request's,
// else the instance's strategy, else the project's, else the snapshot
// strategy and the default container.
func (s *Service) strategyFor(ctx context.Context, tx catalog.Tx, inst cairn.Instance, in cairn.DatabaseBackupCreate) (cairn.DatabaseStrategy, string, error) {
	strategy, container := in.Strategy, in.Container
	for _, id := range []string{inst.ID, ""} {
		list, err := tx.BackupStrategies(ctx, inst.ProjectID, id)
		if err != nil {
			return "", "", err
		}
		for _, st := range list {
			if st.InstanceID != id {
				continue
			}
			if strategy == "" {
				strategy = st.Strategy
			}
			if container == "" {
				container = st.Container
			}
		}
	}
	if strategy == "" {
		strategy = cairn.StrategySnapshot
	}
	if container == "" {
		container = s.defCont
	}
	return strategy, container, nil
}

// CreateDatabaseBackup accepts a backup of an instance, NEW; its task
// takes and stores it.
func (s *Service) CreateDatabaseBackup(ctx context.Context, c Caller, in cairn.DatabaseBackupCreate) (cairn.DatabaseBackup, error) {
	if s.host == nil {
		return cairn.DatabaseBackup{}, errNoInstances
	}
	if in.Name == "" {
		return cairn.DatabaseBackup{}, errorf(cairn.ErrInvalid, "a backup needs a name")
	}
	if err := validText("name", in.Name, 255); err != nil {
		return cairn.DatabaseBackup{}, err
	}
	if err := validText("description", in.Description, 4096); err != nil {
		return cairn.DatabaseBackup{}, err
	}
	if in.Strategy != "" && !in.Strategy.Valid() {
		return cairn.DatabaseBackup{}, errorf(cairn.ErrInvalid, "strategy %q: want snapshot, physical or logical", in.Strategy)
	}
	if err := validContainer(in.Container); err != nil {
		return cairn.DatabaseBackup{}, err
	}
	var b cairn.DatabaseBackup
	err := s.update(ctx, func(tx catalog.Tx) error {
		var err error
		b, err = s.createDatabaseBackupTx(ctx, tx, c, in)
		return err
	})
	if err != nil {
		return cairn.DatabaseBackup{}, err
	}
	s.event(ctx, "dbbackup.create.start", b.ProjectID, dbBackupPayload(b))
	return b, nil
}

// createDatabaseBackupTx is CreateDatabaseBackup's work in tx (in
// checked already); the caller sends the event once tx commits.
func (s *Service) createDatabaseBackupTx(ctx context.Context, tx catalog.Tx, c Caller, in cairn.DatabaseBackupCreate) (cairn.DatabaseBackup, error) {
	now := s.nowUTC()
	b := cairn.DatabaseBackup{ID: cairn.NewUUID(), ProjectID: c.ProjectID, InstanceID: in.InstanceID,
		Name: in.Name, Description: in.Description, Status: cairn.DatabaseBackupNew, CreatedAt: now, UpdatedAt: now}
	inst, err := getInstance(ctx, tx, c, in.InstanceID)
	if err != nil {
		return b, err
	}
	if inst.Status != cairn.InstanceActive {
		return b, fmt.Errorf("instance %s is %s; cannot back it up: %w", inst.ID, inst.Status, cairn.ErrConflict)
	}
	if b.Strategy, b.Container, err = s.strategyFor(ctx, tx, inst, in); err != nil {
		return b, err
	}
	b.ProjectID, b.Datastore, b.VolumeSize, b.VolumeID = inst.ProjectID, inst.Datastore, inst.VolumeSize, inst.VolumeID
	// Dumps are always whole; PostgreSQL's physical backups too
	// (pg_basebackup has no incrementals before version 17).
	incremental := b.Strategy == cairn.StrategySnapshot ||
		b.Strategy == cairn.StrategyPhysical && inst.Datastore.Type == cairn.DatastoreMariaDB
	if (in.ParentID != "" || in.Incremental) && incremental {
		parent, err := s.parentFor(ctx, tx, c, inst, b, in.ParentID)
		if err != nil {
			return b, err
		}
		b.ParentID = parent
	}
	inst.Status, inst.UpdatedAt = cairn.InstanceBackup, now
	if err := tx.UpdateInstance(ctx, inst); err != nil {
		return b, err
	}
	if err := tx.InsertDatabaseBackup(ctx, b); err != nil {
		return b, err
	}
	_, err = s.queue(ctx, tx, inst.ProjectID, "dbbackup.create", b.ID, nil)
	return b, err
}

// parentFor checks the parent a request names, or finds the instance's
// latest completed backup of the same strategy ("" when it has none: a
// full backup).
func (s *Service) parentFor(ctx context.Context, tx catalog.Tx, c Caller, inst cairn.Instance, b cairn.DatabaseBackup, id string) (string, error) {
	if id != "" {
		p, err := getDatabaseBackup(ctx, tx, c, id)
		if err != nil {
			return "", err
		}
		if p.InstanceID != inst.ID || p.Status != cairn.DatabaseBackupCompleted || p.Strategy != b.Strategy {
			return "", errorf(cairn.ErrInvalid, "parent %s must be a completed %s backup of instance %s", id, b.Strategy, inst.ID)
		}
		return p.ID, nil
	}
	list, err := tx.DatabaseBackups(ctx, catalog.Filter{InstanceID: inst.ID, Status: cairn.Status(cairn.DatabaseBackupCompleted)})
	if err != nil {
		return "", err
	}
	for _, p := range list { // newest first
		if p.Strategy == b.Strategy {
			return p.ID, nil
		}
	}
	return "", nil
}

// runCreateDatabaseBackup takes a snapshot backup: the quiesced snapshot
// and the overlay first (stored before the record names them, so a
// record always names what exists), then the snapshot's image into the
// repository, incremental against the parent's snapshot.
func (s *Service) runCreateDatabaseBackup(ctx context.Context, t cairn.Task) error {
	b, err := s.dbBackupRow(ctx, t.ResourceID)
	if err != nil {
		return err
	}
	switch b.Status {
	case cairn.DatabaseBackupNew, cairn.DatabaseBackupBuilding, cairn.DatabaseBackupSaving:
	default:
		return s.releaseInstance(ctx, b.InstanceID)
	}
	r, err := s.repoFor(ctx, b.Container)
	if err != nil {
		return err
	}
	if b.Strategy != cairn.StrategySnapshot && b.Data == "" {
		if b, err = s.streamDBBackup(ctx, t, r, b); err != nil {
			return err
		}
	}
	if len(b.Record) == 0 {
		start := s.now()
		if b, err = s.takeDBSnapshot(ctx, r, b); err != nil {
			return err
		}
		s.log.Info("database snapshot taken", "backup", b.ID, "instance", b.InstanceID, "took", s.now().Sub(start))
	}
	if b.Data == "" {
		m, err := findManifest(ctx, r, b.ID)
		if err != nil {
			return err
		}
		if m == nil {
			if m, err = s.storeDBSnapshot(ctx, t, r, b); err != nil {
				return err
			}
		}
		if b, err = s.setDBBackup(ctx, b.ID, func(b *cairn.DatabaseBackup) {
			b.Data, b.Size = m.ID.String(), m.Size
			b.Location = b.Container + "/" + m.ID.String()
		}); err != nil {
			return err
		}
	}
	if err := s.releaseInstance(ctx, b.InstanceID); err != nil {
		return err
	}
	if b, err = s.setDBBackup(ctx, b.ID, func(b *cairn.DatabaseBackup) { b.Status = cairn.DatabaseBackupCompleted }); err != nil {
		return err
	}
	s.event(ctx, "dbbackup.create.end", b.ProjectID, dbBackupPayload(b))
	return nil
}

// streamDBBackup has the host run the engine's physical or logical
// backup tool and streams its output into r as it comes, then stores the
// record after it and names both in the backup's row. What an attempt
// cut short left in r is forgotten first: a stream is taken again whole.
func (s *Service) streamDBBackup(ctx context.Context, t cairn.Task, r Repository, b cairn.DatabaseBackup) (cairn.DatabaseBackup, error) {
	b, err := s.setDBBackup(ctx, b.ID, func(b *cairn.DatabaseBackup) { b.Status = cairn.DatabaseBackupSaving })
	if err != nil {
		return b, err
	}
	if err := forgetBackupObjects(ctx, r, b.ID); err != nil {
		return b, err
	}
	o := dbhost.StreamOptions{Method: dbagent.Method(b.Strategy), Label: "cairn-" + b.ID}
	if b.ParentID != "" {
		p, err := s.dbBackupRow(ctx, b.ParentID)
		if err != nil {
			return b, fmt.Errorf("parent %s: %w", b.ParentID, err)
		}
		prec, err := dbRecord(p)
		if err != nil {
			return b, err
		}
		o.Parent = &prec
	}
	pr, pw := io.Pipe()
	g, gctx := errgroup.WithContext(ctx)
	var rec dbagent.Record
	g.Go(func() error {
		var err error
		rec, err = s.host.BackupInstance(gctx, b.InstanceID, o, pw)
		pw.CloseWithError(err)
		return err
	})
	var m *format.Manifest
	g.Go(func() error {
		var err error
		prog := &repo.Progress{}
		stop := s.trackProgress(gctx, t.ID, prog)
		m, err = r.BackupStream(gctx, pr, repo.StreamOptions{
			Name: "instance-" + b.InstanceID + "/" + string(b.Strategy),
			Tags: map[string]string{TagBackup: b.ID, TagProject: b.ProjectID, TagDBStream: string(b.Strategy),
				TagDBInstance: b.InstanceID, TagDBVolumeSize: strconv.FormatInt(b.VolumeSize, 10)},
			Progress: prog,
		})
		stop()
		pr.CloseWithError(errors.Join(err, errReaderDone))
		return err
	})
	if err := g.Wait(); err != nil {
		return b, fmt.Errorf("%s backup: %w", b.Strategy, err)
	}
	js, err := json.Marshal(rec)
	if err != nil {
		return b, err
	}
	rm, err := r.BackupStream(ctx, bytes.NewReader(js), repo.StreamOptions{
		Name:     "instance-" + b.InstanceID + "/record",
		Tags:     map[string]string{TagDBOverlay: b.ID, TagProject: b.ProjectID},
		DataTime: rec.Time,
	})
	if err != nil {
		return b, fmt.Errorf("storing the backup's record: %w", err)
	}
	s.obs.BytesBackedUp(m.Size)
	return s.setDBBackup(ctx, b.ID, func(b *cairn.DatabaseBackup) {
		b.Record, b.Data, b.Overlay, b.Size = js, m.ID.String(), rm.ID.String(), m.Size
		b.Location = b.Container + "/" + m.ID.String()
		b.DataTimestamp = rec.Time.UTC().Truncate(time.Microsecond)
	})
}

// takeDBSnapshot has the host quiesce the instance and snapshot its
// volume, stores the overlay in r and records both with the engine's
// record. A snapshot left by an attempt whose answer was lost is deleted
// first: without its record it is not a backup.
func (s *Service) takeDBSnapshot(ctx context.Context, r Repository, b cairn.DatabaseBackup) (cairn.DatabaseBackup, error) {
	b, err := s.setDBBackup(ctx, b.ID, func(b *cairn.DatabaseBackup) { b.Status = cairn.DatabaseBackupBuilding })
	if err != nil {
		return b, err
	}
	if err := s.deleteDBSnapshot(ctx, b.ID); err != nil {
		return b, err
	}
	if err := forgetBackupObjects(ctx, r, b.ID); err != nil {
		return b, err
	}
	sb, err := s.host.SnapshotInstance(ctx, b.InstanceID, dbhost.SnapshotOptions{
		Name: DBSnapshotName(b.ID), Label: "cairn-" + b.ID, Timeout: s.quiesce})
	if err != nil {
		return b, fmt.Errorf("quiesced snapshot: %w", err)
	}
	rec, err := json.Marshal(sb.Record)
	if err != nil {
		return b, err
	}
	overlay := ""
	if len(sb.Overlay) > 0 {
		m, err := r.BackupStream(ctx, bytes.NewReader(sb.Overlay), repo.StreamOptions{
			Name:     "instance-" + b.InstanceID + "/overlay",
			Tags:     map[string]string{TagDBOverlay: b.ID, TagProject: b.ProjectID},
			DataTime: sb.Record.Time,
		})
		if err != nil {
			return b, fmt.Errorf("storing the overlay: %w", err)
		}
		overlay = m.ID.String()
	}
	return s.setDBBackup(ctx, b.ID, func(b *cairn.DatabaseBackup) {
		b.Record, b.SnapshotID, b.Overlay = rec, sb.Snapshot.String(), overlay
		b.DataTimestamp = sb.Record.Time.UTC().Truncate(time.Microsecond)
		b.Status = cairn.DatabaseBackupSaving
	})
}

// storeDBSnapshot backs the snapshot's image up into r, its manifest
// carrying the engine's record.
func (s *Service) storeDBSnapshot(ctx context.Context, t cairn.Task, r Repository, b cairn.DatabaseBackup) (*format.Manifest, error) {
	snap, err := cairn.ParseID(b.SnapshotID)
	if err != nil {
		return nil, fmt.Errorf("backup %s: snapshot id: %w", b.ID, err)
	}
	opts := repo.BackupOptions{DataTime: b.DataTimestamp, Progress: &repo.Progress{}, NoParent: true,
		Tags: map[string]string{TagBackup: b.ID, TagProject: b.ProjectID, TagDBRecord: string(b.Record),
			TagDBInstance: b.InstanceID, TagDBVolumeSize: strconv.FormatInt(b.VolumeSize, 10)}}
	if b.ParentID != "" {
		if p, err := s.dbBackupRow(ctx, b.ParentID); err == nil && p.Data != "" && p.Status == cairn.DatabaseBackupCompleted {
			if pid, err := cairn.ParseID(p.Data); err == nil {
				opts.Parent, opts.NoParent = &pid, false
			}
		}
	}
	stop := s.trackProgress(ctx, t.ID, opts.Progress)
	start := s.now()
	res, err := r.BackupSnapshot(ctx, snap, opts)
	stop()
	if err != nil {
		return nil, err
	}
	// What a slow backup spent its time on: the bytes read (changed
	// since the parent, or all), unchanged and zero.
	s.log.Info("database snapshot stored", "backup", b.ID, "took", s.now().Sub(start), "tracked", res.Tracked,
		"reason", res.Reason, "changed_bytes", res.ChangedBytes, "read", res.Manifest.Stats.BytesRead,
		"unchanged", res.Manifest.Stats.BytesUnchanged, "zero", res.Manifest.Stats.BytesZero)
	s.obs.BytesBackedUp(res.Manifest.Stats.BytesRead + res.Manifest.Stats.BytesUnchanged + res.Manifest.Stats.BytesZero)
	return res.Manifest, nil
}

// forgetBackupObjects forgets every object in r tagged with database
// backup id (its image and its overlay): what an attempt cut short, a
// failed backup or a deleted one left.
func forgetBackupObjects(ctx context.Context, r Repository, id string) error {
	list, err := r.Backups(ctx)
	if err != nil {
		return fmt.Errorf("list repository backups: %w", err)
	}
	var stray []cairn.ID
	for _, m := range list.Backups {
		if m.Tags[TagBackup] == id || m.Tags[TagDBOverlay] == id {
			stray = append(stray, m.ID)
		}
	}
	if len(stray) == 0 {
		return nil
	}
	if err := r.Forget(ctx, stray); err != nil {
		return fmt.Errorf("forgetting what backup %s left: %w", id, err)
	}
	return nil
}

// deleteDBSnapshot deletes the engine snapshot of backup id, if any.
func (s *Service) deleteDBSnapshot(ctx context.Context, id string) error {
	es, ok, err := s.engineSnapshot(ctx, DBSnapshotName(id))
	if err != nil || !ok {
		return err
	}
	// Another task (the instance's delete, the backup's) may delete it
	// at the same time.
	if err := s.eng.DeleteSnapshot(ctx, es.ID); err != nil && !errors.Is(err, cairn.ErrNotFound) {
		return fmt.Errorf("deleting snapshot %s: %w", es.ID, err)
	}
	return nil
}

// releaseInstance returns an instance in BACKUP to ACTIVE.
func (s *Service) releaseInstance(ctx context.Context, id string) error {
	_, err := s.setInstance(ctx, id, func(in *cairn.Instance) {
		if in.Status == cairn.InstanceBackup {
			in.Status = cairn.InstanceActive
		}
	})
	if errors.Is(err, cairn.ErrNotFound) {
		return nil
	}
	return err
}

// failDatabaseBackup marks a backup whose task failed: FAILED with the
// cause, its snapshot deleted, its instance ACTIVE again.
func (s *Service) failDatabaseBackup(ctx context.Context, t cairn.Task, cause error) error {
	b, err := s.dbBackupRow(ctx, t.ResourceID)
	if errors.Is(err, cairn.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if b.Status == cairn.DatabaseBackupCompleted {
		// The backup completed before its task could end (cut short after
		// the row was written, then given up): a complete backup is kept,
		// its snapshot and objects with it.
		s.log.Warn("a completed backup's task failed afterwards; the backup stays", "backup", b.ID, "err", cause)
		return s.releaseInstance(ctx, b.InstanceID)
	}
	if err := s.deleteDBSnapshot(ctx, b.ID); err != nil {
		return err
	}
	// What reached the repository goes; when the store cannot be reached
	// (perhaps why the backup failed) deleting the failed backup does it.
	if r, err := s.repoFor(ctx, b.Container); err != nil {
		s.log.Warn("a failed backup's objects stay until it is deleted", "backup", b.ID, "err", err)
	} else if err := forgetBackupObjects(ctx, r, b.ID); err != nil {
		s.log.Warn("a failed backup's objects stay until it is deleted", "backup", b.ID, "err", err)
	}
	if err := s.releaseInstance(ctx, b.InstanceID); err != nil {
		return err
	}
	b, err = s.setDBBackup(ctx, b.ID, func(b *cairn.DatabaseBackup) {
		b.Status, b.FailReason, b.SnapshotID, b.Data, b.Overlay = cairn.DatabaseBackupFailed, failReason(cause), "", "", ""
	})
	if err != nil {
		return err
	}
	s.event(ctx, "dbbackup.create.error", b.ProjectID, dbBackupPayload(b))
	return nil
}

// ListDatabaseBackups returns a page of the caller's database backups.
func (s *Service) ListDatabaseBackups(ctx context.Context, c Caller, q ListQuery, bf cairn.DatabaseBackupFilter) ([]cairn.DatabaseBackup, error) {
	f, err := q.filter(c, DatabaseBackupsCollection)
	if err != nil {
		return nil, err
	}
	f.InstanceID, f.Datastore = bf.InstanceID, bf.Datastore
	var list []cairn.DatabaseBackup
	err = s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		list, err = tx.DatabaseBackups(ctx, f)
		return err
	})
	return list, err
}

// DatabaseBackup returns one of the caller's database backups.
func (s *Service) DatabaseBackup(ctx context.Context, c Caller, id string) (cairn.DatabaseBackup, error) {
	var b cairn.DatabaseBackup
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		b, err = getDatabaseBackup(ctx, tx, c, id)
		return err
	})
	return b, err
}

// DeleteDatabaseBackup accepts the deletion of a backup no other builds
// on; its task deletes its snapshot and its objects in the repository.
// A request while that deletion is under way is accepted and adds
// nothing to it.
func (s *Service) DeleteDatabaseBackup(ctx context.Context, c Caller, id string) error {
	var b cairn.DatabaseBackup
	queued := false // by an earlier request
	err := s.update(ctx, func(tx catalog.Tx) error {
		var err error
		if b, err = getDatabaseBackup(ctx, tx, c, id); err != nil {
			return err
		}
		queued, err = s.deleteDatabaseBackupTx(ctx, tx, b)
		return err
	})
	if err != nil || queued {
		return err
	}
	s.event(ctx, "dbbackup.delete.start", b.ProjectID, dbBackupPayload(b))
	return nil
}

// deleteDatabaseBackupTx queues b's deletion in tx; queued reports that
// an earlier request had queued it already.
func (s *Service) deleteDatabaseBackupTx(ctx context.Context, tx catalog.Tx, b cairn.DatabaseBackup) (queued bool, err error) {
	switch b.Status {
	case cairn.DatabaseBackupCompleted, cairn.DatabaseBackupFailed, cairn.DatabaseBackupDeleteFailed:
	default:
		return false, fmt.Errorf("backup %s is %s; cannot delete it: %w", b.ID, b.Status, cairn.ErrConflict)
	}
	if err := refuseProtected(ctx, tx, b.ID); err != nil {
		return false, err
	}
	children, err := tx.DatabaseBackups(ctx, catalog.Filter{ParentID: b.ID, Limit: 1})
	if err != nil {
		return false, err
	}
	if len(children) > 0 {
		return false, fmt.Errorf("backup %s is the parent of %s; delete that first: %w", b.ID, children[0].ID, cairn.ErrConflict)
	}
	// A delete under way already: this one is it (a second task would
	// race the first and count its restarts against it).
	tasks, err := tx.Tasks(ctx, catalog.Filter{ResourceID: b.ID, TaskStates: []cairn.TaskState{cairn.TaskPending, cairn.TaskRunning}})
	if err != nil {
		return false, err
	}
	for _, t := range tasks {
		if t.Kind == "dbbackup.delete" {
			return true, nil
		}
	}
	_, err = s.queue(ctx, tx, b.ProjectID, "dbbackup.delete", b.ID, nil)
	return false, err
}

// runDeleteDatabaseBackup deletes the backup's snapshot, forgets every
// repository object tagged with it (their data goes at the next GC) and
// its row.
func (s *Service) runDeleteDatabaseBackup(ctx context.Context, t cairn.Task) error {
	b, err := s.dbBackupRow(ctx, t.ResourceID)
	if errors.Is(err, cairn.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := s.deleteDBSnapshot(ctx, b.ID); err != nil {
		return err
	}
	r, err := s.repoFor(ctx, b.Container)
	if err != nil {
		return err
	}
	if err := forgetBackupObjects(ctx, r, b.ID); err != nil {
		return err
	}
	if err := s.cat.Update(ctx, func(tx catalog.Tx) error { return tx.DeleteDatabaseBackup(ctx, b.ID) }); err != nil && !errors.Is(err, cairn.ErrNotFound) {
		return err
	}
	payload := dbBackupPayload(b)
	// The log only this backup needed goes with it. The backup is gone
	// whatever happens here: a trim that fails is done by the next.
	if n, size, err := s.trimArchive(ctx, b.InstanceID, b.ID); err != nil {
		s.log.Warn("trimming an instance's archive after a backup's deletion", "instance", b.InstanceID, "err", err)
	} else if n > 0 {
		payload["archive_trimmed"] = map[string]any{"pieces": n, "bytes": size}
		s.log.Info("trimmed an instance's archive", "instance", b.InstanceID, "pieces", n, "bytes", size)
	}
	s.event(ctx, "dbbackup.delete.end", b.ProjectID, payload)
	return nil
}

// failDeleteDatabaseBackup marks a backup whose deletion failed.
func (s *Service) failDeleteDatabaseBackup(ctx context.Context, t cairn.Task, cause error) error {
	b, err := s.setDBBackup(ctx, t.ResourceID, func(b *cairn.DatabaseBackup) {
		b.Status, b.FailReason = cairn.DatabaseBackupDeleteFailed, failReason(cause)
	})
	if errors.Is(err, cairn.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	s.event(ctx, "dbbackup.delete.error", b.ProjectID, dbBackupPayload(b))
	return nil
}

// dbRecord decodes a backup's engine record.
func dbRecord(b cairn.DatabaseBackup) (dbagent.Record, error) {
	var rec dbagent.Record
	if err := json.Unmarshal(b.Record, &rec); err != nil {
		return rec, fmt.Errorf("backup %s: engine record: %v: %w", b.ID, err, cairn.ErrCorrupt)
	}
	return rec, nil
}

func getDatabaseBackup(ctx context.Context, tx catalog.Tx, c Caller, id string) (cairn.DatabaseBackup, error) {
	v, err := tx.DatabaseBackup(ctx, id)
	if err == nil && !c.may(v.ProjectID) {
		return cairn.DatabaseBackup{}, fmt.Errorf("backup %s: %w", id, cairn.ErrNotFound)
	}
	return v, err
}

func (s *Service) dbBackupRow(ctx context.Context, id string) (cairn.DatabaseBackup, error) {
	return readRow(ctx, s.cat, id, catalog.Tx.DatabaseBackup)
}

func (s *Service) setDBBackup(ctx context.Context, id string, fn func(*cairn.DatabaseBackup)) (cairn.DatabaseBackup, error) {
	return changeRow(ctx, s.cat, id, catalog.Tx.DatabaseBackup, catalog.Tx.UpdateDatabaseBackup, func(b *cairn.DatabaseBackup) {
		fn(b)
		b.UpdatedAt = s.nowUTC()
	})
}

func dbBackupPayload(b cairn.DatabaseBackup) map[string]any {
	return map[string]any{"backup_id": b.ID, "instance_id": b.InstanceID, "name": b.Name, "status": b.Status,
		"strategy": b.Strategy, "container": b.Container, "fail_reason": b.FailReason}
}
