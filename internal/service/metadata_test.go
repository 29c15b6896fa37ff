package service_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
)

// metadataCases are metadata the service accepts (want: what it stores)
// or refuses (err: a message that names what is wrong).
func metadataCases() []struct {
	name string
	md   map[string]string
	want map[string]string
	err  string
} {
	many := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("k%03d", i)] = "v"
		}
		return m
	}
	long := strings.Repeat("ķ", service.MaxMetadataKeyLen) // 255 characters, 510 bytes
	return []struct {
		name string
		md   map[string]string
		want map[string]string
		err  string
	}{
		{name: "none", md: nil, want: nil},
		{name: "empty", md: map[string]string{}, want: nil},
		{name: "one", md: map[string]string{"a": "b"}, want: map[string]string{"a": "b"}},
		{name: "several, unicode", md: map[string]string{"owner": "ünïcode ✓", "日本": "語", "empty": ""},
			want: map[string]string{"owner": "ünïcode ✓", "日本": "語", "empty": ""}},
		{name: "longest key and value", md: map[string]string{long: long}, want: map[string]string{long: long}},
		{name: "most items", md: many(service.MaxMetadataItems), want: many(service.MaxMetadataItems)},
		{name: "empty key", md: map[string]string{"ok": "1", "": "x"}, err: "empty key"},
		{name: "key too long", md: map[string]string{long + "x": "v"}, err: `metadata key "` + long[:80] + `…": 256 characters`},
		{name: "value too long", md: map[string]string{"ok": "1", "big": long + "x"}, err: `metadata key "big": value of 256 characters`},
		{name: "key not UTF-8", md: map[string]string{"a\xffb": "v"}, err: "not UTF-8"},
		{name: "value not UTF-8", md: map[string]string{"bad": "\xff"}, err: `metadata key "bad": value not UTF-8`},
		{name: "too many items", md: many(service.MaxMetadataItems + 1), err: "129 items; want at most 128"},
	}
}

// TestMetadataValidation: volume create, snapshot create and volume
// update take the same metadata and refuse the same, with ErrInvalid and
// a message naming the bad key; a refused request changes nothing, and
// an accepted one stores exactly what was given (none for an empty map).
func TestMetadataValidation(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	f := &fixture{}
	makeVolume(r, f)
	target := must[cairn.Volume](t)(r.svc.CreateVolume(ctx, caller, service.VolumeCreate{Name: "target", Size: 1,
		Metadata: map[string]string{"before": "1"}}))
	r.done(target.ID)
	for _, tc := range metadataCases() {
		t.Run(tc.name, func(t *testing.T) {
			check := func(op string, err error, stored map[string]string) {
				t.Helper()
				if tc.err != "" {
					wantErr(t, op, err, cairn.ErrInvalid)
					if err == nil || !strings.Contains(err.Error(), tc.err) {
						t.Errorf("%s: %v, want it to say %q", op, err, tc.err)
					}
					return
				}
				if err != nil {
					t.Fatalf("%s: %v", op, err)
				}
				if !reflect.DeepEqual(stored, tc.want) {
					t.Errorf("%s: stored %v, want %v", op, stored, tc.want)
				}
			}
			before := len(r.eventsOf("volume.create.start"))
			v, err := r.svc.CreateVolume(ctx, caller, service.VolumeCreate{Name: "v", Size: 1, Metadata: tc.md})
			if err == nil {
				r.done(v.ID)
				if !reflect.DeepEqual(v.Metadata, tc.want) {
					t.Errorf("create answered %v, want %v", v.Metadata, tc.want)
				}
				check("volume create", err, r.volume(v.ID).Metadata)
			} else {
				check("volume create", err, nil)
				if n := len(r.eventsOf("volume.create.start")); n != before {
					t.Errorf("a refused create raised an event")
				}
			}

			s, err := r.svc.CreateSnapshot(ctx, caller, service.SnapshotCreate{VolumeID: f.vol, Name: "s", Metadata: tc.md})
			if err == nil {
				r.done(s.ID)
				if !reflect.DeepEqual(s.Metadata, tc.want) {
					t.Errorf("snapshot create answered %v, want %v", s.Metadata, tc.want)
				}
				check("snapshot create", err, r.snapshot(s.ID).Metadata)
			} else {
				check("snapshot create", err, nil)
			}

			old := r.volume(target.ID)
			md := tc.md
			u, err := r.svc.UpdateVolume(ctx, caller, target.ID, service.VolumeUpdate{Metadata: &md})
			if err == nil {
				if !reflect.DeepEqual(u.Metadata, tc.want) {
					t.Errorf("update answered %v, want %v", u.Metadata, tc.want)
				}
				check("volume update", err, r.volume(target.ID).Metadata)
				// Put the volume back for the next case.
				restore := map[string]string{"before": "1"}
				must[cairn.Volume](t)(r.svc.UpdateVolume(ctx, caller, target.ID, service.VolumeUpdate{Metadata: &restore}))
			} else {
				check("volume update", err, nil)
				if now := r.volume(target.ID); !reflect.DeepEqual(now, old) {
					t.Errorf("a refused update changed the volume:\nbefore %+v\nafter  %+v", old, now)
				}
			}
		})
	}
	r.settled()
}

// TestMetadataUpdate: an update replaces all of a volume's metadata when
// it gives metadata, clears it with an empty map, and leaves it alone
// when it gives none (a rename keeps it).
func TestMetadataUpdate(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	v := must[cairn.Volume](t)(r.svc.CreateVolume(ctx, caller, service.VolumeCreate{Name: "v", Size: 1,
		Metadata: map[string]string{"a": "1", "b": "2"}}))
	r.done(v.ID)
	ptr := func(m map[string]string) *map[string]string { return &m }
	name := "renamed"
	for _, step := range []struct {
		name string
		req  service.VolumeUpdate
		want map[string]string
	}{
		{"replace", service.VolumeUpdate{Metadata: ptr(map[string]string{"b": "3", "c": "4"})}, map[string]string{"b": "3", "c": "4"}},
		{"rename only", service.VolumeUpdate{Name: &name}, map[string]string{"b": "3", "c": "4"}},
		{"nil map", service.VolumeUpdate{Metadata: ptr(nil)}, nil},
		{"set again", service.VolumeUpdate{Metadata: ptr(map[string]string{"x": "y"})}, map[string]string{"x": "y"}},
		{"clear", service.VolumeUpdate{Metadata: ptr(map[string]string{})}, nil},
	} {
		got, err := r.svc.UpdateVolume(ctx, caller, v.ID, step.req)
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if !reflect.DeepEqual(got.Metadata, step.want) || !reflect.DeepEqual(r.volume(v.ID).Metadata, step.want) {
			t.Errorf("%s: answered %v, stored %v; want %v", step.name, got.Metadata, r.volume(v.ID).Metadata, step.want)
		}
	}
	if got := r.volume(v.ID).Name; got != name {
		t.Errorf("name %q, want %q", got, name)
	}
	// The caller's map is copied, not kept: changing it later changes
	// nothing stored.
	given := map[string]string{"k": "v"}
	got := must[cairn.Volume](t)(r.svc.UpdateVolume(ctx, caller, v.ID, service.VolumeUpdate{Metadata: &given}))
	given["k"] = "changed"
	if got.Metadata["k"] != "v" {
		t.Errorf("the answer shares the caller's map: %v", got.Metadata)
	}
	r.settled()
}

// TestMetadataNotInherited: a volume cloned from a snapshot, or created
// from a backup, has the metadata its request gives and nothing of its
// source's; a snapshot has its own, not its volume's. A restore into a
// new volume is the exception: it gets the backed-up volume's.
func TestMetadataNotInherited(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	src := must[cairn.Volume](t)(r.svc.CreateVolume(ctx, caller, service.VolumeCreate{Name: "src", Size: 1,
		Metadata: map[string]string{"from": "volume"}}))
	r.done(src.ID)
	snap := must[cairn.Snapshot](t)(r.svc.CreateSnapshot(ctx, caller, service.SnapshotCreate{VolumeID: src.ID, Name: "s"}))
	r.done(snap.ID)
	if md := r.snapshot(snap.ID).Metadata; md != nil {
		t.Errorf("a snapshot given no metadata has %v", md)
	}
	tagged := must[cairn.Snapshot](t)(r.svc.CreateSnapshot(ctx, caller, service.SnapshotCreate{VolumeID: src.ID, Name: "t",
		Metadata: map[string]string{"from": "snapshot"}}))
	r.done(tagged.ID)
	b := must[cairn.Backup](t)(r.svc.CreateBackup(ctx, caller, service.BackupCreate{VolumeID: src.ID, Name: "b"}))
	r.done(b.ID)

	for _, tc := range []struct {
		name string
		req  service.VolumeCreate
		want map[string]string
	}{
		{"from snapshot, none given", service.VolumeCreate{SnapshotID: tagged.ID}, nil},
		{"from snapshot, some given", service.VolumeCreate{SnapshotID: tagged.ID, Metadata: map[string]string{"own": "1"}},
			map[string]string{"own": "1"}},
		{"from backup, none given", service.VolumeCreate{BackupID: b.ID}, nil},
		{"from backup, some given", service.VolumeCreate{BackupID: b.ID, Metadata: map[string]string{"own": "2"}},
			map[string]string{"own": "2"}},
	} {
		v, err := r.svc.CreateVolume(ctx, caller, tc.req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		r.done(v.ID)
		if md := r.volume(v.ID).Metadata; !reflect.DeepEqual(md, tc.want) {
			t.Errorf("%s: metadata %v, want %v", tc.name, md, tc.want)
		}
	}
	// A restore into a new volume gets the backed-up volume's metadata as
	// it was at the backup, as the block storage API restores it.
	res := must[service.RestoreResult](t)(r.svc.RestoreBackup(ctx, caller, b.ID, service.RestoreRequest{Name: "restored"}))
	r.done(res.VolumeID)
	if md := r.volume(res.VolumeID).Metadata; !reflect.DeepEqual(md, map[string]string{"from": "volume"}) {
		t.Errorf("a volume restored from a backup has %v, want the backed-up volume's", md)
	}
	r.settled()
}
