package service_test

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/testenv"
)

var typeAdmin = service.Caller{ProjectID: "admin", Admin: true}

// TestVolumeTypeRules: what the type calls refuse, with which sentinel,
// and that a refused call changes nothing.
func TestVolumeTypeRules(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	gold := must[cairn.VolumeType](t)(r.svc.CreateVolumeType(ctx, typeAdmin, service.VolumeTypeCreate{
		Name: "gold", IsPublic: true, ExtraSpecs: map[string]string{"a": "1"}}))
	if len(r.eventsOf("volume_type.create")) != 1 {
		t.Errorf("create events: %v", r.eventsOf("volume_type.create"))
	}
	str := func(s string) *string { return &s }
	no := false
	tooMany := map[string]string{}
	for i := range service.MaxExtraSpecs {
		tooMany[fmt.Sprintf("k%d", i)] = "v" // one more than room for, beside "a"
	}
	cases := []struct {
		name string
		call func() error
		err  error
		says string
	}{
		{"member creates", func() error {
			_, err := r.svc.CreateVolumeType(ctx, caller, service.VolumeTypeCreate{Name: "x"})
			return err
		}, cairn.ErrForbidden, "for admins"},
		{"empty name", func() error {
			_, err := r.svc.CreateVolumeType(ctx, typeAdmin, service.VolumeTypeCreate{Name: "\t "})
			return err
		}, cairn.ErrInvalid, "empty"},
		{"not UTF-8", func() error {
			_, err := r.svc.CreateVolumeType(ctx, typeAdmin, service.VolumeTypeCreate{Name: "\xff"})
			return err
		}, cairn.ErrInvalid, "UTF-8"},
		{"taken name", func() error {
			_, err := r.svc.CreateVolumeType(ctx, typeAdmin, service.VolumeTypeCreate{Name: "gold"})
			return err
		}, cairn.ErrExists, "gold"},
		{"bad key", func() error {
			_, err := r.svc.CreateVolumeType(ctx, typeAdmin, service.VolumeTypeCreate{Name: "x", ExtraSpecs: map[string]string{"ü": "v"}})
			return err
		}, cairn.ErrInvalid, "not allowed"},
		{"long key", func() error {
			_, err := r.svc.CreateVolumeType(ctx, typeAdmin, service.VolumeTypeCreate{Name: "x", ExtraSpecs: map[string]string{strings.Repeat("k", 256): "v"}})
			return err
		}, cairn.ErrInvalid, "256 characters"},
		{"too many specs", func() error {
			return r.svc.SetVolumeTypeExtraSpecs(ctx, typeAdmin, gold.ID, tooMany)
		}, cairn.ErrInvalid, "at most"},
		{"member sets specs", func() error {
			return r.svc.SetVolumeTypeExtraSpecs(ctx, caller, gold.ID, map[string]string{"b": "2"})
		}, cairn.ErrForbidden, "for admins"},
		{"delete a missing spec", func() error {
			return r.svc.DeleteVolumeTypeExtraSpec(ctx, typeAdmin, gold.ID, "b")
		}, cairn.ErrNotFound, `"b"`},
		{"update nothing", func() error {
			_, err := r.svc.UpdateVolumeType(ctx, typeAdmin, gold.ID, service.VolumeTypeUpdate{})
			return err
		}, cairn.ErrInvalid, "nothing to update"},
		{"rename the default", func() error {
			_, err := r.svc.UpdateVolumeType(ctx, typeAdmin, cairn.DefaultVolumeTypeID, service.VolumeTypeUpdate{Name: str("x")})
			return err
		}, cairn.ErrInvalid, "keeps its name"},
		{"hide the default", func() error {
			_, err := r.svc.UpdateVolumeType(ctx, typeAdmin, cairn.DefaultVolumeTypeID, service.VolumeTypeUpdate{IsPublic: &no})
			return err
		}, cairn.ErrInvalid, "stays public"},
		{"delete the default", func() error {
			return r.svc.DeleteVolumeType(ctx, typeAdmin, cairn.DefaultVolumeTypeID)
		}, cairn.ErrInvalid, "default"},
		{"member deletes", func() error { return r.svc.DeleteVolumeType(ctx, caller, gold.ID) }, cairn.ErrForbidden, "for admins"},
		{"access to a public type", func() error {
			return r.svc.AddVolumeTypeAccess(ctx, typeAdmin, gold.ID, project)
		}, cairn.ErrInvalid, "public"},
		{"member lists access", func() error {
			_, err := r.svc.VolumeTypeAccess(ctx, caller, gold.ID)
			return err
		}, cairn.ErrForbidden, "for admins"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := must[[]cairn.VolumeType](t)(r.svc.VolumeTypes(ctx, typeAdmin, nil))
			err := c.call()
			if !errors.Is(err, c.err) || !strings.Contains(fmt.Sprint(err), c.says) {
				t.Errorf("error %v, want %v saying %q", err, c.err, c.says)
			}
			if after := must[[]cairn.VolumeType](t)(r.svc.VolumeTypes(ctx, typeAdmin, nil)); !reflect.DeepEqual(before, after) {
				t.Errorf("refused, but the types changed:\n%v\n%v", before, after)
			}
		})
	}

	// Up to MaxExtraSpecs, counting what the type has.
	delete(tooMany, "k0")
	if err := r.svc.SetVolumeTypeExtraSpecs(ctx, typeAdmin, gold.ID, tooMany); err != nil {
		t.Fatal(err)
	}
	got := must[cairn.VolumeType](t)(r.svc.VolumeType(ctx, typeAdmin, gold.ID))
	want := maps.Clone(tooMany)
	want["a"] = "1"
	if !reflect.DeepEqual(got.ExtraSpecs, want) {
		t.Errorf("extra specs: %d, want %d", len(got.ExtraSpecs), len(want))
	}
}

// TestVolumeTypeOfNewVolumes: a new volume records the type it names (by
// ID or name, one its caller may use), its source's, or the default;
// a type is deleted only when no volume is of it.
func TestVolumeTypeOfNewVolumes(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	gold := must[cairn.VolumeType](t)(r.svc.CreateVolumeType(ctx, typeAdmin, service.VolumeTypeCreate{Name: "gold", IsPublic: true}))
	secret := must[cairn.VolumeType](t)(r.svc.CreateVolumeType(ctx, typeAdmin, service.VolumeTypeCreate{Name: "secret"}))

	create := func(req service.VolumeCreate) cairn.Volume {
		t.Helper()
		v := must[cairn.Volume](t)(r.svc.CreateVolume(ctx, caller, req))
		r.done(v.ID)
		return v
	}
	byName := create(service.VolumeCreate{Size: 1, VolumeType: "gold"})
	byID := create(service.VolumeCreate{Size: 1, VolumeType: gold.ID})
	plain := create(service.VolumeCreate{Size: 1})
	snap := must[cairn.Snapshot](t)(r.svc.CreateSnapshot(ctx, caller, service.SnapshotCreate{VolumeID: byName.ID}))
	r.done(snap.ID)
	fromSnap := create(service.VolumeCreate{SnapshotID: snap.ID})
	clone := create(service.VolumeCreate{SourceVolID: byID.ID})
	otherType := create(service.VolumeCreate{SourceVolID: byID.ID, VolumeType: cairn.DefaultVolumeTypeName})
	for _, c := range []struct {
		name string
		v    cairn.Volume
		want string
	}{
		{"by name", byName, gold.ID}, {"by ID", byID, gold.ID}, {"plain", plain, cairn.DefaultVolumeTypeID},
		{"from a snapshot", fromSnap, gold.ID}, {"clone", clone, gold.ID}, {"clone of another type", otherType, cairn.DefaultVolumeTypeID},
	} {
		if got := r.volume(c.v.ID).VolumeTypeID; got != c.want || c.v.VolumeTypeID != c.want {
			t.Errorf("%s: type %s (answered %s), want %s", c.name, got, c.v.VolumeTypeID, c.want)
		}
	}

	// A private type without access, or none, is not found.
	for _, ref := range []string{secret.ID, "secret", "nope", cairn.NewUUID()} {
		if _, err := r.svc.CreateVolume(ctx, caller, service.VolumeCreate{Size: 1, VolumeType: ref}); !errors.Is(err, cairn.ErrNotFound) {
			t.Errorf("type %q: %v, want ErrNotFound", ref, err)
		}
	}
	if err := r.svc.AddVolumeTypeAccess(ctx, typeAdmin, secret.ID, project); err != nil {
		t.Fatal(err)
	}
	private := create(service.VolumeCreate{Size: 1, VolumeType: "secret"})
	if private.VolumeTypeID != secret.ID {
		t.Errorf("private type: %s", private.VolumeTypeID)
	}

	// In use, gold is not deleted; once its volumes are, it is.
	if err := r.svc.DeleteVolumeType(ctx, typeAdmin, gold.ID); !errors.Is(err, cairn.ErrInvalid) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("delete a type in use: %v", err)
	}
	for _, v := range []cairn.Volume{byName, byID, fromSnap, clone} {
		if v.ID == byName.ID {
			if err := r.svc.DeleteSnapshot(ctx, caller, snap.ID); err != nil {
				t.Fatal(err)
			}
			r.done(snap.ID)
		}
		if err := r.svc.DeleteVolume(ctx, caller, v.ID); err != nil {
			t.Fatal(err)
		}
		r.done(v.ID)
	}
	if err := r.svc.DeleteVolumeType(ctx, typeAdmin, gold.ID); err != nil {
		t.Fatal(err)
	}
}

// TestVolumeTypeNames: the names volume answers show come from a cache
// that this process's changes update at once, and another's (a second
// service on the same catalog) within the cache's 5 seconds.
func TestVolumeTypeNames(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	clock := testenv.NewClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	other := service.New(service.Config{Catalog: r.cat, Engine: r.eng, OpenRepo: r.open, Now: clock.Now})

	gold := must[cairn.VolumeType](t)(r.svc.CreateVolumeType(ctx, typeAdmin, service.VolumeTypeCreate{Name: "gold", IsPublic: true}))
	for _, svc := range []*service.Service{r.svc, other} {
		if got := svc.VolumeTypeName(ctx, gold.ID); got != "gold" {
			t.Errorf("name: %q", got)
		}
		if got := svc.VolumeTypeName(ctx, ""); got != cairn.DefaultVolumeTypeName {
			t.Errorf("name of \"\": %q", got)
		}
	}
	name := "platinum"
	if _, err := r.svc.UpdateVolumeType(ctx, typeAdmin, gold.ID, service.VolumeTypeUpdate{Name: &name}); err != nil {
		t.Fatal(err)
	}
	if got := r.svc.VolumeTypeName(ctx, gold.ID); got != "platinum" {
		t.Errorf("renamed here: %q", got)
	}
	if got := other.VolumeTypeName(ctx, gold.ID); got != "gold" {
		t.Errorf("renamed elsewhere, at once: %q, want the cached gold", got)
	}
	clock.Add(5 * time.Second)
	if got := other.VolumeTypeName(ctx, gold.ID); got != "platinum" {
		t.Errorf("renamed elsewhere, 5 s later: %q", got)
	}
	// A type made elsewhere is found when asked for, cache or not.
	silver := must[cairn.VolumeType](t)(r.svc.CreateVolumeType(ctx, typeAdmin, service.VolumeTypeCreate{Name: "silver", IsPublic: true}))
	if got := other.VolumeTypeName(ctx, silver.ID); got != "silver" {
		t.Errorf("new type elsewhere: %q", got)
	}
}
