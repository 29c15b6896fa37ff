// Package dbhost runs the database instances of one host, inside the
// per-host data plane process that also serves the volumes: for each
// instance it attaches the instance's volume as a block device, makes and
// mounts an ext4 file system on it, initialises or restores the data
// directory there through dbagent, and supervises the database server,
// restarting it with backoff when it dies.
//
// Every instance has a record in the host's directory, written before
// each step and read back at start, so a restarted data plane (after a
// crash, an upgrade or a host reboot) brings every instance back and a
// provisioning cut short resumes where it stopped. The control plane
// drives a Host through the data plane's control socket; a Host never
// reads the service's catalog.
package dbhost

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/dbagent"
)

// Source says how an instance's data directory comes to be.
type Source string

// Sources.
const (
	// SourceInit: a new, empty file system and a freshly initialised
	// data directory, then the spec's databases and users.
	SourceInit Source = "init"
	// SourceSnapshot: the volume is a clone of a snapshot taken while
	// the database was quiesced (a snapshot backup); the data directory
	// is made ready with the backup's record and overlay.
	SourceSnapshot Source = "snapshot"
	// SourcePhysical: a new file system and a data directory restored
	// from a physical backup chain (Spec.Parts; the streams come with
	// the Provision call, framed by WritePart).
	SourcePhysical Source = "physical"
	// SourceLogical: a new file system, a fresh data directory, and a
	// dump (Spec.Record's; the stream comes with the Provision call)
	// loaded into the started server.
	SourceLogical Source = "logical"
	// SourceVolume: the volume holds the file system and data directory
	// of an instance stopped cleanly (a recover being undone, from the
	// snapshot taken before it): the server starts on them as they are.
	SourceVolume Source = "volume"
)

// Spec is what the control plane asks of an instance.
type Spec struct {
	// ID is the instance's ID in the service's catalog.
	ID string `json:"id"`
	// Datastore and Version name the engine (dbagent.Datastore's Type
	// and Version).
	Datastore string `json:"datastore"`
	Version   string `json:"version"`
	// Volume is the instance's volume in the host's engine.
	Volume cairn.ID `json:"volume"`
	// Port is the port to serve on, which must be in the host's range
	// and not another instance's; zero picks the lowest free one. An
	// instance recovered in place keeps its port.
	Port int `json:"port,omitempty"`
	// Source says how the data directory is made; Record and Overlay
	// come with SourceSnapshot (the backup's engine record and the files
	// its restore lays over the snapshot).
	Source  Source          `json:"source"`
	Record  *dbagent.Record `json:"record,omitempty"`
	Overlay []byte          `json:"overlay,omitempty"`
	// Parts are the records of a physical chain, full backup first.
	Parts []dbagent.Record `json:"parts,omitempty"`
	// Databases and Users are created once the server first answers
	// (SourceInit only); the passwords are forgotten once they are.
	Databases []dbagent.Database `json:"databases,omitempty"`
	Users     []dbagent.User     `json:"users,omitempty"`
	// Recovery, with SourceSnapshot or SourcePhysical, replays the log
	// files that follow in the request's stream (after a physical
	// chain's parts; see WriteWALFile) before the server is first ready:
	// PostgreSQL's WAL up to a point in time, or MariaDB's binary log
	// files from Recovery.Binlog to their end.
	Recovery *Recovery `json:"recovery,omitempty"`
}

// Recovery is how far a restored instance replays its log.
type Recovery struct {
	// Time: stop before the first transaction that ended after it; zero
	// replays every file given. PostgreSQL only: a MariaDB recovery's
	// files end at its target.
	Time time.Time `json:"time,omitzero"`
	// Timeline is the timeline whose history the replay follows
	// (PostgreSQL, which needs it; zero for MariaDB).
	Timeline uint32 `json:"timeline"`
	// Binlog is where a MariaDB recovery's replay of the binary log
	// starts: after its GTID position, or at its position in its file
	// when it has none (MariaDB, which needs it; nil for PostgreSQL).
	Binlog *dbagent.BinlogStart `json:"binlog,omitempty"`
}

// gtidPosition is a GTID position as @@gtid_binlog_pos prints it:
// domain-server-sequence triples, one per domain, comma-separated. A
// replay's start reaches the server's SQL: nothing else gets through.
var gtidPosition = regexp.MustCompile(`^[0-9]{1,10}-[0-9]{1,10}-[0-9]{1,20}(,\s*[0-9]{1,10}-[0-9]{1,10}-[0-9]{1,20})*$`)

// validate checks a recovery of a datastore's instance.
func (r Recovery) validate(datastore string) error {
	switch datastore {
	case dbagent.PostgreSQL:
		if r.Binlog != nil {
			return errors.New("a PostgreSQL recovery replays WAL, not a binary log")
		}
		if r.Timeline == 0 {
			return errors.New("a recovery without a timeline")
		}
	case dbagent.MariaDB:
		b := r.Binlog
		if b == nil {
			return errors.New("a MariaDB recovery without its binary log start")
		}
		if r.Timeline != 0 || !r.Time.IsZero() {
			return errors.New("a MariaDB recovery takes no timeline or time: its binary log files end at the target")
		}
		if b.GTID == "" && b.File == "" {
			return errors.New("a binary log start without a GTID position or a file")
		}
		if b.GTID != "" && (len(b.GTID) > 4096 || !gtidPosition.MatchString(b.GTID)) {
			return fmt.Errorf("GTID position %q", b.GTID)
		}
		if b.File != "" && !binlogFileName(b.File) {
			return fmt.Errorf("binary log file %q", b.File)
		}
	default:
		return fmt.Errorf("%s has no recovery to a point in time", datastore)
	}
	return nil
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// Validate checks a spec before anything is done with it.
func (s Spec) Validate() error {
	if !idPattern.MatchString(s.ID) {
		return fmt.Errorf("instance id %q: %w", s.ID, cairn.ErrInvalid)
	}
	if s.Volume.IsZero() {
		return fmt.Errorf("instance %s: no volume: %w", s.ID, cairn.ErrInvalid)
	}
	switch s.Source {
	case SourceInit:
		if s.Record != nil || len(s.Overlay) > 0 {
			return fmt.Errorf("instance %s: a new instance takes no backup record: %w", s.ID, cairn.ErrInvalid)
		}
	case SourceSnapshot:
		if s.Record == nil || s.Record.Method != dbagent.Snapshot {
			return fmt.Errorf("instance %s: restoring a snapshot needs its snapshot backup record: %w", s.ID, cairn.ErrInvalid)
		}
	case SourcePhysical:
		if len(s.Parts) == 0 || s.Record != nil {
			return fmt.Errorf("instance %s: restoring a physical backup needs its chain's records: %w", s.ID, cairn.ErrInvalid)
		}
		for _, p := range s.Parts {
			if p.Method != dbagent.Physical {
				return fmt.Errorf("instance %s: a physical chain holds a %s backup: %w", s.ID, p.Method, cairn.ErrInvalid)
			}
		}
	case SourceLogical:
		if s.Record == nil || s.Record.Method != dbagent.Logical || len(s.Parts) > 0 {
			return fmt.Errorf("instance %s: loading a dump needs its logical backup record: %w", s.ID, cairn.ErrInvalid)
		}
	case SourceVolume:
		if s.Record != nil || len(s.Overlay) > 0 || len(s.Parts) > 0 {
			return fmt.Errorf("instance %s: an instance started from its volume takes no backup: %w", s.ID, cairn.ErrInvalid)
		}
	default:
		return fmt.Errorf("instance %s: source %q: %w", s.ID, s.Source, cairn.ErrInvalid)
	}
	if s.Source != SourceInit && (len(s.Databases) > 0 || len(s.Users) > 0) {
		return fmt.Errorf("instance %s: a restored instance keeps the backup's databases and users: %w", s.ID, cairn.ErrInvalid)
	}
	if r := s.Recovery; r != nil {
		if s.Source != SourceSnapshot && s.Source != SourcePhysical {
			return fmt.Errorf("instance %s: a recovery to a point in time restores a snapshot or physical backup: %w", s.ID, cairn.ErrInvalid)
		}
		if err := r.validate(s.Datastore); err != nil {
			return fmt.Errorf("instance %s: %w: %w", s.ID, err, cairn.ErrInvalid)
		}
	}
	return nil
}

// Phase is how far an instance is.
type Phase string

// Phases, in order.
const (
	// PhaseProvisioning: the volume is being attached, formatted and
	// mounted and the data directory made; Provision resumes it.
	PhaseProvisioning Phase = "provisioning"
	// PhaseReady: the instance is made; its server is supervised.
	PhaseReady Phase = "ready"
	// PhaseRemoving: the instance is being taken down; Remove resumes it.
	PhaseRemoving Phase = "removing"
)

// record is what the host keeps of an instance on disk.
type record struct {
	Spec    Spec   `json:"spec"`
	Phase   Phase  `json:"phase"`
	Address string `json:"address"`
	Port    int    `json:"port"`
	// Steps done, so a resumed Provision skips them: the file system
	// made, the data directory initialised or restored, the databases
	// and users created.
	Formatted  bool `json:"formatted"`
	Prepared   bool `json:"prepared"`
	Configured bool `json:"configured"`
	// Loading and Loaded follow a dump's load (SourceLogical): a load
	// found started but not finished is started again from an empty
	// data directory.
	Loading bool `json:"loading,omitempty"`
	Loaded  bool `json:"loaded,omitempty"`
	// Recovered: a recovery to a point in time (Spec.Recovery) has
	// left the server accepting writes, and its log files are gone.
	Recovered bool `json:"recovered,omitempty"`
	// Device is the block device the volume is attached as.
	Device string `json:"device,omitempty"`
	// PID and PIDStart identify the server process last started, so a
	// data plane restarted after a crash stops a server left running on
	// a file system it can no longer serve.
	PID      int    `json:"pid,omitempty"`
	PIDStart string `json:"pid_start,omitempty"`
}

// State is an instance as the host sees it.
type State struct {
	ID        string   `json:"id"`
	Datastore string   `json:"datastore"`
	Version   string   `json:"version"`
	Volume    cairn.ID `json:"volume"`
	Phase     Phase    `json:"phase"`
	Address   string   `json:"address"`
	Port      int      `json:"port"`
	Device    string   `json:"device,omitempty"`
	// Operating is the server process's state: "" before it is first
	// started, then HEALTHY, RESTARTING, SHUTDOWN or FAILED.
	Operating cairn.OperatingStatus `json:"operating_status"`
	// Restarts counts the times the supervisor started the server again
	// after it ended on its own, since the data plane started.
	Restarts int `json:"restarts"`
	// LastExit says how the server last ended on its own, "" if never.
	LastExit string `json:"last_exit,omitempty"`
	// Error is why the instance's last step failed, "" if it did not.
	Error string `json:"error,omitempty"`
	// Used and Size are the file system's bytes in use and its size, 0
	// when it is not mounted.
	Used int64 `json:"used"`
	Size int64 `json:"size"`
}

// Attacher gives a volume a local block device, in the data plane that
// serves it. Its methods may be called concurrently for different names.
type Attacher interface {
	// Attach exports volume id under name and attaches the export as a
	// block device, returning the device's path. When name is attached
	// already it returns its device and does nothing else.
	Attach(ctx context.Context, name string, id cairn.ID) (string, error)
	// Detach removes the device and the export; a name not attached is
	// no error. The device must not be mounted.
	Detach(ctx context.Context, name string) error
}

// Snapshots takes and deletes snapshots of volumes: the O(1) snapshot the
// snapshot strategy takes while the database is quiesced. Safe for
// concurrent use.
type Snapshots interface {
	Create(ctx context.Context, volume cairn.ID, name string) (cairn.ID, error)
	Delete(ctx context.Context, snapshot cairn.ID) error
}

// Options configure a Host.
type Options struct {
	// Dir holds the instance records and their servers' logs.
	Dir string
	// RunDir holds each server's unix socket and pid file, in a
	// directory per port, and the instances' mount points, in mnt: keep
	// it short (a socket's path has at most 107 bytes), and reachable by
	// the servers' OS users, which a data directory need not be. Default
	// /run/cairn-db.
	RunDir string
	// SpoolDir holds a PostgreSQL recovery's WAL files while its server
	// replays them, a directory per instance, removed once the recovery
	// is done or the instance removed: on the host's disk, as writing
	// them through the instance's volume cost as much as the replay
	// gained from having them early. It must be reachable by the
	// servers' OS users and have room for the WAL one recovery replays.
	// Default RunDir/spool.
	SpoolDir string
	// Address is the address the servers listen on; default 127.0.0.1.
	Address string
	// PortMin and PortMax bound the servers' TCP ports; default
	// 17500-17999.
	PortMin, PortMax int
	// Engines are the installed datastores.
	Engines []dbagent.Engine
	// Settings are extra server settings by datastore type (name to
	// value), given to every server after the agent's own, which they
	// may not change; New refuses them otherwise.
	Settings  map[string]map[string]string
	Attacher  Attacher
	Snapshots Snapshots
	// FS makes, mounts and unmounts file systems; default the host's
	// mkfs.ext4, mount and umount.
	FS FileSystems
	// After is the clock of the supervisor's backoff; default
	// time.After.
	After  func(time.Duration) <-chan time.Time
	Logger *slog.Logger
	// Backoff bounds the supervisor's delay between restarts; default
	// 500 ms doubling to 30 s.
	BackoffMin, BackoffMax time.Duration
	// ServingWait bounds how long a backup waits for an instance's
	// server to answer (it may be starting, or restarting); default 2
	// minutes.
	ServingWait time.Duration
	// OnEvent, when set, is called with a short name of each step an
	// instance passes ("attached", "mounted", "started", "exited", ...):
	// the hook tests wait on.
	OnEvent func(id, event string)
}

// Host runs the instances of one host. Its methods are safe for
// concurrent use; calls for one instance are serialised.
type Host struct {
	o Options
	// runErr is why the run directory could not be made: no instance
	// can run then.
	runErr error

	mu        sync.Mutex
	instances map[string]*instance
	closed    bool
	// starting counts Start's goroutines, supervisors the supervisors'
	// goroutines; Close waits for both.
	starting    sync.WaitGroup
	supervisors sync.WaitGroup
	// streams are the running log streams, by kind and instance.
	streams map[streamKey]*logStream
}

// instance is an instance's in-memory state. op serialises the calls
// that change it and guards rec; mu guards view (rec as last saved, for
// readers that must not wait for a step), sup and err.
type instance struct {
	op  sync.Mutex
	rec record
	// attached is whether this process attached the volume: a device
	// attached by an earlier data plane went with that process's NBD
	// socket and is detached before the volume is attached again.
	attached bool
	// saveMu orders the writes of the record file: commits and the
	// supervisor's PID updates.
	saveMu sync.Mutex

	mu   sync.Mutex
	view record
	sup  *supervisor
	err  string
}

// New returns a host over o; Start brings back the recorded instances.
func New(o Options) (*Host, error) {
	if o.Dir == "" || o.Attacher == nil {
		return nil, fmt.Errorf("instance host: needs a directory and an attacher: %w", cairn.ErrInvalid)
	}
	if o.RunDir == "" {
		o.RunDir = "/run/cairn-db"
	}
	if o.SpoolDir == "" {
		o.SpoolDir = filepath.Join(o.RunDir, "spool")
	}
	if o.Address == "" {
		o.Address = "127.0.0.1"
	}
	if o.PortMin == 0 && o.PortMax == 0 {
		o.PortMin, o.PortMax = 17500, 17999
	}
	if o.PortMin <= 0 || o.PortMax > 65535 || o.PortMin > o.PortMax {
		return nil, fmt.Errorf("instance host: port range %d-%d: %w", o.PortMin, o.PortMax, cairn.ErrInvalid)
	}
	if o.FS == nil {
		o.FS = hostFileSystems{}
	}
	if o.After == nil {
		o.After = time.After
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = 500 * time.Millisecond
	}
	if o.ServingWait <= 0 {
		o.ServingWait = 2 * time.Minute
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = max(30*time.Second, o.BackoffMin)
	}
	if err := checkSettings(o.Settings, o.Engines); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(o.Dir, "logs"), 0o700); err != nil {
		return nil, fmt.Errorf("instance host: %w", err)
	}
	// The servers run as their datastores' OS users, which must pass
	// through the mount points to their data directories (but not list
	// them).
	// Without it (not root, say) the host still serves the volumes; only
	// instances are refused, saying why.
	var runErr error
	for _, d := range []string{o.RunDir, filepath.Join(o.RunDir, "mnt"), o.SpoolDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			runErr = fmt.Errorf("instance run directory: %w", err)
			break
		}
		if err := os.Chmod(d, 0o711); err != nil {
			runErr = fmt.Errorf("instance run directory: %w", err)
			break
		}
	}
	h := &Host{o: o, instances: map[string]*instance{}, runErr: runErr}
	// The records are read here, not in Start, so that no call can find
	// an instance missing: a Provision resumed by the control plane as
	// soon as the control socket answers, before Start, must resume
	// from the record, not begin a second in-memory instance beside the
	// one Start would load (two owners of one mount).
	recs, err := h.loadRecords()
	if err != nil {
		return nil, err
	}
	for _, rec := range recs {
		h.instances[rec.Spec.ID] = &instance{rec: rec, view: rec}
	}
	return h, nil
}

// checkSettings refuses, before any instance starts, extra settings for
// an unknown datastore (those of a known one not installed here are
// kept for nothing: one configuration may serve hosts with different
// datastores), and those an engine refuses: each checks
// them in Instance, which does no I/O, with a configuration that is
// otherwise valid.
func checkSettings(settings map[string]map[string]string, engines []dbagent.Engine) error {
	for typ, s := range settings {
		probe := dbagent.Config{DataDir: "/settings/data", RunDir: "/settings", Address: "127.0.0.1", Port: 1, Settings: s}
		served := false
		for _, e := range engines {
			if e.Datastore().Type != typ {
				continue
			}
			served = true
			if _, err := e.Instance(probe); err != nil {
				return fmt.Errorf("%s settings: %w", typ, err)
			}
		}
		if !served && typ != dbagent.PostgreSQL && typ != dbagent.MariaDB {
			return fmt.Errorf("settings for datastore %q: want %s or %s: %w", typ, dbagent.PostgreSQL, dbagent.MariaDB, cairn.ErrInvalid)
		}
	}
	return nil
}

func (h *Host) event(id, ev string) {
	h.o.Logger.Debug("instance", "id", id, "event", ev)
	if h.o.OnEvent != nil {
		h.o.OnEvent(id, ev)
	}
}

// Engine returns the engine of a datastore type and version.
func (h *Host) engine(typ, version string) (dbagent.Engine, error) {
	for _, e := range h.o.Engines {
		ds := e.Datastore()
		if ds.Type == typ && ds.Version == version {
			return e, nil
		}
	}
	return nil, fmt.Errorf("datastore %s %s is not installed on this host: %w", typ, version, cairn.ErrNotFound)
}

// Datastores lists the installed datastores.
func (h *Host) Datastores() []dbagent.Datastore {
	out := make([]dbagent.Datastore, 0, len(h.o.Engines))
	for _, e := range h.o.Engines {
		out = append(out, e.Datastore())
	}
	return out
}

func (h *Host) recordPath(id string) string { return filepath.Join(h.o.Dir, id+".json") }
func (h *Host) mountPoint(id string) string { return filepath.Join(h.o.RunDir, "mnt", id) }
func (h *Host) logPath(id string) string    { return filepath.Join(h.o.Dir, "logs", id+".log") }
func (h *Host) runDir(port int) string      { return filepath.Join(h.o.RunDir, strconv.Itoa(port)) }

// ExportPrefix begins the names of the instances' exports: they belong
// to the host, not to whoever manages the data plane's other exports.
const ExportPrefix = "instance-"

// exportName is the name an instance's volume is exported under.
func exportName(id string) string { return ExportPrefix + id }

// commit saves inst.rec and publishes it to readers. The caller holds
// inst.op.
func (h *Host) commit(inst *instance) error {
	inst.saveMu.Lock()
	defer inst.saveMu.Unlock()
	// The supervisor records each new server's PID in view.
	inst.mu.Lock()
	inst.rec.PID, inst.rec.PIDStart = inst.view.PID, inst.view.PIDStart
	inst.mu.Unlock()
	if err := h.save(inst.rec); err != nil {
		return err
	}
	inst.mu.Lock()
	inst.view = inst.rec
	inst.mu.Unlock()
	return nil
}

// save writes rec atomically and durably.
func (h *Host) save(rec record) error {
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	path := h.recordPath(rec.Spec.ID)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("instance record: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("instance record: %w", err)
	}
	if d, err := os.Open(h.o.Dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func (h *Host) loadRecords() ([]record, error) {
	paths, err := filepath.Glob(filepath.Join(h.o.Dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []record
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("instance record: %w", err)
		}
		var rec record
		if err := json.Unmarshal(data, &rec); err != nil || rec.Spec.ID+".json" != filepath.Base(p) {
			return nil, fmt.Errorf("instance record %s: unreadable: %w", p, cairn.ErrCorrupt)
		}
		out = append(out, rec)
	}
	return out, nil
}

// Start brings back the instances New found recorded: those that were
// ready are attached, mounted and started again (after stopping a server
// a crashed data plane left running), in the background; those cut
// short while provisioning or removing wait for the control plane to
// resume them. One a call brought back or removed first is left alone.
func (h *Host) Start(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, inst := range h.instances {
		h.starting.Add(1)
		go func() {
			defer h.starting.Done()
			inst.op.Lock()
			defer inst.op.Unlock()
			inst.mu.Lock()
			running := inst.sup != nil
			inst.mu.Unlock()
			if inst.rec.Phase != PhaseReady || running {
				return
			}
			if err := h.bringUp(context.WithoutCancel(ctx), inst, false); err != nil {
				h.o.Logger.Error("bringing an instance back", "id", inst.rec.Spec.ID, "err", err)
			}
		}()
	}
	return nil
}

// get returns the instance of id, or nil.
func (h *Host) get(id string) *instance {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.instances[id]
}

// Provision makes the instance spec describes and starts its server,
// returning once it answers and its databases and users exist. Called
// again with the same spec (after the caller or the data plane died) it
// resumes; with a different spec for a known ID it fails with
// cairn.ErrConflict. data is the backup's stream for SourcePhysical
// (framed parts) and SourceLogical (the dump), read only when the step
// that needs it is not done yet; nil otherwise.
func (h *Host) Provision(ctx context.Context, spec Spec, data io.Reader) (State, error) {
	if err := spec.Validate(); err != nil {
		return State{}, err
	}
	if os.Geteuid() != 0 {
		return State{}, fmt.Errorf("database instances need root, to attach and mount their volumes: %w", cairn.ErrUnsupported)
	}
	if h.runErr != nil {
		return State{}, fmt.Errorf("database instances cannot run on this host: %w: %w", h.runErr, cairn.ErrUnsupported)
	}
	if _, err := h.engine(spec.Datastore, spec.Version); err != nil {
		return State{}, err
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return State{}, fmt.Errorf("instance host: closing: %w", cairn.ErrUnavailable)
	}
	inst := h.instances[spec.ID]
	if inst == nil {
		rec := record{Spec: spec, Phase: PhaseProvisioning}
		inst = &instance{rec: rec, view: rec}
		h.instances[spec.ID] = inst
	}
	h.mu.Unlock()

	inst.op.Lock()
	defer inst.op.Unlock()
	if err := sameSpec(inst.rec.Spec, spec); err != nil {
		return State{}, err
	}
	switch inst.rec.Phase {
	case PhaseRemoving:
		return State{}, fmt.Errorf("instance %s is being removed: %w", spec.ID, cairn.ErrConflict)
	case PhaseReady:
		if inst.sup == nil {
			if err := h.bringUp(ctx, inst, true); err != nil {
				return State{}, err
			}
		}
		return h.state(inst), nil
	}
	if inst.rec.Port == 0 {
		port, err := h.allocatePort(spec.ID, spec.Port)
		if err != nil {
			return State{}, err
		}
		inst.rec.Address, inst.rec.Port = h.o.Address, port
	}
	if err := h.commit(inst); err != nil {
		return State{}, err
	}
	err := h.provision(ctx, inst, data)
	inst.setErr(err)
	if err != nil {
		return h.state(inst), err
	}
	return h.state(inst), nil
}

// sameSpec checks that a resumed Provision asks for what the first did.
func sameSpec(have, want Spec) error {
	a, b := have, want
	// Passwords are forgotten once used; the overlay once laid.
	a.Users, b.Users, a.Overlay, b.Overlay = nil, nil, nil, nil
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if !bytes.Equal(ja, jb) {
		return fmt.Errorf("instance %s exists with another spec: %w", want.ID, cairn.ErrConflict)
	}
	return nil
}

// provision runs the steps not yet done, saving the record after each.
func (h *Host) provision(ctx context.Context, inst *instance, data io.Reader) error {
	rec := &inst.rec
	id := rec.Spec.ID
	eng, err := h.engine(rec.Spec.Datastore, rec.Spec.Version)
	if err != nil {
		return err
	}
	// Each step's time goes to the log, for the benchmarks' breakdowns.
	began := time.Now()
	stepDone := func(msg string) {
		h.o.Logger.Info(msg, "instance", id, "took", time.Since(began).Round(time.Millisecond))
		began = time.Now()
	}
	if err := h.mount(ctx, inst); err != nil {
		return err
	}
	partsRead := false // a physical restore's parts, read from data in this call
	if rec.Spec.Recovery != nil {
		stepDone("recovering instance's volume mounted")
	} else {
		stepDone("instance's volume attached and mounted")
	}
	if !rec.Prepared {
		cfg := h.config(rec)
		switch rec.Spec.Source {
		case SourceInit:
			if err := h.initDataDir(ctx, eng, cfg); err != nil {
				return err
			}
		case SourceSnapshot:
			if err := eng.RestoreSnapshot(ctx, cfg, *rec.Spec.Record, bytes.NewReader(rec.Spec.Overlay)); err != nil {
				return fmt.Errorf("restoring the snapshot's data directory: %w", err)
			}
		case SourcePhysical:
			if data == nil {
				return fmt.Errorf("instance %s: %w: %w", id, errNeedStream, cairn.ErrInvalid)
			}
			if err := h.restorePhysical(ctx, eng, cfg, rec.Spec.Parts, data); err != nil {
				return err
			}
			partsRead = true
			if rec.Spec.Recovery == nil {
				data = nil // read
			}
		case SourceLogical:
			if err := h.initDataDir(ctx, eng, cfg); err != nil {
				return err
			}
		case SourceVolume:
			// The data directory is there, as the server left it.
		}
		if rec.Spec.Recovery != nil {
			if data == nil {
				return fmt.Errorf("instance %s: %w: %w", id, errNeedStream, cairn.ErrInvalid)
			}
			if err := h.prepareRecovery(ctx, eng, cfg, rec, data); err != nil {
				return err
			}
			if rec.Spec.Recovery.Binlog != nil {
				data = nil // read
			}
		}
		// What the step wrote (a restore's files, the overlay, the
		// recovery's settings and binary logs) is on the volume before the record
		// says so: a data plane killed after the record, with the writes
		// still in its page cache, would resume with them lost.
		if err := syncFileSystem(h.mountPoint(id)); err != nil {
			return err
		}
		rec.Prepared = true
		rec.Spec.Overlay = nil
		if err := h.commit(inst); err != nil {
			return err
		}
		h.event(id, "prepared")
		stepDone("instance's data directory prepared")
	}
	switch {
	case rec.Spec.Recovery != nil && rec.Spec.Recovery.Binlog == nil && !rec.Recovered:
		// The WAL comes while the server replays it, on every call
		// until the recovery is done.
		if data == nil {
			return fmt.Errorf("instance %s: %w: %w", id, errNeedStream, cairn.ErrInvalid)
		}
		if rec.Spec.Source == SourcePhysical && !partsRead {
			// A resumed call's stream has the restored parts first.
			if err := skipParts(data, len(rec.Spec.Parts)); err != nil {
				return err
			}
		}
		if err := h.recoverWAL(ctx, inst, eng, data, func() { stepDone("instance's server started") }); err != nil {
			return err
		}
		data = nil
	default:
		if err := h.startServer(ctx, inst, eng, true); err != nil {
			return err
		}
		stepDone("instance's server started")
		if rec.Spec.Recovery != nil && !rec.Recovered {
			if err := h.finishRecovery(ctx, inst, eng); err != nil {
				return err
			}
		}
	}
	if rec.Spec.Recovery != nil && !rec.Recovered {
		if err := os.RemoveAll(h.recoveryDir(rec)); err != nil {
			return fmt.Errorf("recovery directory: %w", err)
		}
		rec.Recovered = true
		if err := h.commit(inst); err != nil {
			return err
		}
		h.event(id, "recovered")
	}
	if rec.Spec.Source == SourceLogical && !rec.Loaded {
		if rec.Loading {
			// A load cut short: from an empty data directory again.
			if err := h.stopServer(ctx, inst); err != nil {
				return err
			}
			if err := os.RemoveAll(h.config(rec).DataDir); err != nil {
				return fmt.Errorf("data directory: %w", err)
			}
			rec.Prepared, rec.Loading = false, false
			if err := h.commit(inst); err != nil {
				return err
			}
			return h.provision(ctx, inst, data)
		}
		if data == nil {
			return fmt.Errorf("instance %s: %w: %w", id, errNeedStream, cairn.ErrInvalid)
		}
		rec.Loading = true
		if err := h.commit(inst); err != nil {
			return err
		}
		ai, err := eng.Instance(h.config(rec))
		if err != nil {
			return err
		}
		if err := ai.RestoreLogical(ctx, data); err != nil {
			return fmt.Errorf("loading the dump: %w", err)
		}
		rec.Loading, rec.Loaded = false, true
		if err := h.commit(inst); err != nil {
			return err
		}
		h.event(id, "loaded")
	}
	if !rec.Configured {
		if err := h.configure(ctx, inst, eng); err != nil {
			return err
		}
		rec.Configured = true
		rec.Spec.Users = nil
		if err := h.commit(inst); err != nil {
			return err
		}
		h.event(id, "configured")
	}
	rec.Phase = PhaseReady
	if err := h.commit(inst); err != nil {
		return err
	}
	h.event(id, "ready")
	return nil
}

// config is the dbagent configuration of an instance.
func (h *Host) config(rec *record) dbagent.Config {
	settings := h.o.Settings[rec.Spec.Datastore]
	// The WAL the archive's slot may hold is a quarter of the volume, at
	// most 1 GB: an archive far behind costs a gap, never a full disk.
	if _, set := settings[slotKeepSetting]; !set && rec.Spec.Datastore == dbagent.PostgreSQL {
		if _, size, ok := h.o.FS.Usage(h.mountPoint(rec.Spec.ID)); ok && size > 0 {
			settings = maps.Clone(settings)
			if settings == nil {
				settings = map[string]string{}
			}
			settings[slotKeepSetting] = fmt.Sprintf("%dMB", max(64, min(1024, size/4>>20)))
		}
	}
	return dbagent.Config{
		DataDir:  filepath.Join(h.mountPoint(rec.Spec.ID), "data"),
		RunDir:   h.runDir(rec.Port),
		Address:  rec.Address,
		Port:     rec.Port,
		Settings: settings,
	}
}

// slotKeepSetting bounds the WAL PostgreSQL's replication slots hold.
const slotKeepSetting = "max_slot_wal_keep_size"

// initDataDir initialises the data directory beside its final place and
// renames it there, so a crash halfway leaves no half-made directory a
// resumed Provision would take for a finished one.
func (h *Host) initDataDir(ctx context.Context, eng dbagent.Engine, cfg dbagent.Config) error {
	if entries, err := os.ReadDir(cfg.DataDir); err == nil && len(entries) > 0 {
		return nil // renamed into place before a crash
	}
	tmp := cfg.DataDir + ".init"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	tcfg := cfg
	tcfg.DataDir = tmp
	if err := eng.Init(ctx, tcfg); err != nil {
		return fmt.Errorf("initialising the data directory: %w", err)
	}
	_ = os.Remove(cfg.DataDir)
	if err := os.Rename(tmp, cfg.DataDir); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	return nil
}

// configure creates the spec's databases and users; ones that exist (a
// resumed step) are no error.
func (h *Host) configure(ctx context.Context, inst *instance, eng dbagent.Engine) error {
	ai, err := eng.Instance(h.config(&inst.rec))
	if err != nil {
		return err
	}
	for _, db := range inst.rec.Spec.Databases {
		if err := ai.CreateDatabases(ctx, []dbagent.Database{db}); err != nil && !errors.Is(err, cairn.ErrExists) {
			return fmt.Errorf("creating database %s: %w", db.Name, err)
		}
	}
	for _, u := range inst.rec.Spec.Users {
		if err := ai.CreateUsers(ctx, []dbagent.User{u}); err != nil && !errors.Is(err, cairn.ErrExists) {
			return fmt.Errorf("creating user %s: %w", u.Name, err)
		}
	}
	return nil
}

// mount attaches the volume, makes its file system when the instance is
// new, and mounts it; each step is skipped when done.
func (h *Host) mount(ctx context.Context, inst *instance) error {
	rec := &inst.rec
	id := rec.Spec.ID
	if !inst.attached {
		if err := h.detachStale(ctx, inst); err != nil {
			return err
		}
	}
	dev, err := h.o.Attacher.Attach(ctx, exportName(id), rec.Spec.Volume)
	if err != nil {
		return fmt.Errorf("attaching the volume: %w", err)
	}
	inst.attached = true
	if rec.Device != dev {
		rec.Device = dev
		if err := h.commit(inst); err != nil {
			return err
		}
	}
	h.event(id, "attached")
	mp := h.mountPoint(id)
	if src, ok := h.o.FS.Mounted(mp); ok {
		if src == dev {
			return nil
		}
		// A mount left by a crashed data plane, on a device since gone.
		if err := h.o.FS.Unmount(ctx, mp); err != nil {
			return fmt.Errorf("stale mount %s: %w", mp, err)
		}
	}
	if !rec.Formatted {
		if rec.Spec.Source != SourceSnapshot && rec.Spec.Source != SourceVolume { // a clone has its file system
			if err := h.o.FS.Format(ctx, dev); err != nil {
				return fmt.Errorf("making the file system: %w", err)
			}
		}
		rec.Formatted = true
		if err := h.commit(inst); err != nil {
			return err
		}
		h.event(id, "formatted")
	}
	if err := os.MkdirAll(mp, 0o755); err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	if err := h.o.FS.Mount(ctx, dev, mp); err != nil {
		return fmt.Errorf("mounting the file system: %w", err)
	}
	h.event(id, "mounted")
	return nil
}

// bringUp makes a ready instance serve again after the data plane
// started: it stops a server a crashed data plane left running, remounts
// and starts the supervisor.
func (h *Host) bringUp(ctx context.Context, inst *instance, wait bool) error {
	rec := &inst.rec
	eng, err := h.engine(rec.Spec.Datastore, rec.Spec.Version)
	if err == nil {
		err = h.mount(ctx, inst)
	}
	if err == nil {
		err = h.startServer(ctx, inst, eng, wait)
	}
	inst.setErr(err)
	return err
}

// detachStale stops, unmounts and detaches what a previous data plane
// left of an instance: its server, and its device, attached over that
// process's NBD socket, on which reads and writes fail since that
// process ended. After a clean shutdown (Close) there is nothing to do.
// It runs before this process first attaches an instance, whether
// bringing it back or resuming its provisioning: a server left running
// would keep the stale file system (unmounted lazily, as it is busy)
// and its own postmaster.pid alive beside the one mounted again, and
// the volume would have two file systems writing it.
func (h *Host) detachStale(ctx context.Context, inst *instance) error {
	rec := &inst.rec
	id := rec.Spec.ID
	if rec.PID > 0 && rec.PIDStart != "" && processStart(rec.PID) == rec.PIDStart {
		h.o.Logger.Warn("stopping a server left by a previous data plane", "id", id, "pid", rec.PID)
		if err := killAndWait(ctx, rec.PID, rec.PIDStart); err != nil {
			return err
		}
	}
	mp := h.mountPoint(id)
	if _, ok := h.o.FS.Mounted(mp); ok {
		if err := h.o.FS.Unmount(ctx, mp); err != nil {
			return fmt.Errorf("unmounting the stale %s: %w", mp, err)
		}
		h.event(id, "unmounted")
	}
	if err := h.o.Attacher.Detach(ctx, exportName(id)); err != nil {
		return fmt.Errorf("detaching the stale device: %w", err)
	}
	return nil
}

// allocatePort picks the lowest port of the range that no other
// instance has and that can be bound now; want, when not zero, is the
// only port taken.
func (h *Host) allocatePort(id string, want int) (int, error) {
	h.mu.Lock()
	used := map[int]bool{}
	for oid, inst := range h.instances {
		if oid != id {
			used[inst.rec.Port] = true
		}
	}
	h.mu.Unlock()
	if want != 0 {
		if want < h.o.PortMin || want > h.o.PortMax || used[want] {
			return 0, fmt.Errorf("instance %s: port %d is outside %d-%d or another instance's: %w", id, want, h.o.PortMin, h.o.PortMax, cairn.ErrConflict)
		}
		return want, nil
	}
	for p := h.o.PortMin; p <= h.o.PortMax; p++ {
		if used[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(h.o.Address, strconv.Itoa(p)))
		if err != nil {
			continue
		}
		l.Close()
		return p, nil
	}
	return 0, fmt.Errorf("no free port in %d-%d on %s: %w", h.o.PortMin, h.o.PortMax, h.o.Address, cairn.ErrUnavailable)
}

// Instances lists the instances, ordered by ID.
func (h *Host) Instances() []State {
	h.mu.Lock()
	list := make([]*instance, 0, len(h.instances))
	for _, inst := range h.instances {
		list = append(list, inst)
	}
	h.mu.Unlock()
	out := make([]State, 0, len(list))
	for _, inst := range list {
		out = append(out, h.state(inst))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Instance returns one instance's state.
func (h *Host) Instance(id string) (State, error) {
	inst := h.get(id)
	if inst == nil {
		return State{}, fmt.Errorf("instance %s: %w", id, cairn.ErrNotFound)
	}
	return h.state(inst), nil
}

func (inst *instance) setErr(err error) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	inst.err = ""
	if err != nil {
		inst.err = err.Error()
	}
}

// state reads an instance's state. It does not take inst.op, so it
// answers while a step runs, from the record as last saved.
func (h *Host) state(inst *instance) State {
	inst.mu.Lock()
	rec := inst.view
	errText := inst.err
	sup := inst.sup
	inst.mu.Unlock()
	st := State{
		ID: rec.Spec.ID, Datastore: rec.Spec.Datastore, Version: rec.Spec.Version,
		Volume: rec.Spec.Volume, Phase: rec.Phase, Address: rec.Address, Port: rec.Port,
		Device: rec.Device, Error: errText,
	}
	switch {
	case sup != nil:
		st.Operating, st.Restarts, st.LastExit = sup.status()
		if st.Operating == cairn.OperatingNone && rec.Phase == PhaseReady {
			// Its first start after the data plane started.
			st.Operating = cairn.OperatingRestarting
		}
	case rec.Phase == PhaseReady && errText != "":
		// Not brought back after the data plane started.
		st.Operating = cairn.OperatingFailed
	case rec.Phase == PhaseReady:
		// Being brought back after the data plane started.
		st.Operating = cairn.OperatingRestarting
	}
	if used, size, ok := h.o.FS.Usage(h.mountPoint(rec.Spec.ID)); ok {
		st.Used, st.Size = used, size
	}
	return st
}

// Remove stops the instance's server, unmounts and detaches its volume
// and forgets it; the volume itself stays for the caller to delete. An
// unknown ID is no error, so a resumed Remove succeeds.
func (h *Host) Remove(ctx context.Context, id string) error {
	inst := h.get(id)
	if inst == nil {
		// Nothing recorded; an attachment may still be left by a crash
		// between Attach and the first save.
		return h.o.Attacher.Detach(ctx, exportName(id))
	}
	inst.op.Lock()
	defer inst.op.Unlock()
	inst.rec.Phase = PhaseRemoving
	if err := h.commit(inst); err != nil {
		return err
	}
	if err := h.takeDown(ctx, inst); err != nil {
		inst.setErr(err)
		return err
	}
	if err := os.Remove(h.recordPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("instance record: %w", err)
	}
	_ = os.Remove(h.logPath(id))
	if err := os.RemoveAll(h.spoolDir(id)); err != nil {
		return fmt.Errorf("recovery spool: %w", err)
	}
	h.mu.Lock()
	delete(h.instances, id)
	h.mu.Unlock()
	h.event(id, "removed")
	return nil
}

// takeDown stops the server, unmounts and detaches.
func (h *Host) takeDown(ctx context.Context, inst *instance) error {
	id := inst.rec.Spec.ID
	if err := h.stopServer(ctx, inst); err != nil {
		return err
	}
	if inst.rec.PID > 0 && processStart(inst.rec.PID) == inst.rec.PIDStart && inst.rec.PIDStart != "" {
		if err := killAndWait(ctx, inst.rec.PID, inst.rec.PIDStart); err != nil {
			return err
		}
	}
	mp := h.mountPoint(id)
	if _, ok := h.o.FS.Mounted(mp); ok {
		if err := h.o.FS.Unmount(ctx, mp); err != nil {
			return fmt.Errorf("unmounting %s: %w", mp, err)
		}
		h.event(id, "unmounted")
	}
	_ = os.Remove(mp)
	if err := h.o.Attacher.Detach(ctx, exportName(id)); err != nil {
		return fmt.Errorf("detaching the volume: %w", err)
	}
	inst.attached = false
	h.event(id, "detached")
	return nil
}

// Close stops every server cleanly, unmounts and detaches every volume,
// as a data plane shutting down must before its NBD exports go; the
// records stay, so the next Start brings the instances back.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	h.closed = true
	list := make([]*instance, 0, len(h.instances))
	for _, inst := range h.instances {
		list = append(list, inst)
	}
	h.mu.Unlock()
	h.starting.Wait()
	h.endStreams()
	var errs []error
	for _, inst := range list {
		inst.op.Lock()
		if err := h.takeDown(ctx, inst); err != nil {
			errs = append(errs, fmt.Errorf("instance %s: %w", inst.rec.Spec.ID, err))
		}
		inst.op.Unlock()
	}
	h.supervisors.Wait()
	return errors.Join(errs...)
}
