package service

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/nbd"
)

// Exports is the NBD catalog of the service: an attached volume is
// exported read-write under its catalog ID; nothing else is exported.
type Exports struct {
	eng Engine

	mu       sync.Mutex
	attached map[string]cairn.ID // catalog volume ID -> engine volume ID
}

var _ nbd.Catalog = (*Exports)(nil)

func newExports(eng Engine) *Exports {
	return &Exports{eng: eng, attached: map[string]cairn.ID{}}
}

func (x *Exports) add(id string, engine cairn.ID) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.attached[id] = engine
}

func (x *Exports) remove(id string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.attached, id)
}

// Open implements nbd.Catalog.
func (x *Exports) Open(ctx context.Context, name string) (nbd.Export, func(), error) {
	x.mu.Lock()
	eid, ok := x.attached[name]
	x.mu.Unlock()
	if !ok {
		return nil, nil, fmt.Errorf("export %q: no attached volume has this ID: %w", name, cairn.ErrNotFound)
	}
	dev, err := x.eng.OpenVolume(ctx, eid)
	if err != nil {
		return nil, nil, err
	}
	return dev, func() { _ = dev.Close() }, nil
}

// List implements nbd.Catalog.
func (x *Exports) List(context.Context) ([]nbd.ExportInfo, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]nbd.ExportInfo, 0, len(x.attached))
	for id := range x.attached {
		out = append(out, nbd.ExportInfo{Name: id, Description: "volume " + id})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
