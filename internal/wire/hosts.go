package wire

import (
	"encoding/json"
	"time"
)

// The admin views of the service's own processes and capacity, in the
// block storage API's shapes: os-services, os-hosts, scheduler-stats
// and capabilities.

// ServiceInfo is an entry of GET /os-services: one of the block storage
// API's services (cinder-scheduler, cinder-volume, cinder-backup) the
// cairn process is. Status is "enabled" or "disabled", State "up" or
// "down"; DisabledReason is null unless disabled.
type ServiceInfo struct {
	Binary         string    `json:"binary"`
	Host           string    `json:"host"`
	Zone           string    `json:"zone"`
	Status         string    `json:"status"`
	State          string    `json:"state"`
	UpdatedAt      time.Time `json:"updated_at"`
	DisabledReason *string   `json:"disabled_reason"`
	// Cluster is shown from microversion 3.7, null: cairn's services
	// are in no cluster. Absent below.
	Cluster json.RawMessage `json:"cluster,omitempty"`
}

// ServiceList answers GET /os-services.
type ServiceList struct {
	Services []ServiceInfo `json:"services"`
}

// ServiceActionRequest is the body of PUT /os-services/{action}: the
// service's host and binary (Service is the binary's older name) for
// enable, disable and disable-log-reason, with DisabledReason for the
// last; the volume service's host alone for freeze and thaw.
type ServiceActionRequest struct {
	Host           *string `json:"host,omitempty"`
	Binary         *string `json:"binary,omitempty"`
	Service        *string `json:"service,omitempty"`
	DisabledReason *string `json:"disabled_reason,omitempty"`
}

// ServiceStatus answers PUT /os-services/enable: the service and its
// status, as the block storage API does (Service repeats Binary).
type ServiceStatus struct {
	Host           string  `json:"host"`
	Binary         string  `json:"binary"`
	Service        string  `json:"service"`
	Status         string  `json:"status"`
	Disabled       bool    `json:"disabled"`
	DisabledReason *string `json:"disabled_reason"`
}

// HostInfo is an entry of GET /os-hosts: a service and the host it runs
// on. ServiceStatus is "available" or "unavailable", ServiceState
// "enabled" or "disabled".
type HostInfo struct {
	HostName      string     `json:"host_name"`
	Service       string     `json:"service"`
	Zone          string     `json:"zone"`
	ServiceState  string     `json:"service-state"`
	ServiceStatus string     `json:"service-status"`
	LastUpdate    *time.Time `json:"last-update"`
}

// HostList answers GET /os-hosts.
type HostList struct {
	Hosts []HostInfo `json:"hosts"`
}

// HostResource is what a project holds on a volume service's host, or
// all projects together (Project "(total)"); the counts and GiB are
// decimal strings, as the block storage API has them.
type HostResource struct {
	Host            string `json:"host"`
	Project         string `json:"project"`
	VolumeCount     string `json:"volume_count"`
	TotalVolumeGB   string `json:"total_volume_gb"`
	SnapshotCount   string `json:"snapshot_count"`
	TotalSnapshotGB string `json:"total_snapshot_gb"`
}

// HostResourceItem wraps a HostResource, as GET /os-hosts/{host} lists
// them.
type HostResourceItem struct {
	Resource HostResource `json:"resource"`
}

// HostShow answers GET /os-hosts/{host}: the total first, then each
// project's usage.
type HostShow struct {
	Host []HostResourceItem `json:"host"`
}

// Pool is an entry of GET /scheduler-stats/get_pools: its name
// (HOST@backend#pool) and, with detail=true, its capabilities.
type Pool struct {
	Name         string            `json:"name"`
	Capabilities *PoolCapabilities `json:"capabilities,omitempty"`
}

// PoolCapabilities are a pool's statistics, as the block storage
// service's scheduler reports them. TotalCapacityGB and FreeCapacityGB
// are numbers (GiB), or the string "unknown".
type PoolCapabilities struct {
	PoolName                 string          `json:"pool_name"`
	TotalCapacityGB          json.RawMessage `json:"total_capacity_gb"`
	FreeCapacityGB           json.RawMessage `json:"free_capacity_gb"`
	AllocatedCapacityGB      int64           `json:"allocated_capacity_gb"`
	VolumeBackendName        string          `json:"volume_backend_name"`
	VendorName               string          `json:"vendor_name"`
	DriverVersion            string          `json:"driver_version"`
	StorageProtocol          string          `json:"storage_protocol"`
	ThinProvisioningSupport  bool            `json:"thin_provisioning_support"`
	ThickProvisioningSupport bool            `json:"thick_provisioning_support"`
	ReservedPercentage       int             `json:"reserved_percentage"`
	QoSSupport               bool            `json:"QoS_support"`
	Multiattach              bool            `json:"multiattach"`
	Timestamp                time.Time       `json:"timestamp"`
}

// PoolList answers GET /scheduler-stats/get_pools.
type PoolList struct {
	Pools []Pool `json:"pools"`
}

// BackendCapabilities answers GET /capabilities/{host}: a backend's
// capabilities in the block storage API's shape. Properties documents
// the volume type extra specs the backend honours, by name.
type BackendCapabilities struct {
	Namespace          string                        `json:"namespace"`
	VendorName         string                        `json:"vendor_name"`
	VolumeBackendName  string                        `json:"volume_backend_name"`
	PoolName           *string                       `json:"pool_name"`
	DriverVersion      string                        `json:"driver_version"`
	StorageProtocol    string                        `json:"storage_protocol"`
	DisplayName        *string                       `json:"display_name"`
	Description        *string                       `json:"description"`
	Visibility         *string                       `json:"visibility"`
	ReplicationTargets []string                      `json:"replication_targets"`
	Properties         map[string]CapabilityProperty `json:"properties"`
}

// CapabilityProperty documents one extra spec a backend honours.
type CapabilityProperty struct {
	Title       string `json:"title"`
	Description string `json:"description"`
	Type        string `json:"type"`
}
