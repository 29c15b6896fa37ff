package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbhost"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
	"github.com/cairnproject/cairn/internal/volume"
	"golang.org/x/sync/errgroup"
)

// InstanceHost is the data plane's side of database instances: where
// their volumes are attached and mounted and their servers supervised
// (dbhost.Host, reached over the control socket). Its methods are safe
// for concurrent use; calls for one instance are serialised by the host,
// and Provision and RemoveInstance are idempotent, so a task cut short
// calls them again.
type InstanceHost interface {
	// Datastores lists the database servers installed on the host.
	Datastores(ctx context.Context) ([]dbagent.Datastore, error)
	// Provision makes an instance and starts its server, or resumes
	// making it; it returns once the server answers. data is the stream
	// of a physical or logical restore, nil otherwise.
	Provision(ctx context.Context, spec dbhost.Spec, data io.Reader) (dbhost.State, error)
	// HostInstances lists the host's instances.
	HostInstances(ctx context.Context) ([]dbhost.State, error)
	// HostInstance returns one; cairn.ErrNotFound when the host has none.
	HostInstance(ctx context.Context, id string) (dbhost.State, error)
	// RemoveInstance stops, unmounts and detaches an instance; an
	// unknown ID is no error.
	RemoveInstance(ctx context.Context, id string) error
	// SnapshotInstance quiesces the server, snapshots the volume and
	// releases the server; a failure leaves no snapshot behind.
	SnapshotInstance(ctx context.Context, id string, o dbhost.SnapshotOptions) (dbhost.SnapshotBackup, error)
	// BackupInstance writes a physical or logical backup of the server
	// to w, as its tool makes it, and returns its record.
	BackupInstance(ctx context.Context, id string, o dbhost.StreamOptions, w io.Writer) (dbagent.Record, error)
	// CheckInstance runs the datastore's consistency check (pg_amcheck,
	// mariadb-check) and req's query on an instance's server; damage
	// found is a report that did not pass, not an error.
	CheckInstance(ctx context.Context, id string, req dbagent.CheckRequest) (dbagent.CheckReport, error)

	// WALIdentity says where an instance's server stands in its WAL;
	// StreamWAL streams the WAL of a timeline from start to fn until the
	// timeline ends (its end returned), ctx ends or fn fails;
	// ConfirmWAL tells the stream what the archive has stored, so the
	// server's slot lets go of it; TimelineHistory returns a timeline's
	// history file. cairn.ErrUnsupported for a datastore without WAL;
	// cairn.ErrGone when the server no longer has the WAL asked for.
	WALIdentity(ctx context.Context, id string) (dbagent.WALIdentity, error)
	StreamWAL(ctx context.Context, id string, timeline uint32, start dbagent.LSN, fn func(dbagent.WALMessage) error) (*dbagent.TimelineEnd, error)
	ConfirmWAL(id string, lsn dbagent.LSN)
	TimelineHistory(ctx context.Context, id string, timeline uint32) ([]byte, error)
	// WALSlot reports the server's archive slot.
	WALSlot(ctx context.Context, id string) (dbagent.WALSlot, error)

	// BinlogState says where an instance's MariaDB server stands in its
	// binary log; StreamBinlog streams its binary log files from the
	// start of file on to fn until ctx ends, fn fails or the stream
	// breaks. cairn.ErrUnsupported for a datastore without a binary log;
	// cairn.ErrGone when the server no longer has file.
	BinlogState(ctx context.Context, id string) (dbagent.BinlogState, error)
	StreamBinlog(ctx context.Context, id, file string, fn func(dbagent.BinlogMessage) error) error
}

// errNoInstances is the error of the database API on a service without
// an instance host.
var errNoInstances = fmt.Errorf("this service runs no database instances: %w", cairn.ErrUnsupported)

// Datastore IDs are stable names, so a client may give either: the
// datastore's ID is its type, a version's ID the type and version.
func versionID(ds dbagent.Datastore) string { return ds.Type + "-" + ds.Version }

// Datastores lists the datastores installed on the host, each with its
// versions, the newest its default.
func (s *Service) Datastores(ctx context.Context) ([]cairn.Datastore, error) {
	if s.host == nil {
		return nil, errNoInstances
	}
	list, err := s.host.Datastores(ctx)
	if err != nil {
		return nil, fmt.Errorf("datastores: %w", err)
	}
	byType := map[string]*cairn.Datastore{}
	var out []*cairn.Datastore
	for _, ds := range list {
		d := byType[ds.Type]
		if d == nil {
			d = &cairn.Datastore{ID: ds.Type, Name: ds.Type}
			byType[ds.Type] = d
			out = append(out, d)
		}
		d.Versions = append(d.Versions, cairn.DatastoreVersion{ID: versionID(ds), Name: ds.Version, Version: ds.Release})
	}
	res := make([]cairn.Datastore, 0, len(out))
	for _, d := range out {
		sort.Slice(d.Versions, func(i, j int) bool { return versionLess(d.Versions[i].Name, d.Versions[j].Name) })
		d.DefaultVersionID = d.Versions[len(d.Versions)-1].ID
		res = append(res, *d)
	}
	sort.Slice(res, func(i, j int) bool { return res[i].Name < res[j].Name })
	return res, nil
}

// versionLess orders dotted version numbers numerically.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, err1 := strconv.Atoi(as[i])
		y, err2 := strconv.Atoi(bs[i])
		if err1 != nil || err2 != nil {
			if as[i] != bs[i] {
				return as[i] < bs[i]
			}
			continue
		}
		if x != y {
			return x < y
		}
	}
	return len(as) < len(bs)
}

// resolveDatastore finds the datastore and version a request names (by
// name or ID; version "" for the default).
func (s *Service) resolveDatastore(ctx context.Context, name, version string) (cairn.DatastoreRef, error) {
	list, err := s.Datastores(ctx)
	if err != nil {
		return cairn.DatastoreRef{}, err
	}
	for _, d := range list {
		if d.ID != name && d.Name != name {
			continue
		}
		for _, v := range d.Versions {
			if version == "" && v.ID == d.DefaultVersionID || version != "" && (v.ID == version || v.Name == version) {
				return cairn.DatastoreRef{Type: d.Name, Version: v.Name, VersionID: v.ID}, nil
			}
		}
		return cairn.DatastoreRef{}, errorf(cairn.ErrInvalid, "datastore %s has no version %q installed on this host", d.Name, version)
	}
	return cairn.DatastoreRef{}, errorf(cairn.ErrInvalid, "datastore %q is not installed on this host", name)
}

// instanceParams are an instance.create task's: what the host creates
// in a new instance.
type instanceParams struct {
	Databases []dbagent.Database `json:"databases,omitempty"`
	Users     []dbagent.User     `json:"users,omitempty"`
	// PointInTime and Source: a restore to that instant of the source
	// instance, whose archive's WAL is replayed from the backup.
	PointInTime time.Time `json:"point_in_time,omitzero"`
	Source      string    `json:"source,omitempty"`
	// FromRepository restores a snapshot backup from the repository even
	// where the host still has its snapshot: a drill proves what a lost
	// host would leave.
	FromRepository bool `json:"from_repository,omitempty"`
}

// CreateInstance accepts a new instance, in BUILD; its task makes the
// volume and has the host provision it.
func (s *Service) CreateInstance(ctx context.Context, c Caller, in cairn.InstanceCreate) (cairn.Instance, error) {
	if s.host == nil {
		return cairn.Instance{}, errNoInstances
	}
	if in.Name == "" {
		return cairn.Instance{}, errorf(cairn.ErrInvalid, "an instance needs a name")
	}
	if err := validText("name", in.Name, 255); err != nil {
		return cairn.Instance{}, err
	}
	if in.VolumeSize != 0 || (in.BackupID == "" && in.PointInTime.IsZero()) {
		if err := validSize(in.VolumeSize); err != nil {
			return cairn.Instance{}, err
		}
	}
	var p instanceParams
	for _, d := range in.Databases {
		p.Databases = append(p.Databases, dbagent.Database{Name: d.Name, CharacterSet: d.CharacterSet, Collate: d.Collate})
	}
	for _, u := range in.Users {
		p.Users = append(p.Users, dbagent.User{Name: u.Name, Password: u.Password, Databases: u.Databases})
	}
	if err := dbagent.ValidateDatabases(p.Databases, nil); err != nil {
		return cairn.Instance{}, err
	}
	if err := dbagent.ValidateUsers(p.Users, nil, nil); err != nil {
		return cairn.Instance{}, err
	}
	md, err := validMetadata(in.Metadata)
	if err != nil {
		return cairn.Instance{}, err
	}
	if (in.BackupID != "" || !in.PointInTime.IsZero()) && (len(p.Databases) > 0 || len(p.Users) > 0) {
		return cairn.Instance{}, errorf(cairn.ErrInvalid, "an instance restored from a backup has the backup's databases and users: give none")
	}
	if !in.PointInTime.IsZero() {
		source := in.SourceInstance
		if in.BackupID != "" {
			var b cairn.DatabaseBackup
			if err := s.cat.View(ctx, func(tx catalog.Tx) error {
				var err error
				b, err = getDatabaseBackup(ctx, tx, c, in.BackupID)
				return err
			}); err != nil {
				return cairn.Instance{}, err
			}
			if source != "" && source != b.InstanceID {
				return cairn.Instance{}, errorf(cairn.ErrInvalid, "backup %s is of instance %s, not %s", b.ID, b.InstanceID, source)
			}
			source = b.InstanceID
		} else if source != "" {
			err := s.cat.View(ctx, func(tx catalog.Tx) error {
				_, err := getInstance(ctx, tx, c, source)
				return err
			})
			if errors.Is(err, cairn.ErrNotFound) {
				// Not this deployment's (neither live nor another
				// project's): another deployment's, in the store?
				if _, err2 := s.instanceRow(ctx, source); errors.Is(err2, cairn.ErrNotFound) {
					_, err = s.adoptBackups(ctx, c, source)
				}
			}
			if err != nil {
				return cairn.Instance{}, err
			}
		} else {
			return cairn.Instance{}, errorf(cairn.ErrInvalid, "a point_in_time restore needs the backup or the instance to restore")
		}
		b, err := s.planPointInTime(ctx, c, source, in.BackupID, in.PointInTime, 0)
		if err != nil {
			return cairn.Instance{}, err
		}
		in.BackupID, p.PointInTime, p.Source = b.ID, in.PointInTime.UTC(), source
	}
	var ds cairn.DatastoreRef
	if in.Datastore != "" || in.BackupID == "" {
		var err error
		if ds, err = s.resolveDatastore(ctx, in.Datastore, in.DatastoreVersion); err != nil {
			return cairn.Instance{}, err
		}
	}
	now := s.nowUTC()
	inst := cairn.Instance{ID: cairn.NewUUID(), ProjectID: c.ProjectID, Name: in.Name,
		Status: cairn.InstanceBuild, Datastore: ds, VolumeSize: in.VolumeSize, BackupID: in.BackupID, CreatedAt: now, UpdatedAt: now,
		Metadata: md}
	err = s.update(ctx, func(tx catalog.Tx) error {
		if in.BackupID != "" {
			b, err := getDatabaseBackup(ctx, tx, c, in.BackupID)
			if err != nil {
				return err
			}
			if b.Status != cairn.DatabaseBackupCompleted {
				return fmt.Errorf("backup %s is %s; cannot restore it: %w", b.ID, b.Status, cairn.ErrConflict)
			}
			if ds.Type != "" && (ds.Type != b.Datastore.Type || ds.Version != b.Datastore.Version) {
				return errorf(cairn.ErrInvalid, "backup %s is of %s %s, not %s %s", b.ID, b.Datastore.Type, b.Datastore.Version, ds.Type, ds.Version)
			}
			inst.Datastore = b.Datastore
			if inst.VolumeSize == 0 {
				inst.VolumeSize = b.VolumeSize
			}
			if inst.VolumeSize < b.VolumeSize {
				return errorf(cairn.ErrInvalid, "volume size %d GiB is smaller than backup %s's (%d GiB)", inst.VolumeSize, b.ID, b.VolumeSize)
			}
		}
		if err := checkQuota(ctx, tx, c.ProjectID, cairn.Usage{Volumes: 1, Gigabytes: inst.VolumeSize}); err != nil {
			return err
		}
		if err := checkVolumeSize(ctx, tx, c.ProjectID, inst.VolumeSize); err != nil {
			return err
		}
		if err := tx.InsertInstance(ctx, inst); err != nil {
			return err
		}
		params, err := json.Marshal(p)
		if err != nil {
			return err
		}
		_, err = s.queue(ctx, tx, c.ProjectID, "instance.create", inst.ID, params)
		return err
	})
	if err != nil {
		return cairn.Instance{}, err
	}
	s.event(ctx, "instance.create.start", inst.ProjectID, instancePayload(inst))
	return inst, nil
}

// provisionAttempts bounds the calls of a host's Provision that meet
// the host unavailable (its data plane restarting): 1+2+4+8 s apart.
const provisionAttempts = 5

// runCreateInstance makes an instance's volume (named by the instance's
// ID in the engine, so a resumed task finds it) and has the host
// provision it.
func (s *Service) runCreateInstance(ctx context.Context, t cairn.Task) error {
	inst, err := s.instanceRow(ctx, t.ResourceID)
	if err != nil {
		return err
	}
	if inst.Status != cairn.InstanceBuild {
		return nil // finished by an earlier attempt
	}
	var p instanceParams
	if err := json.Unmarshal(t.Params, &p); err != nil {
		return fmt.Errorf("task params: %w", err)
	}
	st, inst, err := s.provisionInstance(ctx, t, inst, p)
	if err != nil {
		return err
	}
	// The users exist: their passwords leave the catalog (the host
	// forgot them too; a resumed Provision does not need them).
	if err := s.forgetPasswords(ctx, t.ID); err != nil {
		return err
	}
	inst, err = s.setInstance(ctx, inst.ID, func(in *cairn.Instance) {
		in.Status, in.OperatingStatus = cairn.InstanceActive, st.Operating
		in.Address, in.Port, in.FailReason = st.Address, st.Port, ""
	})
	if err != nil {
		return err
	}
	s.startArchiver(inst)
	s.event(ctx, "instance.create.end", inst.ProjectID, instancePayload(inst))
	return nil
}

// provisionInstance makes instance inst (in BUILD) as its task t would:
// its volume (empty, cloned or restored from its backup), then has the
// host provision it, recovering to p's point in time when it has one.
// Each step resumes where an attempt cut short stopped. It returns the
// host's state of the instance and its row as updated.
func (s *Service) provisionInstance(ctx context.Context, t cairn.Task, inst cairn.Instance, p instanceParams) (st dbhost.State, _ cairn.Instance, _ error) {
	spec := dbhost.Spec{ID: inst.ID, Datastore: inst.Datastore.Type, Version: inst.Datastore.Version,
		Source: dbhost.SourceInit, Databases: p.Databases, Users: p.Users}
	var err error
	var b cairn.DatabaseBackup
	var chain []cairn.DatabaseBackup // of a physical backup, full first
	if inst.BackupID != "" {
		if b, err = s.dbBackupRow(ctx, inst.BackupID); err != nil {
			return st, inst, err
		}
		if chain, err = s.restoreSource(ctx, &spec, b); err != nil {
			return st, inst, err
		}
	}
	if inst.VolumeID == "" {
		if inst, err = s.makeInstanceVolume(ctx, t, inst, b, p.FromRepository); err != nil {
			return st, inst, err
		}
	}
	if spec.Volume, err = cairn.ParseID(inst.VolumeID); err != nil {
		return st, inst, fmt.Errorf("instance %s: volume id: %w", inst.ID, err)
	}
	if b.Overlay != "" {
		if spec.Overlay, err = s.readOverlay(ctx, b); err != nil {
			return st, inst, err
		}
	}
	var walStream func(ctx context.Context, w io.Writer) error
	if !p.PointInTime.IsZero() {
		if spec.Recovery, walStream, err = s.recoveryPlan(ctx, p.Source, b, p.PointInTime, false, 0); err != nil {
			return st, inst, err
		}
	}
	// Provision resumes where a call cut short stopped: one that met the
	// data plane gone (killed, and being started again by the service)
	// is made again, a few times, with backoff.
	began := time.Now() // for the log: the real time it took
	for attempt, pause := 1, time.Second; ; attempt, pause = attempt+1, 2*pause {
		switch {
		case spec.Source == dbhost.SourcePhysical, spec.Source == dbhost.SourceLogical, walStream != nil:
			st, err = s.provisionFromStream(ctx, spec, b, chain, walStream)
		default:
			st, err = s.host.Provision(ctx, spec, nil)
		}
		if err == nil || !errors.Is(err, cairn.ErrUnavailable) || attempt == provisionAttempts {
			break
		}
		s.log.Warn("provisioning an instance met its host unavailable; trying again", "instance", inst.ID, "attempt", attempt, "in", pause, "err", err)
		select {
		case <-ctx.Done():
			return st, inst, ctx.Err()
		case <-s.after(pause):
		}
	}
	if err != nil {
		return st, inst, fmt.Errorf("provisioning: %w", err)
	}
	s.log.Info("instance provisioned by its host", "instance", inst.ID, "source", string(spec.Source),
		"took", time.Since(began).Round(time.Millisecond))
	return st, inst, nil
}

// restoreSource sets the spec's source to backup b: its record, or for
// a physical backup the records of its chain, which it returns, full
// backup first.
func (s *Service) restoreSource(ctx context.Context, spec *dbhost.Spec, b cairn.DatabaseBackup) ([]cairn.DatabaseBackup, error) {
	rec, err := dbRecord(b)
	if err != nil {
		return nil, err
	}
	switch b.Strategy {
	case cairn.StrategySnapshot:
		spec.Source, spec.Record = dbhost.SourceSnapshot, &rec
	case cairn.StrategyLogical:
		spec.Source, spec.Record = dbhost.SourceLogical, &rec
	case cairn.StrategyPhysical:
		chain, err := s.backupChain(ctx, b)
		if err != nil {
			return nil, err
		}
		spec.Source, spec.Parts = dbhost.SourcePhysical, nil
		for _, p := range chain {
			prec, err := dbRecord(p)
			if err != nil {
				return nil, err
			}
			spec.Parts = append(spec.Parts, prec)
		}
		return chain, nil
	}
	return nil, nil
}

// makeInstanceVolume makes the instance's engine volume (named by the
// instance's ID, so a resumed task finds it): empty, an instant clone of
// the backup's snapshot where the host still has it, or restored from
// the repository (always, with fromRepository). The instance's VolumeID
// is recorded only once the volume holds all its data; a volume found
// without it is a restore cut short, deleted and made again.
func (s *Service) makeInstanceVolume(ctx context.Context, t cairn.Task, inst cairn.Instance, b cairn.DatabaseBackup, fromRepository bool) (cairn.Instance, error) {
	ev, ok, err := s.engineVolume(ctx, inst.ID)
	if err != nil {
		return inst, err
	}
	if ok {
		if err := s.eng.DeleteVolume(ctx, ev.ID); err != nil {
			return inst, fmt.Errorf("deleting the volume of a restore cut short: %w", err)
		}
	}
	size := inst.VolumeSize * GiB
	var snap cairn.ID
	if b.ID != "" && !fromRepository {
		if es, found, err := s.engineSnapshot(ctx, DBSnapshotName(b.ID)); err != nil {
			return inst, err
		} else if found {
			snap = es.ID
		}
	}
	switch {
	case b.ID != "" && b.Strategy != cairn.StrategySnapshot:
		// The host fills a new file system from the backup's streams.
		if ev, err = s.eng.CreateVolume(ctx, inst.ID, size); err != nil {
			return inst, fmt.Errorf("create volume: %w", err)
		}
	case !snap.IsZero():
		if ev, err = s.eng.CloneVolume(ctx, inst.ID, snap); err != nil {
			return inst, fmt.Errorf("cloning the backup's snapshot: %w", err)
		}
		if ev.Size < size {
			if err := s.eng.ExtendVolume(ctx, ev.ID, size); err != nil {
				return inst, fmt.Errorf("extending the clone: %w", err)
			}
		}
	case b.ID != "":
		if ev, err = s.restoreInstanceVolume(ctx, t, inst, b, size); err != nil {
			return inst, err
		}
	default:
		if ev, err = s.eng.CreateVolume(ctx, inst.ID, size); err != nil {
			return inst, fmt.Errorf("create volume: %w", err)
		}
	}
	return s.setInstance(ctx, inst.ID, func(in *cairn.Instance) { in.VolumeID = ev.ID.String() })
}

// restoreInstanceVolume writes a backup's image from the repository into
// a new volume.
func (s *Service) restoreInstanceVolume(ctx context.Context, t cairn.Task, inst cairn.Instance, b cairn.DatabaseBackup, size int64) (volume.VolumeInfo, error) {
	r, err := s.repoFor(ctx, b.Container)
	if err != nil {
		return volume.VolumeInfo{}, err
	}
	rid, err := cairn.ParseID(b.Data)
	if err != nil {
		return volume.VolumeInfo{}, fmt.Errorf("backup %s: repository id: %w", b.ID, err)
	}
	m, err := r.Manifest(ctx, rid)
	if err != nil {
		return volume.VolumeInfo{}, fmt.Errorf("backup %s: %w", b.ID, err)
	}
	ev, err := s.eng.CreateVolume(ctx, inst.ID, max(size, m.Size))
	if err != nil {
		return ev, fmt.Errorf("create volume: %w", err)
	}
	dev, err := s.eng.OpenVolume(ctx, ev.ID)
	if err != nil {
		return ev, fmt.Errorf("open volume: %w", err)
	}
	prog := &repo.Progress{}
	stop := s.trackProgress(ctx, t.ID, prog)
	began := time.Now() // for the log: the real time it took
	stats, err := r.Restore(ctx, m, DeviceTarget(ctx, dev, true), prog)
	stop()
	if cerr := dev.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return ev, fmt.Errorf("restoring backup %s: %w", b.ID, err)
	}
	s.obs.BytesRestored(stats.Bytes)
	s.log.Info("instance volume restored from the repository", "instance", inst.ID, "backup", b.ID,
		"bytes", stats.Bytes, "took", time.Since(began).Round(time.Millisecond))
	return ev, nil
}

// backupChain returns the physical backups b builds on and b, the full
// backup first.
func (s *Service) backupChain(ctx context.Context, b cairn.DatabaseBackup) ([]cairn.DatabaseBackup, error) {
	chain := []cairn.DatabaseBackup{b}
	for b.ParentID != "" {
		var err error
		if b, err = s.dbBackupRow(ctx, b.ParentID); err != nil {
			return nil, fmt.Errorf("the chain of backup %s: %w", chain[0].ID, err)
		}
		if b.Status != cairn.DatabaseBackupCompleted || len(chain) > 1000 {
			return nil, fmt.Errorf("the chain of backup %s: parent %s is %s: %w", chain[0].ID, b.ID, b.Status, cairn.ErrConflict)
		}
		chain = append(chain, b)
	}
	slices.Reverse(chain)
	return chain, nil
}

// provisionFromStream has the host make an instance from a physical
// chain (each part framed) or a dump, streamed from the repository as
// the host reads it.
func (s *Service) provisionFromStream(ctx context.Context, spec dbhost.Spec, b cairn.DatabaseBackup, chain []cairn.DatabaseBackup,
	walStream func(ctx context.Context, w io.Writer) error) (dbhost.State, error) {
	r, err := s.repoFor(ctx, b.Container)
	if err != nil {
		return dbhost.State{}, err
	}
	var parts []cairn.DatabaseBackup
	switch spec.Source {
	case dbhost.SourceLogical:
		parts = []cairn.DatabaseBackup{b}
	case dbhost.SourcePhysical:
		parts = chain
	}
	manifests := make([]*format.Manifest, len(parts))
	for i, p := range parts {
		id, err := cairn.ParseID(p.Data)
		if err != nil {
			return dbhost.State{}, fmt.Errorf("backup %s: repository id: %w", p.ID, err)
		}
		if manifests[i], err = r.Manifest(ctx, id); err != nil {
			return dbhost.State{}, fmt.Errorf("backup %s: %w", p.ID, err)
		}
	}
	pr, pw := io.Pipe()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		for _, m := range manifests {
			if spec.Source == dbhost.SourceLogical {
				_, err = r.RestoreStream(gctx, m, pw, nil)
			} else {
				err = writeFramed(gctx, r, m, pw)
			}
			if err != nil {
				break
			}
		}
		if err == nil && walStream != nil {
			// A recovery's WAL files follow the backup's own stream.
			err = walStream(gctx, pw)
		}
		pw.CloseWithError(err)
		if errors.Is(err, errReaderDone) {
			return nil // the host took what it needed
		}
		return err
	})
	var st dbhost.State
	var hostErr error
	g.Go(func() error {
		st, hostErr = s.host.Provision(gctx, spec, pr)
		pr.CloseWithError(errors.Join(hostErr, errReaderDone))
		return hostErr
	})
	_ = g.Wait() // the host's result decides, below
	if hostErr != nil {
		// The host's error says why: a reader that went away (a data
		// plane killed, its request's body closed) shows on the
		// writer's side only as a closed pipe, which may come first.
		return st, hostErr
	}
	// The host finished: it read what it needed (a writer's failure
	// before that reaches it as the stream's error). A resumed restore
	// past the step that reads the stream ends its request without
	// reading, and the writer's closed pipe is no failure then.
	return st, nil
}

// errReaderDone ends the writer of a pipe whose reader is done.
var errReaderDone = errors.New("the reader of the stream is done")

// writeFramed writes stream backup m to w as one framed part.
func writeFramed(ctx context.Context, r Repository, m *format.Manifest, w io.Writer) error {
	pr, pw := io.Pipe()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		_, err := r.RestoreStream(gctx, m, pw, nil)
		pw.CloseWithError(err)
		return err
	})
	g.Go(func() error {
		err := dbhost.WritePart(w, pr, m.Size)
		pr.CloseWithError(errors.Join(err, errReaderDone))
		return err
	})
	err := g.Wait()
	if errors.Is(err, errReaderDone) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil
	}
	return err
}

// readOverlay reads a backup's overlay stream from the repository.
func (s *Service) readOverlay(ctx context.Context, b cairn.DatabaseBackup) ([]byte, error) {
	r, err := s.repoFor(ctx, b.Container)
	if err != nil {
		return nil, err
	}
	id, err := cairn.ParseID(b.Overlay)
	if err != nil {
		return nil, fmt.Errorf("backup %s: overlay id: %w", b.ID, err)
	}
	m, err := r.Manifest(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("backup %s: overlay: %w", b.ID, err)
	}
	var buf bytes.Buffer
	if _, err := r.RestoreStream(ctx, m, &buf, nil); err != nil {
		return nil, fmt.Errorf("backup %s: reading the overlay: %w", b.ID, err)
	}
	return buf.Bytes(), nil
}

// forgetPasswords removes the users' passwords from an instance.create
// task's parameters.
func (s *Service) forgetPasswords(ctx context.Context, taskID string) error {
	return s.cat.Update(ctx, func(tx catalog.Tx) error {
		t, err := tx.Task(ctx, taskID)
		if err != nil {
			return err
		}
		var p instanceParams
		if len(t.Params) == 0 || json.Unmarshal(t.Params, &p) != nil || len(p.Users) == 0 {
			return nil
		}
		for i := range p.Users {
			p.Users[i].Password = ""
		}
		if t.Params, err = json.Marshal(p); err != nil {
			return err
		}
		return tx.UpdateTask(ctx, t)
	})
}

// failInstance marks an instance whose task failed: ERROR, with the
// cause, and its users' passwords forgotten. The host keeps what it
// made, so a delete takes it down.
func (s *Service) failInstance(event string) func(ctx context.Context, t cairn.Task, cause error) error {
	return func(ctx context.Context, t cairn.Task, cause error) error {
		if t.Kind == "instance.create" {
			if err := s.forgetPasswords(ctx, t.ID); err != nil {
				return err
			}
			// An instance that became ACTIVE before its task could end
			// (cut short after the row was written, then given up) is
			// running: it stays so.
			if in, err := s.instanceRow(ctx, t.ResourceID); err == nil && in.Status == cairn.InstanceActive {
				s.log.Warn("an active instance's create task failed afterwards; the instance stays", "instance", in.ID, "err", cause)
				return nil
			}
		}
		inst, err := s.setInstance(ctx, t.ResourceID, func(in *cairn.Instance) {
			in.Status, in.FailReason = cairn.InstanceError, failReason(cause)
		})
		if errors.Is(err, cairn.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		s.event(ctx, event, inst.ProjectID, instancePayload(inst))
		return nil
	}
}

// DeleteInstance accepts the deletion of an instance: SHUTDOWN, then its
// task stops the server and deletes the volume. Its backups stay.
func (s *Service) DeleteInstance(ctx context.Context, c Caller, id string) error {
	if s.host == nil {
		return errNoInstances
	}
	var inst cairn.Instance
	err := s.update(ctx, func(tx catalog.Tx) error {
		var err error
		if inst, err = getInstance(ctx, tx, c, id); err != nil {
			return err
		}
		switch inst.Status {
		case cairn.InstanceActive, cairn.InstanceError:
		default:
			return fmt.Errorf("instance %s is %s; cannot delete it: %w", id, inst.Status, cairn.ErrConflict)
		}
		inst.Status, inst.OperatingStatus, inst.UpdatedAt = cairn.InstanceShutdown, cairn.OperatingShutdown, s.nowUTC()
		if err := tx.UpdateInstance(ctx, inst); err != nil {
			return err
		}
		_, err = s.queue(ctx, tx, inst.ProjectID, "instance.delete", inst.ID, nil)
		return err
	})
	if err != nil {
		return err
	}
	s.event(ctx, "instance.delete.start", inst.ProjectID, instancePayload(inst))
	return nil
}

// runDeleteInstance takes the instance down on the host, deletes its
// volume and its row; each step is skipped when done.
func (s *Service) runDeleteInstance(ctx context.Context, t cairn.Task) error {
	inst, err := s.instanceRow(ctx, t.ResourceID)
	if errors.Is(err, cairn.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := s.removeInstance(ctx, inst); err != nil {
		return err
	}
	s.event(ctx, "instance.delete.end", inst.ProjectID, instancePayload(inst))
	return nil
}

// removeInstance takes an instance down on the host, deletes its
// volume (with the snapshots its backups, recoveries and restore points
// kept there) and its row; each step is skipped when done. Its backups
// stay in the repository.
func (s *Service) removeInstance(ctx context.Context, inst cairn.Instance) error {
	s.stopArchiver(inst.ID)
	if err := s.host.RemoveInstance(ctx, inst.ID); err != nil {
		return fmt.Errorf("removing from the host: %w", err)
	}
	// The backups' snapshots of the volume go first (the engine deletes
	// no volume with snapshots); the backups stay in the repository.
	var backups []cairn.DatabaseBackup
	if err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		backups, err = tx.DatabaseBackups(ctx, catalog.Filter{InstanceID: inst.ID})
		return err
	}); err != nil {
		return err
	}
	for _, b := range backups {
		if err := s.deleteDBSnapshot(ctx, b.ID); err != nil {
			return err
		}
		if b.SnapshotID != "" {
			// A backup deleted meanwhile (its own delete task) needs
			// nothing more.
			_, err := s.setDBBackup(ctx, b.ID, func(b *cairn.DatabaseBackup) { b.SnapshotID = "" })
			if err != nil && !errors.Is(err, cairn.ErrNotFound) {
				return err
			}
		}
	}
	if err := s.dropRestorePoints(ctx, inst.ID, func(cairn.RestorePoint) bool { return true }); err != nil {
		return err
	}
	ev, ok, err := s.engineVolume(ctx, inst.ID)
	if err != nil {
		return err
	}
	if ok {
		if err := s.deleteRecoverSnapshots(ctx, ev.ID); err != nil {
			return err
		}
		if err := s.deleteRestorePointSnapshots(ctx, ev.ID); err != nil {
			return err
		}
		if err := s.deleteDetachedVolume(ctx, ev.ID); err != nil {
			return fmt.Errorf("delete volume: %w", err)
		}
	}
	err = s.cat.Update(ctx, func(tx catalog.Tx) error {
		if err := tx.DeleteBackupStrategy(ctx, inst.ProjectID, inst.ID); err != nil && !errors.Is(err, cairn.ErrNotFound) {
			return err
		}
		return tx.DeleteInstance(ctx, inst.ID)
	})
	if err != nil && !errors.Is(err, cairn.ErrNotFound) {
		return err
	}
	return nil
}

// deleteDetachedVolume deletes the volume of an instance the host has
// just removed. The host's detach returns once the data plane's NBD
// session on the volume has ended (it ends a moment after its client
// hung up); a volume still in use all the same (a host whose detach does
// not wait, a detach resumed after its wait was cut) is tried again,
// with backoff, for about 10 s.
func (s *Service) deleteDetachedVolume(ctx context.Context, id cairn.ID) error {
	wait := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := s.eng.DeleteVolume(ctx, id)
		if err == nil || !errors.Is(err, cairn.ErrConflict) || attempt == 12 {
			return err
		}
		s.log.Warn("an instance's volume is still in use after its detach; trying again", "volume", id, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.after(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// ListInstances returns a page of the caller's instances, their
// operating status read from the host.
func (s *Service) ListInstances(ctx context.Context, c Caller, q ListQuery) ([]cairn.Instance, error) {
	if s.host == nil {
		return nil, errNoInstances
	}
	f, err := q.filter(c, InstancesCollection)
	if err != nil {
		return nil, err
	}
	var list []cairn.Instance
	err = s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		list, err = tx.Instances(ctx, f)
		return err
	})
	if err != nil {
		return nil, err
	}
	states, err := s.host.HostInstances(ctx)
	if err != nil {
		s.log.Warn("reading the instances' state from the host", "err", err)
	}
	byID := map[string]dbhost.State{}
	for _, st := range states {
		byID[st.ID] = st
	}
	for i := range list {
		if st, ok := byID[list[i].ID]; ok {
			live(&list[i], st)
		} else {
			unknown(&list[i])
		}
	}
	return list, nil
}

// Instance returns one of the caller's instances, its operating status
// read from the host.
func (s *Service) Instance(ctx context.Context, c Caller, id string) (cairn.Instance, error) {
	if s.host == nil {
		return cairn.Instance{}, errNoInstances
	}
	var inst cairn.Instance
	err := s.cat.View(ctx, func(tx catalog.Tx) error {
		var err error
		inst, err = getInstance(ctx, tx, c, id)
		return err
	})
	if err != nil {
		return inst, err
	}
	st, err := s.host.HostInstance(ctx, id)
	switch {
	case err == nil:
		live(&inst, st)
	case !errors.Is(err, cairn.ErrNotFound):
		s.log.Warn("reading an instance's state from the host", "id", id, "err", err)
		fallthrough
	default:
		unknown(&inst)
	}
	inst.Archive = s.archiveState(id)
	if inst.Archive != nil {
		if inst.RecoverableWindow, err = s.recoverableWindow(ctx, inst.ID); err != nil {
			s.log.Warn("an instance's recoverable window", "id", id, "err", err)
		}
	}
	if points, err := s.restorePoints(ctx, inst.ID); err != nil {
		s.log.Warn("an instance's restore points", "id", id, "err", err)
	} else if len(points) > 0 {
		inst.RestorePoints = &cairn.RestorePointSummary{Count: len(points),
			Oldest: points[0].DataTimestamp, Newest: points[len(points)-1].DataTimestamp}
	}
	return inst, nil
}

// unknown marks an instance that should be up, but whose host did not
// tell its state: the row's last operating status may no longer hold.
func unknown(inst *cairn.Instance) {
	switch inst.Status {
	case cairn.InstanceActive, cairn.InstanceBackup:
		inst.OperatingStatus = cairn.OperatingUnknown
	}
}

// live lays the host's view of an instance over its row: the server's
// state and the file system's use, for an instance that is up.
func live(inst *cairn.Instance, st dbhost.State) {
	inst.VolumeUsed = st.Used
	switch inst.Status {
	case cairn.InstanceActive, cairn.InstanceBackup:
		inst.OperatingStatus = st.Operating
		if st.Operating == cairn.OperatingNone {
			inst.OperatingStatus = cairn.OperatingUnknown
		}
		if st.Port != 0 {
			inst.Address, inst.Port = st.Address, st.Port
		}
	}
}

func getInstance(ctx context.Context, tx catalog.Tx, c Caller, id string) (cairn.Instance, error) {
	v, err := tx.Instance(ctx, id)
	if err == nil && !c.may(v.ProjectID) {
		return cairn.Instance{}, fmt.Errorf("instance %s: %w", id, cairn.ErrNotFound)
	}
	return v, err
}

func (s *Service) instanceRow(ctx context.Context, id string) (cairn.Instance, error) {
	return readRow(ctx, s.cat, id, catalog.Tx.Instance)
}

func (s *Service) setInstance(ctx context.Context, id string, fn func(*cairn.Instance)) (cairn.Instance, error) {
	return changeRow(ctx, s.cat, id, catalog.Tx.Instance, catalog.Tx.UpdateInstance, func(in *cairn.Instance) {
		fn(in)
		in.UpdatedAt = s.nowUTC()
	})
}

func instancePayload(in cairn.Instance) map[string]any {
	return map[string]any{"instance_id": in.ID, "name": in.Name, "status": in.Status,
		"datastore": in.Datastore.Type, "datastore_version": in.Datastore.Version, "fail_reason": in.FailReason}
}
