// Package volbackup backs up the engine's volumes and snapshots into a
// repository. An incremental backup asks the engine which extents changed
// since the snapshot its parent backup was taken from, and reads only
// those: the seam is repo.BackupOptions.Changed.
//
// Every backup records, in its tags, the volume and the snapshot it read.
// A backup of a volume (rather than of a snapshot the caller made) takes
// a snapshot first and keeps it as the base of the next incremental; the
// base of the previous backup is deleted once the new one is safe, so a
// volume carries at most one such snapshot and its space is what changed
// since the last backup.
package volbackup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/extents"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/volume"
	"github.com/cairnproject/cairn/internal/volumectl"
)

// Tags a backup of a volume carries.
const (
	TagVolume   = "cairn.volume"
	TagSnapshot = "cairn.snapshot"
	// TagBase marks a snapshot this package made and may delete.
	TagBase = "cairn.base"
)

// BaseSnapshotName names the snapshots kept as incremental bases.
const BaseSnapshotName = "cairn-backup-base"

// SourceName is how the repository knows a volume across backups.
func SourceName(v cairn.ID) string { return "volume:" + v.String() }

// Request is one backup.
type Request struct {
	// Exactly one of Volume and Snapshot.
	Volume, Snapshot cairn.ID
	// Options for the repository; SourceName, Changed and DataTime are
	// filled in here.
	Options repo.BackupOptions
	Logger  *slog.Logger
}

// Result tells what a backup did beyond its manifest.
type Result struct {
	Manifest *format.Manifest
	Snapshot cairn.ID
	// Tracked says the engine's changed extents were used; Reason says
	// why not otherwise.
	Tracked bool
	Reason  string
	// ChangedBytes is what the engine listed as changed.
	ChangedBytes int64
}

// Backup backs up one volume or snapshot.
func Backup(ctx context.Context, r *repo.Repository, ops volumectl.Ops, req Request) (*Result, error) {
	log := req.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if req.Volume.IsZero() == req.Snapshot.IsZero() {
		return nil, fmt.Errorf("back up either a volume or a snapshot: %w", cairn.ErrInvalid)
	}
	var snap volume.SnapshotInfo
	var err error
	made := false
	if !req.Volume.IsZero() {
		if snap, err = ops.CreateSnapshot(ctx, req.Volume, BaseSnapshotName); err != nil {
			return nil, fmt.Errorf("snapshot for backup: %w", err)
		}
		made = true
	} else if snap, err = ops.Snapshot(ctx, req.Snapshot); err != nil {
		return nil, err
	}
	res, err := backupSnapshot(ctx, r, ops, snap, made, req, log)
	if err != nil {
		if made {
			if derr := ops.DeleteSnapshot(context.WithoutCancel(ctx), snap.ID); derr != nil {
				log.Warn("removing the snapshot of a failed backup", "snapshot", snap.ID, "err", derr)
			}
		}
		return nil, err
	}
	return res, nil
}

func backupSnapshot(ctx context.Context, r *repo.Repository, ops volumectl.Ops, snap volume.SnapshotInfo, made bool, req Request, log *slog.Logger) (*Result, error) {
	opts := req.Options
	opts.SourceName = SourceName(snap.Volume)
	if opts.DataTime.IsZero() {
		opts.DataTime = snap.Created
	}
	tags := map[string]string{}
	for k, v := range opts.Tags {
		tags[k] = v
	}
	tags[TagVolume] = snap.Volume.String()
	tags[TagSnapshot] = snap.ID.String()
	if made {
		tags[TagBase] = "true"
	}
	opts.Tags = tags
	res := &Result{Snapshot: snap.ID}

	parent, err := findParent(ctx, r, opts)
	if err != nil {
		return nil, err
	}
	switch {
	case parent == nil:
		res.Reason = "no parent backup"
	case parent.Tags[TagSnapshot] == "":
		res.Reason = "the parent backup names no snapshot"
	default:
		from, perr := cairn.ParseID(parent.Tags[TagSnapshot])
		if perr != nil {
			res.Reason = "the parent backup's snapshot tag is malformed"
			break
		}
		if _, err := ops.Snapshot(ctx, from); errors.Is(err, cairn.ErrNotFound) {
			res.Reason = "the parent backup's snapshot " + from.Short() + " no longer exists"
			break
		} else if err != nil {
			return nil, err
		}
		list, known, err := ops.ChangedExtents(ctx, &volume.Ref{Snapshot: from}, volume.Ref{Snapshot: snap.ID})
		if err != nil {
			return nil, fmt.Errorf("changed extents: %w", err)
		}
		if !known {
			res.Reason = "change tracking since " + from.Short() + " is uncertain"
			break
		}
		clipped := clip(list, snap.Size)
		opts.Changed = &extents.List{Size: snap.Size, Extents: clipped}
		opts.Parent = &parent.ID
		// The engine's list is exact to the page: read only those bytes.
		opts.Delta = true
		res.Tracked = true
		res.ChangedBytes = extents.Total(clipped)
	}
	if !res.Tracked {
		log.Info("reading the whole snapshot, comparing with the parent", "reason", res.Reason)
	}
	src, err := ops.Open(ctx, volume.Ref{Snapshot: snap.ID})
	if err != nil {
		return nil, err
	}
	defer src.Close()
	m, err := r.Backup(ctx, src, opts)
	if err != nil {
		return nil, err
	}
	res.Manifest = m
	// The new base is safe in the repository: the previous one made here
	// has served its purpose.
	if made && parent != nil && parent.Tags[TagBase] == "true" {
		if old, err := cairn.ParseID(parent.Tags[TagSnapshot]); err == nil && old != snap.ID {
			if err := ops.DeleteSnapshot(ctx, old); err != nil && !errors.Is(err, cairn.ErrNotFound) {
				log.Warn("removing the previous backup base snapshot", "snapshot", old, "err", err)
			}
		}
	}
	return res, nil
}

// findParent returns the backup an incremental compares with: the one
// named in opts, or the latest of the same source.
func findParent(ctx context.Context, r *repo.Repository, opts repo.BackupOptions) (*format.Manifest, error) {
	if opts.NoParent {
		return nil, nil
	}
	if opts.Parent != nil {
		return r.Manifest(ctx, *opts.Parent)
	}
	return r.Latest(ctx, opts.SourceName)
}

func clip(list []cairn.Extent, size int64) []cairn.Extent {
	out := make([]cairn.Extent, 0, len(list))
	for _, e := range list {
		if e.Offset >= size {
			break
		}
		e.Length = min(e.Length, size-e.Offset)
		out = append(out, e)
	}
	return out
}
