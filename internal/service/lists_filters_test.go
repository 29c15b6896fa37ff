package service

import (
	"errors"
	"reflect"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// TestListQueryFilters: the filters of the block storage API's lists
// beyond name and status: offset, bootable, availability zone and
// project, what each collection takes, and which select nothing.
func TestListQueryFilters(t *testing.T) {
	member := Caller{ProjectID: "p"}
	admin := Caller{ProjectID: "adm", Admin: true}
	yes := true
	cases := []struct {
		name    string
		c       Caller
		coll    Collection
		q       ListQuery
		want    catalog.Filter
		nothing bool
		err     error
	}{
		{"offset", member, BackupsCollection, ListQuery{Offset: 7},
			catalog.Filter{ProjectID: "p", Limit: DefaultLimit, Offset: 7}, false, nil},
		{"negative offset", member, VolumesCollection, ListQuery{Offset: -1}, catalog.Filter{}, false, cairn.ErrInvalid},
		{"bootable", member, VolumesCollection, ListQuery{Bootable: &yes},
			catalog.Filter{ProjectID: "p", Limit: DefaultLimit, Bootable: &yes}, false, nil},
		{"bootable snapshots", member, SnapshotsCollection, ListQuery{Bootable: &yes}, catalog.Filter{}, false, cairn.ErrInvalid},
		{"the zone", member, SnapshotsCollection, ListQuery{AvailabilityZone: AvailabilityZone},
			catalog.Filter{ProjectID: "p", Limit: DefaultLimit}, false, nil},
		{"another zone", member, VolumesCollection, ListQuery{AvailabilityZone: "az-2"},
			catalog.Filter{ProjectID: "p", Limit: DefaultLimit}, true, nil},
		{"backups by zone", member, BackupsCollection, ListQuery{AvailabilityZone: AvailabilityZone}, catalog.Filter{}, false, cairn.ErrInvalid},
		{"a member's own project", member, BackupsCollection, ListQuery{ProjectID: "p"},
			catalog.Filter{ProjectID: "p", Limit: DefaultLimit}, false, nil},
		{"a member naming another project", member, VolumesCollection, ListQuery{ProjectID: "q"},
			catalog.Filter{ProjectID: "p", Limit: DefaultLimit}, true, nil},
		{"an admin's project among all", admin, VolumesCollection, ListQuery{ProjectID: "q", AllProjects: true},
			catalog.Filter{ProjectID: "q", Limit: DefaultLimit}, false, nil},
		{"an admin naming another project without all_tenants", admin, SnapshotsCollection, ListQuery{ProjectID: "q"},
			catalog.Filter{ProjectID: "adm", Limit: DefaultLimit}, true, nil},
		{"instances by project", admin, InstancesCollection, ListQuery{ProjectID: "q"}, catalog.Filter{}, false, cairn.ErrInvalid},
		{"empty", member, VolumesCollection, ListQuery{Empty: true},
			catalog.Filter{ProjectID: "p", Limit: DefaultLimit}, true, nil},
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
		if got := tc.q.selectsNothing(tc.c); got != tc.nothing {
			t.Errorf("%s: selects nothing %v, want %v", tc.name, got, tc.nothing)
		}
	}
}

// TestMatchingPageOffset: an offset skips matching rows only, however
// the batches fall.
func TestMatchingPageOffset(t *testing.T) {
	var rows []string
	for i := range 40 {
		rows = append(rows, string(rune('a'+i%26))+string(rune('0'+i/26)))
	}
	list := func(f catalog.Filter) ([]string, error) {
		start := 0
		if f.Marker != "" {
			for i, r := range rows {
				if r == f.Marker {
					start = i + 1
				}
			}
		}
		end := len(rows)
		if f.Limit > 0 {
			end = min(start+f.Limit, len(rows))
		}
		if f.Offset != 0 {
			t.Fatalf("the catalog was given offset %d", f.Offset)
		}
		return rows[start:end], nil
	}
	even := func(r string) (string, bool) { return r, (r[0]-'a')%2 == 0 }
	var matching []string
	for _, r := range rows {
		if _, ok := even(r); ok {
			matching = append(matching, r)
		}
	}
	for _, batch := range []int{1, 3, 100} {
		for _, c := range []struct{ offset, limit int }{{0, 5}, {3, 5}, {15, 5}, {25, 5}, {4, 0}} {
			got, err := matchingPage(catalog.Filter{Offset: c.offset, Limit: c.limit}, batch, list, even)
			if err != nil {
				t.Fatal(err)
			}
			from := min(c.offset, len(matching))
			to := len(matching)
			if c.limit > 0 {
				to = min(from+c.limit, len(matching))
			}
			if !reflect.DeepEqual(got, matching[from:to]) && !(len(got) == 0 && from == to) {
				t.Errorf("batch %d, %+v: %v, want %v", batch, c, got, matching[from:to])
			}
		}
	}
}
