package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"gopkg.in/yaml.v3"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/api"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/catalog/postgres"
	"github.com/cairnproject/cairn/internal/catalog/sqlite"
	"github.com/cairnproject/cairn/internal/keystone"
	"github.com/cairnproject/cairn/internal/metrics"
	"github.com/cairnproject/cairn/internal/nbd"
	"github.com/cairnproject/cairn/internal/notify"
	"github.com/cairnproject/cairn/internal/objstore/limit"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/service"
	"github.com/cairnproject/cairn/internal/volume"
	"github.com/cairnproject/cairn/internal/volumectl"
)

// serveSettings are cairn serve's settings. Each comes from, in order:
// its flag, its CAIRN_* variable, the config file, the default.
type serveSettings struct {
	DataDir              string          `yaml:"data_dir"`
	Listen               string          `yaml:"listen"`
	Catalog              string          `yaml:"catalog"`
	BackupStore          string          `yaml:"backup_store"`
	BackupKeyFile        string          `yaml:"backup_key_file"`
	DefaultContainer     string          `yaml:"default_container"`
	Workers              int             `yaml:"workers"`
	StoreRequests        int             `yaml:"store_requests"`
	BackupNice           string          `yaml:"backup_nice"`
	QuiesceTimeout       string          `yaml:"quiesce_timeout"`
	WALArchive           string          `yaml:"wal_archive"`
	RestorePointInterval string          `yaml:"restore_point_interval"`
	RestorePoints        int             `yaml:"restore_points"`
	NBDSocket            string          `yaml:"nbd_socket"`
	NBDListen            string          `yaml:"nbd_listen"`
	DataPlane            string          `yaml:"data_plane"`
	DBAddress            string          `yaml:"db_address"`
	DBPorts              string          `yaml:"db_ports"`
	DBRunDir             string          `yaml:"db_run_dir"`
	DBSpoolDir           string          `yaml:"db_spool_dir"`
	DBSettings           []string        `yaml:"db_settings"`
	Webhooks             []webhookConfig `yaml:"webhooks"`
	LogFormat            string          `yaml:"log_format"`
	LogLevel             string          `yaml:"log_level"`
	KeystoneURL          string          `yaml:"keystone_url"`
	KeystoneCredentials  string          `yaml:"keystone_credentials"`
	KeystoneCacheTime    string          `yaml:"keystone_cache_time"`
}

type webhookConfig struct {
	URL        string `yaml:"url"`
	SecretFile string `yaml:"secret_file"`
}

// serviceFile, in the data directory, says which process serves it and
// where; clients find the API there.
const serviceFile = "service.json"

// adminTokenFile, in the data directory, holds the token made on the
// first start (mode 0600).
const adminTokenFile = "admin-token"

type serviceInfo struct {
	PID       int    `json:"pid"`
	URL       string `json:"url"`
	NBDSocket string `json:"nbd_socket,omitempty"`
}

func (a *app) serviceCommand() *cobra.Command {
	var st serveSettings
	var configFile string
	var webhookURLs []string
	var webhookSecret string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the block storage service: API, tasks, NBD exports",
		Long: `Run the block storage service on this machine: the REST API
(/v3/{project_id}/volumes|snapshots|backups, OpenAPI at /openapi.yaml),
the durable task runner, the volume engine and its NBD exports.

With no settings it keeps everything in the data directory: the SQLite
catalog (catalog.db), volumes, backups in a local repository per
container (backups/CONTAINER) opened with a generated key file
(backup.key: keep a copy, without it the backups cannot be read), and
the API on 127.0.0.1:8776. On the first start it creates the project
"admin" and an admin token, written to admin-token in the data directory.

Every setting is a flag, a CAIRN_* environment variable (the flag's name
upper-cased, - as _, e.g. CAIRN_BACKUP_STORE) or a key of the YAML config
file (--config, CAIRN_CONFIG; the flag's name with _ for -); a flag beats
the variable, which beats the file.

Settings:
  --data-dir DIR           volumes, catalog, keys (default ~/.local/share/cairn)
  --listen ADDR            API address (default 127.0.0.1:8776)
  --catalog DSN            a SQLite file path, or postgres://USER@HOST/DB (default DATA_DIR/catalog.db)
  --backup-store LOC       where containers live: a directory, s3://BUCKET[/PREFIX],
                           swift:// (a Swift container per container) or swift://C[/PREFIX]
                           (default DATA_DIR/backups); credentials as for cairn repo
  --backup-key-file F      the repositories' key file, created when missing (default DATA_DIR/backup.key)
  --default-container C    container of backups that name none (default volumebackups)
  --workers N              tasks running at once (default 8)
  --store-requests N       requests in flight to the backup store, across all tasks (default 32)
  --backup-nice N          nice value (0-19) of the threads that read, hash, compress and
                           encrypt backups and open restores, so they yield the CPU to the
                           databases on the host (default 10; 0: as the service)
  --quiesce-timeout D      how long a snapshot backup waits for its quiesce (a long transaction
                           or DDL holds it off) before it fails; the database is never blocked
                           longer (default 30s)
  --nbd-socket PATH        unix socket of attached volumes' NBD exports (default DATA_DIR/nbd.sock)
  --nbd-listen ADDR        also export over TCP (e.g. 127.0.0.1:10809; default off)
  --data-plane MODE        process (default): the volume engine and its NBD exports run in
                           a process of their own (cairn volume serve --exports named,
                           log in DATA_DIR/data-plane.log), started when none runs, which
                           outlives this one while volumes are attached; embedded: in this
                           process (no database instances)
  --db-address ADDR        address database instances listen on (default 127.0.0.1)
  --db-ports MIN-MAX       their TCP ports, one each (default 17500-17999)
  --db-run-dir DIR         their unix sockets and mount points (default /run/cairn-db)
  --db-spool-dir DIR       WAL a PostgreSQL recovery replays, on the host's disk; needs room for
                           it, reachable by the servers' OS user (default DB_RUN_DIR/spool)
  --db-setting D:NAME=V    a setting every server of datastore D (postgresql or mariadb) runs
                           with, e.g. postgresql:max_wal_size=4GB (repeatable; CAIRN_DB_SETTING:
                           separated by spaces; config file: db_settings: [...]). The settings
                           cairn gives its servers itself (address, durability, WAL, recovery)
                           are refused. They are the data plane's: a running one keeps its own
  --webhook URL            POST every notification here (repeatable); config file: webhooks: [{url, secret_file}]
  --webhook-secret-file F  HMAC-SHA256 key signing --webhook deliveries (X-Cairn-Signature)
  --log-format text|json   structured log format on stderr (default json)
  --log-level LEVEL        debug, info, warn or error (default info)`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.settle(cmd.Flags(), &st, configFile); err != nil {
				return err
			}
			for _, u := range webhookURLs {
				st.Webhooks = append(st.Webhooks, webhookConfig{URL: u, SecretFile: webhookSecret})
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return a.serve(ctx, st)
		},
	}
	a.serveFlags(cmd.Flags(), &st, &configFile, &webhookURLs, &webhookSecret)
	a.kdfFlags(cmd)
	return cmd
}

// serveFlags defines serve's flags on f.
func (a *app) serveFlags(f *pflag.FlagSet, st *serveSettings, configFile *string, webhookURLs *[]string, webhookSecret *string) {
	f.StringVar(configFile, "config", "", "YAML config file")
	f.StringVar(&a.dataDirFlag, "data-dir", "", "data directory")
	f.StringVar(&st.Listen, "listen", "", "API address")
	f.StringVar(&st.Catalog, "catalog", "", "catalog: SQLite path or postgres:// URL")
	f.StringVar(&st.BackupStore, "backup-store", "", "where backup containers live")
	f.StringVar(&st.BackupKeyFile, "backup-key-file", "", "repositories' key file")
	f.StringVar(&st.DefaultContainer, "default-container", "", "default backup container")
	f.IntVar(&st.Workers, "workers", 0, "tasks running at once")
	f.IntVar(&st.StoreRequests, "store-requests", 0, "requests in flight to the backup store")
	f.StringVar(&st.BackupNice, "backup-nice", "", "nice value of backup and restore work, 0-19")
	f.StringVar(&st.QuiesceTimeout, "quiesce-timeout", "", "bound of a snapshot backup's quiesce")
	f.StringVar(&st.WALArchive, "wal-archive", "", `archive every instance's log (PostgreSQL's WAL, MariaDB's binary log) continuously into the default container ("on", the default, or "off")`)
	f.StringVar(&st.RestorePointInterval, "restore-point-interval", "", `how often a restore point (a quiesced local snapshot a recover in place starts from) of each archived instance is taken ("0": none)`)
	f.IntVar(&st.RestorePoints, "restore-points", 0, "how many restore points of each instance are kept, newest first")
	f.StringVar(&st.NBDSocket, "nbd-socket", "", "NBD unix socket")
	f.StringVar(&st.NBDListen, "nbd-listen", "", "NBD TCP address")
	f.StringVar(&st.DataPlane, "data-plane", "", "process or embedded")
	f.StringVar(&st.DBAddress, "db-address", "", "address database instances listen on")
	f.StringVar(&st.DBPorts, "db-ports", "", "TCP ports of database instances, MIN-MAX")
	f.StringVar(&st.DBRunDir, "db-run-dir", "", "instances' sockets and mount points")
	f.StringVar(&st.DBSpoolDir, "db-spool-dir", "", "WAL a PostgreSQL recovery replays (default DB_RUN_DIR/spool)")
	f.StringArrayVar(&st.DBSettings, "db-setting", nil, "a database server setting, DATASTORE:NAME=VALUE (repeatable)")
	f.StringArrayVar(webhookURLs, "webhook", nil, "notification webhook URL")
	f.StringVar(webhookSecret, "webhook-secret-file", "", "webhook signing key file")
	f.StringVar(&st.LogFormat, "log-format", "", "text or json")
	f.StringVar(&st.LogLevel, "log-level", "", "debug, info, warn, error")
	f.StringVar(&st.KeystoneURL, "keystone-url", "", "Keystone's identity v3 URL: accept its tokens too (default: the credentials file's OS_AUTH_URL)")
	f.StringVar(&st.KeystoneCredentials, "keystone-credentials", "", "openrc file of cairn's Keystone service user (OS_USERNAME, OS_PASSWORD, ... or an application credential)")
	f.StringVar(&st.KeystoneCacheTime, "keystone-cache-time", "", "how long a validated Keystone token is trusted without asking again")
}

// settle fills st from the environment, the config file and defaults
// where its flag was not given.
func (a *app) settle(flags *pflag.FlagSet, st *serveSettings, configFile string) error {
	var file serveSettings
	if configFile == "" {
		configFile = a.getenv("CAIRN_CONFIG")
	}
	if configFile != "" {
		data, err := os.ReadFile(configFile)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(data)))
		dec.KnownFields(true)
		if err := dec.Decode(&file); err != nil {
			return usageError{fmt.Errorf("config file %s: %w", configFile, err)}
		}
		st.Webhooks = file.Webhooks
	}
	pick := func(flag string, dst *string, fromFile, def string) {
		if flags.Changed(flag) {
			return
		}
		env := "CAIRN_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
		*dst = firstNonEmpty(a.getenv(env), fromFile, def)
	}
	if !flags.Changed("data-dir") && a.getenv("CAIRN_DATA_DIR") == "" && file.DataDir != "" {
		a.dataDirFlag = file.DataDir
	}
	dir, err := a.dataDir()
	if err != nil {
		return err
	}
	st.DataDir = dir
	pick("listen", &st.Listen, file.Listen, "127.0.0.1:8776")
	pick("catalog", &st.Catalog, file.Catalog, filepath.Join(dir, "catalog.db"))
	pick("backup-store", &st.BackupStore, file.BackupStore, filepath.Join(dir, "backups"))
	pick("backup-key-file", &st.BackupKeyFile, file.BackupKeyFile, filepath.Join(dir, "backup.key"))
	pick("default-container", &st.DefaultContainer, file.DefaultContainer, "volumebackups")
	pick("nbd-socket", &st.NBDSocket, file.NBDSocket, filepath.Join(dir, "nbd.sock"))
	pick("nbd-listen", &st.NBDListen, file.NBDListen, "")
	pick("data-plane", &st.DataPlane, file.DataPlane, "process")
	pick("db-address", &st.DBAddress, file.DBAddress, "127.0.0.1")
	pick("db-ports", &st.DBPorts, file.DBPorts, "17500-17999")
	pick("db-run-dir", &st.DBRunDir, file.DBRunDir, "/run/cairn-db")
	pick("db-spool-dir", &st.DBSpoolDir, file.DBSpoolDir, "")
	if !flags.Changed("db-setting") {
		if env := a.getenv("CAIRN_DB_SETTING"); env != "" {
			st.DBSettings = strings.Fields(env)
		} else {
			st.DBSettings = file.DBSettings
		}
	}
	if _, err := parseDBSettings(st.DBSettings); err != nil {
		return err
	}
	pick("backup-nice", &st.BackupNice, file.BackupNice, "10")
	pick("quiesce-timeout", &st.QuiesceTimeout, file.QuiesceTimeout, "30s")
	pick("wal-archive", &st.WALArchive, file.WALArchive, "on")
	pick("restore-point-interval", &st.RestorePointInterval, file.RestorePointInterval, "5m")
	pick("log-format", &st.LogFormat, file.LogFormat, "json")
	pick("log-level", &st.LogLevel, file.LogLevel, "info")
	pick("keystone-url", &st.KeystoneURL, file.KeystoneURL, "")
	pick("keystone-credentials", &st.KeystoneCredentials, file.KeystoneCredentials, "")
	pick("keystone-cache-time", &st.KeystoneCacheTime, file.KeystoneCacheTime, "5m")
	if d, err := time.ParseDuration(st.KeystoneCacheTime); err != nil || d < time.Second || d > time.Hour {
		return usageError{fmt.Errorf("keystone cache time %q: want a duration from 1s to 1h", st.KeystoneCacheTime)}
	}
	if st.KeystoneURL != "" && st.KeystoneCredentials == "" {
		return usageError{fmt.Errorf("keystone url %s: give --keystone-credentials too (cairn's service user validates the tokens)", st.KeystoneURL)}
	}
	pickInt := func(flag string, dst *int, fromFile, def, most int) error {
		if !flags.Changed(flag) {
			*dst = fromFile
			env := "CAIRN_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
			if v := a.getenv(env); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 {
					return usageError{fmt.Errorf("%s %q: want a positive number", env, v)}
				}
				*dst = n
			}
			if *dst == 0 {
				*dst = def
			}
		}
		if *dst < 1 || *dst > most {
			return usageError{fmt.Errorf("%s %d: want 1 to %d", flag, *dst, most)}
		}
		return nil
	}
	if err := pickInt("workers", &st.Workers, file.Workers, 8, 256); err != nil {
		return err
	}
	if err := pickInt("store-requests", &st.StoreRequests, file.StoreRequests, 32, 1024); err != nil {
		return err
	}
	if err := pickInt("restore-points", &st.RestorePoints, file.RestorePoints, 24, 1000); err != nil {
		return err
	}
	if d, err := time.ParseDuration(st.RestorePointInterval); err != nil || d != 0 && (d < 10*time.Second || d > 24*time.Hour) {
		return usageError{fmt.Errorf("restore point interval %q: want 0 (none) or a duration from 10s to 24h", st.RestorePointInterval)}
	}
	if n, err := strconv.Atoi(st.BackupNice); err != nil || n < 0 || n > 19 {
		return usageError{fmt.Errorf("backup nice %q: want 0 to 19", st.BackupNice)}
	}
	if st.WALArchive != "on" && st.WALArchive != "off" {
		return usageError{fmt.Errorf("wal archive %q: want on or off", st.WALArchive)}
	}
	if d, err := time.ParseDuration(st.QuiesceTimeout); err != nil || d < time.Second || d > time.Hour {
		return usageError{fmt.Errorf("quiesce timeout %q: want a duration from 1s to 1h", st.QuiesceTimeout)}
	}
	if _, _, err := parsePorts(st.DBPorts); err != nil {
		return err
	}
	if st.DataPlane != "process" && st.DataPlane != "embedded" {
		return usageError{fmt.Errorf("data plane %q: want process or embedded", st.DataPlane)}
	}
	if st.LogFormat != "json" && st.LogFormat != "text" {
		return usageError{fmt.Errorf("log format %q: want text or json", st.LogFormat)}
	}
	return nil
}

func (a *app) serviceLogger(st serveSettings) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(st.LogLevel)); err != nil {
		return nil, usageError{fmt.Errorf("log level %q: want debug, info, warn or error", st.LogLevel)}
	}
	opts := &slog.HandlerOptions{Level: level}
	if st.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(a.stderr, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(a.stderr, opts)), nil
}

// keystoneValidator is the Keystone token validator st configures, and
// Keystone's URL; nil (and no error) when it configures none.
func keystoneValidator(st serveSettings) (service.TokenValidator, string, error) {
	if st.KeystoneCredentials == "" {
		return nil, "", nil
	}
	data, err := os.ReadFile(st.KeystoneCredentials)
	if err != nil {
		return nil, "", fmt.Errorf("keystone credentials: %w", err)
	}
	creds, err := keystone.ParseCredentials(data)
	if err != nil {
		return nil, "", usageError{fmt.Errorf("keystone credentials %s: %w", st.KeystoneCredentials, err)}
	}
	url := firstNonEmpty(st.KeystoneURL, creds.AuthURL)
	if url == "" {
		return nil, "", usageError{fmt.Errorf("keystone credentials %s: no OS_AUTH_URL; give --keystone-url", st.KeystoneCredentials)}
	}
	cacheTime, err := time.ParseDuration(st.KeystoneCacheTime)
	if err != nil {
		return nil, "", usageError{fmt.Errorf("keystone cache time %q: %w", st.KeystoneCacheTime, err)}
	}
	v, err := keystone.New(keystone.Config{AuthURL: url, Credentials: creds, CacheTime: cacheTime})
	if err != nil {
		return nil, "", usageError{err}
	}
	return v, url, nil
}

// openCatalog opens the catalog a DSN names.
func openCatalog(ctx context.Context, dsn string) (catalog.Store, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return postgres.Open(ctx, dsn)
	}
	return sqlite.Open(ctx, strings.TrimPrefix(dsn, "sqlite:"))
}

// containerLocation is where a container's repository lives under base.
func containerLocation(base, container string) string {
	if base == "swift://" {
		return "swift://" + container
	}
	loc, query, _ := strings.Cut(base, "?")
	loc = strings.TrimRight(loc, "/") + "/" + container
	if query != "" {
		loc += "?" + query
	}
	return loc
}

// Bounds of an orderly shutdown.
const (
	// apiDrainTimeout is how long API requests in flight may run once the
	// shutdown began; then their contexts are cancelled, and the shutdown
	// waits for them to return.
	apiDrainTimeout = 10 * time.Second
	// notifyDrainTimeout bounds the delivery of the notifications queued
	// before the shutdown; what is left is logged as abandoned.
	notifyDrainTimeout = 10 * time.Second
)

// serve runs the service until ctx ends or one of its servers fails, and
// returns only once everything it started has stopped. A failure (an NBD
// or API listener erroring) is returned after the same orderly shutdown.
//
// It binds its TCP listeners before it touches the data directory: a busy
// address fails the start with nothing created or changed, and the error
// names the flag to change.
//
// One errgroup owns the API server and the NBD servers (unix socket and
// TCP); the task runner's workers are owned by the runner (Service.Start
// and Stop). The shutdown stops them in this order, each step logged
// ("stopping", "stopped", with the component):
//
//  1. api: stop accepting requests; those in flight finish (their
//     contexts are cancelled after apiDrainTimeout);
//  2. tasks: the runner stops; tasks cut short stay running in the
//     catalog and resume on the next start;
//  3. nbd: the NBD servers stop accepting connections and reading
//     requests, and wait for the requests in flight to finish (their
//     contexts are cancelled after nbd.Options.ShutdownTimeout);
//  4. notifier: queued notifications are delivered (notifyDrainTimeout);
//  5. lease: the catalog's serve lease, taken at start (renewed in the
//     errgroup until step 3), is released, so that another service may
//     start on the catalog at once;
//  6. catalog: closed;
//  7. engine: closed.
//
// The service's repositories close with the service (Service.Stop). Last,
// the registry entry and the service file that let clients find this
// process are removed.
func (a *app) serve(ctx context.Context, st serveSettings) (err error) {
	log, err := a.serviceLogger(st)
	if err != nil {
		return err
	}
	// The servers close their listeners; these defers close them, after
	// the shutdown, when the start failed before.
	apiLn, err := listenTCP("--listen", st.Listen)
	if err != nil {
		return err
	}
	defer apiLn.Close()
	var nbdListeners []net.Listener
	defer func() {
		for _, l := range nbdListeners {
			l.Close()
		}
	}()
	if st.NBDListen != "" {
		l, err := listenTCP("--nbd-listen", st.NBDListen)
		if err != nil {
			return err
		}
		if st.DataPlane == "embedded" {
			nbdListeners = append(nbdListeners, l)
		} else {
			// Free: the data plane binds it (unless one runs already).
			l.Close()
		}
	}

	// What clients find this process by goes after everything stopped.
	var unpublish []func()
	defer func() {
		for i := len(unpublish) - 1; i >= 0; i-- {
			unpublish[i]()
		}
	}()
	stops := &shutdown{log: log}
	// The errgroup's first error, recorded when the NBD step waits for it.
	var runErr error
	defer func() {
		serr := stops.run()
		err = errors.Join(err, runErr, serr)
	}()

	if err := os.MkdirAll(st.DataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	// The data plane: this process's engine, or the process serving the
	// data directory (started when none runs).
	var ops volumectl.Ops
	var instances service.InstanceHost // of a data plane process
	var nbdCatalog nbd.Catalog         // of an embedded data plane
	// The data plane process, replaced by its supervisor when it exits;
	// the shutdown reads it after the supervisor returned.
	var dp *dataPlane
	nbdSock, nbdAddr := st.NBDSocket, st.NBDListen
	if st.DataPlane == "embedded" {
		eng, err := volume.Open(st.DataDir, volume.Options{Logger: log})
		if errors.Is(err, cairn.ErrConflict) {
			return fmt.Errorf("data directory %s is held by another process (cairn serve or cairn volume serve): %w", st.DataDir, err)
		}
		if err != nil {
			return err
		}
		stops.add("engine", eng.Close)
		table, err := volumectl.OpenExportTable(st.DataDir, eng)
		if err != nil {
			return err
		}
		ops = volumectl.Direct{E: eng, X: table}
		nbdCatalog = volumectl.Catalog{Table: table}
	} else {
		dp, err = a.dataPlane(ctx, st, log)
		if err != nil {
			return err
		}
		ops, instances = dp.client, dp.client
		nbdSock, nbdAddr = dp.info.NBDSocket, dp.info.NBDListen
		stops.add("data plane", func() error { return releaseDataPlane(context.WithoutCancel(ctx), st.DataDir, dp, log) })
	}
	cat, err := openCatalog(ctx, st.Catalog)
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	cat = a.hooks.catalog(cat)
	stops.add("catalog", cat.Close)
	// One service per catalog, before anything in it changes: a second
	// one would take the first one's running tasks for tasks a crash cut
	// short, and run them again beside it.
	lease := service.NewLease(cat, service.LeaseConfig{Name: service.ServeLease, Holder: processHolder(), Gone: holderGone, Logger: log})
	if err := lease.Acquire(ctx); err != nil {
		return fmt.Errorf("catalog %s: %w", redactDSN(st.Catalog), err)
	}
	stops.add("lease", func() error { return lease.Release(context.WithoutCancel(ctx)) })
	token, err := bootstrap(ctx, cat, st.DataDir)
	if err != nil {
		return err
	}
	if token != "" {
		log.Info("created project admin and its admin token", "file", filepath.Join(st.DataDir, adminTokenFile))
	}
	secret, err := a.readKeyFile(st.BackupKeyFile, true)
	if err != nil {
		return err
	}
	var hooks []notify.Webhook
	for _, w := range st.Webhooks {
		h := notify.Webhook{URL: w.URL}
		if w.SecretFile != "" {
			if h.Secret, err = os.ReadFile(w.SecretFile); err != nil {
				return fmt.Errorf("webhook secret: %w", err)
			}
			h.Secret = []byte(strings.TrimSpace(string(h.Secret)))
		}
		hooks = append(hooks, h)
	}
	notifier := notify.New(notify.Options{Webhooks: hooks, Logger: log})
	stops.add("notifier", func() error {
		nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), notifyDrainTimeout)
		defer cancel()
		if err := notifier.Close(nctx); err != nil {
			log.Warn("notifications left undelivered at shutdown", "err", err)
		}
		return nil
	})
	met := metrics.New()
	// One bound on the requests in flight to the backup store, shared by
	// the repositories of all its containers and so by every task.
	storeLimit := limit.New(st.StoreRequests)
	met.StoreRequests(func() (int, int, int) {
		s := storeLimit.Stats()
		return s.Limit, s.InFlight, s.Waiting
	})
	backupNice, _ := strconv.Atoi(st.BackupNice)
	quiesceTimeout, _ := time.ParseDuration(st.QuiesceTimeout)
	restorePointInterval, _ := time.ParseDuration(st.RestorePointInterval)
	opts := func(s *store) repo.Options {
		o := a.repoOptions(s)
		o.Nice = backupNice
		return o
	}
	openRepo := func(ctx context.Context, container string) (*repo.Repository, error) {
		loc := containerLocation(st.BackupStore, container)
		s, err := a.openLimitedStore(ctx, loc, true, storeLimit)
		if err != nil {
			return nil, err
		}
		// The repository owns the store; until one does, the store is ours.
		var r *repo.Repository
		if _, err = repo.ReadConfig(ctx, s.backend); errors.Is(err, cairn.ErrNotRepository) {
			log.Info("creating the repository of a container", "container", container)
			r, err = repo.Init(ctx, s.backend, secret, repo.InitOptions{GC: s.gcParams()}, opts(s))
		} else if err == nil {
			r, err = repo.Open(ctx, s.backend, secret, opts(s))
		}
		if err != nil {
			closeStore(s.backend)
			return nil, err
		}
		return r, nil
	}
	identity, keystoneURL, err := keystoneValidator(st)
	if err != nil {
		return err
	}
	if identity != nil {
		log.Info("accepting Keystone tokens", "keystone", keystoneURL)
	}
	// Restore drills restore into images here (one per drill, removed
	// when it ends).
	scratchDir := filepath.Join(st.DataDir, "drills")
	if err := os.MkdirAll(scratchDir, 0o700); err != nil {
		return fmt.Errorf("drills directory: %w", err)
	}
	svc := service.New(service.Config{Catalog: cat, Engine: service.NewEngine(ops), Identity: identity,
		OpenRepo:         service.Repositories(openRepo, ops, log),
		DefaultContainer: st.DefaultContainer, Notifier: notifier, Observer: met, Logger: log,
		Workers: st.Workers, NBDSocket: nbdSock, NBDAddress: nbdAddr,
		Instances: instances, Backend: storeKind(st.BackupStore), QuiesceTimeout: quiesceTimeout,
		ArchiveWAL: st.WALArchive == "on", RestorePointInterval: restorePointInterval, RestorePoints: st.RestorePoints,
		Hosts: service.HostConfig{DataDir: st.DataDir, Version: driverVersion()}, Scheduler: true,
		ScratchDir: scratchDir})
	met.Archives(func() []metrics.ArchiveSample { return archiveSamples(svc.Archives(), time.Now()) })

	// The servers run in g; gctx ends when ctx does or one of them fails.
	g, gctx := errgroup.WithContext(ctx)
	nbdCtx, stopNBD := context.WithCancel(context.WithoutCancel(ctx))
	stops.add("nbd", func() error {
		stopNBD()
		runErr = g.Wait() // the API server has returned already
		return nil
	})
	if dp != nil {
		g.Go(func() error {
			dp = a.superviseDataPlane(nbdCtx, st, dp, log, func(*dataPlane) { met.DataPlaneRestarted() })
			return nil
		})
	}
	// Renewed while the servers run; lost (another service took it
	// after this one stalled past its expiry), it stops them.
	g.Go(func() error { return lease.Run(nbdCtx) })
	if err := svc.Start(ctx); err != nil {
		return err
	}
	stops.add("tasks", func() error { svc.Stop(); return nil })

	// NBD exports of attached volumes, when the data plane is ours. We
	// hold the data directory, so a socket left at the path is stale.
	if nbdCatalog != nil {
		_ = os.Remove(st.NBDSocket)
		ul, err := net.Listen("unix", st.NBDSocket)
		if err != nil {
			return fmt.Errorf("--nbd-socket %s: %w", st.NBDSocket, err)
		}
		nbdListeners = append(nbdListeners, ul)
	}

	url := "http://" + apiLn.Addr().String()
	info, _ := json.Marshal(serviceInfo{PID: os.Getpid(), URL: url, NBDSocket: nbdSock})
	infoPath := filepath.Join(st.DataDir, serviceFile)
	if err := os.WriteFile(infoPath, info, 0o600); err != nil {
		return fmt.Errorf("service file: %w", err)
	}
	unpublish = append(unpublish, func() { _ = os.Remove(infoPath) })
	unregister, err := a.register(url, st.DataDir)
	if err != nil {
		return err
	}
	unpublish = append(unpublish, unregister)

	nbdSrv := nbd.NewServer(a.hooks.exports(nbdCatalog), nbd.Options{Logger: log})
	for _, l := range nbdListeners {
		addr := l.Addr().Network() + " " + l.Addr().String()
		g.Go(func() error {
			if err := nbdSrv.Serve(nbdCtx, a.hooks.listener(l)); err != nil {
				return fmt.Errorf("nbd server on %s: %w", addr, err)
			}
			if nbdCtx.Err() == nil {
				return fmt.Errorf("nbd server on %s stopped", addr)
			}
			return nil
		})
	}
	apiCtx, cancelAPI := context.WithCancel(context.WithoutCancel(ctx))
	var apiOpts []api.Option
	if instances != nil {
		apiOpts = append(apiOpts, api.WithDatabases(svc))
	}
	srv := &http.Server{Handler: api.New(svc, met, log, apiOpts...), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return apiCtx }}
	stops.add("api", func() error {
		drain := time.AfterFunc(apiDrainTimeout, cancelAPI)
		defer func() { drain.Stop(); cancelAPI() }()
		return srv.Shutdown(context.WithoutCancel(ctx))
	})
	g.Go(func() error {
		if err := srv.Serve(apiLn); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("api server on %s: %w", url, err)
		}
		return nil
	})

	log.Info("serving", "api", url, "nbd_socket", nbdSock, "nbd_listen", nbdAddr, "data_plane", st.DataPlane, "catalog", redactDSN(st.Catalog),
		"backup_store", st.BackupStore, "workers", st.Workers, "cpus", runtime.GOMAXPROCS(0))
	if !a.json {
		fmt.Fprintf(a.stdout, "cairn serving on %s (data directory %s)\n", url, st.DataDir)
	}
	<-gctx.Done()
	if ctx.Err() != nil {
		log.Info("shutting down")
	} else {
		log.Error("shutting down after a failure", "err", context.Cause(gctx))
	}
	return nil
}

// listenTCP binds addr, the value of flag. A failure names the flag: it
// is what the user has to change.
func listenTCP(flag, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			err = oe.Err
		}
		var se *os.SyscallError
		if errors.As(err, &se) {
			err = se.Err
		}
		return nil, fmt.Errorf("%s %s: %w", flag, addr, err)
	}
	return l, nil
}

// shutdown stops what serve started, the last started first, logging
// each step.
type shutdown struct {
	log   *slog.Logger
	steps []shutdownStep
}

type shutdownStep struct {
	component string
	stop      func() error
}

func (s *shutdown) add(component string, stop func() error) {
	s.steps = append(s.steps, shutdownStep{component, stop})
}

// run runs every step, whatever the earlier ones returned, and returns
// their errors.
func (s *shutdown) run() error {
	var errs []error
	for i := len(s.steps) - 1; i >= 0; i-- {
		st := s.steps[i]
		s.log.Info("stopping", "component", st.component)
		begin := time.Now()
		if err := st.stop(); err != nil {
			s.log.Error("stopping failed", "component", st.component, "err", err)
			errs = append(errs, fmt.Errorf("stopping the %s: %w", st.component, err))
			continue
		}
		s.log.Info("stopped", "component", st.component, "took", time.Since(begin).Round(time.Millisecond).String())
	}
	s.steps = nil
	return errors.Join(errs...)
}

// redactDSN hides a catalog URL's password.
func redactDSN(dsn string) string {
	if i := strings.Index(dsn, "://"); i >= 0 {
		if at := strings.LastIndex(dsn, "@"); at > i {
			user := dsn[i+3 : at]
			if u, _, ok := strings.Cut(user, ":"); ok {
				return dsn[:i+3] + u + ":***" + dsn[at:]
			}
		}
	}
	return dsn
}

// bootstrap makes the admin project and an admin token when the catalog
// has no project, writing the token to the data directory.
func bootstrap(ctx context.Context, cat catalog.Store, dir string) (string, error) {
	secret, err := service.NewProjects(cat).Bootstrap(ctx)
	if err != nil || secret == "" {
		return "", err
	}
	path := filepath.Join(dir, adminTokenFile)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("admin token file: %w", err)
	}
	return secret, nil
}

// archiveSamples are the metrics of the service's WAL archives.
func archiveSamples(states map[string]cairn.ArchiveState, now time.Time) []metrics.ArchiveSample {
	out := make([]metrics.ArchiveSample, 0, len(states))
	for id, st := range states {
		smp := metrics.ArchiveSample{Instance: id, Streaming: st.State == "streaming", LagSeconds: st.LagSeconds,
			Gaps: len(st.Gaps), SecondsSinceComplete: -1, SlotSafeBytes: -1,
			RestorePoints: st.RestorePoints.Count, SecondsSinceRestorePoint: -1, RestorePointFailures: st.RestorePointFailures}
		if st.RestorePoints.Count > 0 {
			smp.SecondsSinceRestorePoint = now.Sub(st.RestorePoints.Newest).Seconds()
		}
		if !st.CompleteAt.IsZero() {
			smp.SecondsSinceComplete = now.Sub(st.CompleteAt).Seconds()
		}
		if st.Slot != nil && st.Slot.SafeBytes >= 0 {
			smp.SlotSafeBytes = float64(st.Slot.SafeBytes)
		}
		out = append(out, smp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Instance < out[j].Instance })
	return out
}
