package volumectl

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/volume"
)

// How people name volumes and snapshots: the whole ID, a unique name, or
// a unique prefix of the ID of at least 4 characters. The commands and the
// NBD export names follow the same rule.

// ResolveVolume finds a volume by ID, unique ID prefix or unique name.
func ResolveVolume(ctx context.Context, ops Ops, ref string) (volume.VolumeInfo, error) {
	list, err := ops.Volumes(ctx)
	if err != nil {
		return volume.VolumeInfo{}, err
	}
	return pickOne("volume", ref, list, func(v volume.VolumeInfo) (cairn.ID, string) { return v.ID, v.Name })
}

// ResolveSnapshot finds a snapshot by ID, unique ID prefix or unique name.
func ResolveSnapshot(ctx context.Context, ops Ops, ref string) (volume.SnapshotInfo, error) {
	list, err := ops.Snapshots(ctx, cairn.ID{})
	if err != nil {
		return volume.SnapshotInfo{}, err
	}
	return pickOne("snapshot", ref, list, func(s volume.SnapshotInfo) (cairn.ID, string) { return s.ID, s.Name })
}

// pickOne finds ref in list: the whole ID, else a unique name, else a
// unique ID prefix of at least 4 characters.
func pickOne[T any](kind, ref string, list []T, key func(T) (cairn.ID, string)) (T, error) {
	var zero T
	var byName, byPrefix []T
	for _, x := range list {
		id, name := key(x)
		if id.String() == ref {
			return x, nil
		}
		if name == ref {
			byName = append(byName, x)
		}
		if len(ref) >= 4 && strings.HasPrefix(id.String(), ref) {
			byPrefix = append(byPrefix, x)
		}
	}
	switch {
	case len(byName) == 1:
		return byName[0], nil
	case len(byName) > 1:
		return zero, fmt.Errorf("%d %ss are named %q; use an ID: %w", len(byName), kind, ref, cairn.ErrInvalid)
	case len(byPrefix) == 1:
		return byPrefix[0], nil
	case len(byPrefix) > 1:
		return zero, fmt.Errorf("%q matches %d %ss; give more of the ID: %w", ref, len(byPrefix), kind, cairn.ErrInvalid)
	}
	return zero, fmt.Errorf("no %s %q: %w", kind, ref, cairn.ErrNotFound)
}

// ResolveRef finds a volume or a snapshot, and its size.
func ResolveRef(ctx context.Context, ops Ops, ref string) (volume.Ref, int64, error) {
	v, verr := ResolveVolume(ctx, ops, ref)
	if verr == nil {
		return volume.Ref{Volume: v.ID}, v.Size, nil
	}
	s, serr := ResolveSnapshot(ctx, ops, ref)
	if serr == nil {
		return volume.Ref{Snapshot: s.ID}, s.Size, nil
	}
	if errors.Is(verr, cairn.ErrNotFound) {
		return volume.Ref{}, 0, fmt.Errorf("no volume or snapshot %q: %w", ref, cairn.ErrNotFound)
	}
	return volume.Ref{}, 0, verr
}
