package service

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
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
		// The metadata filter is the service's: the catalog's filter
		// does not carry it.
		{"volumes by metadata", member, VolumesCollection, ListQuery{Metadata: map[string]string{"a": "b"}},
			catalog.Filter{ProjectID: "p", Limit: DefaultLimit}, nil},
		{"snapshots by metadata", member, SnapshotsCollection, ListQuery{Metadata: map[string]string{"a": ""}},
			catalog.Filter{ProjectID: "p", Limit: DefaultLimit}, nil},
		{"backups by metadata", member, BackupsCollection, ListQuery{Metadata: map[string]string{"a": "b"}}, catalog.Filter{}, cairn.ErrInvalid},
		{"instances by metadata", member, InstancesCollection, ListQuery{Metadata: map[string]string{"a": "b"}}, catalog.Filter{}, cairn.ErrInvalid},
		{"metadata filter with an empty key", member, VolumesCollection, ListQuery{Metadata: map[string]string{"": "b"}}, catalog.Filter{}, cairn.ErrInvalid},
		{"metadata filter with a long value", member, SnapshotsCollection,
			ListQuery{Metadata: map[string]string{"a": strings.Repeat("v", MaxMetadataValueLen+1)}}, catalog.Filter{}, cairn.ErrInvalid},
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

// TestMatchingPage: matchingPage gives the page a filter of the
// catalog's own would give, for every limit and every marker (any row,
// matching or not), over lists where the matching rows are none, all,
// or scattered, whatever the batches' boundaries: the first limit
// matching rows after the marker, in the list's order. The list it reads
// here pages its rows as the catalog does (after the marker, at most
// Limit, a marker naming no row an error).
func TestMatchingPage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 3, 5, 8, 13, 40} {
		for _, pattern := range []string{"none", "all", "first", "last", "random"} {
			rows := make([]string, n)
			match := map[string]bool{}
			for i := range rows {
				rows[i] = fmt.Sprintf("r%02d", i)
				switch pattern {
				case "all":
					match[rows[i]] = true
				case "first":
					match[rows[i]] = i == 0
				case "last":
					match[rows[i]] = i == n-1
				case "random":
					match[rows[i]] = rng.IntN(3) == 0
				}
			}
			calls := 0
			list := func(f catalog.Filter) ([]string, error) {
				calls++
				start := 0
				if f.Marker != "" {
					i := slices.Index(rows, f.Marker)
					if i < 0 {
						return nil, fmt.Errorf("marker %s: %w", f.Marker, cairn.ErrNotFound)
					}
					start = i + 1
				}
				end := len(rows)
				if f.Limit > 0 {
					end = min(end, start+f.Limit)
				}
				return rows[start:end], nil
			}
			for limit := 1; limit <= n+1; limit++ {
				for _, batch := range []int{1, 3, limit} {
					for _, marker := range append([]string{""}, rows...) {
						var want []string
						after := marker == ""
						for _, r := range rows {
							if after && match[r] && len(want) < limit {
								want = append(want, r)
							}
							after = after || r == marker
						}
						calls = 0
						got, err := matchingPage(catalog.Filter{Limit: limit, Marker: marker}, batch, list,
							func(r string) (string, bool) { return r, match[r] })
						if err != nil || !slices.Equal(got, want) {
							t.Fatalf("%d rows, %s match, limit %d, batch %d, marker %q: %v %v; want %v",
								n, pattern, limit, batch, marker, got, err, want)
						}
						if most := n/max(limit, batch) + 2; calls > most {
							t.Errorf("%d rows, limit %d, batch %d: %d reads of the list, want at most %d", n, limit, batch, calls, most)
						}
					}
				}
			}
		}
	}
	// A marker the list does not have is its error, as unfiltered.
	_, err := matchingPage(catalog.Filter{Limit: 2, Marker: "nope"}, 1,
		func(f catalog.Filter) ([]string, error) {
			return nil, fmt.Errorf("marker %s: %w", f.Marker, cairn.ErrNotFound)
		},
		func(r string) (string, bool) { return r, true })
	if !errors.Is(err, cairn.ErrNotFound) {
		t.Errorf("a marker naming no row: %v", err)
	}
}
