package service

import (
	"errors"
	"reflect"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

func TestListQueryFilter(t *testing.T) {
	member := Caller{ProjectID: "p"}
	admin := Caller{ProjectID: "adm", Admin: true}
	cases := []struct {
		name string
		c    Caller
		coll Collection
		q    ListQuery
		want catalog.Filter
		err  error
	}{
		{"defaults", member, VolumesCollection, ListQuery{},
			catalog.Filter{ProjectID: "p", Limit: DefaultLimit}, nil},
		{"everything", member, BackupsCollection,
			ListQuery{Limit: MaxLimit, Marker: "m", Sort: []SortKey{{"data_timestamp", false}, {"name", true}},
				Name: "n", Status: cairn.StatusAvailable, VolumeID: "v", SnapshotID: "s"},
			catalog.Filter{ProjectID: "p", Limit: MaxLimit, Marker: "m", Name: "n", Status: cairn.StatusAvailable,
				VolumeID: "v", SnapshotID: "s", Sort: []catalog.SortKey{{Key: "data_timestamp"}, {Key: "name", Desc: true}}}, nil},
		{"snapshots of a volume", member, SnapshotsCollection, ListQuery{Limit: 1, VolumeID: "v"},
			catalog.Filter{ProjectID: "p", Limit: 1, VolumeID: "v"}, nil},
		{"an admin's own project", admin, VolumesCollection, ListQuery{},
			catalog.Filter{ProjectID: "adm", Limit: DefaultLimit}, nil},
		{"an admin's every project", admin, VolumesCollection, ListQuery{AllProjects: true},
			catalog.Filter{Limit: DefaultLimit}, nil},
		{"a member's every project", member, VolumesCollection, ListQuery{AllProjects: true}, catalog.Filter{}, cairn.ErrForbidden},
		{"negative limit", member, VolumesCollection, ListQuery{Limit: -1}, catalog.Filter{}, cairn.ErrInvalid},
		{"limit too large", member, VolumesCollection, ListQuery{Limit: MaxLimit + 1}, catalog.Filter{}, cairn.ErrInvalid},
		{"unknown sort key", member, VolumesCollection, ListQuery{Sort: []SortKey{{"colour", true}}}, catalog.Filter{}, cairn.ErrInvalid},
		{"volumes of a volume", member, VolumesCollection, ListQuery{VolumeID: "v"}, catalog.Filter{}, cairn.ErrInvalid},
		{"snapshots of a snapshot", member, SnapshotsCollection, ListQuery{SnapshotID: "s"}, catalog.Filter{}, cairn.ErrInvalid},
		{"unknown collection", member, Collection("tasks"), ListQuery{}, catalog.Filter{}, cairn.ErrInvalid},
	}
	for _, tc := range cases {
		f, err := tc.q.filter(tc.c, tc.coll)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%s: error %v, want %v", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(f, tc.want) {
			t.Errorf("%s: %+v, %v; want %+v", tc.name, f, err, tc.want)
		}
	}
}

func TestVolumeAttachment(t *testing.T) {
	s := &Service{nbdSock: "/run/cairn/nbd.sock", nbdAddr: "127.0.0.1:10809"}
	if a, ok := s.VolumeAttachment(cairn.Volume{ID: "v", Status: cairn.StatusAvailable}); ok {
		t.Errorf("a volume not attached: %+v", a)
	}
	a, ok := s.VolumeAttachment(cairn.Volume{ID: "v", Status: cairn.StatusInUse, Attached: true})
	want := Attachment{VolumeID: "v", ExportName: "v", URIs: []string{"nbd+unix:///v?socket=/run/cairn/nbd.sock", "nbd://127.0.0.1:10809/v"}}
	if !ok || !reflect.DeepEqual(a, want) {
		t.Errorf("attached: %+v, %v; want %+v", a, ok, want)
	}
}
