package api_test

import (
	"net/http"
	"slices"
	"testing"
)

// TestZonesAndExtensions: the one availability zone, and the extensions
// served, in the shapes tempest's schemas check.
func TestZonesAndExtensions(t *testing.T) {
	e := newEnv(t)
	var zones struct {
		Info []struct {
			ZoneName  string          `json:"zoneName"`
			ZoneState map[string]bool `json:"zoneState"`
		} `json:"availabilityZoneInfo"`
	}
	if code := e.do(e.tokA, "GET", "/v3/alpha/os-availability-zone", nil, &zones); code != http.StatusOK {
		t.Fatalf("availability zones: %d", code)
	}
	if len(zones.Info) != 1 || zones.Info[0].ZoneName != "nova" || !zones.Info[0].ZoneState["available"] {
		t.Fatalf("availability zones %+v", zones)
	}
	var ext struct {
		Extensions []map[string]any `json:"extensions"`
	}
	if code := e.do(e.tokA, "GET", "/v3/alpha/extensions", nil, &ext); code != http.StatusOK {
		t.Fatalf("extensions: %d", code)
	}
	var aliases []string
	for _, x := range ext.Extensions {
		for _, k := range []string{"alias", "name", "description", "updated", "links"} {
			if _, ok := x[k]; !ok {
				t.Errorf("extension %v has no %s", x, k)
			}
		}
		if len(x) != 5 {
			t.Errorf("extension %v: members beyond the five tempest allows", x)
		}
		aliases = append(aliases, x["alias"].(string))
	}
	for _, want := range []string{"backups", "os-availability-zone", "os-admin-actions"} {
		if !slices.Contains(aliases, want) {
			t.Errorf("extensions %v lack %s", aliases, want)
		}
	}
	if code := e.do("", "GET", "/v3/alpha/extensions", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("extensions without a token: %d", code)
	}
}
