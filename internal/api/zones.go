package api

import (
	"net/http"

	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

// listAvailabilityZones answers the one zone every volume is in: cairn
// serves one host's volumes.
func (s *Server) listAvailabilityZones(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	writeJSON(w, http.StatusOK, map[string]any{"availabilityZoneInfo": []any{
		map[string]any{"zoneName": wire.AvailabilityZone, "zoneState": map[string]bool{"available": true}},
	}})
	return nil
}

func (s *Server) listExtensions(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	list := extensions()
	for i := range list {
		list[i].Links = []any{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"extensions": list})
	return nil
}

// extension is one entry of GET /extensions: a block storage API
// extension (by Cinder's alias and name) whose calls cairn serves.
type extension struct {
	Alias       string `json:"alias"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Updated     string `json:"updated"`
	Links       []any  `json:"links"`
}

// extensions are the block storage API's extensions cairn serves, each
// in full: a client that finds one here may use all its calls.
func extensions() []extension {
	return []extension{
		{"os-admin-actions", "AdminActions", "Admin actions: reset_status, force_delete", "2012-08-25T00:00:00+00:00", nil},
		{"os-availability-zone", "AvailabilityZones", "The one availability zone, nova", "2013-06-27T00:00:00+00:00", nil},
		{"backups", "Backups", "Backups: create, list, show, delete, restore, export and import of records", "2012-12-12T00:00:00+00:00", nil},
		{"os-extended-snapshot-attributes", "ExtendedSnapshotAttributes", "Snapshots' project_id and progress", "2012-06-19T00:00:00+00:00", nil},
		{"os-vol-tenant-attr", "VolumeTenantAttribute", "Volumes' project (os-vol-tenant-attr:tenant_id)", "2011-11-03T00:00:00+00:00", nil},
		{"os-volume-transfer", "VolumeTransfer", "Volume transfers: create, list, show, delete, accept", "2013-05-29T00:00:00+00:00", nil},
		{"os-volume-actions", "VolumeActions", "Volume actions: extend, attach, detach, reserve, unreserve, set_bootable, update_readonly_flag", "2012-05-31T00:00:00+00:00", nil},
	}
}
