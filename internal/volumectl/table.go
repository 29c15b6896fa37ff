package volumectl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/nbd"
	"github.com/cairnproject/cairn/internal/volume"
)

// Device is an open volume, read and written as a restore does. Its
// methods are safe for concurrent use; Close is called once, after every
// other call has returned, and the volume is in use until then.
type Device interface {
	nbd.Export
	Close() error
}

// ExportTable is the exports a data plane serves by name: attached
// volumes, read-write, under the names the control plane gives them (their
// catalog IDs). It is recorded in a file in the data directory, so a
// restarted data plane serves them again without being asked.
//
// Its methods are safe for concurrent use. A change is on disk when the
// method returns.
type ExportTable struct {
	path string
	e    *volume.Engine

	mu    sync.Mutex
	names map[string]cairn.ID // export name -> engine volume ID
}

// exportTableFile is the table's file in a data directory.
const exportTableFile = "exports.json"

// exportTableVersion is the version of the table's file format.
const exportTableVersion = 1

type exportTableDoc struct {
	Version int                 `json:"version"`
	Exports map[string]cairn.ID `json:"exports"`
}

// OpenExportTable reads the export table of the data directory dir, whose
// engine e is held by this process; a missing file is an empty table.
func OpenExportTable(dir string, e *volume.Engine) (*ExportTable, error) {
	t := &ExportTable{path: filepath.Join(dir, exportTableFile), e: e, names: map[string]cairn.ID{}}
	data, err := os.ReadFile(t.path)
	if errors.Is(err, fs.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("export table: %w", err)
	}
	names, err := parseExportTable(data)
	if err != nil {
		return nil, fmt.Errorf("export table %s: %w", t.path, err)
	}
	t.names = names
	return t, nil
}

// parseExportTable decodes the table's file.
func parseExportTable(data []byte) (map[string]cairn.ID, error) {
	var doc exportTableDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%v: %w", err, cairn.ErrCorrupt)
	}
	if doc.Version != exportTableVersion {
		return nil, fmt.Errorf("version %d, want %d: %w", doc.Version, exportTableVersion, cairn.ErrCorrupt)
	}
	names := map[string]cairn.ID{}
	for name, id := range doc.Exports {
		if err := checkExportName(name); err != nil {
			return nil, fmt.Errorf("%v: %w", err, cairn.ErrCorrupt)
		}
		if id.IsZero() {
			return nil, fmt.Errorf("export %q: no volume: %w", name, cairn.ErrCorrupt)
		}
		names[name] = id
	}
	return names, nil
}

// checkExportName refuses names an NBD client could not ask for (the
// protocol allows 4096 bytes of UTF-8) or that are empty.
func checkExportName(name string) error {
	if name == "" || len(name) > 4096 {
		return fmt.Errorf("export name of %d bytes: give 1 to 4096: %w", len(name), cairn.ErrInvalid)
	}
	return nil
}

// save writes the table; the caller holds t.mu.
func (t *ExportTable) save(names map[string]cairn.ID) error {
	data, err := json.Marshal(exportTableDoc{Version: exportTableVersion, Exports: names})
	if err != nil {
		return err
	}
	tmp := t.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("export table: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("export table: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("export table: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("export table: %w", err)
	}
	if err := os.Rename(tmp, t.path); err != nil {
		return fmt.Errorf("export table: %w", err)
	}
	d, err := os.Open(filepath.Dir(t.path))
	if err != nil {
		return fmt.Errorf("export table: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("export table: %w", err)
	}
	return nil
}

// Set exports volume id under name; a name already exported is pointed at
// id. The volume must exist.
func (t *ExportTable) Set(name string, id cairn.ID) error {
	if err := checkExportName(name); err != nil {
		return err
	}
	if _, err := t.e.Volume(id); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.names[name] == id {
		return nil
	}
	next := maps.Clone(t.names)
	next[name] = id
	if err := t.save(next); err != nil {
		return err
	}
	t.names = next
	return nil
}

// Delete stops exporting name to new connections (those open run on until
// their clients disconnect); a name not exported is no error.
func (t *ExportTable) Delete(name string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.names[name]; !ok {
		return nil
	}
	next := maps.Clone(t.names)
	delete(next, name)
	if err := t.save(next); err != nil {
		return err
	}
	t.names = next
	return nil
}

// All returns a copy of the table.
func (t *ExportTable) All() map[string]cairn.ID {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.names)
}

func (t *ExportTable) lookup(name string) (cairn.ID, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	id, ok := t.names[name]
	return id, ok
}

// Catalog is the NBD catalog of a data plane: the export table's names,
// and with All every volume and snapshot by ID or unique name as Exports
// offers them (for a data directory served on its own, not for one whose
// exports a control plane grants).
type Catalog struct {
	Table *ExportTable
	All   bool
}

var _ nbd.Catalog = Catalog{}

// Open implements nbd.Catalog.
func (c Catalog) Open(ctx context.Context, name string) (nbd.Export, func(), error) {
	if id, ok := c.Table.lookup(name); ok {
		dev, err := c.Table.e.OpenVolume(id)
		if err != nil {
			return nil, nil, fmt.Errorf("export %q: %w", name, err)
		}
		return deviceExport{dev}, func() { _ = dev.Close() }, nil
	}
	if c.All {
		return Exports{E: c.Table.e}.Open(ctx, name)
	}
	return nil, nil, fmt.Errorf("export %q: no attached volume has this name: %w", name, cairn.ErrNotFound)
}

// List implements nbd.Catalog.
func (c Catalog) List(ctx context.Context) ([]nbd.ExportInfo, error) {
	names := c.Table.All()
	out := make([]nbd.ExportInfo, 0, len(names))
	for _, name := range slices.Sorted(maps.Keys(names)) {
		out = append(out, nbd.ExportInfo{Name: name, Description: "volume " + name})
	}
	if c.All {
		all, err := Exports{E: c.Table.e}.List(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, all...)
	}
	return out, nil
}
