// Package volumectl gives the volume commands one interface, Ops, over
// two implementations: the engine opened directly (Direct) when the data
// directory is free, and the local control socket of the process serving
// it (Client, served by Handler). A data directory belongs to one process;
// every other command goes through it.
package volumectl

import (
	"context"
	"fmt"
	"io"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/volume"
)

// Ops is what the volume commands do with a data directory.
type Ops interface {
	CreateVolume(ctx context.Context, name string, size int64) (volume.VolumeInfo, error)
	CloneVolume(ctx context.Context, name string, snapshot cairn.ID) (volume.VolumeInfo, error)
	Volumes(ctx context.Context) ([]volume.VolumeInfo, error)
	Volume(ctx context.Context, id cairn.ID) (volume.VolumeInfo, error)
	DeleteVolume(ctx context.Context, id cairn.ID) error
	ExtendVolume(ctx context.Context, id cairn.ID, size int64) error
	RevertVolume(ctx context.Context, volume, snapshot cairn.ID) error
	CreateSnapshot(ctx context.Context, volume cairn.ID, name string) (volume.SnapshotInfo, error)
	Snapshots(ctx context.Context, volume cairn.ID) ([]volume.SnapshotInfo, error)
	Snapshot(ctx context.Context, id cairn.ID) (volume.SnapshotInfo, error)
	DeleteSnapshot(ctx context.Context, id cairn.ID) error
	// ChangedExtents: see volume.Engine.ChangedExtents.
	ChangedExtents(ctx context.Context, from *volume.Ref, to volume.Ref) ([]cairn.Extent, bool, error)
	// Open returns the content of a volume or snapshot for reading, as a
	// backup does.
	Open(ctx context.Context, r volume.Ref) (Reader, error)
	// OpenDevice opens a volume for reading and writing, as a restore
	// does; it is in use until the device is closed.
	OpenDevice(ctx context.Context, id cairn.ID) (Device, error)
	// Export serves volume id over NBD under name, read-write, until
	// Unexport: an attached volume. Exports belong to the process serving
	// the data directory and outlive the caller; a restarted server
	// serves them again.
	Export(ctx context.Context, name string, id cairn.ID) error
	// Unexport stops serving name to new connections; a name not exported
	// is no error.
	Unexport(ctx context.Context, name string) error
	// Exported lists the exports by name.
	Exported(ctx context.Context) (map[string]cairn.ID, error)
}

// Reader reads a volume or snapshot.
type Reader interface {
	io.ReaderAt
	io.Closer
	Size() int64
	Allocated() ([]cairn.Extent, bool, error)
}

// Direct runs Ops on an engine this process holds. X is its export table;
// without one, Export and Unexport fail (nothing here serves NBD).
type Direct struct {
	E *volume.Engine
	X *ExportTable
}

var _ Ops = Direct{}

func (d Direct) CreateVolume(ctx context.Context, name string, size int64) (volume.VolumeInfo, error) {
	return d.E.CreateVolume(ctx, name, size)
}

func (d Direct) CloneVolume(ctx context.Context, name string, snapshot cairn.ID) (volume.VolumeInfo, error) {
	return d.E.CloneVolume(ctx, name, snapshot)
}

func (d Direct) Volumes(context.Context) ([]volume.VolumeInfo, error) { return d.E.Volumes(), nil }

func (d Direct) Volume(_ context.Context, id cairn.ID) (volume.VolumeInfo, error) {
	return d.E.Volume(id)
}

func (d Direct) DeleteVolume(ctx context.Context, id cairn.ID) error {
	return d.E.DeleteVolume(ctx, id)
}

func (d Direct) ExtendVolume(ctx context.Context, id cairn.ID, size int64) error {
	return d.E.ExtendVolume(ctx, id, size)
}

func (d Direct) RevertVolume(ctx context.Context, v, s cairn.ID) error {
	return d.E.RevertVolume(ctx, v, s)
}

func (d Direct) CreateSnapshot(ctx context.Context, v cairn.ID, name string) (volume.SnapshotInfo, error) {
	return d.E.CreateSnapshot(ctx, v, name)
}

func (d Direct) Snapshots(_ context.Context, v cairn.ID) ([]volume.SnapshotInfo, error) {
	return d.E.Snapshots(v), nil
}

func (d Direct) Snapshot(_ context.Context, id cairn.ID) (volume.SnapshotInfo, error) {
	return d.E.Snapshot(id)
}

func (d Direct) DeleteSnapshot(ctx context.Context, id cairn.ID) error {
	return d.E.DeleteSnapshot(ctx, id)
}

func (d Direct) ChangedExtents(ctx context.Context, from *volume.Ref, to volume.Ref) ([]cairn.Extent, bool, error) {
	return d.E.ChangedExtents(ctx, from, to)
}

func (d Direct) Open(_ context.Context, r volume.Ref) (Reader, error) {
	var dev *volume.Device
	var err error
	if r.Snapshot.IsZero() {
		dev, err = d.E.OpenVolume(r.Volume)
	} else {
		dev, err = d.E.OpenSnapshot(r.Snapshot)
	}
	if err != nil {
		return nil, err
	}
	return deviceReader{dev.Source(), dev}, nil
}

type deviceReader struct {
	*volume.Source
	dev *volume.Device
}

func (r deviceReader) Close() error { return r.dev.Close() }

func (d Direct) OpenDevice(_ context.Context, id cairn.ID) (Device, error) {
	dev, err := d.E.OpenVolume(id)
	if err != nil {
		return nil, err
	}
	return streamDevice{deviceExport{dev}}, nil
}

// streamDevice is a device opened to be written whole, as a restore
// writes a volume: each write also starts its writeback, so the disk
// works while the writer does, where otherwise the restore's final flush
// would write everything while it waited (see volume.Device's
// StartWriteback). NBD exports write through the engine as the page
// cache pleases.
type streamDevice struct{ deviceExport }

func (d streamDevice) WriteAt(ctx context.Context, p []byte, off int64) error {
	if err := d.Device.WriteAt(ctx, p, off); err != nil {
		return err
	}
	// Advice only: a failure to start the writeback changes no result,
	// and a failure to write back is reported by the next flush.
	_ = d.Device.StartWriteback(off, int64(len(p)))
	return nil
}

// errNoExports is the error of export calls on a Direct without a table.
var errNoExports = fmt.Errorf("this process serves no NBD exports: %w", cairn.ErrUnavailable)

func (d Direct) Export(_ context.Context, name string, id cairn.ID) error {
	if d.X == nil {
		return errNoExports
	}
	return d.X.Set(name, id)
}

func (d Direct) Unexport(_ context.Context, name string) error {
	if d.X == nil {
		return errNoExports
	}
	return d.X.Delete(name)
}

func (d Direct) Exported(context.Context) (map[string]cairn.ID, error) {
	if d.X == nil {
		return map[string]cairn.ID{}, nil
	}
	return d.X.All(), nil
}
