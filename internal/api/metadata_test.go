package api_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
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

func TestMetadataRoutes(t *testing.T) { metadataRoutesAPI(t, newEnv(t)) }

// TestMetadataRoutesPostgres runs TestMetadataRoutes on a PostgreSQL
// catalog, whose transactions serialize the concurrent edits there.
func TestMetadataRoutesPostgres(t *testing.T) { metadataRoutesAPI(t, newEnvPostgres(t)) }

// metadataRoutesAPI: the metadata sub-resources of a volume and of a
// snapshot, in the block storage API's shapes and codes: show all, add
// (POST), replace all (PUT), show, set and remove one item; each answers
// 200 with what it should and stores what it asked for; a missing key is
// 404; a bad body is 400 and changes nothing; a missing resource, or
// another project's, is 404 on every route and changes nothing.
// Concurrent additions and removals all take effect.
func metadataRoutesAPI(t *testing.T, e *env) {
	const P = "/v3/alpha"
	alpha := service.Caller{ProjectID: "alpha"}
	vol := e.createVolume(e.tokA, "alpha", 1, "v")
	e.must(200, e.tokA, "POST", P+"/volumes/"+vol+"/metadata", `{"metadata":{"a":"1"}}`, nil)
	var snap struct{ Snapshot wire.SnapshotSummary }
	e.must(202, e.tokA, "POST", P+"/snapshots", map[string]any{"snapshot": map[string]any{"volume_id": vol, "metadata": map[string]string{"a": "1"}}}, &snap)
	e.wait(e.tokA, "alpha", "snapshot", snap.Snapshot.ID)

	for _, o := range []struct {
		kind, id string
		stored   func() map[string]string
	}{
		{"volumes", vol, func() map[string]string {
			v, err := e.svc.Volume(t.Context(), alpha, vol)
			if err != nil {
				t.Fatal(err)
			}
			return v.Metadata
		}},
		{"snapshots", snap.Snapshot.ID, func() map[string]string {
			s, err := e.svc.Snapshot(t.Context(), alpha, snap.Snapshot.ID)
			if err != nil {
				t.Fatal(err)
			}
			return s.Metadata
		}},
	} {
		base := P + "/" + o.kind + "/" + o.id + "/metadata"
		// call sends a request that must answer code and returns the
		// answer's body, raw.
		call := func(code int, method, path string, body any) string {
			t.Helper()
			var raw json.RawMessage
			if got := e.do(e.tokA, method, path, body, &raw); got != code {
				t.Fatalf("%s %s %v: %d %s, want %d", method, path, body, got, raw, code)
			}
			return string(raw)
		}
		// answer checks an answer, member by member.
		answer := func(what, raw string, want any) {
			t.Helper()
			wantJS, _ := json.Marshal(want)
			var got, w any
			if err := json.Unmarshal([]byte(raw), &got); err != nil {
				t.Fatalf("%s: %q: %v", what, raw, err)
			}
			_ = json.Unmarshal(wantJS, &w)
			if !reflect.DeepEqual(got, w) {
				t.Errorf("%s %s: answered %s, want %s", o.kind, what, raw, wantJS)
			}
		}
		stored := func(what string, want map[string]string) {
			t.Helper()
			if got := o.stored(); !reflect.DeepEqual(got, want) {
				t.Errorf("%s %s: stored %v, want %v", o.kind, what, got, want)
			}
		}
		all := func(m map[string]string) wire.AllMetadata { return wire.AllMetadata{Metadata: m} }
		item := func(k, v string) wire.MetadataItem { return wire.MetadataItem{Meta: map[string]string{k: v}} }

		answer("show", call(200, "GET", base, nil), all(map[string]string{"a": "1"}))
		answer("add", call(200, "POST", base, `{"metadata":{"b":"2","a":"x"}}`), all(map[string]string{"a": "x", "b": "2"}))
		stored("after add", map[string]string{"a": "x", "b": "2"})
		answer("add nothing", call(200, "POST", base, `{"metadata":{}}`), all(map[string]string{"a": "x", "b": "2"}))
		answer("show item", call(200, "GET", base+"/a", nil), item("a", "x"))
		answer("set item", call(200, "PUT", base+"/c", `{"meta":{"c":"3"}}`), item("c", "3"))
		stored("after set item", map[string]string{"a": "x", "b": "2", "c": "3"})
		answer("overwrite item", call(200, "PUT", base+"/c", `{"meta":{"c":"ünï ✓"}}`), item("c", "ünï ✓"))
		answer("show overwritten item", call(200, "GET", base+"/c", nil), item("c", "ünï ✓"))
		// A key with a slash, escaped in the URL.
		answer("set item a/b", call(200, "PUT", base+"/a%2Fb", `{"meta":{"a/b":"s"}}`), item("a/b", "s"))
		answer("show item a/b", call(200, "GET", base+"/a%2Fb", nil), item("a/b", "s"))
		if raw := call(200, "DELETE", base+"/a%2Fb", nil); raw != "" {
			t.Errorf("%s delete: answered %q, want no body", o.kind, raw)
		}
		if raw := call(200, "DELETE", base+"/c", nil); raw != "" {
			t.Errorf("%s delete: answered %q, want no body", o.kind, raw)
		}
		stored("after delete", map[string]string{"a": "x", "b": "2"})
		for _, method := range []string{"GET", "DELETE"} {
			var fault map[string]wire.Fault
			if code := e.do(e.tokA, method, base+"/c", nil, &fault); code != 404 || !strings.Contains(fault["itemNotFound"].Message, `metadata key "c"`) {
				t.Errorf("%s %s of a missing key: %d %v, want 404 itemNotFound naming it", o.kind, method, code, fault)
			}
		}
		answer("replace", call(200, "PUT", base, `{"metadata":{"z":"9"}}`), all(map[string]string{"z": "9"}))
		stored("after replace", map[string]string{"z": "9"})
		answer("replace with none", call(200, "PUT", base, `{"metadata":{}}`), all(map[string]string{}))
		stored("after replace with none", nil)
		answer("show none", call(200, "GET", base, nil), all(map[string]string{}))
		answer("add to none", call(200, "POST", base, `{"metadata":{"a":"1"}}`), all(map[string]string{"a": "1"}))

		// Bad bodies: 400, and nothing changes.
		full := map[string]string{}
		for i := range service.MaxMetadataItems {
			full[fmt.Sprintf("k%03d", i)] = "v"
		}
		fullJS, _ := json.Marshal(map[string]any{"metadata": full})
		long := strings.Repeat("v", service.MaxMetadataValueLen+1)
		for _, bad := range []struct{ method, path, body, says string }{
			{"POST", base, ``, "empty request body"},
			{"POST", base, `{}`, "metadata is required"},
			{"POST", base, `{"metadata":null}`, "metadata is required"},
			{"PUT", base, `{"metadata":null}`, "metadata is required"},
			{"POST", base, `{"metadata":[]}`, "metadata"},
			{"PUT", base, `{"metadata":{"a":1}}`, "metadata"},
			{"POST", base, `{"metadata":{"":"x"}}`, "empty key"},
			{"PUT", base, `{"metadata":{"k":"` + long + `"}}`, "value of 256 characters"},
			{"POST", base, `{"metadata":{"k":"v"},"meta":{"k":"v"}}`, "unknown field"},
			{"PUT", base, `{"metadata":{"k":"v"}} {}`, "after the JSON"},
			// 128 new items and the one there is: one too many.
			{"POST", base, string(fullJS), "129 items"},
			{"PUT", base + "/k", `{"meta":{"other":"v"}}`, `the URL's key "k"`},
			{"PUT", base + "/k", `{"meta":{"k":"v","l":"w"}}`, "exactly one item"},
			{"PUT", base + "/k", `{"meta":{}}`, "exactly one item"},
			{"PUT", base + "/k", `{"meta":null}`, "exactly one item"},
			{"PUT", base + "/k", `{}`, "exactly one item"},
			{"PUT", base + "/k", `{"metadata":{"k":"v"}}`, "unknown field"},
			{"PUT", base + "/k", `{"meta":{"k":1}}`, "meta"},
			{"PUT", base + "/k", `{"meta":{"k":"` + long + `"}}`, "value of 256 characters"},
		} {
			before := e.state()
			var fault map[string]wire.Fault
			code := e.do(e.tokA, bad.method, bad.path, bad.body, &fault)
			if code != 400 || !strings.Contains(fault["badRequest"].Message, bad.says) {
				t.Errorf("%s %s %.60s: %d %v, want 400 badRequest saying %q", bad.method, bad.path, bad.body, code, fault, bad.says)
			}
			if after := e.state(); !reflect.DeepEqual(after, before) {
				t.Errorf("%s %s %.60s: a refused request changed state", bad.method, bad.path, bad.body)
			}
		}
		// Full: one more item through the item's PUT is refused too.
		call(200, "PUT", base, string(fullJS))
		before := e.state()
		var fault map[string]wire.Fault
		if code := e.do(e.tokA, "PUT", base+"/more", `{"meta":{"more":"v"}}`, &fault); code != 400 || !strings.Contains(fault["badRequest"].Message, "129 items") {
			t.Errorf("%s: an item beyond the bound: %d %v", o.kind, code, fault)
		}
		if !reflect.DeepEqual(e.state(), before) {
			t.Errorf("%s: a refused item changed state", o.kind)
		}
		call(200, "PUT", base, `{"metadata":{"a":"1"}}`)

		// A missing resource, another project's (by its URL, or by its
		// ID under the other's), on every route: 404, nothing changed.
		before = e.state()
		for _, who := range []struct{ token, base string }{
			{e.tokA, P + "/" + o.kind + "/nope/metadata"},
			{e.tokB, base},
			{e.tokB, "/v3/beta/" + o.kind + "/" + o.id + "/metadata"},
		} {
			for _, r := range []struct{ method, path, body string }{
				{"GET", who.base, ""},
				{"POST", who.base, `{"metadata":{"x":"y"}}`},
				{"PUT", who.base, `{"metadata":{}}`},
				{"GET", who.base + "/a", ""},
				{"PUT", who.base + "/a", `{"meta":{"a":"y"}}`},
				{"DELETE", who.base + "/a", ""},
			} {
				var body any
				if r.body != "" {
					body = r.body
				}
				var fault map[string]wire.Fault
				if code := e.do(who.token, r.method, r.path, body, &fault); code != 404 || fault["itemNotFound"].Code != 404 {
					t.Errorf("%s %s: %d %v, want 404 itemNotFound", r.method, r.path, code, fault)
				}
			}
		}
		if !reflect.DeepEqual(e.state(), before) {
			t.Errorf("%s: requests on a missing or another project's resource changed state", o.kind)
		}
		// The admin may, in the project's URL.
		if code := e.do(e.admin, "GET", base+"/a", nil, nil); code != 200 {
			t.Errorf("%s: the admin's show: %d", o.kind, code)
		}

		// Concurrent additions of new keys and removals of others: every
		// one takes effect (each is one transaction of the catalog).
		const adds, dels = 12, 6
		for i := range dels {
			call(200, "PUT", fmt.Sprintf("%s/d%02d", base, i), fmt.Sprintf(`{"meta":{"d%02d":"v"}}`, i))
		}
		var wg sync.WaitGroup
		codes := make(chan int, adds+dels)
		for i := range adds {
			wg.Go(func() {
				codes <- e.do(e.tokA, "POST", base, fmt.Sprintf(`{"metadata":{"k%02d":"v"}}`, i), nil)
			})
		}
		for i := range dels {
			wg.Go(func() { codes <- e.do(e.tokA, "DELETE", fmt.Sprintf("%s/d%02d", base, i), nil, nil) })
		}
		wg.Wait()
		close(codes)
		for code := range codes {
			if code != 200 {
				t.Errorf("%s: a concurrent edit answered %d", o.kind, code)
			}
		}
		want := map[string]string{"a": "1"}
		for i := range adds {
			want[fmt.Sprintf("k%02d", i)] = "v"
		}
		stored("after concurrent edits", want)
	}
	e.settle()
}

// TestSnapshotUpdate: PUT /snapshots/{id} renames and redescribes a
// snapshot, under the members' names or their older display_ ones, and
// answers the snapshot as a show does; its metadata stays. A body that
// changes nothing, gives one member under both names, is out of bounds or
// names another member is 400; a missing snapshot, or another project's,
// is 404; none of them changes anything.
func TestSnapshotUpdate(t *testing.T) {
	e := newEnv(t)
	const P = "/v3/alpha"
	vol := e.createVolume(e.tokA, "alpha", 1, "v")
	var created struct{ Snapshot wire.SnapshotSummary }
	e.must(202, e.tokA, "POST", P+"/snapshots", map[string]any{"snapshot": map[string]any{"volume_id": vol, "name": "s1", "metadata": map[string]string{"k": "v"}}}, &created)
	id := created.Snapshot.ID
	e.wait(e.tokA, "alpha", "snapshot", id)
	path := P + "/snapshots/" + id
	for _, step := range []struct {
		body, name, description string
	}{
		{`{"snapshot":{"name":"s2"}}`, "s2", ""},
		{`{"snapshot":{"description":"about"}}`, "s2", "about"},
		{`{"snapshot":{"display_name":"s3","display_description":"old names"}}`, "s3", "old names"},
		{`{"snapshot":{"name":"","description":null,"display_description":"d"}}`, "", "d"},
	} {
		var out struct{ Snapshot map[string]any }
		e.must(200, e.tokA, "PUT", path, step.body, &out)
		members(t, "snapshot update "+step.body, out.Snapshot, snapshotSummaryMembers)
		values(t, "snapshot update "+step.body, out.Snapshot, map[string]any{"id": id, "name": step.name,
			"description": step.description, "status": "available", "metadata": map[string]any{"k": "v"}})
		var shown struct{ Snapshot map[string]any }
		e.must(200, e.tokA, "GET", path, nil, &shown)
		// Show adds the extended attributes to the update's summary.
		delete(shown.Snapshot, "os-extended-snapshot-attributes:progress")
		delete(shown.Snapshot, "os-extended-snapshot-attributes:project_id")
		if !reflect.DeepEqual(shown.Snapshot, out.Snapshot) {
			t.Errorf("%s: answered %v, then shown %v", step.body, out.Snapshot, shown.Snapshot)
		}
	}
	long := strings.Repeat("n", 256)
	for _, bad := range []struct {
		token, path, body string
		code              int
		says              string
	}{
		{e.tokA, path, `{}`, 400, "nothing to update"},
		{e.tokA, path, `{"snapshot":{}}`, 400, "nothing to update"},
		{e.tokA, path, `{"snapshot":{"name":null,"display_name":null}}`, 400, "nothing to update"},
		{e.tokA, path, `{"snapshot":{"name":"a","display_name":"b"}}`, 400, "snapshot.name or snapshot.display_name, not both"},
		{e.tokA, path, `{"snapshot":{"description":"a","display_description":"b"}}`, 400, "not both"},
		{e.tokA, path, `{"snapshot":{"name":"` + long + `"}}`, 400, "name"},
		{e.tokA, path, `{"snapshot":{"display_description":"` + strings.Repeat("d", 4097) + `"}}`, 400, "description"},
		{e.tokA, path, `{"snapshot":{"metadata":{"a":"b"}}}`, 400, "unknown field"},
		{e.tokA, path, `{"snapshot":{"name":1}}`, 400, "name"},
		{e.tokA, P + "/snapshots/nope", `{"snapshot":{"name":"x"}}`, 404, "nope"},
		{e.tokB, path, `{"snapshot":{"name":"x"}}`, 404, ""},
		{e.tokB, "/v3/beta/snapshots/" + id, `{"snapshot":{"name":"x"}}`, 404, id},
	} {
		before := e.state()
		var fault map[string]wire.Fault
		code := e.do(bad.token, "PUT", bad.path, bad.body, &fault)
		if code != bad.code || len(fault) != 1 {
			t.Errorf("PUT %s %.60s: %d %v, want %d", bad.path, bad.body, code, fault, bad.code)
		}
		for _, f := range fault {
			if f.Code != code || !strings.Contains(f.Message, bad.says) {
				t.Errorf("PUT %s %.60s: %v, want code %d saying %q", bad.path, bad.body, f, code, bad.says)
			}
		}
		if !reflect.DeepEqual(e.state(), before) {
			t.Errorf("PUT %s %.60s: a refused update changed state", bad.path, bad.body)
		}
	}
	e.settle()
}

// TestMetadataListFilter: the volume and snapshot lists, with and
// without details, take the metadata filter in the form the cinder
// command sends (a Python dict's repr, URL-encoded) and list exactly the
// items with every given item; a page is full with matching items only,
// and its next link keeps the filter. A filter that is not such a dict,
// or names a bad key, is 400; the backups' list has no such filter.
func TestMetadataListFilter(t *testing.T) {
	e := newEnv(t)
	const P = "/v3/alpha"
	mk := func(name string, md map[string]string) (string, string) {
		var v struct{ Volume wire.Volume }
		e.must(202, e.tokA, "POST", P+"/volumes", map[string]any{"volume": map[string]any{"size": 1, "name": name, "metadata": md}}, &v)
		e.wait(e.tokA, "alpha", "volume", v.Volume.ID)
		var s struct{ Snapshot wire.SnapshotSummary }
		e.must(202, e.tokA, "POST", P+"/snapshots", map[string]any{"snapshot": map[string]any{"volume_id": v.Volume.ID, "name": name, "metadata": md}}, &s)
		e.wait(e.tokA, "alpha", "snapshot", s.Snapshot.ID)
		return v.Volume.ID, s.Snapshot.ID
	}
	gold1v, gold1s := mk("gold1", map[string]string{"tier": "gold"})
	mk("silver", map[string]string{"tier": "silver"})
	mk("none", nil)
	gold2v, gold2s := mk("gold2", map[string]string{"tier": "gold", "it's": "a \"b\""})
	// Beta's gold volume is not alpha's to list.
	var beta struct{ Volume wire.Volume }
	e.must(202, e.tokB, "POST", "/v3/beta/volumes", map[string]any{"volume": map[string]any{"size": 1, "metadata": map[string]string{"tier": "gold"}}}, &beta)
	e.wait(e.tokB, "beta", "volume", beta.Volume.ID)

	// list follows the next links from path and returns the IDs listed,
	// page by page.
	list := func(path string) [][]string {
		t.Helper()
		var pages [][]string
		for path != "" && len(pages) < 10 {
			var out map[string]json.RawMessage
			e.must(200, e.tokA, "GET", path, nil, &out)
			coll := "volumes"
			if strings.Contains(path, "/snapshots") {
				coll = "snapshots"
			}
			var items []struct{ ID string }
			if err := json.Unmarshal(out[coll], &items); err != nil {
				t.Fatalf("%s: %s: %v", path, out, err)
			}
			var ids []string
			for _, it := range items {
				ids = append(ids, it.ID)
			}
			pages = append(pages, ids)
			var links []wire.Link
			_ = json.Unmarshal(out[coll+"_links"], &links)
			path = ""
			if len(links) == 1 {
				u, err := url.Parse(links[0].Href)
				if err != nil {
					t.Fatal(err)
				}
				path = u.RequestURI()
			}
		}
		return pages
	}
	q := func(repr string) string { return url.Values{"metadata": {repr}}.Encode() }
	for _, coll := range []struct {
		path         string
		gold1, gold2 string
	}{
		{"/volumes", gold1v, gold2v}, {"/volumes/detail", gold1v, gold2v},
		{"/snapshots", gold1s, gold2s}, {"/snapshots/detail", gold1s, gold2s},
	} {
		// Newest first.
		if got := list(P + coll.path + "?" + q(`{'tier': 'gold'}`)); !reflect.DeepEqual(got, [][]string{{coll.gold2, coll.gold1}}) {
			t.Errorf("%s tier gold: %v", coll.path, got)
		}
		if got := list(P + coll.path + "?" + q(`{'tier': 'gold', "it's": 'a "b"'}`)); !reflect.DeepEqual(got, [][]string{{coll.gold2}}) {
			t.Errorf("%s both items: %v", coll.path, got)
		}
		if got := list(P + coll.path + "?" + q(`{'tier': 'bronze'}`)); !reflect.DeepEqual(got, [][]string{nil}) {
			t.Errorf("%s tier bronze: %v", coll.path, got)
		}
		// Pages of one: each holds a match, the next link keeps the
		// filter, and the last page (after a full one) is empty.
		if got := list(P + coll.path + "?limit=1&" + q(`{'tier': 'gold'}`)); !reflect.DeepEqual(got, [][]string{{coll.gold2}, {coll.gold1}, nil}) {
			t.Errorf("%s tier gold in pages of 1: %v", coll.path, got)
		}
		if got := list(P + coll.path + "?sort=name:asc&limit=1&" + q(`{'tier': 'gold'}`)); !reflect.DeepEqual(got, [][]string{{coll.gold1}, {coll.gold2}, nil}) {
			t.Errorf("%s tier gold by name in pages of 1: %v", coll.path, got)
		}
		if got := list(P + coll.path + "?" + q(`{}`)); len(got) != 1 || len(got[0]) != 4 {
			t.Errorf("%s with an empty filter: %v, want all 4", coll.path, got)
		}
		for _, bad := range []string{`a=b`, `{'tier': 1}`, `{'tier': None}`, `{'tier': 'gold',}`, `{'': 'x'}`,
			`{'tier': 'gold', 'tier': 'silver'}`, `{tier: gold}`, ``} {
			var fault map[string]wire.Fault
			if code := e.do(e.tokA, "GET", P+coll.path+"?"+q(bad), nil, &fault); code != 400 || !strings.Contains(fault["badRequest"].Message, "metadata") {
				t.Errorf("%s metadata=%s: %d %v, want 400 about metadata", coll.path, bad, code, fault)
			}
		}
		var fault map[string]wire.Fault
		if code := e.do(e.tokA, "GET", P+coll.path+"?"+q(`{'a': 'b'}`)+"&"+q(`{'c': 'd'}`), nil, &fault); code != 400 {
			t.Errorf("%s with metadata twice: %d %v", coll.path, code, fault)
		}
	}
	var fault map[string]wire.Fault
	if code := e.do(e.tokA, "GET", P+"/backups/detail?"+q(`{'tier': 'gold'}`), nil, &fault); code != 400 || !strings.Contains(fault["badRequest"].Message, "metadata") {
		t.Errorf("backups by metadata: %d %v", code, fault)
	}
	e.settle()
}
