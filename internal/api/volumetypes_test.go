package api_test

import (
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// The members tempest's schemas allow (additionalProperties: false) and
// require in each of the volume type answers.
var (
	typeUpdatedMembers = []string{"description", "extra_specs", "id", "is_public", "name"}
	typeCreatedMembers = []string{"description", "extra_specs", "id", "is_public", "name", "os-volume-type-access:is_public"}
	typeShownMembers   = []string{"description", "extra_specs", "id", "is_public", "name", "os-volume-type-access:is_public", "qos_specs_id"}
)

func typeMembers(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// typeOf returns the volume type in an answer, checking its members.
func typeOf(t *testing.T, what string, answer map[string]any, want []string) map[string]any {
	t.Helper()
	vt := object(t, what, answer, "volume_type")
	if got := typeMembers(vt); !reflect.DeepEqual(got, want) {
		t.Errorf("%s: members %v, want %v", what, got, want)
	}
	return vt
}

// createType makes a volume type as the admin and returns it.
func (e *env) createType(body map[string]any) map[string]any {
	e.t.Helper()
	var out map[string]any
	e.must(200, e.admin, "POST", "/v3/admin/types", map[string]any{"volume_type": body}, &out)
	return out["volume_type"].(map[string]any)
}

// catalogTypes is every volume type and access row in the catalog.
func (e *env) catalogTypes() ([]cairn.VolumeType, map[string][]string) {
	e.t.Helper()
	ctx := e.t.Context()
	var list []cairn.VolumeType
	access := map[string][]string{}
	err := e.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		if list, err = tx.VolumeTypes(ctx, ""); err != nil {
			return err
		}
		for _, vt := range list {
			if access[vt.ID], err = tx.VolumeTypeProjects(ctx, vt.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return list, access
}

// TestVolumeTypeDefault: the default type exists from the start, in the
// shapes tempest's schemas allow, and every volume created without a type
// is of it.
func TestVolumeTypeDefault(t *testing.T) {
	e := newEnv(t)
	for _, tok := range []string{e.admin, e.tokA} {
		project := map[string]string{e.admin: "admin", e.tokA: "alpha"}[tok]
		var out map[string]any
		e.must(200, tok, "GET", "/v3/"+project+"/types/default", nil, &out)
		def := typeOf(t, "default type", out, typeShownMembers)
		values(t, "default type", def, map[string]any{"id": cairn.DefaultVolumeTypeID, "name": "__DEFAULT__",
			"description": "Default Volume Type", "is_public": true, "os-volume-type-access:is_public": true,
			"extra_specs": map[string]any{}, "qos_specs_id": nil})
		e.must(200, tok, "GET", "/v3/"+project+"/types/"+cairn.DefaultVolumeTypeID, nil, &out)
		typeOf(t, "default type by ID", out, typeShownMembers)
		var list struct {
			VolumeTypes []map[string]any `json:"volume_types"`
		}
		e.must(200, tok, "GET", "/v3/"+project+"/types", nil, &list)
		if len(list.VolumeTypes) != 1 || list.VolumeTypes[0]["name"] != "__DEFAULT__" {
			t.Errorf("types: %v", list.VolumeTypes)
		}
	}
	id := e.createVolume(e.tokA, "alpha", 1, "v")
	var out map[string]map[string]any
	e.must(200, e.tokA, "GET", "/v3/alpha/volumes/"+id, nil, &out)
	values(t, "volume", out["volume"], map[string]any{"volume_type": "__DEFAULT__", "encrypted": false})
	if _, ok := out["volume"]["volume_type_id"]; ok {
		t.Error("volume_type_id shown before microversion 3.63")
	}
	// The default type is neither deleted, renamed nor made private.
	for _, c := range []struct{ method, body, says string }{
		{"DELETE", "", "cannot be deleted"},
		{"PUT", `{"volume_type":{"name":"other"}}`, "keeps its name"},
		{"PUT", `{"volume_type":{"is_public":false}}`, "stays public"},
	} {
		var body any
		if c.body != "" {
			body = c.body
		}
		var fault map[string]map[string]any
		if code := e.do(e.admin, c.method, "/v3/admin/types/"+cairn.DefaultVolumeTypeID, body, &fault); code != 400 {
			t.Errorf("%s default type: %d, want 400", c.method, code)
		} else if msg, _ := fault["badRequest"]["message"].(string); !strings.Contains(msg, c.says) {
			t.Errorf("%s default type: %q, want %q", c.method, msg, c.says)
		}
	}
	e.must(200, e.admin, "PUT", "/v3/admin/types/"+cairn.DefaultVolumeTypeID, `{"volume_type":{"description":"the one"}}`, nil)
}

// TestVolumeTypeCRUD: an admin creates, shows, updates and deletes types,
// in the shapes and status codes tempest expects.
func TestVolumeTypeCRUD(t *testing.T) {
	e := newEnv(t)
	created := map[string]any{}
	e.must(200, e.admin, "POST", "/v3/admin/types", map[string]any{"volume_type": map[string]any{
		"name": "gold", "description": "fast", "os-volume-type-access:is_public": true,
		"extra_specs": map[string]string{"storage_protocol": "nbd", "vendor_name": "cairn"}}}, &created)
	vt := typeOf(t, "create", created, typeCreatedMembers)
	values(t, "create", vt, map[string]any{"name": "gold", "description": "fast", "is_public": true,
		"os-volume-type-access:is_public": true,
		"extra_specs":                     map[string]any{"storage_protocol": "nbd", "vendor_name": "cairn"}})
	id := vt["id"].(string)

	var shown map[string]any
	e.must(200, e.admin, "GET", "/v3/admin/types/"+id, nil, &shown)
	values(t, "show", typeOf(t, "show", shown, typeShownMembers), map[string]any{"id": id, "name": "gold",
		"description": "fast", "qos_specs_id": nil, "extra_specs": map[string]any{"storage_protocol": "nbd", "vendor_name": "cairn"}})

	// Defaults: public, no description (null), no extra specs ({}).
	plain := e.createType(map[string]any{"name": "plain"})
	values(t, "plain", plain, map[string]any{"is_public": true, "description": nil, "extra_specs": map[string]any{}})

	var updated map[string]any
	e.must(200, e.admin, "PUT", "/v3/admin/types/"+id, map[string]any{"volume_type": map[string]any{
		"name": "platinum", "description": "faster", "is_public": false}}, &updated)
	values(t, "update", typeOf(t, "update", updated, typeUpdatedMembers),
		map[string]any{"name": "platinum", "description": "faster", "is_public": false})
	e.must(200, e.admin, "GET", "/v3/admin/types/"+id, nil, &shown)
	values(t, "show after update", shown["volume_type"].(map[string]any), map[string]any{"name": "platinum",
		"description": "faster", "is_public": false, "os-volume-type-access:is_public": false})
	// A string the block storage API takes as a boolean.
	e.must(200, e.admin, "PUT", "/v3/admin/types/"+id, `{"volume_type":{"is_public":"True"}}`, &updated)
	values(t, "update with a string", updated["volume_type"].(map[string]any), map[string]any{"is_public": true})

	e.must(202, e.admin, "DELETE", "/v3/admin/types/"+id, nil, nil)
	e.must(404, e.admin, "GET", "/v3/admin/types/"+id, nil, nil)
	e.must(404, e.admin, "DELETE", "/v3/admin/types/"+id, nil, nil)
	// The name is free again.
	e.createType(map[string]any{"name": "platinum"})
}

// TestVolumeTypeRefused: bad input and callers other than admins are
// refused with the block storage API's codes, and nothing changes.
func TestVolumeTypeRefused(t *testing.T) {
	e := newEnv(t)
	vt := e.createType(map[string]any{"name": "gold", "extra_specs": map[string]string{"spec1": "val1"}})
	id := vt["id"].(string)
	T := "/v3/admin/types"
	A := "/v3/alpha/types"
	missing := cairn.NewUUID()
	cases := []struct {
		name         string
		tok          string
		method, path string
		body         string
		code         int
		says         string
	}{
		{"empty name", e.admin, "POST", T, `{"volume_type":{"name":""}}`, 400, "name: empty"},
		{"blank name", e.admin, "POST", T, `{"volume_type":{"name":"  "}}`, 400, "name: empty"},
		{"no name", e.admin, "POST", T, `{"volume_type":{"description":"d"}}`, 400, "name is required"},
		{"null name", e.admin, "POST", T, `{"volume_type":{"name":null}}`, 400, "name is required"},
		{"long name", e.admin, "POST", T, `{"volume_type":{"name":"` + strings.Repeat("ñ", 256) + `"}}`, 400, "256 characters"},
		{"long description", e.admin, "POST", T, `{"volume_type":{"name":"x","description":"` + strings.Repeat("d", 256) + `"}}`, 400, "description"},
		{"repeated name", e.admin, "POST", T, `{"volume_type":{"name":"gold"}}`, 409, "exists"},
		{"unknown member", e.admin, "POST", T, `{"volume_type":{"name":"x","qos_specs_id":null}}`, 400, "qos_specs_id"},
		{"unknown top member", e.admin, "POST", T, `{"volume_type":{"name":"x"},"x":1}`, 400, `"x"`},
		{"bad is_public", e.admin, "POST", T, `{"volume_type":{"name":"x","os-volume-type-access:is_public":"maybe"}}`, 400, "is_public"},
		{"bad spec key", e.admin, "POST", T, `{"volume_type":{"name":"x","extra_specs":{"a*b":"v"}}}`, 400, `"a*b"`},
		{"empty spec value", e.admin, "POST", T, `{"volume_type":{"name":"x","extra_specs":{"k":""}}}`, 400, "value of 0 characters"},
		{"spec not a string", e.admin, "POST", T, `{"volume_type":{"name":"x","extra_specs":{"k":1}}}`, 400, "extra_specs"},
		{"no body", e.admin, "POST", T, ``, 400, "empty request body"},
		{"member creates", e.tokA, "POST", A, `{"volume_type":{"name":"x"}}`, 403, "for admins"},
		{"update nothing", e.admin, "PUT", T + "/" + id, `{"volume_type":{}}`, 400, "nothing to update"},
		{"rename to a taken name", e.admin, "PUT", T + "/" + id, `{"volume_type":{"name":"__DEFAULT__"}}`, 409, "named"},
		{"update missing", e.admin, "PUT", T + "/" + missing, `{"volume_type":{"name":"y"}}`, 404, missing},
		{"member updates", e.tokA, "PUT", A + "/" + id, `{"volume_type":{"name":"y"}}`, 403, "for admins"},
		{"member deletes", e.tokA, "DELETE", A + "/" + id, ``, 403, "for admins"},
		{"show missing", e.admin, "GET", T + "/" + missing, ``, 404, missing},
		{"list filter unknown", e.admin, "GET", T + "?sort=name", ``, 400, "unknown here"},
		{"list is_public bad", e.admin, "GET", T + "?is_public=maybe", ``, 400, "is_public"},
		{"list is_public twice", e.admin, "GET", T + "?is_public=true&is_public=false", ``, 400, "2 times"},

		// Extra specs (tempest's extra specs negative tests).
		{"spec update no body", e.admin, "PUT", T + "/" + id + "/extra_specs/spec1", `null`, 400, "exactly one"},
		{"spec update other key", e.admin, "PUT", T + "/" + id + "/extra_specs/" + missing, `{"spec1":"val2"}`, 400, "exactly one"},
		{"spec update None key", e.admin, "PUT", T + "/" + id + "/extra_specs/None", `{"spec1":"val2"}`, 400, "exactly one"},
		{"spec update two", e.admin, "PUT", T + "/" + id + "/extra_specs/spec1", `{"spec1":"val2","spec2":"val1"}`, 400, "exactly one"},
		{"spec update missing type", e.admin, "PUT", T + "/" + missing + "/extra_specs/spec1", `{"spec1":"val5"}`, 404, missing},
		{"spec create missing type", e.admin, "POST", T + "/" + missing + "/extra_specs", `{"extra_specs":{"spec2":"val1"}}`, 404, missing},
		{"spec create null", e.admin, "POST", T + "/" + id + "/extra_specs", `{"extra_specs":null}`, 400, "extra_specs is required"},
		{"spec create list", e.admin, "POST", T + "/" + id + "/extra_specs", `{"extra_specs":["invalid"]}`, 400, "extra_specs"},
		{"spec create too long", e.admin, "POST", T + "/" + id + "/extra_specs", `{"extra_specs":{"k":"` + strings.Repeat("v", 256) + `"}}`, 400, "256 characters"},
		{"spec delete missing type", e.admin, "DELETE", T + "/" + missing + "/extra_specs/spec1", ``, 404, missing},
		{"spec delete missing key", e.admin, "DELETE", T + "/" + id + "/extra_specs/nope", ``, 404, "nope"},
		{"spec list missing type", e.admin, "GET", T + "/" + missing + "/extra_specs", ``, 404, missing},
		{"spec show missing type", e.admin, "GET", T + "/" + missing + "/extra_specs/spec1", ``, 404, missing},
		{"spec show missing key", e.admin, "GET", T + "/" + id + "/extra_specs/nonexistent_extra_spec_name", ``, 404, "nonexistent_extra_spec_name"},
		{"member sets a spec", e.tokA, "POST", A + "/" + id + "/extra_specs", `{"extra_specs":{"a":"b"}}`, 403, "for admins"},
		{"member deletes a spec", e.tokA, "DELETE", A + "/" + id + "/extra_specs/spec1", ``, 403, "for admins"},

		// Access.
		{"access of a public type", e.admin, "POST", T + "/" + id + "/action", `{"addProjectAccess":{"project":"alpha"}}`, 400, "is public"},
		{"no action", e.admin, "POST", T + "/" + id + "/action", `{}`, 400, "give one action"},
		{"two actions", e.admin, "POST", T + "/" + id + "/action", `{"addProjectAccess":{"project":"a"},"removeProjectAccess":{"project":"a"}}`, 400, "give one action"},
		{"unknown action", e.admin, "POST", T + "/" + id + "/action", `{"os-retype":{}}`, 400, "os-retype"},
		{"empty project", e.admin, "POST", T + "/" + id + "/action", `{"addProjectAccess":{"project":""}}`, 400, "project"},
		{"access of a missing type", e.admin, "POST", T + "/" + missing + "/action", `{"addProjectAccess":{"project":"alpha"}}`, 404, missing},
		{"member lists access", e.tokA, "GET", A + "/" + id + "/os-volume-type-access", ``, 403, "for admins"},
		{"member adds access", e.tokA, "POST", A + "/" + id + "/action", `{"addProjectAccess":{"project":"alpha"}}`, 403, "for admins"},

		// Encryption.
		{"encrypt", e.admin, "POST", T + "/" + id + "/encryption", `{"encryption":{"provider":"luks","cipher":"aes-xts-plain64","key_size":256,"control_location":"front-end"}}`, 400, "not encrypted at rest"},
		{"encrypt missing type", e.admin, "POST", T + "/" + missing + "/encryption", `{"encryption":{"provider":"luks"}}`, 404, missing},
		{"member encrypts", e.tokA, "POST", A + "/" + id + "/encryption", `{"encryption":{}}`, 403, "for admins"},
		{"encryption spec", e.admin, "GET", T + "/" + id + "/encryption/cipher", ``, 404, "no encryption"},
		{"encryption of a missing type", e.admin, "GET", T + "/" + missing + "/encryption", ``, 404, missing},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			types, access := e.catalogTypes()
			var body any
			if c.body != "" {
				body = c.body
			}
			var out map[string]map[string]any
			code := e.do(c.tok, c.method, c.path, body, &out)
			if code != c.code {
				t.Fatalf("%s %s: %d %v, want %d", c.method, c.path, code, out, c.code)
			}
			if len(out) != 1 {
				t.Fatalf("error body %v", out)
			}
			for _, f := range out {
				if msg, _ := f["message"].(string); !strings.Contains(msg, c.says) {
					t.Errorf("message %q, want %q", msg, c.says)
				}
			}
			if t2, a2 := e.catalogTypes(); !reflect.DeepEqual(types, t2) || !reflect.DeepEqual(access, a2) {
				t.Errorf("refused, but the types changed:\n%v %v\n%v %v", types, access, t2, a2)
			}
		})
	}
}

// TestVolumeTypeExtraSpecs: the extra specs calls, as tempest's extra
// specs tests make them; callers other than admins see only the specs
// meant for users.
func TestVolumeTypeExtraSpecs(t *testing.T) {
	e := newEnv(t)
	id := e.createType(map[string]any{"name": "t"})["id"].(string)
	specs := "/v3/admin/types/" + id + "/extra_specs"
	var out map[string]any
	e.must(200, e.admin, "POST", specs, `{"extra_specs":{"spec1":"val1"}}`, &out)
	values(t, "create", out, map[string]any{"extra_specs": map[string]any{"spec1": "val1"}})
	e.must(200, e.admin, "POST", specs, `{"extra_specs":{"spec2":"val1","multiattach":"<is> False"}}`, &out)
	var item, shown map[string]any
	e.must(200, e.admin, "PUT", specs+"/spec2", `{"spec2":"val2"}`, &item)
	if !reflect.DeepEqual(item, map[string]any{"spec2": "val2"}) {
		t.Errorf("update: %v", item)
	}
	e.must(200, e.admin, "GET", specs+"/spec2", nil, &shown)
	if !reflect.DeepEqual(shown, map[string]any{"spec2": "val2"}) {
		t.Errorf("show: %v", shown)
	}
	// A merge overwrites the keys it names and keeps the others.
	e.must(200, e.admin, "POST", specs, `{"extra_specs":{"spec2":"val3","spec4":"val4"}}`, &out)
	values(t, "merge answer", out, map[string]any{"extra_specs": map[string]any{"spec2": "val3", "spec4": "val4"}})
	all := map[string]any{"spec1": "val1", "spec2": "val3", "spec4": "val4", "multiattach": "<is> False"}
	out = nil
	e.must(200, e.admin, "GET", specs, nil, &out)
	values(t, "list", out, map[string]any{"extra_specs": all})
	e.must(200, e.admin, "GET", "/v3/admin/types/"+id, nil, &out)
	values(t, "type", out["volume_type"].(map[string]any), map[string]any{"extra_specs": all})

	// A member sees only multiattach, of these.
	user := map[string]any{"multiattach": "<is> False"}
	e.must(200, e.tokA, "GET", "/v3/alpha/types/"+id+"/extra_specs", nil, &out)
	values(t, "member's list", out, map[string]any{"extra_specs": user})
	e.must(200, e.tokA, "GET", "/v3/alpha/types/"+id, nil, &out)
	values(t, "member's type", out["volume_type"].(map[string]any), map[string]any{"extra_specs": user})
	e.must(404, e.tokA, "GET", "/v3/alpha/types/"+id+"/extra_specs/spec1", nil, nil)
	e.must(200, e.tokA, "GET", "/v3/alpha/types/"+id+"/extra_specs/multiattach", nil, nil)

	e.must(202, e.admin, "DELETE", specs+"/spec1", nil, nil)
	e.must(404, e.admin, "GET", specs+"/spec1", nil, nil)
	out = nil
	e.must(200, e.admin, "GET", specs, nil, &out)
	delete(all, "spec1")
	values(t, "after delete", out, map[string]any{"extra_specs": all})

	// Up to MaxExtraSpecs (128), counting what the type has.
	many := map[string]string{}
	for i := range 125 {
		many[fmt.Sprintf("k%03d", i)] = "v"
	}
	e.must(200, e.admin, "POST", specs, map[string]any{"extra_specs": many}, nil)
	e.must(400, e.admin, "POST", specs, `{"extra_specs":{"one-more":"v"}}`, nil)
}

// TestVolumeTypeAccess: a private type is seen and used only by admins
// and the projects given access, as tempest's access tests use it.
func TestVolumeTypeAccess(t *testing.T) {
	e := newEnv(t)
	priv := e.createType(map[string]any{"name": "private", "os-volume-type-access:is_public": false})
	id := priv["id"].(string)
	values(t, "private", priv, map[string]any{"is_public": false, "os-volume-type-access:is_public": false})
	pub := e.createType(map[string]any{"name": "public"})

	names := func(tok, project, query string) []string {
		t.Helper()
		var list struct {
			VolumeTypes []map[string]any `json:"volume_types"`
		}
		e.must(200, tok, "GET", "/v3/"+project+"/types"+query, nil, &list)
		var out []string
		for _, vt := range list.VolumeTypes {
			if got := typeMembers(vt); !reflect.DeepEqual(got, typeShownMembers) {
				t.Errorf("list item members %v", got)
			}
			out = append(out, vt["name"].(string))
		}
		return out
	}
	for _, c := range []struct {
		tok, project, query string
		want                []string
	}{
		{e.admin, "admin", "", []string{"__DEFAULT__", "private", "public"}},
		{e.admin, "admin", "?is_public=None", []string{"__DEFAULT__", "private", "public"}},
		{e.admin, "admin", "?is_public=false", []string{"private"}},
		{e.admin, "admin", "?is_public=true", []string{"__DEFAULT__", "public"}},
		{e.tokA, "alpha", "", []string{"__DEFAULT__", "public"}},
		// Other callers' is_public is ignored, as in the block storage API.
		{e.tokA, "alpha", "?is_public=false", []string{"__DEFAULT__", "public"}},
	} {
		if got := names(c.tok, c.project, c.query); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s %s: %v, want %v", c.project, c.query, got, c.want)
		}
	}
	e.must(404, e.tokA, "GET", "/v3/alpha/types/"+id, nil, nil)
	e.must(404, e.tokA, "GET", "/v3/alpha/types/"+id+"/extra_specs", nil, nil)
	// tempest's test_create_volume_with_private_volume_type.
	before := e.state()
	e.must(404, e.tokA, "POST", "/v3/alpha/volumes", map[string]any{"volume": map[string]any{"size": 1, "volume_type": id}}, nil)
	e.must(404, e.tokA, "POST", "/v3/alpha/volumes", map[string]any{"volume": map[string]any{"size": 1, "volume_type": "private"}}, nil)
	if after := e.state(); !reflect.DeepEqual(before, after) {
		t.Error("a refused create changed the catalog")
	}

	action := "/v3/admin/types/" + id + "/action"
	e.must(202, e.admin, "POST", action, `{"addProjectAccess":{"project":"alpha"}}`, nil)
	e.must(202, e.admin, "POST", action, `{"addProjectAccess":{"project":"a-keystone-project"}}`, nil)
	e.must(409, e.admin, "POST", action, `{"addProjectAccess":{"project":"alpha"}}`, nil)
	var access map[string]any
	e.must(200, e.admin, "GET", "/v3/admin/types/"+id+"/os-volume-type-access", nil, &access)
	want := map[string]any{"volume_type_access": []any{
		map[string]any{"volume_type_id": id, "project_id": "a-keystone-project"},
		map[string]any{"volume_type_id": id, "project_id": "alpha"},
	}}
	if !reflect.DeepEqual(access, want) {
		t.Errorf("access: %v, want %v", access, want)
	}
	e.must(200, e.admin, "GET", "/v3/admin/types/"+pub["id"].(string)+"/os-volume-type-access", nil, &access)
	values(t, "access of a public type", access, map[string]any{"volume_type_access": []any{}})

	// With access, alpha sees and uses the type; beta still does not.
	if got := names(e.tokA, "alpha", ""); !reflect.DeepEqual(got, []string{"__DEFAULT__", "private", "public"}) {
		t.Errorf("alpha with access: %v", got)
	}
	if got := names(e.tokB, "beta", ""); !reflect.DeepEqual(got, []string{"__DEFAULT__", "public"}) {
		t.Errorf("beta: %v", got)
	}
	var vol map[string]map[string]any
	e.must(202, e.tokA, "POST", "/v3/alpha/volumes", map[string]any{"volume": map[string]any{"size": 1, "volume_type": id}}, &vol)
	values(t, "volume of a private type", vol["volume"], map[string]any{"volume_type": "private"})
	e.wait(e.tokA, "alpha", "volume", vol["volume"]["id"].(string))

	e.must(202, e.admin, "POST", action, `{"removeProjectAccess":{"project":"alpha"}}`, nil)
	e.must(404, e.admin, "POST", action, `{"removeProjectAccess":{"project":"alpha"}}`, nil)
	e.must(404, e.tokA, "GET", "/v3/alpha/types/"+id, nil, nil)
	// Its volume keeps its type.
	e.must(200, e.tokA, "GET", "/v3/alpha/volumes/"+vol["volume"]["id"].(string), nil, &vol)
	values(t, "volume after access is taken", vol["volume"], map[string]any{"volume_type": "private"})
}

// TestVolumeTypeOfVolumes: volumes record their type, given by name or ID
// or taken from their source; answers show its current name; a type in
// use is not deleted.
func TestVolumeTypeOfVolumes(t *testing.T) {
	e := newEnv(t)
	gold := e.createType(map[string]any{"name": "gold"})
	id := gold["id"].(string)
	create := func(body map[string]any) map[string]any {
		t.Helper()
		var out map[string]map[string]any
		e.must(202, e.tokA, "POST", "/v3/alpha/volumes", map[string]any{"volume": body}, &out)
		if r := e.wait(e.tokA, "alpha", "volume", out["volume"]["id"].(string)); r["status"] != "available" {
			t.Fatalf("volume: %v", r)
		}
		return out["volume"]
	}
	byID := create(map[string]any{"size": 1, "volume_type": id})
	byName := create(map[string]any{"size": 1, "volume_type": "gold"})
	plain := create(map[string]any{"size": 1, "volume_type": nil})
	clone := create(map[string]any{"source_volid": byID["id"]})
	for what, v := range map[string]map[string]any{"by ID": byID, "by name": byName, "plain": plain, "clone": clone} {
		want := "gold"
		if what == "plain" {
			want = "__DEFAULT__"
		}
		values(t, what, v, map[string]any{"volume_type": want})
	}
	// tempest's test_create_volume_with_nonexistent_volume_type.
	e.must(404, e.tokA, "POST", "/v3/alpha/volumes", map[string]any{"volume": map[string]any{"size": 1, "volume_type": cairn.NewUUID()}}, nil)

	// Renamed, the volumes show the new name, in lists too.
	e.must(200, e.admin, "PUT", "/v3/admin/types/"+id, `{"volume_type":{"name":"platinum"}}`, nil)
	var list struct{ Volumes []map[string]any }
	e.must(200, e.tokA, "GET", "/v3/alpha/volumes/detail", nil, &list)
	for _, v := range list.Volumes {
		want := "platinum"
		if v["id"] == plain["id"] {
			want = "__DEFAULT__"
		}
		values(t, "listed", v, map[string]any{"volume_type": want})
	}

	// In use: 400, until its volumes are deleted.
	for _, v := range []map[string]any{byID, byName, clone} {
		var fault map[string]map[string]any
		if code := e.do(e.admin, "DELETE", "/v3/admin/types/"+id, nil, &fault); code != 400 ||
			!strings.Contains(fault["badRequest"]["message"].(string), "in use") {
			t.Fatalf("delete a type in use: %d %v", code, fault)
		}
		e.must(202, e.tokA, "DELETE", "/v3/alpha/volumes/"+v["id"].(string), nil, nil)
		if r := e.wait(e.tokA, "alpha", "volume", v["id"].(string)); r != nil {
			t.Fatalf("volume not deleted: %v", r)
		}
	}
	e.must(202, e.admin, "DELETE", "/v3/admin/types/"+id, nil, nil)
}

// TestVolumeTypeEncryption: no type is encrypted, and none can be made so.
func TestVolumeTypeEncryption(t *testing.T) {
	e := newEnv(t)
	id := e.createType(map[string]any{"name": "t"})["id"].(string)
	for _, tok := range []string{e.admin, e.tokA} {
		project := map[string]string{e.admin: "admin", e.tokA: "alpha"}[tok]
		var out map[string]any
		if code := e.do(tok, "GET", "/v3/"+project+"/types/"+id+"/encryption", nil, &out); code != http.StatusOK || len(out) != 0 || out == nil {
			t.Errorf("%s: encryption: %d %v, want 200 {}", project, code, out)
		}
	}
}
