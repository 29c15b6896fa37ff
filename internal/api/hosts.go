package api

// The admin views of the service's own processes and capacity, in the
// block storage API's shapes (the service's hosts.go says what cairn
// reports and why):
//
//	GET /os-services[?binary=&host=]        the scheduler, volume and backup services
//	PUT /os-services/{action}               enable (a no-op), disable and disable-log-reason
//	                                        (refused), freeze (refused), thaw (a no-op)
//	GET /os-hosts[?zone=]                   the services by host
//	GET /os-hosts/{host}                    the volume host's usage, in total and by project
//	GET /scheduler-stats/get_pools[?detail] the one pool, with its capacity when detailed
//	GET /capabilities/{host}                the one backend's capabilities

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/wire"
)

// serviceEnabled, serviceUp, hostAvailable: what every service is while
// the process answers.
const (
	serviceEnabled = "enabled"
	serviceUp      = "up"
	hostAvailable  = "available"
)

func (s *Server) listServices(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	q := r.URL.Query()
	ps, err := s.svc.Processes(r.Context(), c, service.ProcessFilter{Binary: q.Get("binary"), Host: q.Get("host")})
	if err != nil {
		return err
	}
	out := wire.ServiceList{Services: []wire.ServiceInfo{}}
	for _, p := range ps {
		si := wire.ServiceInfo{Binary: p.Binary, Host: p.Host, Zone: p.Zone,
			Status: serviceEnabled, State: serviceUp, UpdatedAt: p.UpdatedAt}
		if atLeast(r, clustersMinor) {
			si.Cluster = json.RawMessage("null")
		}
		out.Services = append(out.Services, si)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// serviceAction answers PUT /os-services/{action}.
func (s *Server) serviceAction(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	action := r.PathValue("action")
	var in wire.ServiceActionRequest
	switch action {
	case "enable", "disable", "disable-log-reason", "freeze", "thaw":
	default:
		return fmt.Errorf("os-services action %q: no such action (enable, disable, disable-log-reason, freeze, thaw): %w", action, cairn.ErrNotFound)
	}
	if !c.Admin {
		return fmt.Errorf("os-services/%s is for admins: %w", action, cairn.ErrForbidden)
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	host := deref(in.Host)
	binary := deref(in.Binary)
	if binary == "" {
		binary = deref(in.Service)
	}
	ctx := r.Context()
	switch action {
	case "enable":
		p, err := s.svc.EnableProcess(ctx, c, host, binary)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, wire.ServiceStatus{Host: p.Host, Binary: p.Binary, Service: p.Binary,
			Status: serviceEnabled})
		return nil
	case "disable", "disable-log-reason":
		// Refused once the service is found: it never answers 200.
		return s.svc.DisableProcess(ctx, c, host, binary, in.DisabledReason, action == "disable-log-reason")
	case "freeze":
		return s.svc.FreezeHost(ctx, c, host)
	default: // thaw
		if err := s.svc.ThawHost(ctx, c, host); err != nil {
			return err
		}
		w.WriteHeader(http.StatusOK)
		return nil
	}
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func (s *Server) listHosts(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	ps, err := s.svc.Processes(r.Context(), c, service.ProcessFilter{})
	if err != nil {
		return err
	}
	zone := r.URL.Query().Get("zone")
	out := wire.HostList{Hosts: []wire.HostInfo{}}
	for _, p := range ps {
		if zone != "" && zone != p.Zone {
			continue
		}
		at := p.UpdatedAt
		out.Hosts = append(out.Hosts, wire.HostInfo{HostName: p.Host, Service: p.Binary, Zone: p.Zone,
			ServiceState: serviceEnabled, ServiceStatus: hostAvailable, LastUpdate: &at})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) showHost(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	us, err := s.svc.ShowHost(r.Context(), c, r.PathValue("host"))
	if err != nil {
		return err
	}
	out := wire.HostShow{Host: []wire.HostResourceItem{}}
	for _, u := range us {
		out.Host = append(out.Host, wire.HostResourceItem{Resource: wire.HostResource{Host: u.Host, Project: u.Project,
			VolumeCount: strconv.FormatInt(u.Volumes, 10), TotalVolumeGB: strconv.FormatInt(u.VolumeGigabytes, 10),
			SnapshotCount: strconv.FormatInt(u.Snapshots, 10), TotalSnapshotGB: strconv.FormatInt(u.SnapshotGiB, 10)}})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// boolParam reads a boolean query parameter as the block storage API
// does: true, 1, yes, on, or false, 0, no, off, in any case; absent is
// false.
func boolParam(r *http.Request, name string) (bool, error) {
	v, ok := r.URL.Query()[name]
	if !ok {
		return false, nil
	}
	switch strings.ToLower(v[len(v)-1]) {
	case "true", "1", "yes", "y", "on", "t":
		return true, nil
	case "false", "0", "no", "n", "off", "f":
		return false, nil
	}
	return false, fmt.Errorf("%s=%q: want true or false: %w", name, v[len(v)-1], cairn.ErrInvalid)
}

func (s *Server) listPools(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	detail, err := boolParam(r, "detail")
	if err != nil {
		return err
	}
	pools, err := s.svc.Pools(r.Context(), c)
	if err != nil {
		return err
	}
	out := wire.PoolList{Pools: []wire.Pool{}}
	for _, p := range pools {
		item := wire.Pool{Name: p.Name}
		if detail {
			item.Capabilities = &wire.PoolCapabilities{PoolName: service.BackendName,
				TotalCapacityGB: gibJSON(p.TotalGiB), FreeCapacityGB: gibJSON(p.FreeGiB),
				AllocatedCapacityGB: p.AllocatedGiB, VolumeBackendName: p.BackendName, VendorName: p.VendorName,
				DriverVersion: p.DriverVersion, StorageProtocol: p.StorageProtocol,
				ThinProvisioningSupport: p.ThinProvisioning, ThickProvisioningSupport: p.ThickProvisioning,
				ReservedPercentage: p.ReservedPercent, Timestamp: p.Timestamp.UTC().Truncate(time.Microsecond)}
		}
		out.Pools = append(out.Pools, item)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// gibJSON is a capacity in GiB as the pools show it: a number, or
// "unknown" (NaN).
func gibJSON(v float64) json.RawMessage {
	if math.IsNaN(v) {
		return json.RawMessage(`"unknown"`)
	}
	return json.RawMessage(strconv.FormatFloat(v, 'f', -1, 64))
}

func (s *Server) showCapabilities(w http.ResponseWriter, r *http.Request, c service.Caller) error {
	cp, err := s.svc.BackendCapabilities(r.Context(), c, r.PathValue("host"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wire.BackendCapabilities{Namespace: cp.Namespace, VendorName: cp.VendorName,
		VolumeBackendName: cp.BackendName, PoolName: &cp.PoolName, DriverVersion: cp.DriverVersion,
		StorageProtocol: cp.StorageProtocol, DisplayName: &cp.DisplayName, Description: &cp.Description,
		ReplicationTargets: cp.ReplicationTarget, Properties: map[string]wire.CapabilityProperty{}})
	return nil
}
