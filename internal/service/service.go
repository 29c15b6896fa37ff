// Package service is the block storage service's use cases: volumes,
// snapshots and backups of projects, over the catalog, the volume engine
// and the repositories. Every long operation is a durable task (package
// tasks): a request checks and moves the resource's state and queues the
// task in one catalog transaction, and the task moves it on.
//
// Resources are named in the engine by their catalog IDs (an engine
// volume's name is the catalog volume's ID), so a task cut short after
// the engine made something and before the catalog recorded it finds it
// again instead of leaking it.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/dbhost"
	"github.com/cairnproject/cairn/internal/notify"
	"github.com/cairnproject/cairn/internal/tasks"
	"github.com/cairnproject/cairn/internal/volume"
)

// GiB is the unit of the API's sizes.
const GiB = int64(1) << 30

// Notifier receives the service's events (package notify implements it).
type Notifier interface {
	Notify(ctx context.Context, e notify.Event)
}

// Observer is told what the service did, for metrics. Its methods must
// not block.
type Observer interface {
	tasks.Observer
	BytesBackedUp(n int64)
	BytesRestored(n int64)
	// BackupChecked counts a verification or drill ("verify", "drill")
	// and its result (cairn.CheckPassed, cairn.CheckFailed).
	BackupChecked(kind, result string)
}

// Config is what a Service is built from. Only cmd/ fills it.
type Config struct {
	Catalog catalog.Store
	// Identity validates tokens that are not cairn's own (Keystone's);
	// nil: only cairn's tokens are accepted.
	Identity TokenValidator
	// Engine is the volume engine (NewEngine).
	Engine Engine
	// OpenRepo opens a container's repository (Repositories).
	OpenRepo RepoOpener
	// DefaultContainer is used for backups that name none.
	DefaultContainer string
	// Backend names the kind of store backups go to ("local", "s3",
	// "swift"), as backup strategies show it.
	Backend  string
	Notifier Notifier
	Observer Observer
	Logger   *slog.Logger
	// Workers is how many tasks run at once.
	Workers int
	// Instances is the data plane's instance host; nil for a service
	// without database instances.
	Instances InstanceHost
	// QuiesceTimeout bounds the wait for a snapshot backup's quiesce: a
	// long transaction or DDL fails the backup after it, and never blocks
	// the database for longer (default 30 s).
	QuiesceTimeout time.Duration
	// NBDSocket and NBDAddress are where attached volumes are exported,
	// reported in attach responses.
	NBDSocket, NBDAddress string
	Now                   func() time.Time
	// After times the task runner's waits between retries of a failing
	// clean-up, and the service's own short waits (default time.After);
	// tests inject their own.
	After func(time.Duration) <-chan time.Time
	// ArchiveInterval is how often an instance's WAL received is stored
	// in its archive (default 500 ms); ArchiveAfter times that and the
	// archivers' pauses after a failure (default time.After).
	ArchiveInterval time.Duration
	ArchiveAfter    func(time.Duration) <-chan time.Time
	// ArchiveCheck is how often an archiver reads its server's slot and
	// lists its archive again (default 10 s).
	ArchiveCheck time.Duration
	// ArchiveWAL archives the log of every instance: PostgreSQL's WAL,
	// MariaDB's binary log.
	ArchiveWAL bool
	// RestorePointInterval is how often a restore point of each archived
	// instance is taken (0: none; see restorepoints.go); RestorePoints
	// how many of an instance's newest are kept (default 24).
	// RestorePointAfter times the waits between them (default
	// time.After).
	RestorePointInterval time.Duration
	RestorePoints        int
	RestorePointAfter    func(time.Duration) <-chan time.Time
	// Hosts is what the admin views of the services, hosts and pools
	// report of this host (hosts.go).
	Hosts HostConfig
	// ScratchDir is where restore drills restore to (an image file per
	// drill, removed when it ends; default os.TempDir()).
	ScratchDir string
	// Scheduler runs the backup policies' scheduler loop (policies.go).
	// FireDue fires what is due whether or not it runs.
	Scheduler bool
	// ScheduleGrace is how late a slot may fire and still be on time
	// (default 5 minutes); later, the policy's catch-up rule decides.
	ScheduleGrace time.Duration
	// SchedulePoll bounds the loop's sleep, so it sees the policies
	// other processes on the same catalog make (default 1 minute). The
	// loop's waits use After.
	SchedulePoll time.Duration
}

// Service runs the use cases.
type Service struct {
	cat     catalog.Store
	eng     Engine
	open    RepoOpener
	defCont string
	notify  Notifier
	obs     Observer
	log     *slog.Logger
	now     func() time.Time
	runner  *tasks.Runner
	nbdSock string
	nbdAddr string
	host    InstanceHost
	backend string
	quiesce time.Duration

	identity TokenValidator
	tokensMu sync.Mutex
	tokens   map[string]cachedToken // by SHA-256 of the secret

	// reposMu guards repos and reposStopped (not the opens: see repoFor).
	reposMu      sync.Mutex
	repos        map[string]*repoSlot
	reposStopped bool
	// gcMu serialises garbage collections.
	gcMu sync.Mutex
	// after times the service's own short waits (cfg.After).
	after func(time.Duration) <-chan time.Time
	// archives are the instances' WAL archivers.
	archives archiveSet
	// points are the restore point settings.
	points restorePointSet
	// typeNames caches the volume types' names (volumetypes.go).
	typeNames typeNameCache
	// hosts is this host, as the admin views report it (hosts.go).
	hosts hostInfo
	// sched is the policies' scheduler (policies.go).
	sched schedulerSet
	// scratch is where drills restore to (checks.go).
	scratch string
}

// New builds a Service. Start runs its tasks.
func New(cfg Config) *Service {
	s := &Service{cat: cfg.Catalog, eng: cfg.Engine, open: cfg.OpenRepo,
		defCont: cfg.DefaultContainer, notify: cfg.Notifier, obs: cfg.Observer,
		log: cfg.Logger, now: cfg.Now, repos: map[string]*repoSlot{}, tokens: map[string]cachedToken{},
		nbdSock: cfg.NBDSocket, nbdAddr: cfg.NBDAddress, host: cfg.Instances, backend: cfg.Backend,
		quiesce: cfg.QuiesceTimeout, identity: cfg.Identity}
	s.hosts = newHostInfo(cfg.Hosts)
	if s.scratch = cfg.ScratchDir; s.scratch == "" {
		s.scratch = os.TempDir()
	}
	s.sched = schedulerSet{on: cfg.Scheduler, grace: cfg.ScheduleGrace, poll: cfg.SchedulePoll, wake: make(chan struct{}, 1)}
	if s.sched.grace <= 0 {
		s.sched.grace = defaultScheduleGrace
	}
	if s.sched.poll <= 0 {
		s.sched.poll = defaultSchedulePoll
	}
	if s.quiesce <= 0 {
		s.quiesce = defaultQuiesceTimeout
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.after = cfg.After; s.after == nil {
		s.after = time.After
	}
	if s.archives.interval = cfg.ArchiveInterval; s.archives.interval <= 0 {
		s.archives.interval = defaultArchiveInterval
	}
	s.archives.on = cfg.ArchiveWAL
	if s.archives.check = cfg.ArchiveCheck; s.archives.check <= 0 {
		s.archives.check = defaultArchiveCheck
	}
	if s.archives.after = cfg.ArchiveAfter; s.archives.after == nil {
		s.archives.after = time.After
	}
	s.points = restorePointSet{interval: max(cfg.RestorePointInterval, 0), keep: cfg.RestorePoints, after: cfg.RestorePointAfter}
	if s.points.keep <= 0 {
		s.points.keep = defaultRestorePoints
	}
	if s.points.after == nil {
		s.points.after = time.After
	}
	if s.defCont == "" {
		s.defCont = "volumebackups"
	}
	if s.notify == nil {
		s.notify = discardNotifier{}
	}
	if s.obs == nil {
		s.obs = discardObserver{}
	}
	s.runner = tasks.New(cfg.Catalog, s.kinds(), tasks.Options{
		Workers: cfg.Workers, Logger: s.log, Observer: s.obs, Now: s.now, After: cfg.After})
	return s
}

// Start makes the data plane's exports those of the attached volumes
// (exporting what a previous process attached, unexporting what it
// detached but could not unexport), leaving the database instances'
// exports to the host that made them, then runs tasks, finishing those
// a previous process left.
func (s *Service) Start(ctx context.Context) error {
	want := map[string]cairn.ID{}
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		vols, err := tx.Volumes(ctx, catalog.Filter{Status: cairn.StatusInUse})
		if err != nil {
			return err
		}
		for _, v := range vols {
			if v.Attached && v.EngineID != "" {
				id, err := cairn.ParseID(v.EngineID)
				if err != nil {
					return fmt.Errorf("volume %s: engine id: %w", v.ID, err)
				}
				want[v.ID] = id
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("attached volumes: %w", err)
	}
	have, err := s.eng.Exported(ctx)
	if err != nil {
		return fmt.Errorf("exports: %w", err)
	}
	for name, id := range want {
		if have[name] != id {
			if err := s.eng.Export(ctx, name, id); err != nil {
				return fmt.Errorf("exporting attached volume %s: %w", name, err)
			}
		}
	}
	for name := range have {
		if strings.HasPrefix(name, dbhost.ExportPrefix) {
			continue // a database instance's, the host's own
		}
		if _, ok := want[name]; !ok {
			if err := s.eng.Unexport(ctx, name); err != nil {
				return fmt.Errorf("unexporting detached volume %s: %w", name, err)
			}
		}
	}
	if err := s.runner.Start(ctx); err != nil {
		return err
	}
	s.startArchivers(ctx)
	s.startScheduler(ctx)
	return nil
}

// Stop stops the tasks, then closes the repositories they used; tasks
// running are cut short and resumed by the next Start. The API must
// have stopped first: no request may use the service meanwhile.
func (s *Service) Stop() {
	s.stopScheduler()
	s.runner.Stop()
	s.stopArchivers()
	s.closeRepos()
}

// Caller is who makes a request: a project's token, perhaps an admin's,
// or a Keystone user's token scoped to a project.
type Caller struct {
	ProjectID string
	Admin     bool
	// ReadOnly callers (Keystone's reader role alone) may only read.
	ReadOnly bool
	// UserID names who acts: the Keystone user, or the cairn token's ID.
	// Resources created record it as their user_id.
	UserID string
}

// may reports whether c may act on project p's resources.
func (c Caller) may(p string) bool { return c.Admin || c.ProjectID == p }

// nowUTC is the service clock at microsecond precision, as the catalog
// stores times.
func (s *Service) nowUTC() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

// queue inserts a task for resource id in tx.
func (s *Service) queue(ctx context.Context, tx catalog.Tx, project, kind, id string, params []byte) (cairn.Task, error) {
	now := s.nowUTC()
	t := cairn.Task{ID: cairn.NewUUID(), ProjectID: project, Kind: kind, ResourceID: id,
		State: cairn.TaskPending, Params: params, CreatedAt: now, UpdatedAt: now, RequestID: requestIDOf(ctx)}
	return t, tx.InsertTask(ctx, t)
}

// update runs fn in a catalog transaction and wakes the task workers.
func (s *Service) update(ctx context.Context, fn func(tx catalog.Tx) error) error {
	err := s.cat.Update(ctx, fn)
	if err == nil {
		s.runner.Wake()
	}
	return err
}

// Task returns a task the caller may see.
func (s *Service) Task(ctx context.Context, c Caller, id string) (cairn.Task, error) {
	var t cairn.Task
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		t, err = tx.Task(ctx, id)
		return err
	})
	if err == nil && !c.may(t.ProjectID) {
		return cairn.Task{}, fmt.Errorf("task %s: %w", id, cairn.ErrNotFound)
	}
	return t, err
}

// Tasks lists the caller's tasks of a resource.
func (s *Service) Tasks(ctx context.Context, c Caller, resource string) ([]cairn.Task, error) {
	var list []cairn.Task
	f := catalog.Filter{ResourceID: resource}
	if !c.Admin {
		f.ProjectID = c.ProjectID
	}
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		list, err = tx.Tasks(ctx, f)
		return err
	})
	return list, err
}

// event sends a notification about a resource.
func (s *Service) event(ctx context.Context, typ, project string, payload map[string]any) {
	s.notify.Notify(ctx, notify.Event{Type: typ, ProjectID: project, Payload: payload})
}

// errorf wraps a sentinel with a message for the API's error body.
func errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), sentinel)
}

// conflict is the error for a state that does not allow an operation.
func conflict(kind, id string, st cairn.Status, op string) error {
	return fmt.Errorf("%s %s is %s; cannot %s: %w", kind, id, st, op, cairn.ErrConflict)
}

// engineVolume finds the engine volume named for catalog volume id.
func (s *Service) engineVolume(ctx context.Context, id string) (volume.VolumeInfo, bool, error) {
	list, err := s.eng.Volumes(ctx)
	if err != nil {
		return volume.VolumeInfo{}, false, fmt.Errorf("engine volumes: %w", err)
	}
	for _, v := range list {
		if v.Name == id {
			return v, true, nil
		}
	}
	return volume.VolumeInfo{}, false, nil
}

// engineSnapshot finds the engine snapshot named name.
func (s *Service) engineSnapshot(ctx context.Context, name string) (volume.SnapshotInfo, bool, error) {
	list, err := s.eng.Snapshots(ctx)
	if err != nil {
		return volume.SnapshotInfo{}, false, fmt.Errorf("engine snapshots: %w", err)
	}
	for _, sn := range list {
		if sn.Name == name {
			return sn, true, nil
		}
	}
	return volume.SnapshotInfo{}, false, nil
}

func parseEngineID(s string) (cairn.ID, error) {
	if s == "" {
		return cairn.ID{}, fmt.Errorf("no engine id: %w", cairn.ErrNotFound)
	}
	return cairn.ParseID(s)
}

// failReason is what a task's error says in a resource's fail_reason.
func failReason(err error) string {
	if errors.Is(err, context.Canceled) {
		return "cancelled"
	}
	msg := err.Error()
	if len(msg) > 1000 {
		msg = msg[:1000]
	}
	return msg
}

type discardNotifier struct{}

func (discardNotifier) Notify(context.Context, notify.Event) {}

type discardObserver struct{}

func (discardObserver) TaskEnded(string, bool, time.Duration) {}
func (discardObserver) BytesBackedUp(int64)                   {}
func (discardObserver) BytesRestored(int64)                   {}
func (discardObserver) BackupChecked(string, string)          {}
