package api

import (
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

// TestOpenAPIVolumeTypeSchemas holds the documented schemas of the volume
// type calls to the Go types the handlers encode and decode, as
// TestOpenAPISchemasMatchGo does for the others, and the documented
// bounds to the service's.
func TestOpenAPIVolumeTypeSchemas(t *testing.T) {
	doc := oaLoad(t)
	for _, set := range []struct {
		types  map[string]any
		answer bool
	}{
		{map[string]any{
			"VolumeTypeUpdated": wire.VolumeTypeUpdated{},
			"VolumeTypeCreated": wire.VolumeTypeCreated{},
			"VolumeTypeInfo":    wire.VolumeTypeInfo{},
			"VolumeTypeResponse": struct {
				VolumeType wire.VolumeTypeInfo `json:"volume_type"`
			}{},
			"VolumeTypeCreatedResponse": struct {
				VolumeType wire.VolumeTypeCreated `json:"volume_type"`
			}{},
			"VolumeTypeUpdatedResponse": struct {
				VolumeType wire.VolumeTypeUpdated `json:"volume_type"`
			}{},
			"VolumeTypeList": struct {
				VolumeTypes []wire.VolumeTypeInfo `json:"volume_types"`
			}{},
			"ExtraSpecs":           wire.ExtraSpecs{},
			"ExtraSpecItem":        map[string]string{},
			"VolumeTypeAccessList": wire.VolumeTypeAccessList{},
		}, true},
		{map[string]any{
			"VolumeTypeCreateRequest": wire.VolumeTypeCreateRequest{},
			"VolumeTypeUpdateRequest": wire.VolumeTypeUpdateRequest{},
			"VolumeTypeActionRequest": wire.VolumeTypeActionRequest{},
			"ExtraSpecs":              wire.ExtraSpecs{},
		}, false},
	} {
		for name, v := range set.types {
			schema, ok := oaResolve(doc, "#/components/schemas/"+name)
			if !ok {
				t.Errorf("no schema %s", name)
				continue
			}
			c := oaSchemaCheck{t: t, doc: doc, answer: set.answer}
			c.compare(name, reflect.TypeOf(v), schema)
		}
	}

	create := oaMap(oaLookup(doc, "components", "schemas", "VolumeTypeCreate", "properties"))
	for member, want := range map[string]int{"name": service.MaxVolumeTypeNameLen, "description": service.MaxVolumeTypeDescriptionLen} {
		if got, _ := oaLookup(create, member, "maxLength").(int); got != want {
			t.Errorf("VolumeTypeCreate.%s maxLength %d, want %d", member, got, want)
		}
	}
	specs, _ := oaLookup(create, "extra_specs", "description").(string)
	for _, want := range []string{
		"1 to " + strconv.Itoa(service.MaxExtraSpecKeyLen),
		"1 to " + strconv.Itoa(service.MaxExtraSpecValueLen) + " characters",
		"at most " + strconv.Itoa(service.MaxExtraSpecs),
	} {
		if !strings.Contains(specs, want) {
			t.Errorf("extra_specs description does not say %q: %q", want, specs)
		}
	}
}
