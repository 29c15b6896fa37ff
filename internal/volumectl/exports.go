package volumectl

import (
	"context"
	"fmt"
	"strings"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/nbd"
	"github.com/cairnproject/cairn/internal/volume"
)

// Exports offers an engine's volumes (read-write) and snapshots
// (read-only) as NBD exports, named as ResolveRef finds them. Every
// connection opens its own Device; devices of one volume share their
// index and head, so a flush on any connection covers writes completed on
// all of them and multi-conn holds.
type Exports struct{ E *volume.Engine }

var _ nbd.Catalog = Exports{}

// Open implements nbd.Catalog.
func (x Exports) Open(ctx context.Context, name string) (nbd.Export, func(), error) {
	ref, err := x.resolve(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	var dev *volume.Device
	if ref.Snapshot.IsZero() {
		dev, err = x.E.OpenVolume(ref.Volume)
	} else {
		dev, err = x.E.OpenSnapshot(ref.Snapshot)
	}
	if err != nil {
		return nil, nil, err
	}
	return deviceExport{dev}, func() { _ = dev.Close() }, nil
}

func (x Exports) resolve(ctx context.Context, name string) (volume.Ref, error) {
	if name == "" {
		return volume.Ref{}, fmt.Errorf("the default export: name a volume or snapshot: %w", cairn.ErrNotFound)
	}
	ref, _, err := ResolveRef(ctx, Direct{E: x.E}, name)
	return ref, err
}

// List implements nbd.Catalog.
func (x Exports) List(context.Context) ([]nbd.ExportInfo, error) {
	var out []nbd.ExportInfo
	names := map[cairn.ID]string{}
	for _, v := range x.E.Volumes() {
		names[v.ID] = v.Name
		out = append(out, nbd.ExportInfo{Name: v.ID.String(), Description: describe("volume", v.Name, "")})
	}
	for _, s := range x.E.Snapshots(cairn.ID{}) {
		out = append(out, nbd.ExportInfo{Name: s.ID.String(),
			Description: describe("snapshot", s.Name, names[s.Volume]) + " (read-only)"})
	}
	return out, nil
}

func describe(kind, name, of string) string {
	var b strings.Builder
	b.WriteString(kind)
	if name != "" {
		b.WriteString(" " + name)
	}
	if of != "" {
		b.WriteString(" of " + of)
	}
	return b.String()
}

// deviceExport adapts a volume.Device to nbd.Export and Device.
type deviceExport struct{ *volume.Device }

func (d deviceExport) BlockStatus(ctx context.Context, off, n int64) ([]nbd.Extent, error) {
	list, err := d.Device.BlockStatus(ctx, off, n)
	if err != nil {
		return nil, err
	}
	out := make([]nbd.Extent, len(list))
	for i, e := range list {
		out[i] = nbd.Extent{Length: e.Length, Hole: e.Hole, Zero: e.Zero}
	}
	return out, nil
}

// DeviceExport adapts an open volume device to an NBD export, for other
// catalogs of exports (the service's attached volumes).
func DeviceExport(dev *volume.Device) nbd.Export { return deviceExport{dev} }
