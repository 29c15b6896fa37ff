package service

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/tasks"
)

// Tags the service gives the repository's backups, so a repository
// alone says which catalog backup a manifest is.
const (
	TagBackup  = "cairn.service.backup"
	TagProject = "cairn.service.project"
)

// BackupCreate is a request for a backup of a volume or of a snapshot.
type BackupCreate struct {
	VolumeID, SnapshotID string
	Incremental          bool
	Container            string
	Name, Description    string
	// Force allows the backup of an in-use volume (through a temporary
	// snapshot, as for every volume backup).
	Force bool
}

// Backups lists the caller's backups with what the catalog derives.
func (s *Service) Backups(ctx context.Context, c Caller, f catalog.Filter) ([]BackupDetail, error) {
	f = scope(c, f)
	var out []BackupDetail
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		list, err := tx.Backups(ctx, f)
		if err != nil {
			return err
		}
		ids := make([]string, len(list))
		for i, b := range list {
			ids[i] = b.ID
		}
		with, err := tx.WithDependents(ctx, ids)
		if err != nil {
			return err
		}
		out = make([]BackupDetail, len(list))
		for i, b := range list {
			out[i] = BackupDetail{Backup: b, HasDependents: with[b.ID]}
		}
		return nil
	})
	return out, err
}

// BackupDetail is a backup with what the catalog derives.
type BackupDetail struct {
	cairn.Backup
	HasDependents bool
	// Marks are set by Backup (one backup's detail), not by lists.
	Marks cairn.BackupMarks
}

// Backup returns one of the caller's backups.
func (s *Service) Backup(ctx context.Context, c Caller, id string) (BackupDetail, error) {
	var d BackupDetail
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		if d.Backup, err = getBackup(ctx, tx, c, id); err != nil {
			return err
		}
		if d.HasDependents, err = tx.HasDependents(ctx, id); err != nil {
			return err
		}
		d.Marks, err = tx.BackupMarks(ctx, id)
		return err
	})
	return d, err
}

// containerName is what a container may be called: it becomes part of
// an object store path.
var containerName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// CreateBackup accepts a backup of a volume or a snapshot. A snapshot's
// backup may name the snapshot's volume too (the clients send both); it
// must be the snapshot's.
func (s *Service) CreateBackup(ctx context.Context, c Caller, req BackupCreate) (cairn.Backup, error) {
	if req.VolumeID == "" && req.SnapshotID == "" {
		return cairn.Backup{}, errorf(cairn.ErrInvalid, "give volume_id or snapshot_id")
	}
	if req.Container == "" {
		req.Container = s.defCont
	}
	if !containerName.MatchString(req.Container) {
		return cairn.Backup{}, errorf(cairn.ErrInvalid, "container %q: want 1 to 63 letters, digits, '.', '_' or '-'", req.Container)
	}
	if err := validText("name", req.Name, 255); err != nil {
		return cairn.Backup{}, err
	}
	if err := validText("description", req.Description, 4096); err != nil {
		return cairn.Backup{}, err
	}
	var b cairn.Backup
	err := s.update(ctx, func(tx catalog.Tx) error {
		var err error
		b, err = s.createBackupTx(ctx, tx, c, req)
		return err
	})
	if err != nil {
		return cairn.Backup{}, err
	}
	s.event(ctx, "backup.create.start", b.ProjectID, backupPayload(b))
	return b, nil
}

// createBackupTx is CreateBackup's work in tx (req checked already): the
// resource's state moves, the row and its task are written. The caller
// sends the event once tx commits.
func (s *Service) createBackupTx(ctx context.Context, tx catalog.Tx, c Caller, req BackupCreate) (cairn.Backup, error) {
	now := s.nowUTC()
	b := cairn.Backup{ID: cairn.NewUUID(), ProjectID: c.ProjectID, Name: req.Name,
		Description: req.Description, Container: req.Container, Status: cairn.StatusCreating,
		UserID: c.UserID, CreatedAt: now, UpdatedAt: now}
	if req.SnapshotID != "" {
		snap, err := getSnapshot(ctx, tx, c, req.SnapshotID)
		if err != nil {
			return cairn.Backup{}, err
		}
		if req.VolumeID != "" && req.VolumeID != snap.VolumeID {
			return cairn.Backup{}, errorf(cairn.ErrInvalid, "snapshot %s is of volume %s, not %s", snap.ID, snap.VolumeID, req.VolumeID)
		}
		if snap.Status != cairn.StatusAvailable {
			return cairn.Backup{}, conflict("snapshot", snap.ID, snap.Status, "back it up")
		}
		b.VolumeID, b.SnapshotID, b.Size, b.DataTimestamp = snap.VolumeID, snap.ID, snap.Size, snap.CreatedAt
		b.ProjectID = snap.ProjectID
		// The volume's metadata as it is now (a snapshot keeps none of
		// its volume's).
		if sv, err := tx.Volume(ctx, snap.VolumeID); err == nil {
			b.VolumeMetadata = sv.Metadata
		} else if !errors.Is(err, cairn.ErrNotFound) {
			return cairn.Backup{}, err
		}
		snap.Status, snap.UpdatedAt = cairn.StatusBackingUp, now
		if err := tx.UpdateSnapshot(ctx, snap); err != nil {
			return cairn.Backup{}, err
		}
	} else {
		v, err := getVolume(ctx, tx, c, req.VolumeID)
		if err != nil {
			return cairn.Backup{}, err
		}
		switch {
		case v.Status == cairn.StatusAvailable:
			v.Status, v.UpdatedAt = cairn.StatusBackingUp, now
			if err := tx.UpdateVolume(ctx, v); err != nil {
				return cairn.Backup{}, err
			}
		case v.Status == cairn.StatusInUse && req.Force:
			// It stays in-use: the backup reads a snapshot of it.
		case v.Status == cairn.StatusInUse:
			return cairn.Backup{}, fmt.Errorf("volume %s is in-use; backing it up needs force: %w", v.ID, cairn.ErrConflict)
		default:
			return cairn.Backup{}, conflict("volume", v.ID, v.Status, "back it up")
		}
		b.VolumeID, b.Size, b.DataTimestamp = v.ID, v.Size, now
		b.ProjectID, b.VolumeMetadata = v.ProjectID, v.Metadata
	}
	if req.Incremental {
		parent, err := latestBefore(ctx, tx, b)
		if err != nil {
			return cairn.Backup{}, err
		}
		b.ParentID, b.Incremental = parent.ID, true
	}
	if err := checkQuota(ctx, tx, b.ProjectID, cairn.Usage{Backups: 1, BackupGigabytes: b.Size}); err != nil {
		return cairn.Backup{}, err
	}
	if err := tx.InsertBackup(ctx, b); err != nil {
		return cairn.Backup{}, err
	}
	if _, err := s.queue(ctx, tx, b.ProjectID, "backup.create", b.ID, nil); err != nil {
		return cairn.Backup{}, err
	}
	return b, nil
}

// latestBefore is the parent of an incremental: the available backup of
// the same volume, in the same container, with the latest data_timestamp
// before b's. The volume's backups are read newest first a page at a
// time: the parent is nearly always on the first, and a volume with
// years of backups is not read whole for each new one.
func latestBefore(ctx context.Context, tx catalog.Tx, b cairn.Backup) (cairn.Backup, error) {
	const page = 32
	f := catalog.Filter{ProjectID: b.ProjectID, VolumeID: b.VolumeID, Status: cairn.StatusAvailable,
		Sort: []catalog.SortKey{{Key: "data_timestamp", Desc: true}}, Limit: page}
	for {
		list, err := tx.Backups(ctx, f)
		if err != nil {
			return cairn.Backup{}, err
		}
		for _, p := range list {
			if p.Container == b.Container && p.DataTimestamp.Before(b.DataTimestamp) {
				return p, nil
			}
		}
		if len(list) < page {
			break
		}
		f.Marker = list[len(list)-1].ID
	}
	return cairn.Backup{}, fmt.Errorf("no available backup of volume %s in container %s older than the data to back up; an incremental needs one (make a full backup first): %w",
		b.VolumeID, b.Container, cairn.ErrInvalid)
}

// tempSnapshotName names the snapshot a volume backup reads.
func tempSnapshotName(backup string) string { return "backup-" + backup }

func (s *Service) runCreateBackup(ctx context.Context, t cairn.Task) error {
	b, err := s.backupRow(ctx, t.ResourceID)
	if err != nil {
		return err
	}
	if b.Status == cairn.StatusAvailable {
		// Recorded available by an earlier build, which removed its
		// snapshot after that and may have been cut short before.
		return s.removeTempSnapshot(ctx, b)
	}
	if b.Status != cairn.StatusCreating {
		return nil
	}
	if b.RepoID == "" {
		r, err := s.repoFor(ctx, b.Container)
		if err != nil {
			return err
		}
		var m *format.Manifest
		if t.Attempts > 1 {
			// An earlier attempt may have finished in the repository.
			if m, err = findManifest(ctx, r, b.ID); err != nil {
				return err
			}
		}
		if m == nil {
			if m, err = s.backupInto(ctx, t, r, &b); err != nil {
				return err
			}
		}
		// The backup is safe in the repository: recorded before anything
		// else changes, so an attempt cut short from here on finishes
		// without the repository.
		stats := m.Stats
		b, err = s.setBackup(ctx, b.ID, func(b *cairn.Backup) {
			b.RepoID = m.ID.String()
			b.ObjectCount = int64(stats.ChunksNew + len(m.Index) + 1)
			b.StoredBytes = stats.BytesStored
		})
		if err != nil {
			return err
		}
		s.obs.BytesBackedUp(stats.BytesRead + stats.BytesUnchanged + stats.BytesZero)
	}
	// What the backup used is given back before it is shown available:
	// who sees it available sees no temporary snapshot, and its source
	// free.
	if err := s.removeTempSnapshot(ctx, b); err != nil {
		return err
	}
	if err := s.releaseSource(ctx, b); err != nil {
		return err
	}
	b, err = s.setBackup(ctx, b.ID, func(b *cairn.Backup) { b.Status = cairn.StatusAvailable })
	if err != nil {
		return err
	}
	s.event(ctx, "backup.create.end", b.ProjectID, backupPayload(b))
	return nil
}

// backupInto writes the backup's data into r and returns its manifest.
func (s *Service) backupInto(ctx context.Context, t cairn.Task, r Repository, b *cairn.Backup) (*format.Manifest, error) {
	var src cairn.ID
	if b.SnapshotID != "" {
		snap, err := s.snapshotRow(ctx, b.SnapshotID)
		if err != nil {
			return nil, err
		}
		if src, err = parseEngineID(snap.EngineID); err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", snap.ID, err)
		}
	} else {
		es, ok, err := s.engineSnapshot(ctx, tempSnapshotName(b.ID))
		if err != nil {
			return nil, err
		}
		if !ok {
			v, err := s.volumeRow(ctx, b.VolumeID)
			if err != nil {
				return nil, err
			}
			vid, err := parseEngineID(v.EngineID)
			if err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.ID, err)
			}
			if es, err = s.eng.CreateSnapshot(ctx, vid, tempSnapshotName(b.ID)); err != nil {
				return nil, fmt.Errorf("temporary snapshot: %w", err)
			}
		}
		src = es.ID
		if b.TempSnapshotEngineID != es.ID.String() {
			// The data is the snapshot's: of its time, not the request's.
			nb, err := s.setBackup(ctx, b.ID, func(b *cairn.Backup) {
				b.TempSnapshotEngineID = es.ID.String()
				b.DataTimestamp = es.Created.UTC().Truncate(time.Microsecond)
			})
			if err != nil {
				return nil, err
			}
			*b = nb
		}
	}
	opts := repo.BackupOptions{DataTime: b.DataTimestamp,
		Tags:     map[string]string{TagBackup: b.ID, TagProject: b.ProjectID},
		Progress: &repo.Progress{}}
	opts.NoParent = true
	if b.ParentID != "" {
		if p, err := s.backupRow(ctx, b.ParentID); err == nil && p.RepoID != "" && p.Status == cairn.StatusAvailable {
			if pid, err := cairn.ParseID(p.RepoID); err == nil {
				opts.Parent, opts.NoParent = &pid, false
			}
		}
		if opts.NoParent {
			// The parent went away since the request: this is a full
			// backup, and the record says so.
			s.log.Warn("the parent of an incremental is gone; making a full backup", "backup", b.ID, "parent", b.ParentID)
			nb, err := s.setBackup(ctx, b.ID, func(b *cairn.Backup) { b.ParentID, b.Incremental = "", false })
			if err != nil {
				return nil, err
			}
			*b = nb
		}
	}
	stop := s.trackProgress(ctx, t.ID, opts.Progress)
	res, err := r.BackupSnapshot(ctx, src, opts)
	stop()
	if err != nil {
		return nil, err
	}
	s.log.Info("backup written", "backup", b.ID, "tracked", res.Tracked, "reason", res.Reason,
		"changed_bytes", res.ChangedBytes, "read", res.Manifest.Stats.BytesRead)
	return res.Manifest, nil
}

// findManifest looks in r for the manifest of catalog backup id.
func findManifest(ctx context.Context, r Repository, id string) (*format.Manifest, error) {
	list, err := r.Backups(ctx)
	if err != nil {
		return nil, fmt.Errorf("list repository backups: %w", err)
	}
	for _, m := range list.Backups {
		if m.Tags[TagBackup] == id {
			return m, nil
		}
	}
	return nil, nil
}

// trackProgress copies p into the task row every second until stopped.
func (s *Service) trackProgress(ctx context.Context, task string, p *repo.Progress) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			_ = s.cat.Update(ctx, func(tx catalog.Tx) error {
				t, err := tx.Task(ctx, task)
				if err != nil {
					return err
				}
				t.ProgressDone, t.ProgressTotal = p.Done.Load(), p.Total.Load()
				t.UpdatedAt = s.nowUTC()
				return tx.UpdateTask(ctx, t)
			})
		}
	}()
	return func() { cancel(); <-done }
}

// releaseSource returns a backed-up volume or snapshot to available.
func (s *Service) releaseSource(ctx context.Context, b cairn.Backup) error {
	return s.cat.Update(ctx, func(tx catalog.Tx) error {
		if b.SnapshotID != "" {
			snap, err := tx.Snapshot(ctx, b.SnapshotID)
			if errors.Is(err, cairn.ErrNotFound) {
				return nil
			}
			if err != nil || snap.Status != cairn.StatusBackingUp {
				return err
			}
			snap.Status, snap.UpdatedAt = cairn.StatusAvailable, s.nowUTC()
			return tx.UpdateSnapshot(ctx, snap)
		}
		v, err := tx.Volume(ctx, b.VolumeID)
		if errors.Is(err, cairn.ErrNotFound) {
			return nil
		}
		if err != nil || v.Status != cairn.StatusBackingUp {
			return err
		}
		// Another backup of the same volume may still be running.
		running, err := tx.Backups(ctx, catalog.Filter{VolumeID: v.ID, Status: cairn.StatusCreating})
		if err != nil {
			return err
		}
		for _, o := range running {
			if o.ID != b.ID && o.SnapshotID == "" {
				return nil
			}
		}
		v.Status, v.UpdatedAt = cairn.StatusAvailable, s.nowUTC()
		return tx.UpdateVolume(ctx, v)
	})
}

// removeTempSnapshot deletes the snapshot a volume backup made.
func (s *Service) removeTempSnapshot(ctx context.Context, b cairn.Backup) error {
	es, ok, err := s.engineSnapshot(ctx, tempSnapshotName(b.ID))
	if err != nil {
		return fmt.Errorf("remove temporary snapshot: %w", err)
	}
	if ok {
		if err := s.eng.DeleteSnapshot(ctx, es.ID); err != nil && !errors.Is(err, cairn.ErrNotFound) {
			return fmt.Errorf("remove temporary snapshot: %w", err)
		}
	}
	if b.TempSnapshotEngineID == "" {
		return nil
	}
	_, err = s.setBackup(ctx, b.ID, func(b *cairn.Backup) { b.TempSnapshotEngineID = "" })
	return err
}

// failBackup gives back what a failed backup used, then shows it failed.
func (s *Service) failBackup(ctx context.Context, t cairn.Task, cause error) error {
	b, err := s.backupRow(ctx, t.ResourceID)
	if errors.Is(err, cairn.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := s.removeTempSnapshot(ctx, b); err != nil {
		return err
	}
	if err := s.releaseSource(ctx, b); err != nil {
		return err
	}
	b, err = s.setBackup(ctx, b.ID, func(b *cairn.Backup) {
		b.Status, b.FailReason = cairn.StatusError, failReason(cause)
	})
	if errors.Is(err, cairn.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	s.event(ctx, "backup.create.error", b.ProjectID, backupPayload(b))
	return nil
}

// DeleteBackup accepts the deletion of an available or failed backup.
// Unlike Cinder, a backup later incrementals were based on may be
// deleted: every backup's index is complete, so no restore depends on
// another backup; only chunks no other backup uses are freed.
func (s *Service) DeleteBackup(ctx context.Context, c Caller, id string) error {
	var b cairn.Backup
	err := s.update(ctx, func(tx catalog.Tx) error {
		var err error
		if b, err = getBackup(ctx, tx, c, id); err != nil {
			return err
		}
		b, err = s.deleteBackupTx(ctx, tx, b)
		return err
	})
	if err == nil {
		s.event(ctx, "backup.delete.start", b.ProjectID, backupPayload(b))
	}
	return err
}

// deleteBackupTx marks b deleting and queues its deletion in tx.
func (s *Service) deleteBackupTx(ctx context.Context, tx catalog.Tx, b cairn.Backup) (cairn.Backup, error) {
	switch b.Status {
	case cairn.StatusAvailable, cairn.StatusError:
	default:
		return b, conflict("backup", b.ID, b.Status, "delete it")
	}
	if err := refuseProtected(ctx, tx, b.ID); err != nil {
		return b, err
	}
	b.Status, b.UpdatedAt = cairn.StatusDeleting, s.nowUTC()
	if err := tx.UpdateBackup(ctx, b); err != nil {
		return b, err
	}
	_, err := s.queue(ctx, tx, b.ProjectID, "backup.delete", b.ID, nil)
	return b, err
}

func (s *Service) runDeleteBackup(ctx context.Context, t cairn.Task) error {
	b, err := s.backupRow(ctx, t.ResourceID)
	if errors.Is(err, cairn.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := s.removeTempSnapshot(ctx, b); err != nil {
		return err
	}
	rid := b.RepoID
	var freed *repo.GCStats
	if rid == "" {
		// A failed backup: an attempt may still have left a manifest.
		r, err := s.repoFor(ctx, b.Container)
		if err != nil {
			return err
		}
		m, err := findManifest(ctx, r, b.ID)
		if err != nil {
			return err
		}
		if m != nil {
			rid = m.ID.String()
		}
	}
	if rid != "" {
		id, err := cairn.ParseID(rid)
		if err != nil {
			return fmt.Errorf("backup %s: repository id: %w", b.ID, err)
		}
		r, err := s.repoFor(ctx, b.Container)
		if err != nil {
			return err
		}
		if err := r.Forget(ctx, []cairn.ID{id}); err != nil && !errors.Is(err, cairn.ErrNotFound) {
			return fmt.Errorf("forget: %w", err)
		}
		// Free what no other backup needs. One collection per container
		// at a time; backups keep running meanwhile.
		s.gcMu.Lock()
		st, err := r.GC(ctx, repo.GCOptions{})
		s.gcMu.Unlock()
		if err != nil {
			return fmt.Errorf("gc: %w", err)
		}
		freed = &st
	}
	err = s.cat.Update(ctx, func(tx catalog.Tx) error { return tx.DeleteBackup(ctx, b.ID) })
	if err != nil && !errors.Is(err, cairn.ErrNotFound) {
		return err
	}
	b.Status = cairn.StatusDeleted
	payload := backupPayload(b)
	if freed != nil {
		// What the deletion freed: chunks nothing else references (some
		// may wait for the GC's grace period: pending).
		payload["gc"] = map[string]any{"chunks_deleted": freed.ChunksDeleted, "bytes_freed": freed.BytesFreed,
			"chunks_pending": freed.ChunksPending, "bytes_pending": freed.BytesPending}
	}
	s.event(ctx, "backup.delete.end", b.ProjectID, payload)
	return nil
}

func (s *Service) failDeleteBackup(ctx context.Context, t cairn.Task, cause error) error {
	b, err := s.setBackup(ctx, t.ResourceID, func(b *cairn.Backup) {
		b.Status, b.FailReason = cairn.StatusError, failReason(cause)
	})
	if errors.Is(err, cairn.ErrNotFound) {
		return nil
	}
	if err == nil {
		s.event(ctx, "backup.delete.error", b.ProjectID, backupPayload(b))
	}
	return err
}

// RestoreRequest names where a backup is restored: an existing available
// volume at least as large, or (VolumeID empty) a new volume.
type RestoreRequest struct {
	VolumeID string
	Name     string
}

// RestoreResult is the API's answer to a restore.
type RestoreResult struct {
	BackupID   string `json:"backup_id"`
	VolumeID   string `json:"volume_id"`
	VolumeName string `json:"volume_name"`
}

type restoreParams struct {
	BackupID string `json:"backup_id"`
	VolumeID string `json:"volume_id"`
	New      bool   `json:"new"`
}

// RestoreBackup accepts a restore of an available backup.
func (s *Service) RestoreBackup(ctx context.Context, c Caller, id string, req RestoreRequest) (RestoreResult, error) {
	if err := validText("name", req.Name, 255); err != nil {
		return RestoreResult{}, err
	}
	var res RestoreResult
	var b cairn.Backup
	err := s.update(ctx, func(tx catalog.Tx) error {
		var err error
		if b, err = getBackup(ctx, tx, c, id); err != nil {
			return err
		}
		if b.Status != cairn.StatusAvailable {
			return conflict("backup", b.ID, b.Status, "restore it")
		}
		now := s.nowUTC()
		var v cairn.Volume
		p := restoreParams{BackupID: b.ID}
		if req.VolumeID != "" {
			if v, err = getVolume(ctx, tx, c, req.VolumeID); err != nil {
				return err
			}
			if v.Status != cairn.StatusAvailable {
				return conflict("volume", v.ID, v.Status, "restore into it")
			}
			if err := notHeld(ctx, tx, "volume", v.ID, "restore into it"); err != nil {
				return err
			}
			if v.Size < b.Size {
				return errorf(cairn.ErrInvalid, "volume %s (%d GiB) is smaller than backup %s (%d GiB)", v.ID, v.Size, b.ID, b.Size)
			}
			v.Status, v.UpdatedAt = cairn.StatusRestoringBackup, now
			if err := tx.UpdateVolume(ctx, v); err != nil {
				return err
			}
		} else {
			name := req.Name
			if name == "" {
				name = "restore_backup_" + b.ID
			}
			v = cairn.Volume{ID: cairn.NewUUID(), ProjectID: c.ProjectID, Name: name, Size: b.Size,
				Status: cairn.StatusRestoringBackup, BackupID: b.ID, UserID: c.UserID, Metadata: b.VolumeMetadata,
				CreatedAt: now, UpdatedAt: now}
			if !c.Admin || c.ProjectID == "" {
				v.ProjectID = b.ProjectID
			}
			if err := checkQuota(ctx, tx, v.ProjectID, cairn.Usage{Volumes: 1, Gigabytes: v.Size}); err != nil {
				return err
			}
			if err := checkVolumeSize(ctx, tx, v.ProjectID, v.Size); err != nil {
				return err
			}
			if err := tx.InsertVolume(ctx, v); err != nil {
				return err
			}
			p.New = true
		}
		p.VolumeID = v.ID
		b.Status, b.UpdatedAt = cairn.StatusRestoring, now
		if err := tx.UpdateBackup(ctx, b); err != nil {
			return err
		}
		params, _ := json.Marshal(p)
		res = RestoreResult{BackupID: b.ID, VolumeID: v.ID, VolumeName: v.Name}
		_, err = s.queue(ctx, tx, v.ProjectID, "backup.restore", v.ID, params)
		return err
	})
	if err != nil {
		return RestoreResult{}, err
	}
	s.event(ctx, "backup.restore.start", b.ProjectID, backupPayload(b))
	return res, nil
}

func (s *Service) runRestore(ctx context.Context, t cairn.Task) error {
	var p restoreParams
	if err := json.Unmarshal(t.Params, &p); err != nil {
		return fmt.Errorf("task parameters: %w", err)
	}
	v, err := s.volumeRow(ctx, p.VolumeID)
	if err != nil {
		return err
	}
	b, err := s.backupRow(ctx, p.BackupID)
	if err != nil {
		return err
	}
	if v.Status != cairn.StatusRestoringBackup {
		return s.releaseBackup(ctx, b.ID)
	}
	r, err := s.repoFor(ctx, b.Container)
	if err != nil {
		return err
	}
	rid, err := cairn.ParseID(b.RepoID)
	if err != nil {
		return fmt.Errorf("backup %s: repository id: %w", b.ID, err)
	}
	m, err := r.Manifest(ctx, rid)
	if err != nil {
		return fmt.Errorf("backup %s: %w", b.ID, err)
	}
	ev, ok, err := s.engineVolume(ctx, v.ID)
	if err != nil {
		return err
	}
	fresh := false
	if !ok {
		if !p.New {
			return fmt.Errorf("volume %s: engine volume: %w", v.ID, cairn.ErrNotFound)
		}
		if ev, err = s.eng.CreateVolume(ctx, v.ID, v.Size*GiB); err != nil {
			return fmt.Errorf("create volume: %w", err)
		}
		fresh = true
	}
	if v.EngineID != ev.ID.String() {
		if v, err = s.setVolume(ctx, v.ID, func(v *cairn.Volume) { v.EngineID = ev.ID.String() }); err != nil {
			return err
		}
	}
	dev, err := s.eng.OpenVolume(ctx, ev.ID)
	if err != nil {
		return fmt.Errorf("open volume: %w", err)
	}
	prog := &repo.Progress{}
	stop := s.trackProgress(ctx, t.ID, prog)
	stats, err := r.Restore(ctx, m, DeviceTarget(ctx, dev, fresh), prog)
	stop()
	if cerr := dev.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	s.obs.BytesRestored(stats.Bytes)
	// The backup is given back before the volume is shown available.
	if err := s.releaseBackup(ctx, b.ID); err != nil {
		return err
	}
	if v, err = s.setVolume(ctx, v.ID, func(v *cairn.Volume) { v.Status = cairn.StatusAvailable }); err != nil {
		return err
	}
	s.event(ctx, "backup.restore.end", b.ProjectID, backupPayload(b))
	if p.New {
		s.event(ctx, "volume.create.end", v.ProjectID, volumePayload(v))
	}
	return nil
}

// releaseBackup returns a restoring backup to available.
func (s *Service) releaseBackup(ctx context.Context, id string) error {
	return s.cat.Update(ctx, func(tx catalog.Tx) error {
		b, err := tx.Backup(ctx, id)
		if errors.Is(err, cairn.ErrNotFound) {
			return nil
		}
		if err != nil || b.Status != cairn.StatusRestoring {
			return err
		}
		// Another restore of the same backup may still be running.
		tasks, err := tx.Tasks(ctx, catalog.Filter{ProjectID: b.ProjectID,
			TaskStates: []cairn.TaskState{cairn.TaskPending, cairn.TaskRunning}})
		if err != nil {
			return err
		}
		n := 0
		for _, t := range tasks {
			var p restoreParams
			if t.Kind == "backup.restore" && json.Unmarshal(t.Params, &p) == nil && p.BackupID == id {
				n++
			}
		}
		if n > 1 {
			return nil
		}
		b.Status, b.UpdatedAt = cairn.StatusAvailable, s.nowUTC()
		return tx.UpdateBackup(ctx, b)
	})
}

// failRestore gives the backup back, then shows the volume failed.
func (s *Service) failRestore(ctx context.Context, t cairn.Task, cause error) error {
	var p restoreParams
	if err := json.Unmarshal(t.Params, &p); err != nil {
		return nil
	}
	if err := s.releaseBackup(ctx, p.BackupID); err != nil {
		return err
	}
	v, err := s.setVolume(ctx, p.VolumeID, func(v *cairn.Volume) {
		v.Status, v.FailReason = cairn.StatusError, failReason(cause)
	})
	if err != nil && !errors.Is(err, cairn.ErrNotFound) {
		return err
	}
	b, _ := s.backupRow(ctx, p.BackupID)
	pl := backupPayload(b)
	pl["volume_id"], pl["fail_reason"] = v.ID, failReason(cause)
	s.event(ctx, "backup.restore.error", b.ProjectID, pl)
	return nil
}

// DeviceTarget is a volume device as a restore target: fresh says the
// device reads as zeros everywhere (a volume just created). It tells a
// delta restore where the device may hold data from the device's block
// status, so a restore into a mostly empty volume reads only what is
// there. Its methods are safe for concurrent use, as the device's are.
func DeviceTarget(ctx context.Context, dev Device, fresh bool) repo.AllocatedTarget {
	return &deviceTarget{ctx: ctx, dev: dev, fresh: fresh}
}

type deviceTarget struct {
	ctx   context.Context
	dev   Device
	fresh bool
}

func (d *deviceTarget) ReadAt(p []byte, off int64) (int, error) {
	if err := d.dev.ReadAt(d.ctx, p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (d *deviceTarget) WriteAt(p []byte, off int64) (int, error) {
	if err := d.dev.WriteAt(d.ctx, p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (d *deviceTarget) Zero(off, n int64) error { return d.dev.Zero(d.ctx, off, n, false) }
func (d *deviceTarget) Sync() error             { return d.dev.Flush(d.ctx) }
func (d *deviceTarget) Fresh() bool             { return d.fresh }

// Allocated implements repo.AllocatedTarget: every extent the device does
// not report as reading zeros may hold data.
func (d *deviceTarget) Allocated() ([]cairn.Extent, bool, error) {
	size := d.dev.Size()
	var out []cairn.Extent
	for off := int64(0); off < size; {
		list, err := d.dev.BlockStatus(d.ctx, off, size-off)
		if err != nil {
			return nil, false, fmt.Errorf("block status at %d: %w", off, err)
		}
		if len(list) == 0 {
			return nil, false, fmt.Errorf("block status at %d: no extents", off)
		}
		for _, e := range list {
			n := min(e.Length, size-off)
			if n <= 0 {
				return nil, false, fmt.Errorf("block status at %d: an extent of %d bytes", off, e.Length)
			}
			if !e.Zero {
				if k := len(out); k > 0 && out[k-1].End() == off {
					out[k-1].Length += n
				} else {
					out = append(out, cairn.Extent{Offset: off, Length: n})
				}
			}
			off += n
			if off == size {
				break
			}
		}
	}
	return out, true, nil
}

// BackupRecord is what export_record hands out and import_record takes:
// enough for another deployment with the same container and key to list
// and restore the backup.
type BackupRecord struct {
	Version       int       `json:"version"`
	ID            string    `json:"id"`
	Name          string    `json:"name"`
	Description   string    `json:"description"`
	VolumeID      string    `json:"volume_id"`
	SnapshotID    string    `json:"snapshot_id,omitempty"`
	Container     string    `json:"container"`
	Size          int64     `json:"size"`
	ObjectCount   int64     `json:"object_count"`
	StoredBytes   int64     `json:"stored_bytes"`
	Incremental   bool      `json:"is_incremental"`
	ParentID      string    `json:"parent_id,omitempty"`
	DataTimestamp time.Time `json:"data_timestamp"`
	CreatedAt     time.Time `json:"created_at"`
	RepoID        string    `json:"repository_backup_id"`
	// VolumeMetadata is the backed-up volume's metadata (records made
	// before cairn kept it have none).
	VolumeMetadata map[string]string `json:"volume_metadata,omitempty"`
}

// BackupService names this implementation in export records.
const BackupService = "cairn.repository"

// ExportRecord returns the record of an available backup, base64 JSON.
func (s *Service) ExportRecord(ctx context.Context, c Caller, id string) (service, url string, err error) {
	d, err := s.Backup(ctx, c, id)
	if err != nil {
		return "", "", err
	}
	b := d.Backup
	if b.Status != cairn.StatusAvailable {
		return "", "", conflict("backup", b.ID, b.Status, "export its record")
	}
	rec := BackupRecord{Version: 1, ID: b.ID, Name: b.Name, Description: b.Description,
		VolumeID: b.VolumeID, SnapshotID: b.SnapshotID, Container: b.Container, Size: b.Size,
		ObjectCount: b.ObjectCount, StoredBytes: b.StoredBytes, Incremental: b.Incremental,
		ParentID: b.ParentID, DataTimestamp: b.DataTimestamp, CreatedAt: b.CreatedAt, RepoID: b.RepoID,
		VolumeMetadata: b.VolumeMetadata}
	js, _ := json.Marshal(rec)
	return BackupService, base64.StdEncoding.EncodeToString(js), nil
}

// ImportRecord adds a backup from another deployment's record, after
// checking that the container holds it and this deployment's key opens it.
func (s *Service) ImportRecord(ctx context.Context, c Caller, service, url string) (cairn.Backup, error) {
	if service != BackupService {
		return cairn.Backup{}, errorf(cairn.ErrInvalid, "backup_service %q: want %q", service, BackupService)
	}
	js, err := base64.StdEncoding.DecodeString(url)
	if err != nil {
		return cairn.Backup{}, errorf(cairn.ErrInvalid, "backup_url: not base64")
	}
	var rec BackupRecord
	if err := json.Unmarshal(js, &rec); err != nil {
		return cairn.Backup{}, errorf(cairn.ErrInvalid, "backup_url: not a backup record")
	}
	if rec.Version != 1 {
		return cairn.Backup{}, errorf(cairn.ErrUnsupported, "backup record version %d", rec.Version)
	}
	rid, err := cairn.ParseID(rec.RepoID)
	if err != nil || rec.ID == "" || !containerName.MatchString(rec.Container) || validSize(rec.Size) != nil {
		return cairn.Backup{}, errorf(cairn.ErrInvalid, "backup_url: incomplete backup record")
	}
	if rec.VolumeMetadata, err = validMetadata(rec.VolumeMetadata); err != nil {
		return cairn.Backup{}, fmt.Errorf("backup_url: volume metadata: %w", err)
	}
	r, err := s.repoFor(ctx, rec.Container)
	if err != nil {
		return cairn.Backup{}, err
	}
	m, err := r.Manifest(ctx, rid)
	if err != nil {
		return cairn.Backup{}, fmt.Errorf("backup %s in container %s: %w", rec.ID, rec.Container, err)
	}
	if m.Size > rec.Size*GiB {
		return cairn.Backup{}, errorf(cairn.ErrInvalid, "backup record size %d GiB is smaller than the stored backup", rec.Size)
	}
	now := s.nowUTC()
	b := cairn.Backup{ID: rec.ID, ProjectID: c.ProjectID, VolumeID: rec.VolumeID, SnapshotID: rec.SnapshotID,
		Name: rec.Name, Description: rec.Description, Container: rec.Container, Status: cairn.StatusAvailable,
		Size: rec.Size, ObjectCount: rec.ObjectCount, StoredBytes: rec.StoredBytes, Incremental: rec.Incremental,
		ParentID: rec.ParentID, DataTimestamp: rec.DataTimestamp.UTC(), RepoID: rec.RepoID,
		UserID: c.UserID, VolumeMetadata: rec.VolumeMetadata, CreatedAt: now, UpdatedAt: now}
	err = s.cat.Update(ctx, func(tx catalog.Tx) error {
		if err := checkQuota(ctx, tx, b.ProjectID, cairn.Usage{Backups: 1, BackupGigabytes: b.Size}); err != nil {
			return err
		}
		return tx.InsertBackup(ctx, b)
	})
	if err != nil {
		return cairn.Backup{}, err
	}
	s.event(ctx, "backup.import.end", b.ProjectID, backupPayload(b))
	return b, nil
}

// ResetBackupStatus is the admin's way out of a stuck state: available
// or error (cairn.BackupStatuses), as the block storage API allows,
// refused while a task holds the backup.
func (s *Service) ResetBackupStatus(ctx context.Context, c Caller, id string, st cairn.Status) error {
	if !c.Admin {
		return errorf(cairn.ErrForbidden, "reset-status is for admins")
	}
	st, err := resetStatus(st, cairn.BackupStatuses)
	if err != nil {
		return err
	}
	return s.cat.Update(ctx, func(tx catalog.Tx) error {
		b, err := getBackup(ctx, tx, c, id)
		if err != nil {
			return err
		}
		if err := notHeld(ctx, tx, "backup", b.ID, "reset its status"); err != nil {
			return err
		}
		b.Status, b.UpdatedAt = st, s.nowUTC()
		return tx.UpdateBackup(ctx, b)
	})
}

// BackupUpdate changes a backup's name or description (nil: unchanged).
type BackupUpdate struct {
	Name, Description *string
}

// UpdateBackup renames or redescribes one of the caller's backups, in
// any status (the block storage API's backup update, from microversion
// 3.9).
func (s *Service) UpdateBackup(ctx context.Context, c Caller, id string, req BackupUpdate) (BackupDetail, error) {
	if req.Name == nil && req.Description == nil {
		return BackupDetail{}, errorf(cairn.ErrInvalid, "nothing to update: give a name or a description")
	}
	if req.Name != nil {
		if err := validText("name", *req.Name, 255); err != nil {
			return BackupDetail{}, err
		}
	}
	if req.Description != nil {
		if err := validText("description", *req.Description, 4096); err != nil {
			return BackupDetail{}, err
		}
	}
	var d BackupDetail
	err := s.cat.Update(ctx, func(tx catalog.Tx) error {
		b, err := getBackup(ctx, tx, c, id)
		if err != nil {
			return err
		}
		if req.Name != nil {
			b.Name = *req.Name
		}
		if req.Description != nil {
			b.Description = *req.Description
		}
		b.UpdatedAt = s.nowUTC()
		if err := tx.UpdateBackup(ctx, b); err != nil {
			return err
		}
		d.Backup = b
		d.HasDependents, err = tx.HasDependents(ctx, b.ID)
		return err
	})
	if err != nil {
		return BackupDetail{}, err
	}
	s.event(ctx, "backup.update.end", d.ProjectID, backupPayload(d.Backup))
	return d, nil
}

func backupPayload(b cairn.Backup) map[string]any {
	return map[string]any{"id": b.ID, "backup_id": b.ID, "project_id": b.ProjectID, "user_id": b.UserID,
		"volume_id": b.VolumeID, "snapshot_id": b.SnapshotID, "display_name": b.Name,
		"container": b.Container, "size": b.Size, "status": b.Status, "fail_reason": b.FailReason,
		"is_incremental": b.Incremental, "parent_id": b.ParentID, "object_count": b.ObjectCount,
		"data_timestamp": b.DataTimestamp, "created_at": b.CreatedAt}
}

// kinds are the service's task kinds.
func (s *Service) kinds() map[string]tasks.Kind {
	return map[string]tasks.Kind{
		"volume.create":         {Run: s.runCreateVolume, Fail: s.failCreateVolume},
		"volume.delete":         {Run: s.runDeleteVolume, Fail: s.failDeleteVolume},
		"volume.extend":         {Run: s.runExtendVolume, Fail: s.failVolume("volume.resize.error")},
		"snapshot.create":       {Run: s.runCreateSnapshot, Fail: s.failSnapshot("snapshot.create.error")},
		"snapshot.delete":       {Run: s.runDeleteSnapshot, Fail: s.failSnapshot("snapshot.delete.error")},
		"backup.create":         {Run: s.runCreateBackup, Fail: s.failBackup},
		"backup.delete":         {Run: s.runDeleteBackup, Fail: s.failDeleteBackup},
		"backup.restore":        {Run: s.runRestore, Fail: s.failRestore},
		"instance.create":       {Run: s.runCreateInstance, Fail: s.failInstance("instance.create.error")},
		"instance.delete":       {Run: s.runDeleteInstance, Fail: s.failInstance("instance.delete.error")},
		"instance.recover":      {Run: s.runRecoverInstance, Fail: s.failRecover("instance.recover.error")},
		"instance.undo_recover": {Run: s.runUndoRecover, Fail: s.failRecover("instance.undo_recover.error")},
		"dbbackup.create":       {Run: s.runCreateDatabaseBackup, Fail: s.failDatabaseBackup},
		"dbbackup.delete":       {Run: s.runDeleteDatabaseBackup, Fail: s.failDeleteDatabaseBackup},
		"backup.verify":         {Run: s.runVerifyBackup, Fail: s.failCheck},
		"backup.drill":          {Run: s.runDrillBackup, Fail: s.failCheck},
		"dbbackup.verify":       {Run: s.runVerifyDatabaseBackup, Fail: s.failCheck},
		"dbbackup.drill":        {Run: s.runDrillDatabaseBackup, Fail: s.failDrillDatabaseBackup},
	}
}
