package service_test

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
)

// metadataOwner is a volume or a snapshot of the rig, seen through the
// calls that read and edit its metadata.
type metadataOwner struct {
	kind string
	id   string
	edit func(c service.Caller, e service.MetadataEdit) (map[string]string, error)
	// row is the whole catalog row, to tell that a refused edit changed
	// nothing (not even the update time).
	row   func() any
	md    func() map[string]string
	event string
}

// metadataOwners makes a volume, a snapshot of it and an instance, each
// with md, in that order.
func metadataOwners(r *rig, md map[string]string) []metadataOwner {
	ctx := r.t.Context()
	v := must[cairn.Volume](r.t)(r.svc.CreateVolume(ctx, caller, service.VolumeCreate{Name: "v", Size: 1, Metadata: md}))
	r.done(v.ID)
	s := must[cairn.Snapshot](r.t)(r.svc.CreateSnapshot(ctx, caller, service.SnapshotCreate{VolumeID: v.ID, Name: "s", Metadata: md}))
	r.done(s.ID)
	in := must[cairn.Instance](r.t)(r.svc.CreateInstance(ctx, caller, cairn.InstanceCreate{Name: "db", Datastore: "postgresql", VolumeSize: 1, Metadata: md}))
	r.done(in.ID)
	return []metadataOwner{
		{kind: "volume", id: v.ID,
			edit: func(c service.Caller, e service.MetadataEdit) (map[string]string, error) {
				return r.svc.UpdateVolumeMetadata(ctx, c, v.ID, e)
			},
			row: func() any { return r.volume(v.ID) }, md: func() map[string]string { return r.volume(v.ID).Metadata },
			event: "volume.update.end"},
		{kind: "snapshot", id: s.ID,
			edit: func(c service.Caller, e service.MetadataEdit) (map[string]string, error) {
				return r.svc.UpdateSnapshotMetadata(ctx, c, s.ID, e)
			},
			row: func() any { return r.snapshot(s.ID) }, md: func() map[string]string { return r.snapshot(s.ID).Metadata },
			event: "snapshot.update.end"},
		{kind: "instance", id: in.ID,
			edit: func(c service.Caller, e service.MetadataEdit) (map[string]string, error) {
				return r.svc.UpdateInstanceMetadata(ctx, c, in.ID, e)
			},
			row: func() any { return r.instance(in.ID) }, md: func() map[string]string { return r.instance(in.ID).Metadata },
			event: "instance.update.end"},
	}
}

// manyItems is n metadata items with keys prefix000, prefix001, ...
func manyItems(prefix string, n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("%s%03d", prefix, i)] = "v"
	}
	return m
}

// TestMetadataEdits: the edits of the metadata calls, one after another
// on an instance, a volume and a snapshot: each answers and stores what it asks
// for (nil for none) and raises an update event; a refused one (a bad
// item, a result over the bounds, a missing item to delete) says why,
// with ErrInvalid or ErrNotFound, changes nothing and raises nothing.
func TestMetadataEdits(t *testing.T) {
	r := newRig(t)
	long := strings.Repeat("ķ", service.MaxMetadataValueLen+1)
	steps := []struct {
		name string
		e    service.MetadataEdit
		want map[string]string // after the step; for a refused one, unchanged
		err  error
		says string
	}{
		{name: "merge", e: service.MetadataEdit{Set: map[string]string{"b": "3", "c": "4"}},
			want: map[string]string{"a": "1", "b": "3", "c": "4"}},
		{name: "merge nothing", e: service.MetadataEdit{Set: map[string]string{}},
			want: map[string]string{"a": "1", "b": "3", "c": "4"}},
		{name: "merge nil", e: service.MetadataEdit{},
			want: map[string]string{"a": "1", "b": "3", "c": "4"}},
		{name: "set one, unicode", e: service.MetadataEdit{Set: map[string]string{"日本": "語 ✓"}},
			want: map[string]string{"a": "1", "b": "3", "c": "4", "日本": "語 ✓"}},
		{name: "delete one", e: service.MetadataEdit{Delete: "日本"},
			want: map[string]string{"a": "1", "b": "3", "c": "4"}},
		{name: "delete a missing key", e: service.MetadataEdit{Delete: "zz"}, err: cairn.ErrNotFound, says: `metadata key "zz"`,
			want: map[string]string{"a": "1", "b": "3", "c": "4"}},
		{name: "rename", e: service.MetadataEdit{Delete: "a", Set: map[string]string{"z": "2"}},
			want: map[string]string{"z": "2", "b": "3", "c": "4"}},
		{name: "rename a missing key", e: service.MetadataEdit{Delete: "a", Set: map[string]string{"y": "2"}}, err: cairn.ErrNotFound,
			says: `metadata key "a"`, want: map[string]string{"z": "2", "b": "3", "c": "4"}},
		{name: "rename back", e: service.MetadataEdit{Delete: "z", Set: map[string]string{"a": "1"}},
			want: map[string]string{"a": "1", "b": "3", "c": "4"}},
		{name: "add a key that is there", e: service.MetadataEdit{Set: map[string]string{"n": "1", "b": "9"}, New: true}, err: cairn.ErrConflict,
			says: `metadata key "b" is there already`, want: map[string]string{"a": "1", "b": "3", "c": "4"}},
		{name: "change a missing key", e: service.MetadataEdit{Set: map[string]string{"b": "5", "zz": "1"}, Existing: true}, err: cairn.ErrNotFound,
			says: `metadata key "zz"`, want: map[string]string{"a": "1", "b": "3", "c": "4"}},
		{name: "new and existing", e: service.MetadataEdit{Set: map[string]string{"b": "5"}, New: true, Existing: true}, err: cairn.ErrInvalid,
			says: "not both", want: map[string]string{"a": "1", "b": "3", "c": "4"}},
		{name: "add a new key", e: service.MetadataEdit{Set: map[string]string{"n": "1"}, New: true},
			want: map[string]string{"a": "1", "b": "3", "c": "4", "n": "1"}},
		{name: "change an existing key", e: service.MetadataEdit{Set: map[string]string{"n": "2"}, Existing: true},
			want: map[string]string{"a": "1", "b": "3", "c": "4", "n": "2"}},
		{name: "delete it", e: service.MetadataEdit{Delete: "n"},
			want: map[string]string{"a": "1", "b": "3", "c": "4"}},
		{name: "delete and replace", e: service.MetadataEdit{Delete: "a", Replace: true}, err: cairn.ErrInvalid,
			says: "not both", want: map[string]string{"a": "1", "b": "3", "c": "4"}},
		{name: "merge an empty key", e: service.MetadataEdit{Set: map[string]string{"ok": "1", "": "x"}}, err: cairn.ErrInvalid,
			says: "empty key", want: map[string]string{"a": "1", "b": "3", "c": "4"}},
		{name: "merge a long value", e: service.MetadataEdit{Set: map[string]string{"big": long}}, err: cairn.ErrInvalid,
			says: `metadata key "big": value of 256 characters`, want: map[string]string{"a": "1", "b": "3", "c": "4"}},
		{name: "replace with a bad value", e: service.MetadataEdit{Set: map[string]string{"bad": "\xff"}, Replace: true},
			err: cairn.ErrInvalid, says: "not UTF-8", want: map[string]string{"a": "1", "b": "3", "c": "4"}},
		// 126 new items and the 3 there are: one too many, though the
		// request alone is within the bounds.
		{name: "merge over the bound", e: service.MetadataEdit{Set: manyItems("k", service.MaxMetadataItems-2)}, err: cairn.ErrInvalid,
			says: "129 items", want: map[string]string{"a": "1", "b": "3", "c": "4"}},
		{name: "merge up to the bound", e: service.MetadataEdit{Set: manyItems("k", service.MaxMetadataItems-3)},
			want: func() map[string]string {
				m := manyItems("k", service.MaxMetadataItems-3)
				maps.Copy(m, map[string]string{"a": "1", "b": "3", "c": "4"})
				return m
			}()},
		{name: "replace", e: service.MetadataEdit{Set: map[string]string{"x": "y"}, Replace: true},
			want: map[string]string{"x": "y"}},
		{name: "overwrite", e: service.MetadataEdit{Set: map[string]string{"x": "z"}},
			want: map[string]string{"x": "z"}},
		{name: "replace with nothing", e: service.MetadataEdit{Set: map[string]string{}, Replace: true}, want: nil},
		{name: "delete from none", e: service.MetadataEdit{Delete: "x"}, err: cairn.ErrNotFound, says: `metadata key "x"`, want: nil},
		{name: "merge into none", e: service.MetadataEdit{Set: map[string]string{"n": ""}}, want: map[string]string{"n": ""}},
		{name: "delete the last", e: service.MetadataEdit{Delete: "n"}, want: nil},
		{name: "replace with nil", e: service.MetadataEdit{Replace: true}, want: nil},
	}
	for _, o := range metadataOwners(r, map[string]string{"a": "1", "b": "2"}) {
		for _, st := range steps {
			before, events := o.row(), len(r.eventsOf(o.event))
			got, err := o.edit(caller, st.e)
			if st.err != nil {
				wantErr(t, o.kind+" "+st.name, err, st.err)
				if err == nil || !strings.Contains(err.Error(), st.says) {
					t.Errorf("%s %s: %v, want it to say %q", o.kind, st.name, err, st.says)
				}
				if after := o.row(); !reflect.DeepEqual(after, before) {
					t.Errorf("%s %s: a refused edit changed the row:\nbefore %+v\nafter  %+v", o.kind, st.name, before, after)
				}
				if n := len(r.eventsOf(o.event)); n != events {
					t.Errorf("%s %s: a refused edit raised %s", o.kind, st.name, o.event)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s %s: %v", o.kind, st.name, err)
			}
			if !reflect.DeepEqual(got, st.want) || !reflect.DeepEqual(o.md(), st.want) {
				t.Errorf("%s %s: answered %v, stored %v; want %v", o.kind, st.name, got, o.md(), st.want)
			}
			if n := len(r.eventsOf(o.event)); n != events+1 {
				t.Errorf("%s %s: %d %s events, want %d", o.kind, st.name, n, o.event, events+1)
			}
		}
	}
	r.settled()
}

// TestMetadataEditScope: another project's volume or snapshot, and a
// missing one, are not found, exactly alike, and their metadata stays;
// an admin may edit any project's.
func TestMetadataEditScope(t *testing.T) {
	r := newRig(t)
	if _, err := service.CreateProject(t.Context(), r.cat, "other", "other", cairn.Unlimited, time.Now()); err != nil {
		t.Fatal(err)
	}
	other := service.Caller{ProjectID: "other"}
	admin := service.Caller{ProjectID: "other", Admin: true}
	ctx := t.Context()
	for _, o := range metadataOwners(r, map[string]string{"a": "1"}) {
		before := o.row()
		for _, e := range []service.MetadataEdit{{Set: map[string]string{"x": "y"}}, {Replace: true}, {Delete: "a"}} {
			if _, err := o.edit(other, e); err == nil || !strings.Contains(err.Error(), o.id) {
				t.Errorf("%s: another project's %+v: %v, want not found naming it", o.kind, e, err)
			} else {
				wantErr(t, o.kind+" of another project", err, cairn.ErrNotFound)
			}
		}
		if after := o.row(); !reflect.DeepEqual(after, before) {
			t.Errorf("%s: another project's edits changed it: %+v", o.kind, after)
		}
		got, err := o.edit(admin, service.MetadataEdit{Set: map[string]string{"by": "admin"}})
		if err != nil || !reflect.DeepEqual(got, map[string]string{"a": "1", "by": "admin"}) {
			t.Errorf("%s: an admin's edit: %v %v", o.kind, got, err)
		}
	}
	_, err := r.svc.UpdateVolumeMetadata(ctx, caller, "nope", service.MetadataEdit{Set: map[string]string{"x": "y"}})
	wantErr(t, "a missing volume", err, cairn.ErrNotFound)
	_, err = r.svc.UpdateSnapshotMetadata(ctx, caller, "nope", service.MetadataEdit{Delete: "x"})
	wantErr(t, "a missing snapshot", err, cairn.ErrNotFound)
	r.settled()
}

// TestMetadataEditsConcurrent: edits of one resource's metadata made at
// once all take effect: each is a read, a change and a write in one
// transaction, so none works on a state another is about to replace.
// Sixteen merges of new keys and eight deletes race; the end holds every
// merged key and none of the deleted.
func TestMetadataEditsConcurrent(t *testing.T) {
	r := newRig(t)
	const adds, dels = 16, 8
	for _, o := range metadataOwners(r, manyItems("d", dels)) {
		var wg sync.WaitGroup
		errs := make(chan error, adds+dels)
		for i := range adds {
			wg.Go(func() {
				_, err := o.edit(caller, service.MetadataEdit{Set: map[string]string{fmt.Sprintf("k%03d", i): "v"}})
				errs <- err
			})
		}
		for i := range dels {
			wg.Go(func() {
				_, err := o.edit(caller, service.MetadataEdit{Delete: fmt.Sprintf("d%03d", i)})
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("%s: a concurrent edit: %v", o.kind, err)
			}
		}
		if got, want := o.md(), manyItems("k", adds); !reflect.DeepEqual(got, want) {
			keys := slices.Sorted(maps.Keys(got))
			t.Errorf("%s: after the race: %v, want k000 to k%03d only", o.kind, keys, adds-1)
		}
	}
	r.settled()
}

// TestUpdateSnapshot: a snapshot's name and description change, each
// alone or both, and nothing else does (its metadata, its status); a
// request with neither, or with one out of bounds, is refused and
// changes nothing; another project's snapshot is not found.
func TestUpdateSnapshot(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	o := metadataOwners(r, map[string]string{"keep": "me"})[1] // the snapshot
	str := func(s string) *string { return &s }
	for _, st := range []struct {
		name       string
		req        service.SnapshotUpdate
		c          service.Caller
		err        error
		name2, des string // after
	}{
		{name: "rename", req: service.SnapshotUpdate{Name: str("s2")}, c: caller, name2: "s2"},
		{name: "describe", req: service.SnapshotUpdate{Description: str("d")}, c: caller, name2: "s2", des: "d"},
		{name: "both", req: service.SnapshotUpdate{Name: str(""), Description: str("e")}, c: caller, des: "e"},
		{name: "neither", req: service.SnapshotUpdate{}, c: caller, err: cairn.ErrInvalid, des: "e"},
		{name: "long name", req: service.SnapshotUpdate{Name: str(strings.Repeat("n", 256))}, c: caller, err: cairn.ErrInvalid, des: "e"},
		{name: "long description", req: service.SnapshotUpdate{Name: str("x"), Description: str(strings.Repeat("d", 4097))}, c: caller,
			err: cairn.ErrInvalid, des: "e"},
		{name: "another project's", req: service.SnapshotUpdate{Name: str("x")}, c: service.Caller{ProjectID: "other"},
			err: cairn.ErrNotFound, des: "e"},
	} {
		before, events := r.snapshot(o.id), len(r.eventsOf("snapshot.update.end"))
		got, err := r.svc.UpdateSnapshot(ctx, st.c, o.id, st.req)
		after := r.snapshot(o.id)
		if st.err != nil {
			wantErr(t, st.name, err, st.err)
			if !reflect.DeepEqual(after, before) || len(r.eventsOf("snapshot.update.end")) != events {
				t.Errorf("%s: a refused update changed the snapshot or raised an event: %+v", st.name, after)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if !reflect.DeepEqual(got, after) {
			t.Errorf("%s: answered %+v, stored %+v", st.name, got, after)
		}
		if after.Name != st.name2 || after.Description != st.des || after.Status != cairn.StatusAvailable ||
			!reflect.DeepEqual(after.Metadata, map[string]string{"keep": "me"}) {
			t.Errorf("%s: %+v, want name %q, description %q, the rest as it was", st.name, after, st.name2, st.des)
		}
		if len(r.eventsOf("snapshot.update.end")) != events+1 {
			t.Errorf("%s: no snapshot.update.end", st.name)
		}
	}
	_, err := r.svc.UpdateSnapshot(ctx, caller, "nope", service.SnapshotUpdate{Name: str("x")})
	wantErr(t, "a missing snapshot", err, cairn.ErrNotFound)
	r.settled()
}

// TestListMetadataFilter: the lists of volumes and snapshots, detailed
// and summaries, filtered on metadata, over the real catalog: paged with
// any limit, each page's last item the next one's marker, in any order,
// they give exactly the matching items of the unfiltered list, in its
// order; a filter of several items wants them all.
func TestListMetadataFilter(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	var vol string
	for i := range 10 {
		md := map[string]string{}
		switch i % 3 {
		case 0:
			md = map[string]string{"tier": "gold", "odd": fmt.Sprint(i % 2)}
		case 1:
			md = map[string]string{"tier": "silver"}
		}
		v := must[cairn.Volume](t)(r.svc.CreateVolume(ctx, caller, service.VolumeCreate{Name: fmt.Sprintf("v%d", i%4), Size: 1, Metadata: md}))
		r.done(v.ID)
		vol = v.ID
		s := must[cairn.Snapshot](t)(r.svc.CreateSnapshot(ctx, caller, service.SnapshotCreate{VolumeID: vol, Name: fmt.Sprintf("s%d", i%4), Metadata: md}))
		r.done(s.ID)
	}
	type item struct {
		id, name string
		md       map[string]string
	}
	lists := map[string]func(q service.ListQuery) ([]item, error){
		"volumes": func(q service.ListQuery) ([]item, error) {
			l, err := r.svc.ListVolumes(ctx, caller, q)
			var out []item
			for _, v := range l {
				out = append(out, item{v.ID, v.Name, v.Metadata})
			}
			return out, err
		},
		"snapshots": func(q service.ListQuery) ([]item, error) {
			l, err := r.svc.ListSnapshots(ctx, caller, q)
			var out []item
			for _, v := range l {
				out = append(out, item{v.ID, v.Name, v.Metadata})
			}
			return out, err
		},
	}
	for _, coll := range []service.Collection{service.VolumesCollection, service.SnapshotsCollection} {
		// Summaries carry no metadata: compared by ID and name.
		lists["summaries of "+string(coll)] = func(q service.ListQuery) ([]item, error) {
			l, err := r.svc.ListSummaries(ctx, caller, coll, q)
			var out []item
			for _, v := range l {
				out = append(out, item{id: v.ID, name: v.Name})
			}
			return out, err
		}
	}
	filters := []map[string]string{
		{"tier": "gold"}, {"tier": "silver"}, {"tier": "gold", "odd": "1"}, {"tier": "silver", "odd": "1"},
		{"tier": "bronze"}, {"odd": "0"}, {"tier": ""},
	}
	for name, list := range lists {
		for _, sort := range [][]service.SortKey{nil, {{Key: "name"}}, {{Key: "name", Desc: true}, {Key: "created_at"}}} {
			all, err := list(service.ListQuery{Sort: sort, Limit: service.MaxLimit})
			if err != nil || len(all) != 10 {
				t.Fatalf("%s: %d, %v", name, len(all), err)
			}
			// The detailed list, in the same order, has the metadata.
			full, err := lists[strings.TrimPrefix(name, "summaries of ")](service.ListQuery{Sort: sort, Limit: service.MaxLimit})
			if err != nil || len(full) != len(all) {
				t.Fatalf("%s: the detailed list: %d, %v", name, len(full), err)
			}
			for _, f := range filters {
				var want []item
				for i, it := range all {
					if hasItems(full[i].md, f) {
						want = append(want, it)
					}
				}
				for limit := 1; limit <= 4; limit++ {
					var got []item
					marker := ""
					for page := 0; ; page++ {
						l, err := list(service.ListQuery{Sort: sort, Limit: limit, Marker: marker, Metadata: f})
						if err != nil {
							t.Fatalf("%s %v limit %d: %v", name, f, limit, err)
						}
						got = append(got, l...)
						if len(l) < limit || page > 10 {
							break
						}
						marker = l[len(l)-1].id
					}
					if !reflect.DeepEqual(got, want) {
						t.Errorf("%s sorted %v, filter %v, pages of %d:\ngot  %v\nwant %v", name, sort, f, limit, got, want)
					}
				}
			}
		}
	}
	// A filter of the lists without metadata is refused.
	_, err := r.svc.ListBackups(ctx, caller, service.ListQuery{Metadata: map[string]string{"tier": "gold"}})
	wantErr(t, "backups by metadata", err, cairn.ErrInvalid)
	_, err = r.svc.ListSummaries(ctx, caller, service.BackupsCollection, service.ListQuery{Metadata: map[string]string{"tier": "gold"}})
	wantErr(t, "backup summaries by metadata", err, cairn.ErrInvalid)
	r.settled()
}

// TestListMetadataFilterAcrossBatches: the metadata filter over more
// volumes than the service reads from the catalog at a time (as many as a
// default page), matching sparsely or densely: every page, followed by
// its last item as the next marker, is as the unfiltered list's matching
// items, in its order.
func TestListMetadataFilterAcrossBatches(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	n := 2*service.DefaultLimit + 13
	var ids []string
	for i := range n {
		md := map[string]string{"half": fmt.Sprint(i % 2)}
		if i%29 == 5 {
			md["rare"] = "yes"
		}
		v := must[cairn.Volume](t)(r.svc.CreateVolume(ctx, caller, service.VolumeCreate{Name: fmt.Sprintf("v%03d", (i*37)%n), Size: 1, Metadata: md}))
		ids = append(ids, v.ID)
	}
	for _, id := range ids {
		r.done(id)
	}
	for _, sort := range [][]service.SortKey{nil, {{Key: "name"}}} {
		all := must[[]cairn.Volume](t)(r.svc.ListVolumes(ctx, caller, service.ListQuery{Sort: sort, Limit: service.MaxLimit}))
		if len(all) != n {
			t.Fatalf("%d volumes listed, want %d", len(all), n)
		}
		for _, f := range []map[string]string{{"rare": "yes"}, {"half": "1"}, {"half": "0", "rare": "yes"}} {
			var want []string
			for _, v := range all {
				if hasItems(v.Metadata, f) {
					want = append(want, v.ID)
				}
			}
			for _, limit := range []int{1, 30, service.MaxLimit} {
				var got []string
				marker := ""
				for range n + 1 {
					l := must[[]cairn.Volume](t)(r.svc.ListVolumes(ctx, caller, service.ListQuery{Sort: sort, Limit: limit, Marker: marker, Metadata: f}))
					for _, v := range l {
						got = append(got, v.ID)
					}
					if len(l) < limit {
						break
					}
					marker = l[len(l)-1].ID
				}
				if !slices.Equal(got, want) {
					t.Errorf("sorted %v, filter %v, pages of %d: %d volumes, want %d:\ngot  %v\nwant %v", sort, f, limit, len(got), len(want), got, want)
				}
			}
		}
	}
	r.settled()
}

// hasItems reports whether md has every item of want.
func hasItems(md, want map[string]string) bool {
	for k, w := range want {
		if v, ok := md[k]; !ok || v != w {
			return false
		}
	}
	return true
}
