package volumectl_test

import (
	"errors"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/volume"
	"github.com/cairnproject/cairn/internal/volumectl"
)

func TestResolveRef(t *testing.T) {
	ctx := t.Context()
	e := openEngine(t)
	ops := volumectl.Direct{E: e}
	a, err := ops.CreateVolume(ctx, "db", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ops.CreateVolume(ctx, "twin", 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.CreateVolume(ctx, "twin", 1<<20); err != nil {
		t.Fatal(err)
	}
	s, err := ops.CreateSnapshot(ctx, a.ID, "nightly")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ref  string
		want volume.Ref
		err  error
	}{
		{a.ID.String(), volume.Ref{Volume: a.ID}, nil},
		{"db", volume.Ref{Volume: a.ID}, nil},
		{a.ID.String()[:8], volume.Ref{Volume: a.ID}, nil},
		{"nightly", volume.Ref{Snapshot: s.ID}, nil},
		{s.ID.String(), volume.Ref{Snapshot: s.ID}, nil},
		{"twin", volume.Ref{}, cairn.ErrInvalid},
		{"nosuch", volume.Ref{}, cairn.ErrNotFound},
		{"abc", volume.Ref{}, cairn.ErrNotFound}, // prefixes need 4 characters
	} {
		got, _, err := volumectl.ResolveRef(ctx, ops, tc.ref)
		if !errors.Is(err, tc.err) || (tc.err == nil && got != tc.want) {
			t.Errorf("%q: got %+v, %v; want %+v, %v", tc.ref, got, err, tc.want, tc.err)
		}
	}
}
