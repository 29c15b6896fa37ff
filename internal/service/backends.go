package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/nbd"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/volbackup"
	"github.com/cairnproject/cairn/internal/volume"
	"github.com/cairnproject/cairn/internal/volumectl"
)

// Engine is what the service does with the volume engine. The service
// names engine volumes and snapshots after catalog IDs and finds them
// by listing, so an operation cut short is found again, not repeated.
// NewEngine is the engine of this process; servicetest has a fake, and
// the suite both pass.
//
// Concurrency: every method is safe for concurrent use, by any number of
// tasks and NBD connections at once; the engine orders changes to its
// own state. Errors wrap cairn.ErrNotFound for a missing volume or
// snapshot, cairn.ErrConflict for one in use (open, or a volume with
// snapshots being deleted) and cairn.ErrInvalid for a bad size.
type Engine interface {
	// Volumes lists every volume, oldest first.
	Volumes(ctx context.Context) ([]volume.VolumeInfo, error)
	// Snapshots lists every snapshot of every volume, oldest first.
	Snapshots(ctx context.Context) ([]volume.SnapshotInfo, error)
	// CreateVolume makes an empty (all zeros) volume of size bytes, a
	// multiple of 4096.
	CreateVolume(ctx context.Context, name string, size int64) (volume.VolumeInfo, error)
	// CloneVolume makes a volume holding a snapshot's data, of its size.
	CloneVolume(ctx context.Context, name string, snapshot cairn.ID) (volume.VolumeInfo, error)
	// ExtendVolume grows a volume to size bytes; what is added reads as
	// zeros.
	ExtendVolume(ctx context.Context, id cairn.ID, size int64) error
	// DeleteVolume removes a volume that has no snapshots and is not open.
	DeleteVolume(ctx context.Context, id cairn.ID) error
	// CreateSnapshot freezes a volume's data: every write completed
	// before the call is in it, none after.
	CreateSnapshot(ctx context.Context, volume cairn.ID, name string) (volume.SnapshotInfo, error)
	// DeleteSnapshot removes a snapshot that is not open. Clones made
	// from it keep their data.
	DeleteSnapshot(ctx context.Context, id cairn.ID) error
	// RevertVolume makes a volume's data and size those of one of its
	// own snapshots, at once; the volume must not be open. Its snapshots
	// stay as they are.
	RevertVolume(ctx context.Context, volume, snapshot cairn.ID) error
	// OpenVolume opens a volume for reading and writing, as a restore
	// and the NBD clients of an attached volume do. The volume is in use
	// until the device is closed.
	OpenVolume(ctx context.Context, id cairn.ID) (Device, error)
	// Export serves volume id over NBD under name, read-write, until
	// Unexport; exporting a name again points it at id. Exports belong to
	// the data plane: they outlive this process and are served again when
	// the data plane restarts.
	Export(ctx context.Context, name string, id cairn.ID) error
	// Unexport stops serving name to new connections (open ones run on);
	// a name not exported is no error.
	Unexport(ctx context.Context, name string) error
	// Exported lists the exports, name to volume.
	Exported(ctx context.Context) (map[string]cairn.ID, error)
}

// Device is an open volume. Its methods (those of nbd.Export) are safe
// for concurrent use, and devices of one volume see each other's
// completed writes; Flush makes every write completed before it durable.
// Close is called once, after every other call has returned.
type Device interface {
	nbd.Export
	Close() error
}

// Repository is what the service does with the repository of one
// container. It is bound to the engine whose snapshots it backs up.
// NewRepository is the real one; servicetest has a fake, and the suite
// both pass.
//
// Concurrency: every method but Close is safe for concurrent use:
// backups, restores, forgets and garbage collections of one repository
// run at once (the repository's protocol keeps a collection from taking
// what a running backup uses). Close is called once, when no other call
// is running or will be made. A missing backup is an error wrapping
// cairn.ErrNotFound.
type Repository interface {
	// Backups lists the repository's backups; those whose manifest
	// cannot be read are in Damaged.
	Backups(ctx context.Context) (*repo.BackupList, error)
	// Manifest reads one backup's manifest.
	Manifest(ctx context.Context, id cairn.ID) (*format.Manifest, error)
	// BackupSnapshot backs up an engine snapshot; opts are those of a
	// repository backup (tags, data time, parent, progress). With a
	// parent whose snapshot still exists, only what changed since is
	// read. The manifest is written last: a backup is in Backups only
	// once complete.
	BackupSnapshot(ctx context.Context, snapshot cairn.ID, opts repo.BackupOptions) (*volbackup.Result, error)
	// Restore writes backup m into t.
	Restore(ctx context.Context, m *format.Manifest, t repo.Target, p *repo.Progress) (repo.RestoreStats, error)
	// BackupStream backs up what rd yields, as a stream backup.
	BackupStream(ctx context.Context, rd io.Reader, opts repo.StreamOptions) (*format.Manifest, error)
	// RestoreStream writes stream backup m to w and checks its hash.
	RestoreStream(ctx context.Context, m *format.Manifest, w io.Writer, p *repo.Progress) (repo.RestoreStats, error)
	// Forget removes backups (their data stays until GC).
	Forget(ctx context.Context, ids []cairn.ID) error
	// GC frees what no backup uses.
	GC(ctx context.Context, opts repo.GCOptions) (repo.GCStats, error)
	// VerifyBackup reads back backup m's chunks (all, or a share) and
	// reports those damaged or missing; an error means it could not run.
	VerifyBackup(ctx context.Context, m *format.Manifest, opts repo.VerifyOptions) (repo.VerifyReport, error)

	// Log archives (see repo): an archive's description, its pieces
	// listed in order, read and written.
	ArchiveInfo(ctx context.Context, id cairn.ID) (*format.ArchiveInfo, error)
	PutArchiveInfo(ctx context.Context, a format.ArchiveInfo) error
	LogPieces(ctx context.Context, id cairn.ID) (pieces []repo.LogRef, odd []string, err error)
	ReadLogPiece(ctx context.Context, p repo.LogRef) (format.LogPiece, []byte, error)
	PutLogPiece(ctx context.Context, h format.LogPiece, data []byte) (int, error)
	DeleteLogPieces(ctx context.Context, pieces []repo.LogRef) error

	// Close releases the repository (connections, caches).
	Close() error
}

// RepoOpener opens (creating it when missing) the repository that holds
// a container's backups. It is called by one goroutine at a time per
// container, and for different containers at once.
type RepoOpener func(ctx context.Context, container string) (Repository, error)

// NewEngine is the Engine of a data plane: volumectl.Direct for an
// engine of this process, a volumectl.Client for the process serving the
// data directory (cairn volume serve).
func NewEngine(ops volumectl.Ops) Engine { return opsEngine{ops} }

// opsEngine is an Engine over volumectl.Ops; what the two name alike is
// the same call.
type opsEngine struct{ volumectl.Ops }

func (o opsEngine) Snapshots(ctx context.Context) ([]volume.SnapshotInfo, error) {
	return o.Ops.Snapshots(ctx, cairn.ID{})
}

func (o opsEngine) OpenVolume(ctx context.Context, id cairn.ID) (Device, error) {
	return o.Ops.OpenDevice(ctx, id)
}

// NewRepository is the Repository of r, whose volume backups read the
// engine through ops (volumectl.Direct for an engine of this process).
func NewRepository(r *repo.Repository, ops volumectl.Ops, log *slog.Logger) Repository {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &volumeRepository{Repository: r, ops: ops, log: log}
}

// Repositories is the RepoOpener of the repositories open returns, as
// NewRepository makes them.
func Repositories(open func(ctx context.Context, container string) (*repo.Repository, error), ops volumectl.Ops, log *slog.Logger) RepoOpener {
	return func(ctx context.Context, container string) (Repository, error) {
		r, err := open(ctx, container)
		if err != nil {
			return nil, err
		}
		return NewRepository(r, ops, log), nil
	}
}

// volumeRepository is a repository and the engine it backs up.
type volumeRepository struct {
	*repo.Repository
	ops volumectl.Ops
	log *slog.Logger
}

func (v *volumeRepository) BackupSnapshot(ctx context.Context, snapshot cairn.ID, opts repo.BackupOptions) (*volbackup.Result, error) {
	return volbackup.Backup(ctx, v.Repository, v.ops, volbackup.Request{Snapshot: snapshot, Options: opts, Logger: v.log})
}

// Close closes the repository and the store it owns.
func (v *volumeRepository) Close() error {
	if err := v.Repository.Close(); err != nil {
		return fmt.Errorf("close repository: %w", err)
	}
	return nil
}
