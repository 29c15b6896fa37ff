package api_test

import (
	"bytes"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cairnproject/cairn/internal/api"
)

// FuzzVolumeTypeRequests sends arbitrary bodies and query strings to the
// volume type routes that parse input, as an admin (the only caller
// whose bodies get past the first check): the answer is never a 5xx, and
// every error is a JSON body naming one error with its code.
func FuzzVolumeTypeRequests(f *testing.F) {
	routes := []struct{ method, path string }{
		{"POST", "/v3/admin/types"},
		{"PUT", "/v3/admin/types/T"},
		{"POST", "/v3/admin/types/T/extra_specs"},
		{"PUT", "/v3/admin/types/T/extra_specs/k"},
		{"POST", "/v3/admin/types/T/action"},
		{"GET", "/v3/admin/types"},
		{"POST", "/v3/admin/types/T/encryption"},
	}
	seeds := []struct {
		route       uint8
		query, body string
	}{
		// tempest's create, and the openstack command's (--private).
		{0, "", `{"volume_type": {"name": "t1", "description": "d", "extra_specs": {"storage_protocol": "iSCSI", "vendor_name": "Open Source"}, "os-volume-type-access:is_public": true}}`},
		{0, "", `{"volume_type": {"name": "t2", "os-volume-type-access:is_public": false}}`},
		{0, "", `{"volume_type": {"name": "", "extra_specs": {"a*": ""}}}`},
		{1, "", `{"volume_type": {"name": "n", "description": "d", "is_public": "False"}}`},
		{1, "", `{"volume_type": {}}`},
		{2, "", `{"extra_specs": {"spec1": "val1"}}`},
		{2, "", `{"extra_specs": ["invalid"]}`},
		{2, "", `{"extra_specs": null}`},
		{3, "", `{"k": "v"}`},
		{3, "", `null`},
		{3, "", `{"k": "v", "l": "w"}`},
		{4, "", `{"addProjectAccess": {"project": "alpha"}}`},
		{4, "", `{"removeProjectAccess": {"project": ""}}`},
		{5, "is_public=None", ""},
		{5, "is_public=false&is_public=true", ""},
		{6, "", `{"encryption": {"provider": "luks", "key_size": 256, "cipher": "aes-xts-plain64", "control_location": "front-end"}}`},
	}
	for _, s := range seeds {
		f.Add(s.route, s.query, s.body)
	}
	e := newEnv(f)
	var made map[string]map[string]any
	e.must(200, e.admin, "POST", "/v3/admin/types", `{"volume_type":{"name":"fuzz","os-volume-type-access:is_public":false}}`, &made)
	typeID := made["volume_type"]["id"].(string)
	handler := api.New(e.svc, nil, nil)
	f.Fuzz(func(t *testing.T, route uint8, query, body string) {
		r := routes[int(route)%len(routes)]
		path := strings.ReplaceAll(r.path, "/T", "/"+typeID)
		req := httptest.NewRequest(r.method, "/", bytes.NewBufferString(body))
		req.URL.Path = path
		req.URL.RawQuery = query
		req.Header.Set("X-Auth-Token", e.admin)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		checkFuzzAnswer(t, fmt.Sprintf("%s %s?%s %q", r.method, path, query, body), rec)
	})
}
