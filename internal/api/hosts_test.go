package api_test

import (
	"math"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

// newHostsEnv is a service on host node1 whose pool is the volume
// engine's data directory, reporting driver version 2.5.0.
func newHostsEnv(t *testing.T) (*env, string) {
	dir := t.TempDir()
	volumes := filepath.Join(dir, "volumes")
	e := newEnvAt(t, dir, filepath.Join(t.TempDir(), "backups"), func(c *service.Config) {
		c.Hosts = service.HostConfig{Name: "node1", DataDir: volumes, Version: "2.5.0"}
	})
	return e, volumes
}

func TestHostsAdminOnly(t *testing.T) {
	e, _ := newHostsEnv(t)
	for _, tc := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/os-services", nil},
		{"PUT", "/os-services/enable", map[string]any{"host": "node1", "binary": "cinder-scheduler"}},
		{"PUT", "/os-services/disable", map[string]any{"host": "node1", "binary": "cinder-scheduler"}},
		{"PUT", "/os-services/thaw", map[string]any{"host": "node1"}},
		{"GET", "/os-hosts", nil},
		{"GET", "/os-hosts/node1@cairn", nil},
		{"GET", "/scheduler-stats/get_pools?detail=true", nil},
		{"GET", "/capabilities/node1@cairn", nil},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			var out map[string]any
			if code := e.do(e.tokA, tc.method, "/v3/alpha"+tc.path, tc.body, &out); code != http.StatusForbidden {
				t.Errorf("status %d, want 403: %v", code, out)
			}
			if _, ok := out["forbidden"]; !ok {
				t.Errorf("answer %v, want a forbidden error", out)
			}
		})
	}
}

func TestListServices(t *testing.T) {
	e, _ := newHostsEnv(t)
	before := time.Now().Add(-time.Second)
	for _, tc := range []struct {
		query string
		want  []string // binary@host
	}{
		{"", []string{"cinder-scheduler node1", "cinder-volume node1@cairn", "cinder-backup node1"}},
		{"?binary=cinder-volume", []string{"cinder-volume node1@cairn"}},
		{"?host=node1", []string{"cinder-scheduler node1", "cinder-volume node1@cairn", "cinder-backup node1"}},
		{"?host=node1@cairn", []string{"cinder-volume node1@cairn"}},
		{"?host=node1&binary=cinder-volume", []string{"cinder-volume node1@cairn"}},
		{"?host=node1&binary=cinder-backup", []string{"cinder-backup node1"}},
		{"?host=node2", nil},
		{"?host=node1@other", nil},
		{"?binary=nova-compute", nil},
	} {
		t.Run(tc.query, func(t *testing.T) {
			var out wire.ServiceList
			e.must(200, e.admin, "GET", "/v3/admin/os-services"+tc.query, nil, &out)
			var got []string
			for _, s := range out.Services {
				got = append(got, s.Binary+" "+s.Host)
				if s.Zone != "nova" || s.Status != "enabled" || s.State != "up" || s.DisabledReason != nil {
					t.Errorf("%+v: want zone nova, enabled, up, no disabled reason", s)
				}
				if s.UpdatedAt.Before(before) || s.UpdatedAt.After(time.Now().Add(time.Second)) {
					t.Errorf("%+v: updated_at is not now", s)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("services %q, want %q", got, tc.want)
			}
		})
	}
	// disabled_reason is present, and null.
	var raw map[string][]map[string]any
	e.must(200, e.admin, "GET", "/v3/admin/os-services", nil, &raw)
	if v, ok := raw["services"][0]["disabled_reason"]; !ok || v != nil {
		t.Errorf("disabled_reason: %v, %v; want null", v, ok)
	}
}

func TestServiceActions(t *testing.T) {
	e, _ := newHostsEnv(t)
	for _, tc := range []struct {
		name, action string
		body         any
		want         int
	}{
		{"enable", "enable", map[string]any{"host": "node1", "binary": "cinder-scheduler"}, 200},
		{"enable volume", "enable", map[string]any{"host": "node1@cairn", "binary": "cinder-volume"}, 200},
		{"enable by service", "enable", map[string]any{"host": "node1", "service": "cinder-backup"}, 200},
		{"enable unknown host", "enable", map[string]any{"host": "invalid_host", "binary": "cinder-scheduler"}, 404},
		{"enable volume on bare host", "enable", map[string]any{"host": "node1", "binary": "cinder-volume"}, 404},
		{"enable without binary", "enable", map[string]any{"host": "node1"}, 400},
		{"disable unknown binary", "disable", map[string]any{"host": "node1", "binary": "invalid_binary"}, 404},
		{"disable unknown host", "disable", map[string]any{"host": "invalid_host", "binary": "cinder-backup"}, 404},
		{"disable refused", "disable", map[string]any{"host": "node1", "binary": "cinder-scheduler"}, 400},
		{"disable volume refused", "disable", map[string]any{"host": "node1@cairn", "binary": "cinder-volume"}, 400},
		{"disable reason null", "disable-log-reason", map[string]any{"host": "node1", "binary": "cinder-scheduler", "disabled_reason": nil}, 400},
		{"disable reason unknown binary", "disable-log-reason", map[string]any{"host": "node1", "binary": "x", "disabled_reason": "r"}, 404},
		{"disable reason refused", "disable-log-reason", map[string]any{"host": "node1", "binary": "cinder-backup", "disabled_reason": "maintenance"}, 400},
		{"freeze unknown host", "freeze", map[string]any{"host": "invalid_host"}, 400},
		{"freeze refused", "freeze", map[string]any{"host": "node1@cairn"}, 400},
		{"thaw unknown host", "thaw", map[string]any{"host": "invalid_host"}, 400},
		{"thaw", "thaw", map[string]any{"host": "node1"}, 200},
		{"thaw backend", "thaw", map[string]any{"host": "node1@cairn"}, 200},
		{"unknown member", "enable", map[string]any{"host": "node1", "binary": "cinder-scheduler", "x": 1}, 400},
		{"unknown action", "restart", map[string]any{"host": "node1"}, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out map[string]any
			code := e.do(e.admin, "PUT", "/v3/admin/os-services/"+tc.action, tc.body, &out)
			if code != tc.want {
				t.Fatalf("status %d, want %d: %v", code, tc.want, out)
			}
			switch {
			case tc.action == "enable" && code == 200:
				body := tc.body.(map[string]any)
				binary, _ := body["binary"].(string)
				if binary == "" {
					binary = body["service"].(string)
				}
				want := map[string]any{"host": body["host"], "binary": binary, "service": binary,
					"status": "enabled", "disabled": false, "disabled_reason": nil}
				if !mapsEqual(out, want) {
					t.Errorf("answer %v, want %v", out, want)
				}
			case code == 400 && tc.name == "disable refused":
				msg, _ := out["badRequest"].(map[string]any)["message"].(string)
				if !strings.Contains(msg, "cairn cannot disable its own services") {
					t.Errorf("message %q", msg)
				}
			}
		})
	}
}

func mapsEqual(a, b map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestListAndShowHosts(t *testing.T) {
	e, _ := newHostsEnv(t)
	var list wire.HostList
	e.must(200, e.admin, "GET", "/v3/admin/os-hosts", nil, &list)
	var got []string
	for _, h := range list.Hosts {
		got = append(got, h.Service+" "+h.HostName)
		if h.Zone != "nova" || h.ServiceState != "enabled" || h.ServiceStatus != "available" || h.LastUpdate == nil {
			t.Errorf("%+v: want zone nova, enabled, available, updated", h)
		}
	}
	if want := []string{"cinder-scheduler node1", "cinder-volume node1@cairn", "cinder-backup node1"}; !slices.Equal(got, want) {
		t.Errorf("hosts %q, want %q", got, want)
	}
	e.must(200, e.admin, "GET", "/v3/admin/os-hosts?zone=elsewhere", nil, &list)
	if len(list.Hosts) != 0 {
		t.Errorf("zone elsewhere: %v", list.Hosts)
	}

	// Usage: empty, then with volumes and a snapshot in two projects.
	total := func() wire.HostResource {
		var show wire.HostShow
		e.must(200, e.admin, "GET", "/v3/admin/os-hosts/node1@cairn", nil, &show)
		return show.Host[0].Resource
	}
	if got, want := total(), (wire.HostResource{Host: "node1@cairn", Project: "(total)", VolumeCount: "0",
		TotalVolumeGB: "0", SnapshotCount: "0", TotalSnapshotGB: "0"}); got != want {
		t.Errorf("empty host: %+v, want %+v", got, want)
	}
	va := e.createVolume(e.tokA, "alpha", 2, "a1")
	e.createVolume(e.tokA, "alpha", 1, "a2")
	e.createVolume(e.tokB, "beta", 3, "b1")
	var snap struct{ Snapshot wire.SnapshotSummary }
	e.must(202, e.tokA, "POST", "/v3/alpha/snapshots", map[string]any{"snapshot": map[string]any{"volume_id": va}}, &snap)
	e.wait(e.tokA, "alpha", "snapshot", snap.Snapshot.ID)

	var show wire.HostShow
	e.must(200, e.admin, "GET", "/v3/admin/os-hosts/node1@cairn", nil, &show)
	want := []wire.HostResource{
		{Host: "node1@cairn", Project: "(total)", VolumeCount: "3", TotalVolumeGB: "6", SnapshotCount: "1", TotalSnapshotGB: "2"},
		{Host: "node1@cairn", Project: "alpha", VolumeCount: "2", TotalVolumeGB: "3", SnapshotCount: "1", TotalSnapshotGB: "2"},
		{Host: "node1@cairn", Project: "beta", VolumeCount: "1", TotalVolumeGB: "3", SnapshotCount: "0", TotalSnapshotGB: "0"},
	}
	var gotRes []wire.HostResource
	for _, r := range show.Host {
		gotRes = append(gotRes, r.Resource)
	}
	if !slices.Equal(gotRes, want) {
		t.Errorf("usage %+v, want %+v", gotRes, want)
	}

	for _, host := range []string{"node1", "node2@cairn", "invalid_host"} {
		var out map[string]any
		if code := e.do(e.admin, "GET", "/v3/admin/os-hosts/"+host, nil, &out); code != 404 {
			t.Errorf("host %s: status %d, want 404: %v", host, code, out)
		}
	}
}

func TestPools(t *testing.T) {
	e, volumes := newHostsEnv(t)
	e.createVolume(e.tokA, "alpha", 2, "a1")
	e.createVolume(e.tokB, "beta", 5, "b1")

	var plain map[string][]map[string]any
	e.must(200, e.admin, "GET", "/v3/admin/scheduler-stats/get_pools", nil, &plain)
	if want := []map[string]any{{"name": "node1@cairn#cairn"}}; len(plain["pools"]) != 1 || !mapsEqual(plain["pools"][0], want[0]) {
		t.Errorf("pools without detail: %v, want %v", plain, want)
	}

	for _, detail := range []string{"true", "True", "1"} {
		t.Run(detail, func(t *testing.T) {
			_, freeBefore, err := service.FileSystemGiB(volumes)
			if err != nil {
				t.Fatal(err)
			}
			var out struct {
				Pools []struct {
					Name         string
					Capabilities map[string]any
				}
			}
			e.must(200, e.admin, "GET", "/v3/admin/scheduler-stats/get_pools?detail="+detail, nil, &out)
			total, freeAfter, err := service.FileSystemGiB(volumes)
			if err != nil {
				t.Fatal(err)
			}
			if len(out.Pools) != 1 || out.Pools[0].Name != "node1@cairn#cairn" {
				t.Fatalf("pools %+v", out.Pools)
			}
			c := out.Pools[0].Capabilities
			for k, want := range map[string]any{
				"pool_name": "cairn", "volume_backend_name": "cairn", "vendor_name": "cairn", "storage_protocol": "nbd",
				"driver_version": "2.5.0", "allocated_capacity_gb": 7.0, "total_capacity_gb": total,
				"thin_provisioning_support": true, "thick_provisioning_support": false,
				"reserved_percentage": 0.0, "QoS_support": false, "multiattach": false,
			} {
				if c[k] != want {
					t.Errorf("%s: %v, want %v", k, c[k], want)
				}
			}
			// Other processes write to the same file system: the free
			// space is between what it was just before and just after,
			// give or take their writes meanwhile.
			free, _ := c["free_capacity_gb"].(float64)
			if lo, hi := math.Min(freeBefore, freeAfter)-0.5, math.Max(freeBefore, freeAfter)+0.5; free < lo || free > hi || free > total {
				t.Errorf("free_capacity_gb %v, want about %v (total %v)", free, freeAfter, total)
			}
			if total <= 0 {
				t.Errorf("total_capacity_gb %v", total)
			}
			if ts, err := time.Parse(time.RFC3339Nano, c["timestamp"].(string)); err != nil || time.Since(ts) > time.Minute {
				t.Errorf("timestamp %v: %v", c["timestamp"], err)
			}
		})
	}
	var bad map[string]any
	if code := e.do(e.admin, "GET", "/v3/admin/scheduler-stats/get_pools?detail=maybe", nil, &bad); code != 400 {
		t.Errorf("detail=maybe: status %d, want 400: %v", code, bad)
	}
}

// TestPoolsCapacityUnknown: without a data directory the capacity is
// "unknown", as the block storage API allows.
func TestPoolsCapacityUnknown(t *testing.T) {
	e := newEnvAt(t, t.TempDir(), filepath.Join(t.TempDir(), "backups"), func(c *service.Config) {
		c.Hosts = service.HostConfig{Name: "node1"}
	})
	var out struct {
		Pools []struct{ Capabilities map[string]any }
	}
	e.must(200, e.admin, "GET", "/v3/admin/scheduler-stats/get_pools?detail=true", nil, &out)
	c := out.Pools[0].Capabilities
	if c["total_capacity_gb"] != "unknown" || c["free_capacity_gb"] != "unknown" || c["driver_version"] != service.DefaultDriverVersion {
		t.Errorf("capabilities %v", c)
	}
}

func TestCapabilities(t *testing.T) {
	e, _ := newHostsEnv(t)
	var pools struct {
		Pools []struct {
			Name         string
			Capabilities map[string]any
		}
	}
	e.must(200, e.admin, "GET", "/v3/admin/scheduler-stats/get_pools?detail=true", nil, &pools)
	pc := pools.Pools[0].Capabilities
	for _, host := range []string{"node1@cairn", "node1@cairn%23cairn"} {
		t.Run(host, func(t *testing.T) {
			var raw map[string]any
			e.must(200, e.admin, "GET", "/v3/admin/capabilities/"+host, nil, &raw)
			want := map[string]any{"namespace": "OS::Storage::Capabilities::cairn", "vendor_name": "cairn",
				"volume_backend_name": "cairn", "pool_name": "cairn", "driver_version": "2.5.0", "storage_protocol": "nbd",
				"display_name": "cairn volume engine", "visibility": nil,
				"description": "Thin-provisioned volumes with snapshots and clones, exported over NBD"}
			for k, v := range want {
				if raw[k] != v {
					t.Errorf("%s: %v, want %v", k, raw[k], v)
				}
			}
			if rt, ok := raw["replication_targets"].([]any); !ok || len(rt) != 0 {
				t.Errorf("replication_targets: %v", raw["replication_targets"])
			}
			if p, ok := raw["properties"].(map[string]any); !ok || len(p) != 0 {
				t.Errorf("properties: %v", raw["properties"])
			}
			if len(raw) != 11 {
				t.Errorf("%d members, want 11: %v", len(raw), raw)
			}
			// tempest compares these with the pool's.
			for _, k := range []string{"vendor_name", "volume_backend_name", "storage_protocol"} {
				if raw[k] != pc[k] {
					t.Errorf("%s: %v, the pool's %v", k, raw[k], pc[k])
				}
			}
		})
	}
	for _, host := range []string{"node1", "node2@cairn", "node1@lvm"} {
		var out map[string]any
		if code := e.do(e.admin, "GET", "/v3/admin/capabilities/"+host, nil, &out); code != 404 {
			t.Errorf("host %s: status %d, want 404: %v", host, code, out)
		}
	}
}
