package volume

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cairnproject/cairn"
)

// state is what the engine persists in engine.json, replaced atomically
// on every change of volumes, snapshots or layers.
type state struct {
	Version   int                       `json:"version"`
	NextLayer uint64                    `json:"next_layer"`
	Volumes   map[cairn.ID]*volumeRec   `json:"volumes"`
	Snapshots map[cairn.ID]*snapshotRec `json:"snapshots"`
	Layers    map[uint64]*layerRec      `json:"layers"`
}

type volumeRec struct {
	ID      cairn.ID  `json:"id"`
	Name    string    `json:"name"`
	Size    int64     `json:"size"`
	Head    uint64    `json:"head"`
	Created time.Time `json:"created"`
	// Source is the snapshot the volume was cloned from, if any.
	Source *cairn.ID `json:"source,omitempty"`
}

type snapshotRec struct {
	ID      cairn.ID  `json:"id"`
	Volume  cairn.ID  `json:"volume"`
	Name    string    `json:"name"`
	Layer   uint64    `json:"layer"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
}

type layerRec struct {
	ID     uint64 `json:"id"`
	Parent uint64 `json:"parent,omitempty"` // 0: none
	Size   int64  `json:"size"`
	Frozen bool   `json:"frozen,omitempty"`
	// Hidden layers belong to deleted snapshots that other layers still
	// build on; they go when at most one layer builds on them.
	Hidden bool `json:"hidden,omitempty"`
	// Uncertain: the layer's presence was rebuilt after damage and may
	// miss pages; changed-extent queries across it say they cannot tell.
	Uncertain bool `json:"uncertain,omitempty"`
}

const stateVersion = 1

func loadState(dir string) (*state, error) {
	data, err := os.ReadFile(filepath.Join(dir, "engine.json"))
	if os.IsNotExist(err) {
		return &state{Version: stateVersion, NextLayer: 1, Volumes: map[cairn.ID]*volumeRec{},
			Snapshots: map[cairn.ID]*snapshotRec{}, Layers: map[uint64]*layerRec{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading engine state: %w", err)
	}
	var s state
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("engine state: %v: %w", err, cairn.ErrCorrupt)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("engine state version %d: %w", s.Version, cairn.ErrUnsupported)
	}
	if s.Volumes == nil {
		s.Volumes = map[cairn.ID]*volumeRec{}
	}
	if s.Snapshots == nil {
		s.Snapshots = map[cairn.ID]*snapshotRec{}
	}
	if s.Layers == nil {
		s.Layers = map[uint64]*layerRec{}
	}
	for id, l := range s.Layers {
		if l.ID != id || l.Parent == id {
			return nil, fmt.Errorf("engine state: bad layer %d: %w", id, cairn.ErrCorrupt)
		}
	}
	return &s, nil
}

func (s *state) save(dir string) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, "engine.json"), data); err != nil {
		return fmt.Errorf("saving engine state: %w", err)
	}
	return nil
}

// path returns the layers from the root to id.
func (s *state) path(id uint64) ([]uint64, error) {
	var rev []uint64
	for cur := id; cur != 0; {
		l, ok := s.Layers[cur]
		if !ok {
			return nil, fmt.Errorf("layer %d missing from the engine state: %w", cur, cairn.ErrCorrupt)
		}
		rev = append(rev, cur)
		if len(rev) > maxDepth {
			return nil, fmt.Errorf("layer %d: chain too deep or cyclic: %w", id, cairn.ErrCorrupt)
		}
		cur = l.Parent
	}
	out := make([]uint64, len(rev))
	for i, id := range rev {
		out[len(rev)-1-i] = id
	}
	return out, nil
}

// children returns the layers built directly on id.
func (s *state) children(id uint64) []uint64 {
	var out []uint64
	for _, l := range s.Layers {
		if l.Parent == id {
			out = append(out, l.ID)
		}
	}
	return out
}
