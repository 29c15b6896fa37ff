package catalogtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

func volumeTypeOf(i int, public bool) cairn.VolumeType {
	return cairn.VolumeType{ID: cairn.NewUUID(), Name: fmt.Sprintf("type-%d ✓", i),
		Description: "a type, ünïcode", IsPublic: public, ExtraSpecs: metadataOf(i),
		CreatedAt: at(i), UpdatedAt: at(i + 1)}
}

// testVolumeTypes: the default type the schema makes; types' rows,
// unique IDs and names, lists by project, access rows; a type in use is
// not deleted.
func testVolumeTypes(t *testing.T, s catalog.Store) {
	p := addProjects(t, s, 2)
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		def, err := tx.VolumeType(ctx, cairn.DefaultVolumeTypeID)
		if err != nil {
			return err
		}
		if def.Name != cairn.DefaultVolumeTypeName || def.Description != cairn.DefaultVolumeTypeDescription ||
			!def.IsPublic || def.ExtraSpecs != nil || def.CreatedAt.IsZero() {
			t.Errorf("default type: %+v", def)
		}
		byName, err := tx.VolumeTypeByName(ctx, cairn.DefaultVolumeTypeName)
		wantEqual(t, "default type by name", byName, def)
		return err
	})

	pub, priv, other := volumeTypeOf(1, true), volumeTypeOf(2, false), volumeTypeOf(3, false)
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		for _, vt := range []cairn.VolumeType{pub, priv, other} {
			if err := tx.InsertVolumeType(ctx, vt); err != nil {
				return err
			}
		}
		return nil
	})
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := tx.VolumeType(ctx, priv.ID)
		wantEqual(t, "after insert", got, priv)
		wantErr(t, "get by ID", err, nil)
		got, err = tx.VolumeTypeByName(ctx, pub.Name)
		wantEqual(t, "by name", got, pub)
		wantErr(t, "get by name", err, nil)
		_, err = tx.VolumeType(ctx, cairn.NewUUID())
		wantErr(t, "missing ID", err, cairn.ErrNotFound)
		_, err = tx.VolumeTypeByName(ctx, strings.ToUpper(pub.Name))
		wantErr(t, "name in another case", err, cairn.ErrNotFound)

		// A taken ID or name fails, changes nothing, and leaves the
		// transaction usable.
		dupID := volumeTypeOf(4, true)
		dupID.ID = pub.ID
		wantErr(t, "duplicate ID", tx.InsertVolumeType(ctx, dupID), cairn.ErrExists)
		dupName := volumeTypeOf(5, true)
		dupName.Name = priv.Name
		wantErr(t, "duplicate name", tx.InsertVolumeType(ctx, dupName), cairn.ErrExists)
		_, err = tx.VolumeType(ctx, dupName.ID)
		wantErr(t, "after duplicate name", err, cairn.ErrNotFound)
		renamed := pub
		renamed.Name = other.Name
		wantErr(t, "rename to a taken name", tx.UpdateVolumeType(ctx, renamed), cairn.ErrExists)
		got, err = tx.VolumeType(ctx, pub.ID)
		wantEqual(t, "after a refused rename", got, pub)
		missing := volumeTypeOf(6, true)
		wantErr(t, "update missing", tx.UpdateVolumeType(ctx, missing), cairn.ErrNotFound)
		return err
	})

	changed := pub
	changed.Name, changed.Description, changed.IsPublic = "renamed", "", false
	changed.ExtraSpecs, changed.UpdatedAt = metadataOf(2), at(9)
	update(t, s, func(ctx context.Context, tx catalog.Tx) error { return tx.UpdateVolumeType(ctx, changed) })
	changed.IsPublic = true
	changed.ExtraSpecs = nil
	update(t, s, func(ctx context.Context, tx catalog.Tx) error { return tx.UpdateVolumeType(ctx, changed) })
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := tx.VolumeType(ctx, pub.ID)
		wantEqual(t, "after update", got, changed)
		return err
	})
	pub = changed

	// Access rows, and the lists they decide.
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		if err := tx.AddVolumeTypeProject(ctx, priv.ID, p[0]); err != nil {
			return err
		}
		// A project the catalog has not seen (a Keystone project
		// before its first call) may be given access.
		if err := tx.AddVolumeTypeProject(ctx, priv.ID, "keystone-project"); err != nil {
			return err
		}
		wantErr(t, "duplicate access", tx.AddVolumeTypeProject(ctx, priv.ID, p[0]), cairn.ErrExists)
		wantErr(t, "access to a missing type", tx.AddVolumeTypeProject(ctx, cairn.NewUUID(), p[0]), cairn.ErrNotFound)
		wantErr(t, "remove missing access", tx.RemoveVolumeTypeProject(ctx, priv.ID, p[1]), cairn.ErrNotFound)
		return nil
	})
	names := func(list []cairn.VolumeType) []string {
		return ids(list, func(vt cairn.VolumeType) string { return vt.Name })
	}
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := tx.VolumeTypeProjects(ctx, priv.ID)
		want := []string{p[0], "keystone-project"}
		slices.Sort(want)
		wantEqual(t, "projects", got, want)
		if err != nil {
			return err
		}
		none, err := tx.VolumeTypeProjects(ctx, cairn.NewUUID())
		wantEqual(t, "projects of a missing type", none, []string{})
		if err != nil {
			return err
		}
		all, err := tx.VolumeTypes(ctx, "")
		wantEqual(t, "every type", names(all), []string{cairn.DefaultVolumeTypeName, "renamed", priv.Name, other.Name})
		if err != nil {
			return err
		}
		mine, err := tx.VolumeTypes(ctx, p[0])
		wantEqual(t, "project 0's types", names(mine), []string{cairn.DefaultVolumeTypeName, "renamed", priv.Name})
		if err != nil {
			return err
		}
		theirs, err := tx.VolumeTypes(ctx, p[1])
		wantEqual(t, "project 1's types", names(theirs), []string{cairn.DefaultVolumeTypeName, "renamed"})
		return err
	})
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		return tx.RemoveVolumeTypeProject(ctx, priv.ID, "keystone-project")
	})

	// A volume records its type; a type in use is not deleted, unless
	// its volumes are deleted.
	v := fullVolume(p[0], 1)
	v.VolumeTypeID = priv.ID
	update(t, s, func(ctx context.Context, tx catalog.Tx) error { return tx.InsertVolume(ctx, v) })
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		got, err := tx.Volume(ctx, v.ID)
		wantEqual(t, "volume's type", got.VolumeTypeID, priv.ID)
		wantErr(t, "delete a type in use", tx.DeleteVolumeType(ctx, priv.ID), cairn.ErrConflict)
		if _, err := tx.VolumeType(ctx, priv.ID); err != nil {
			t.Errorf("type in use after a refused delete: %v", err)
		}
		v.Status = cairn.StatusDeleted
		if err := tx.UpdateVolume(ctx, v); err != nil {
			return err
		}
		return err
	})
	update(t, s, func(ctx context.Context, tx catalog.Tx) error {
		if err := tx.DeleteVolumeType(ctx, priv.ID); err != nil {
			return err
		}
		wantErr(t, "delete missing", tx.DeleteVolumeType(ctx, priv.ID), cairn.ErrNotFound)
		_, err := tx.VolumeType(ctx, priv.ID)
		wantErr(t, "get deleted", err, cairn.ErrNotFound)
		projects, err := tx.VolumeTypeProjects(ctx, priv.ID)
		wantEqual(t, "access rows of a deleted type", projects, []string{})
		// Its name is free again.
		again := volumeTypeOf(7, true)
		again.Name = priv.Name
		if err := tx.InsertVolumeType(ctx, again); err != nil {
			t.Errorf("reusing a deleted type's name: %v", err)
		}
		return err
	})
}

// testVolumeTypeInUseRace: transactions that each read a type and add a
// volume of it, and one that deletes the type, never leave a volume of a
// missing type: the delete sees the volumes, or the inserts see the type
// gone.
func testVolumeTypeInUseRace(t *testing.T, s catalog.Store) {
	const workers = 8
	p := addProjects(t, s, 1)
	vt := volumeTypeOf(1, true)
	update(t, s, func(ctx context.Context, tx catalog.Tx) error { return tx.InsertVolumeType(ctx, vt) })
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, workers+1)
	for i := range workers {
		wg.Go(func() {
			err := s.Update(ctx, func(tx catalog.Tx) error {
				if _, err := tx.VolumeType(ctx, vt.ID); err != nil {
					return err
				}
				v := fullVolume(p[0], i)
				v.Status, v.VolumeTypeID = cairn.StatusCreating, vt.ID
				return tx.InsertVolume(ctx, v)
			})
			if err != nil && !errors.Is(err, cairn.ErrNotFound) {
				errs <- err
			}
		})
	}
	wg.Go(func() {
		err := s.Update(ctx, func(tx catalog.Tx) error { return tx.DeleteVolumeType(ctx, vt.ID) })
		if err != nil && !errors.Is(err, cairn.ErrConflict) {
			errs <- err
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent transaction: %v", err)
	}
	view(t, s, func(ctx context.Context, tx catalog.Tx) error {
		_, err := tx.VolumeType(ctx, vt.ID)
		if errors.Is(err, cairn.ErrNotFound) {
			vols, err := tx.Volumes(ctx, catalog.Filter{})
			for _, v := range vols {
				if v.VolumeTypeID == vt.ID {
					t.Errorf("volume %s is of type %s, which was deleted", v.ID, vt.ID)
				}
			}
			return err
		}
		return err
	})
}
