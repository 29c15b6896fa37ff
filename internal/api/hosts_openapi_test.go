package api

import (
	"reflect"
	"testing"

	"github.com/cairnproject/cairn/internal/wire"
)

// TestOpenAPIHostsSchemas holds the documented (inline) schemas of the
// services, hosts, pools and capabilities calls to the Go types the
// handlers encode and decode, as TestOpenAPISchemasMatchGo does for the
// named ones.
func TestOpenAPIHostsSchemas(t *testing.T) {
	doc := oaLoad(t)
	body := func(path, method, code string) any {
		return oaLookup(doc, "paths", "/v3/{project_id}"+path, method, "responses", code, "content", "application/json", "schema")
	}
	for _, tc := range []struct {
		name   string
		node   any
		typ    any
		answer bool
	}{
		{"listServices", body("/os-services", "get", "200"), wire.ServiceList{}, true},
		{"serviceAction", body("/os-services/{action}", "put", "200"), wire.ServiceStatus{}, true},
		{"serviceAction request", oaLookup(doc, "paths", "/v3/{project_id}/os-services/{action}", "put",
			"requestBody", "content", "application/json", "schema"), wire.ServiceActionRequest{}, false},
		{"listHosts", body("/os-hosts", "get", "200"), wire.HostList{}, true},
		{"showHost", body("/os-hosts/{host}", "get", "200"), wire.HostShow{}, true},
		{"listPools", body("/scheduler-stats/get_pools", "get", "200"), wire.PoolList{}, true},
		{"showCapabilities", body("/capabilities/{host}", "get", "200"), wire.BackendCapabilities{}, true},
	} {
		if tc.node == nil {
			t.Errorf("%s: no schema", tc.name)
			continue
		}
		c := oaSchemaCheck{t: t, doc: doc, answer: tc.answer}
		c.compare(tc.name, reflect.TypeOf(tc.typ), tc.node)
	}
}
