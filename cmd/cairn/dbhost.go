package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/attach"
	"github.com/cairnproject/cairn/internal/dbagent"
	"github.com/cairnproject/cairn/internal/dbagent/mariadb"
	"github.com/cairnproject/cairn/internal/dbagent/postgres"
	"github.com/cairnproject/cairn/internal/dbhost"
	"github.com/cairnproject/cairn/internal/volume"
	"github.com/cairnproject/cairn/internal/volumectl"
)

// instancesDir holds the data plane's database instances (their
// records, mount points and server logs), below the data directory.
const instancesDir = "instances"

// dbHostOptions are the data plane's settings for database instances.
type dbHostOptions struct {
	address  string
	ports    string
	runDir   string
	spoolDir string
	// settings are --db-setting's, DATASTORE:NAME=VALUE each.
	settings []string
}

func (o dbHostOptions) args() []string {
	var args []string
	if o.address != "" {
		args = append(args, "--db-address", o.address)
	}
	if o.ports != "" {
		args = append(args, "--db-ports", o.ports)
	}
	if o.runDir != "" {
		args = append(args, "--db-run-dir", o.runDir)
	}
	if o.spoolDir != "" {
		args = append(args, "--db-spool-dir", o.spoolDir)
	}
	for _, kv := range o.settings {
		args = append(args, "--db-setting", kv)
	}
	return args
}

// parseDBSettings reads --db-setting values, DATASTORE:NAME=VALUE each
// (postgresql:max_wal_size=4GB), into settings by datastore type. A
// name given twice for one datastore is refused, not overridden.
func parseDBSettings(list []string) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	for _, item := range list {
		typ, kv, ok1 := strings.Cut(item, ":")
		name, value, ok2 := strings.Cut(kv, "=")
		name = strings.TrimSpace(name)
		if !ok1 || !ok2 || name == "" {
			return nil, usageError{fmt.Errorf("--db-setting %q: want DATASTORE:NAME=VALUE, e.g. postgresql:max_wal_size=4GB", item)}
		}
		if typ != dbagent.PostgreSQL && typ != dbagent.MariaDB {
			return nil, usageError{fmt.Errorf("--db-setting %q: datastore %q: want %s or %s", item, typ, dbagent.PostgreSQL, dbagent.MariaDB)}
		}
		if out[typ] == nil {
			out[typ] = map[string]string{}
		}
		if _, dup := out[typ][name]; dup {
			return nil, usageError{fmt.Errorf("--db-setting %q: %s %s is given twice", item, typ, name)}
		}
		out[typ][name] = value
	}
	return out, nil
}

// parsePorts reads "MIN-MAX".
func parsePorts(s string) (int, int, error) {
	if s == "" {
		return 0, 0, nil
	}
	lo, hi, ok := strings.Cut(s, "-")
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil || a <= 0 || b > 65535 || a > b {
		return 0, 0, usageError{fmt.Errorf("--db-ports %q: want MIN-MAX, e.g. 17500-17999", s)}
	}
	return a, b, nil
}

// installedEngines returns an engine for every PostgreSQL and MariaDB
// version installed on the host.
func installedEngines(ctx context.Context) ([]dbagent.Engine, error) {
	pg, err := postgres.Find(ctx)
	if err != nil {
		return nil, fmt.Errorf("finding PostgreSQL: %w", err)
	}
	maria, err := mariadb.Find(ctx)
	if err != nil {
		return nil, fmt.Errorf("finding MariaDB: %w", err)
	}
	var out []dbagent.Engine
	for _, ds := range pg {
		e, err := postgres.New(ds)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	for _, ds := range maria {
		e, err := mariadb.New(ds)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// exportAttacher attaches a volume the way `cairn attach` does, through
// the data plane's own NBD socket: it names the volume in the export
// table, then attaches the export with nbd-client or nbdfuse and a loop
// device.
type exportAttacher struct {
	e      *volume.Engine
	table  *volumectl.ExportTable
	m      attach.Manager
	socket string
}

func (x exportAttacher) Attach(ctx context.Context, name string, id cairn.ID) (string, error) {
	if x.socket == "" {
		return "", fmt.Errorf("this data plane serves no NBD unix socket (--no-unix): %w", cairn.ErrUnsupported)
	}
	if r, err := x.m.Lookup(name); err == nil {
		return r.Device, nil
	}
	if err := x.table.Set(name, id); err != nil {
		return "", err
	}
	r, err := x.m.Attach(ctx, x.socket, name, false)
	if err != nil {
		return "", err
	}
	return r.Device, nil
}

// detachWait bounds the wait for a detached volume's NBD session to end.
const detachWait = 30 * time.Second

// Detach tears the attachment down and returns once the volume is
// closed: the NBD server ends the session a moment after its client hung
// up, and a volume deleted before that is still in use.
func (x exportAttacher) Detach(ctx context.Context, name string) error {
	if _, err := x.m.Detach(ctx, name); err != nil && !errors.Is(err, cairn.ErrNotFound) {
		return err
	}
	id, named := x.table.All()[name]
	if err := x.table.Delete(name); err != nil {
		return err
	}
	if !named {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, detachWait)
	defer cancel()
	if err := x.e.WaitVolumeClosed(wctx, id); err != nil {
		return fmt.Errorf("detaching %s: %w: %w", name, err, cairn.ErrUnavailable)
	}
	return nil
}

// engineSnapshots takes the instances' snapshots in the data plane's
// volume engine.
type engineSnapshots struct{ e *volume.Engine }

func (s engineSnapshots) Create(ctx context.Context, v cairn.ID, name string) (cairn.ID, error) {
	info, err := s.e.CreateSnapshot(ctx, v, name)
	return info.ID, err
}

func (s engineSnapshots) Delete(ctx context.Context, id cairn.ID) error {
	return s.e.DeleteSnapshot(ctx, id)
}

// openDBHost makes the data plane's instance host over data directory
// dir.
func (a *app) openDBHost(ctx context.Context, dir string, o dbHostOptions, e *volume.Engine, table *volumectl.ExportTable, socket string, log *slog.Logger) (*dbhost.Host, error) {
	lo, hi, err := parsePorts(o.ports)
	if err != nil {
		return nil, err
	}
	settings, err := parseDBSettings(o.settings)
	if err != nil {
		return nil, err
	}
	engines, err := installedEngines(ctx)
	if err != nil {
		return nil, err
	}
	return dbhost.New(dbhost.Options{
		Dir:       filepath.Join(dir, instancesDir),
		RunDir:    o.runDir,
		SpoolDir:  o.spoolDir,
		Address:   o.address,
		PortMin:   lo,
		PortMax:   hi,
		Engines:   engines,
		Settings:  settings,
		Attacher:  exportAttacher{e: e, table: table, m: attach.Manager{Dir: filepath.Join(dir, attachDir), PreferFUSE: a.getenv("CAIRN_ATTACH") == "fuse"}, socket: socket},
		Snapshots: engineSnapshots{e},
		Logger:    log,
		OnEvent:   a.hooks.dbEvents(),
	})
}

// storeKind names the kind of a backup store location, as backup
// strategies show it: "s3", "swift" or "local".
func storeKind(loc string) string {
	switch {
	case strings.HasPrefix(loc, "s3:"):
		return "s3"
	case strings.HasPrefix(loc, "swift:"):
		return "swift"
	default:
		return "local"
	}
}
