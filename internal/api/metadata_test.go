package api_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestMetadata(t *testing.T) { metadataAPI(t, newEnv(t)) }

// TestMetadataPostgres runs TestMetadata on a PostgreSQL catalog.
func TestMetadataPostgres(t *testing.T) { metadataAPI(t, newEnvPostgres(t)) }

// metadataAPI: volumes and snapshots take metadata on create (and
// volumes on update, which replaces all of it), and every answer that
// shows one carries it, {} when there is none, never null or absent:
// create, show, detail lists, update. A refused update changes nothing.
// A volume cloned from a snapshot has none of the snapshot's.
func metadataAPI(t *testing.T, e *env) {
	const P = "/v3/alpha"
	tagged := map[string]string{"a": "b", "owner": "ünïcode ✓", "empty": ""}

	// resource is a volume or snapshot as the answers show it: only
	// what the test reads, with metadata kept raw to tell {} from null.
	type resource struct {
		ID       string          `json:"id"`
		Name     string          `json:"name"`
		Status   string          `json:"status"`
		Metadata json.RawMessage `json:"metadata"`
	}
	metadata := func(what string, r resource) map[string]string {
		t.Helper()
		var m map[string]string
		if err := json.Unmarshal(r.Metadata, &m); err != nil || m == nil {
			t.Fatalf("%s: metadata %s: want a JSON object (%v)", what, r.Metadata, err)
		}
		return m
	}
	want := func(what string, r resource, w map[string]string) {
		t.Helper()
		if w == nil {
			w = map[string]string{}
		}
		if got := metadata(what, r); !reflect.DeepEqual(got, w) {
			t.Errorf("%s: metadata %v, want %v", what, got, w)
		}
	}
	showVolume := func(id string) resource {
		t.Helper()
		var out struct{ Volume resource }
		e.must(200, e.tokA, "GET", P+"/volumes/"+id, nil, &out)
		return out.Volume
	}

	// Create, with metadata and without.
	var created struct{ Volume resource }
	e.must(202, e.tokA, "POST", P+"/volumes", map[string]any{"volume": map[string]any{"size": 1, "name": "tagged", "metadata": tagged}}, &created)
	want("create answer", created.Volume, tagged)
	vol := created.Volume.ID
	var plain struct{ Volume resource }
	e.must(202, e.tokA, "POST", P+"/volumes", map[string]any{"volume": map[string]any{"size": 1, "name": "plain"}}, &plain)
	want("create answer without metadata", plain.Volume, nil)
	e.wait(e.tokA, "alpha", "volume", vol)
	e.wait(e.tokA, "alpha", "volume", plain.Volume.ID)

	// Show and the detail list.
	want("show", showVolume(vol), tagged)
	want("show without metadata", showVolume(plain.Volume.ID), nil)
	var list struct{ Volumes []resource }
	e.must(200, e.tokA, "GET", P+"/volumes/detail", nil, &list)
	if len(list.Volumes) != 2 {
		t.Fatalf("detail list: %d volumes, want 2", len(list.Volumes))
	}
	for _, v := range list.Volumes {
		switch v.ID {
		case vol:
			want("detail list", v, tagged)
		default:
			want("detail list without metadata", v, nil)
		}
	}

	// Update: metadata replaces all; a rename keeps it; {} clears it.
	var updated struct{ Volume resource }
	e.must(200, e.tokA, "PUT", P+"/volumes/"+vol, `{"volume":{"metadata":{"c":"d"}}}`, &updated)
	want("update answer", updated.Volume, map[string]string{"c": "d"})
	want("show after update", showVolume(vol), map[string]string{"c": "d"})
	e.must(200, e.tokA, "PUT", P+"/volumes/"+vol, `{"volume":{"name":"renamed"}}`, &updated)
	want("rename answer", updated.Volume, map[string]string{"c": "d"})
	e.must(200, e.tokA, "PUT", P+"/volumes/"+vol, `{"volume":{"metadata":{}}}`, &updated)
	want("clearing answer", updated.Volume, nil)
	want("show after clearing", showVolume(vol), nil)
	e.must(200, e.tokA, "PUT", P+"/volumes/"+vol, map[string]any{"volume": map[string]any{"metadata": tagged}}, &updated)
	want("update answer", updated.Volume, tagged)

	// A bad key is refused with 400, and nothing changes: neither the
	// metadata nor the name given beside it.
	before := showVolume(vol)
	for _, body := range []string{
		`{"volume":{"name":"nope","metadata":{"":"x"}}}`,
		`{"volume":{"name":"nope","metadata":{"ok":"1","` + strings.Repeat("k", 256) + `":"v"}}}`,
		`{"volume":{"metadata":{"a":1}}}`,
		`{"volume":{"metadata":null,"colour":"red"}}`,
	} {
		var fault map[string]map[string]any
		if code := e.do(e.tokA, "PUT", P+"/volumes/"+vol, body, &fault); code != 400 || fault["badRequest"] == nil {
			t.Errorf("PUT %s: %d %v, want 400 badRequest", body, code, fault)
		}
		if after := showVolume(vol); !reflect.DeepEqual(after, before) {
			t.Errorf("a refused update changed the volume:\nbefore %+v\nafter  %+v", before, after)
		}
	}

	// Snapshots: their own metadata, shown everywhere; not the volume's.
	var snap struct{ Snapshot resource }
	e.must(202, e.tokA, "POST", P+"/snapshots", map[string]any{"snapshot": map[string]any{"volume_id": vol, "name": "s", "metadata": map[string]string{"x": "y"}}}, &snap)
	want("snapshot create answer", snap.Snapshot, map[string]string{"x": "y"})
	var bare struct{ Snapshot resource }
	e.must(202, e.tokA, "POST", P+"/snapshots", map[string]any{"snapshot": map[string]any{"volume_id": vol, "name": "bare"}}, &bare)
	want("snapshot create answer without metadata", bare.Snapshot, nil)
	e.wait(e.tokA, "alpha", "snapshot", snap.Snapshot.ID)
	e.wait(e.tokA, "alpha", "snapshot", bare.Snapshot.ID)
	var shown struct{ Snapshot resource }
	e.must(200, e.tokA, "GET", P+"/snapshots/"+snap.Snapshot.ID, nil, &shown)
	want("snapshot show", shown.Snapshot, map[string]string{"x": "y"})
	e.must(200, e.tokA, "GET", P+"/snapshots/"+bare.Snapshot.ID, nil, &shown)
	want("snapshot show without metadata", shown.Snapshot, nil)
	var snaps struct{ Snapshots []resource }
	e.must(200, e.tokA, "GET", P+"/snapshots/detail", nil, &snaps)
	if len(snaps.Snapshots) != 2 {
		t.Fatalf("snapshot detail list: %d, want 2", len(snaps.Snapshots))
	}
	for _, s := range snaps.Snapshots {
		if s.ID == snap.Snapshot.ID {
			want("snapshot detail list", s, map[string]string{"x": "y"})
		} else {
			want("snapshot detail list without metadata", s, nil)
		}
	}

	// A clone of the snapshot has the metadata it is given, not the
	// snapshot's nor the volume's.
	var clone struct{ Volume resource }
	e.must(202, e.tokA, "POST", P+"/volumes", map[string]any{"volume": map[string]any{"snapshot_id": snap.Snapshot.ID}}, &clone)
	e.wait(e.tokA, "alpha", "volume", clone.Volume.ID)
	want("clone", showVolume(clone.Volume.ID), nil)
	e.settle()
}
