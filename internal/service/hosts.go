package service

// The admin views of the service's own processes and capacity, as the
// block storage API has them: its services (os-services), hosts
// (os-hosts), pools (scheduler-stats) and a backend's capabilities.
//
// cairn is one process (cairn serve) on one host that does what the
// block storage service's scheduler, volume and backup services do, on
// one backend with one pool: so it reports those three services, all on
// this host, enabled and up while it answers; the volume service on
// HOST@cairn, as the block storage service names a backend host@backend;
// and the pool HOST@cairn#cairn, whose capacity is that of the file
// system holding the volume engine's data directory.

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
)

// The block storage API's names of the services cairn's process is.
const (
	BinaryScheduler = "cinder-scheduler"
	BinaryVolume    = "cinder-volume"
	BinaryBackup    = "cinder-backup"
)

// What the one backend reports of itself.
const (
	// BackendName is the backend's name (volume_backend_name) and its
	// pool's.
	BackendName = "cairn"
	// VendorName is the backend's vendor_name.
	VendorName = "cairn"
	// StorageProtocol is how volumes reach their users: NBD exports.
	StorageProtocol = "nbd"
	// DefaultDriverVersion is the driver_version reported when the
	// configuration names none.
	DefaultDriverVersion = "1.0"
	// serviceZone is the availability zone of every service.
	serviceZone = "nova"
)

// HostConfig is what the admin views of hosts, services and pools
// report that the service cannot find out itself.
type HostConfig struct {
	// Name is the host's name; "": os.Hostname().
	Name string
	// DataDir is the volume engine's data directory: the pool's
	// capacity is that of its file system. "": the capacity is unknown.
	DataDir string
	// Version is the driver_version reported ("": DefaultDriverVersion).
	Version string
}

// hostInfo is a HostConfig with its defaults applied.
type hostInfo struct {
	name, dataDir, version string
}

func newHostInfo(c HostConfig) hostInfo {
	h := hostInfo{name: c.Name, dataDir: c.DataDir, version: c.Version}
	if h.name == "" {
		h.name, _ = os.Hostname()
	}
	if h.name == "" {
		h.name = "localhost"
	}
	if h.version == "" {
		h.version = DefaultDriverVersion
	}
	return h
}

// hostInfoOf returns the service's host information (New sets it).
func (s *Service) hostInfoOf() hostInfo { return s.hosts }

// HostName is the name of the host the services run on.
func (s *Service) HostName() string { return s.hostInfoOf().name }

// BackendHost is the volume service's host, HOST@cairn, as the block
// storage service names a backend.
func (s *Service) BackendHost() string { return s.HostName() + "@" + BackendName }

// PoolName is the one pool's name, HOST@cairn#cairn: every volume's
// host (os-vol-host-attr:host).
func (s *Service) PoolName() string { return s.BackendHost() + "#" + BackendName }

// Process is one of the block storage API's services cairn's process
// is: up and enabled while it answers.
type Process struct {
	Binary    string
	Host      string
	Zone      string
	UpdatedAt time.Time
}

// ProcessFilter selects services: by binary, and by host, which matches
// a service's host, or the host part of a backend's (HOST matches
// HOST@cairn), as the block storage API's does.
type ProcessFilter struct {
	Binary string
	Host   string
}

func (f ProcessFilter) match(p Process) bool {
	if f.Binary != "" && f.Binary != p.Binary {
		return false
	}
	return f.Host == "" || hostMatches(f.Host, p.Host)
}

// hostMatches reports whether want names host: the same, or host's host
// part when want names no backend.
func hostMatches(want, host string) bool {
	if want == host {
		return true
	}
	h, _, isBackend := strings.Cut(host, "@")
	return isBackend && !strings.Contains(want, "@") && want == h
}

// processes are the services, scheduler first.
func (s *Service) processes() []Process {
	now := s.nowUTC()
	h := s.HostName()
	return []Process{
		{Binary: BinaryScheduler, Host: h, Zone: serviceZone, UpdatedAt: now},
		{Binary: BinaryVolume, Host: s.BackendHost(), Zone: serviceZone, UpdatedAt: now},
		{Binary: BinaryBackup, Host: h, Zone: serviceZone, UpdatedAt: now},
	}
}

func hostsAdminOnly(c Caller, what string) error {
	if !c.Admin {
		return fmt.Errorf("%s is for admins: %w", what, cairn.ErrForbidden)
	}
	return nil
}

// Processes lists the services f selects (admins only).
func (s *Service) Processes(ctx context.Context, c Caller, f ProcessFilter) ([]Process, error) {
	if err := hostsAdminOnly(c, "the list of services"); err != nil {
		return nil, err
	}
	var out []Process
	for _, p := range s.processes() {
		if f.match(p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// process finds the service binary runs on host exactly, as the block
// storage API's enable and disable find it: ErrNotFound otherwise.
func (s *Service) process(host, binary string) (Process, error) {
	if host == "" || binary == "" {
		return Process{}, fmt.Errorf("name the service's host and binary: %w", cairn.ErrInvalid)
	}
	hostKnown := false
	for _, p := range s.processes() {
		if p.Host == host && p.Binary == binary {
			return p, nil
		}
		hostKnown = hostKnown || p.Host == host
	}
	if !hostKnown {
		return Process{}, fmt.Errorf("host %q: no such host (this one is %s, its volume service %s): %w",
			host, s.HostName(), s.BackendHost(), cairn.ErrNotFound)
	}
	return Process{}, fmt.Errorf("service %q on host %q: no such service: %w", binary, host, cairn.ErrNotFound)
}

// EnableProcess enables a service (admins only): they all are, always,
// so it names the service or answers ErrNotFound.
func (s *Service) EnableProcess(ctx context.Context, c Caller, host, binary string) (Process, error) {
	if err := hostsAdminOnly(c, "enabling a service"); err != nil {
		return Process{}, err
	}
	return s.process(host, binary)
}

// ownServices is why disabling a service is refused.
const ownServices = "cairn cannot disable its own services: one process schedules, serves and backs up volumes, and none of them can be switched off while it runs (stop cairn serve instead)"

// DisableProcess refuses to disable a service (admins only), after
// finding it (ErrNotFound): cairn is its services, and cannot stop being
// one while it runs. A reason, when asked for, must be given.
func (s *Service) DisableProcess(ctx context.Context, c Caller, host, binary string, reason *string, needReason bool) error {
	if err := hostsAdminOnly(c, "disabling a service"); err != nil {
		return err
	}
	if needReason && (reason == nil || strings.TrimSpace(*reason) == "") {
		return fmt.Errorf("disabled_reason: name why the service is disabled: %w", cairn.ErrInvalid)
	}
	if reason != nil && len(*reason) > 255 {
		return fmt.Errorf("disabled_reason: %d characters, at most 255: %w", len(*reason), cairn.ErrInvalid)
	}
	if _, err := s.process(host, binary); err != nil {
		return err
	}
	return fmt.Errorf("%s on %s: %s: %w", binary, host, ownServices, cairn.ErrInvalid)
}

// backendHost checks that host names the volume service's host: HOST or
// HOST@cairn, as freeze and thaw take it; ErrInvalid otherwise, as the
// block storage API answers.
func (s *Service) backendHost(host string) error {
	if host == "" {
		return fmt.Errorf("host: name the volume service's host: %w", cairn.ErrInvalid)
	}
	if !hostMatches(host, s.BackendHost()) {
		return fmt.Errorf("host %q: no volume service on it (the one there is runs on %s): %w", host, s.BackendHost(), cairn.ErrInvalid)
	}
	return nil
}

// FreezeHost refuses to freeze the volume service's host (admins only):
// freezing stops the management of a backend's volumes for a
// replication failover, and cairn has no replication; nor can it stop
// managing its volumes while it runs.
func (s *Service) FreezeHost(ctx context.Context, c Caller, host string) error {
	if err := hostsAdminOnly(c, "freezing a host"); err != nil {
		return err
	}
	if err := s.backendHost(host); err != nil {
		return err
	}
	return fmt.Errorf("host %s: cairn cannot freeze its own volume service: it has no replication to fail over, and manages its volumes while it runs: %w", host, cairn.ErrInvalid)
}

// ThawHost thaws the volume service's host (admins only): it never is
// frozen, so there is nothing to do.
func (s *Service) ThawHost(ctx context.Context, c Caller, host string) error {
	if err := hostsAdminOnly(c, "thawing a host"); err != nil {
		return err
	}
	return s.backendHost(host)
}

// HostUsage is what a project holds on a host, or all projects
// together (Project "(total)"), as the block storage API's show host
// counts it: volumes and snapshots in any state but deleted, and their
// sizes in GiB.
type HostUsage struct {
	Host            string
	Project         string
	Volumes         int64
	VolumeGigabytes int64
	Snapshots       int64
	SnapshotGiB     int64
}

// TotalProject is HostUsage.Project of the usage of all projects.
const TotalProject = "(total)"

// ShowHost is the usage of the volume service's host (admins only): the
// total first, then each project's that holds volumes or snapshots, by
// project ID. host must be the volume service's, HOST@cairn: any other
// is ErrNotFound, as it is to the block storage API.
func (s *Service) ShowHost(ctx context.Context, c Caller, host string) ([]HostUsage, error) {
	if err := hostsAdminOnly(c, "a host's usage"); err != nil {
		return nil, err
	}
	if host != s.BackendHost() {
		return nil, fmt.Errorf("host %q: no volume service on it (the one there is runs on %s): %w", host, s.BackendHost(), cairn.ErrNotFound)
	}
	vols, snaps, err := s.allVolumesAndSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	total := HostUsage{Host: host, Project: TotalProject}
	by := map[string]*HostUsage{}
	get := func(p string) *HostUsage {
		u := by[p]
		if u == nil {
			u = &HostUsage{Host: host, Project: p}
			by[p] = u
		}
		return u
	}
	for _, v := range vols {
		u := get(v.ProjectID)
		u.Volumes++
		u.VolumeGigabytes += v.Size
		total.Volumes++
		total.VolumeGigabytes += v.Size
	}
	for _, v := range snaps {
		u := get(v.ProjectID)
		u.Snapshots++
		u.SnapshotGiB += v.Size
		total.Snapshots++
		total.SnapshotGiB += v.Size
	}
	out := []HostUsage{total}
	projects := make([]string, 0, len(by))
	for p := range by {
		projects = append(projects, p)
	}
	slices.Sort(projects)
	for _, p := range projects {
		out = append(out, *by[p])
	}
	return out, nil
}

// allVolumesAndSnapshots are every project's volumes and snapshots but
// the deleted.
func (s *Service) allVolumesAndSnapshots(ctx context.Context) ([]cairn.Volume, []cairn.Snapshot, error) {
	var vols []cairn.Volume
	var snaps []cairn.Snapshot
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		if vols, err = tx.Volumes(ctx, catalog.Filter{}); err != nil {
			return err
		}
		snaps, err = tx.Snapshots(ctx, catalog.Filter{})
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("volumes and snapshots: %w", err)
	}
	vols = slices.DeleteFunc(vols, func(v cairn.Volume) bool { return v.Status == cairn.StatusDeleted })
	snaps = slices.DeleteFunc(snaps, func(v cairn.Snapshot) bool { return v.Status == cairn.StatusDeleted })
	return vols, snaps, nil
}

// Pool is the one pool's state, as the scheduler's statistics show it.
type Pool struct {
	Name string
	// TotalGiB and FreeGiB are the size of the file system holding the
	// volume engine's data directory and the space on it an unprivileged
	// process may still use, in GiB rounded to 0.01; both NaN when
	// unknown (no data directory configured, or statfs failed).
	TotalGiB, FreeGiB float64
	// AllocatedGiB is the sum of the sizes of the volumes (in any state
	// but deleted): what they may take when written in full.
	AllocatedGiB      int64
	BackendName       string
	VendorName        string
	DriverVersion     string
	StorageProtocol   string
	ThinProvisioning  bool
	ThickProvisioning bool
	ReservedPercent   int
	Timestamp         time.Time
}

// Pools are the backend's pools (admins only): the one there is.
func (s *Service) Pools(ctx context.Context, c Caller) ([]Pool, error) {
	if err := hostsAdminOnly(c, "the pools' statistics"); err != nil {
		return nil, err
	}
	vols, _, err := s.allVolumesAndSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	p := Pool{Name: s.PoolName(), TotalGiB: math.NaN(), FreeGiB: math.NaN(), BackendName: BackendName,
		VendorName: VendorName, DriverVersion: s.hostInfoOf().version, StorageProtocol: StorageProtocol,
		ThinProvisioning: true, Timestamp: s.nowUTC()}
	for _, v := range vols {
		p.AllocatedGiB += v.Size
	}
	if dir := s.hostInfoOf().dataDir; dir != "" {
		if total, free, err := FileSystemGiB(dir); err != nil {
			s.log.Warn("pool capacity unknown", "dir", dir, "err", err)
		} else {
			p.TotalGiB, p.FreeGiB = total, free
		}
	}
	return []Pool{p}, nil
}

// FileSystemGiB returns the size of the file system holding dir and the
// space on it an unprivileged process may use, in GiB rounded to 0.01.
func FileSystemGiB(dir string) (total, free float64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	gib := func(blocks uint64) float64 {
		return math.Round(float64(blocks)*float64(st.Bsize)/(1<<30)*100) / 100
	}
	return gib(st.Blocks), gib(st.Bavail), nil
}

// Capabilities are a backend's, as the block storage API shows them: no
// volume type extra specs are honoured (Properties is empty), and there
// are no replication targets.
type Capabilities struct {
	Namespace         string
	VendorName        string
	BackendName       string
	PoolName          string
	DriverVersion     string
	StorageProtocol   string
	DisplayName       string
	Description       string
	ReplicationTarget []string
}

// BackendCapabilities are the capabilities of the backend on host
// (admins only): HOST@cairn, or its pool HOST@cairn#cairn; any other is
// ErrNotFound.
func (s *Service) BackendCapabilities(ctx context.Context, c Caller, host string) (Capabilities, error) {
	if err := hostsAdminOnly(c, "a backend's capabilities"); err != nil {
		return Capabilities{}, err
	}
	if host != s.BackendHost() && host != s.PoolName() {
		return Capabilities{}, fmt.Errorf("backend %q: no such backend (the one there is: %s): %w", host, s.BackendHost(), cairn.ErrNotFound)
	}
	return Capabilities{Namespace: "OS::Storage::Capabilities::" + BackendName, VendorName: VendorName,
		BackendName: BackendName, PoolName: BackendName, DriverVersion: s.hostInfoOf().version,
		StorageProtocol: StorageProtocol, DisplayName: "cairn volume engine",
		Description:       "Thin-provisioned volumes with snapshots and clones, exported over NBD",
		ReplicationTarget: []string{}}, nil
}
